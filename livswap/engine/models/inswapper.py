"""InsightFace's inswapper_128 rebuilt as a PyTorch module, with weights read from the ONNX file.

The architecture is not published; this follows the reconstruction in the generators spec
(section B.6), which totals 138,292,739 parameters against InsightFace's published 138.3M. Running
it in PyTorch lets livswap use eager, ``torch.compile`` and TensorRT backends on the GPU instead of
ONNX Runtime.

:func:`load_inswapper_onnx` reads the file as data only (protobuf parsing, no pickle), maps the
Conv and Gemm (or MatMul + Add) weights onto the module by node order and shape, and reads the
settings the spec leaves open (instance-norm epsilon, padding of the middle convs, LeakyReLU slope,
upsampling corner mode) from the graph itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from livswap.errors import ModelError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "AdaptiveInstanceNorm",
    "InswapperGenerator",
    "PaddingMode",
    "StyleResidualBlock",
    "load_inswapper_onnx",
]

log = logging.getLogger(__name__)

PaddingMode = Literal["zeros", "reflect"]
FloatArray = NDArray[np.float32]

FULL_WIDTHS = (128, 256, 512, 1024)
FULL_BLOCKS = 6
LATENT_SIZE = 512


class AdaptiveInstanceNorm(nn.Module):
    """``gamma * (h - mean) / sqrt(var + eps) + beta`` with ``[gamma | beta] = Linear(latent)``.

    Unlike SimSwap there is no ``1 +`` on gamma. Statistics and the affine step run in fp32 whatever
    the module dtype: a tiny eps underflows in fp16 (a constant channel then gives 0/0) and squared
    activations overflow it.
    """

    def __init__(self, channels: int, latent_size: int, eps: float) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.style = nn.Linear(latent_size, channels * 2)

    def forward(self, h: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        style = self.style(latent.to(self.style.weight.dtype)).float()
        gamma, beta = style.view(-1, 2, self.channels, 1, 1).unbind(1)
        h32 = h.float()
        centred = h32 - h32.mean(dim=(2, 3), keepdim=True)
        variance = centred.pow(2).mean(dim=(2, 3), keepdim=True)  # biased, as instance norm is
        normalised = centred * torch.rsqrt(variance + self.eps)
        out: torch.Tensor = (gamma * normalised + beta).to(h.dtype)
        return out


class StyleResidualBlock(nn.Module):
    """``x + AdaIN(conv(ReLU(AdaIN(conv(x), z))), z)`` with reflect-padded 3x3 convs."""

    def __init__(self, channels: int, latent_size: int, eps: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm1 = AdaptiveInstanceNorm(channels, latent_size, eps)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm2 = AdaptiveInstanceNorm(channels, latent_size, eps)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x), latent))
        y = self.norm2(self.conv2(y), latent)
        out: torch.Tensor = x + y
        return out


def _check_padding(name: str, mode: str) -> None:
    if mode not in ("zeros", "reflect"):
        raise ValueError(f"{name} must be 'zeros' or 'reflect', got {mode!r}")


class InswapperGenerator(nn.Module):
    """inswapper_128: target crop (B, 3, H, W) RGB in [0, 1] and source latent (B, 512) ->
    swapped crop (B, 3, H, W) RGB in [0, 1]. H and W must be divisible by 4 (128 in the release).

    The latent is ``normalise(normalise(arcface) @ emap)`` (spec B.3); ``emap`` is not part of
    the network. ``target`` must be in the module's dtype; ``latent`` may be any float dtype.

    Args:
        widths: encoder channel widths (128, 256, 512, 1024 in the release). The last is the
            width of the residual blocks; the decoder mirrors the first three.
        blocks: number of residual AdaIN blocks (6 in the release).
        latent_size: size of the source latent (512 in the release).
        eps: instance-norm epsilon added to the variance. The release's value is not documented;
            :func:`load_inswapper_onnx` reads it from the graph.
        negative_slope: LeakyReLU slope after every encoder and decoder conv.
        encoder_padding: padding of the three 3x3 encoder convs, which the spec does not state;
            "zeros" (conv padding) or "reflect" (reflection padding). The loader reads it.
        decoder_padding: the same for the three 3x3 decoder convs.
        upsample_align_corners: corner mode of the two bilinear x2 upsamplings.
    """

    def __init__(
        self,
        widths: Sequence[int] = FULL_WIDTHS,
        blocks: int = FULL_BLOCKS,
        latent_size: int = LATENT_SIZE,
        eps: float = 1e-8,
        negative_slope: float = 0.2,
        encoder_padding: PaddingMode = "zeros",
        decoder_padding: PaddingMode = "zeros",
        upsample_align_corners: bool = False,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(widths) != 4 or any(w < 1 for w in widths):
            raise ValueError(f"widths must be 4 positive channel counts, got {widths!r}")
        if blocks < 1:
            raise ValueError(f"blocks must be at least 1, got {blocks!r}")
        if latent_size < 1:
            raise ValueError(f"latent_size must be positive, got {latent_size!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        _check_padding("encoder_padding", encoder_padding)
        _check_padding("decoder_padding", decoder_padding)
        self.widths = widths
        self.latent_size = latent_size
        self.eps = eps
        self.encoder_padding = encoder_padding
        self.decoder_padding = decoder_padding
        w0, w1, w2, w3 = widths

        def act() -> nn.LeakyReLU:
            return nn.LeakyReLU(negative_slope)

        def upsample() -> nn.Upsample:
            return nn.Upsample(
                scale_factor=2, mode="bilinear", align_corners=upsample_align_corners
            )

        def conv3(cin: int, cout: int, stride: int, padding: PaddingMode) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode=padding)

        self.encoder = nn.Sequential(
            nn.Conv2d(3, w0, 7, padding=3, padding_mode="reflect"),
            act(),
            conv3(w0, w1, 1, encoder_padding),
            act(),
            conv3(w1, w2, 2, encoder_padding),
            act(),
            conv3(w2, w3, 2, encoder_padding),
            act(),
        )
        self.blocks = nn.ModuleList(StyleResidualBlock(w3, latent_size, eps) for _ in range(blocks))
        self.decoder = nn.Sequential(
            upsample(),
            conv3(w3, w2, 1, decoder_padding),
            act(),
            upsample(),
            conv3(w2, w1, 1, decoder_padding),
            act(),
            conv3(w1, w0, 1, decoder_padding),
            act(),
            nn.Conv2d(w0, 3, 7, padding=3, padding_mode="reflect"),
            nn.Tanh(),
        )

    def forward(self, target: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        x = self.encoder(target)
        for block in self.blocks:
            x = block(x, latent)
        out: torch.Tensor = (self.decoder(x) + 1) / 2
        return out

    def conv_layers(self) -> list[nn.Conv2d]:
        """Every conv in forward order, which is the order an ONNX export lists them in."""
        return [m for m in self.modules() if isinstance(m, nn.Conv2d)]

    def style_layers(self) -> list[nn.Linear]:
        """Every latent-to-style Linear in forward order (block 0 norm 1, block 0 norm 2, ...)."""
        return [m for m in self.modules() if isinstance(m, nn.Linear)]


# ----------------------------------------------------------------------------------------------
# Loading from inswapper_128.onnx


@dataclass(frozen=True)
class _GraphConv:
    node: str
    weight: FloatArray
    bias: FloatArray
    stride: tuple[int, ...]
    padding: str  # "zeros", "reflect", or "none"/"other:<mode>" for what the module cannot express
    pad_amount: int | None  # per side, when readable


@dataclass(frozen=True)
class _GraphLinear:
    node: str
    weight: FloatArray  # (out, in), as nn.Linear stores it
    bias: FloatArray


class _Graph:
    """Lookup tables over one ONNX graph: initializers, constants, producers and consumers."""

    def __init__(self, model: onnx.ModelProto, label: str) -> None:
        from onnx import TensorProto, numpy_helper

        self.label = label
        self.model = model
        self.graph = model.graph
        self._to_array = numpy_helper.to_array
        self.initializers = {t.name: t for t in self.graph.initializer}
        for tensor in self.graph.initializer:
            if tensor.data_location == TensorProto.EXTERNAL:
                raise ModelError(
                    f"{label}: initializer {tensor.name!r} is stored in an external file; "
                    "expected a self-contained inswapper ONNX file"
                )
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def error(self, message: str) -> ModelError:
        return ModelError(f"{self.label}: {message}")

    def initializer(self, name: str, what: str) -> FloatArray:
        tensor = self.initializers.get(name)
        if tensor is None:
            raise self.error(f"{what} {name!r} is not an initializer; expected a stored weight")
        return np.array(self._to_array(tensor), dtype=np.float32, copy=True)

    def constant(self, name: str) -> NDArray[Any] | None:
        """The value of an initializer or a Constant node's output, else None."""
        if name in self.initializers:
            return np.asarray(self._to_array(self.initializers[name]))
        node = self.producer.get(name)
        if node is None or node.op_type != "Constant":
            return None
        for attr in node.attribute:
            if attr.name == "value":
                return np.asarray(self._to_array(attr.t))
            if attr.name == "value_float":
                return np.array(attr.f, dtype=np.float32)
            if attr.name == "value_floats":
                return np.array(list(attr.floats), dtype=np.float32)
            if attr.name == "value_ints":
                return np.array(list(attr.ints), dtype=np.int64)
        return None

    def skip_casts(self, name: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        while node is not None and node.op_type in ("Cast", "Identity"):
            node = self.producer.get(node.input[0])
        return node


def _attribute(node: onnx.NodeProto, name: str) -> object | None:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            value: object = helper.get_attribute_value(attr)
            return value
    return None


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    value = _attribute(node, name)
    return default if value is None else int(value)  # type: ignore[call-overload]


def _attr_float(node: onnx.NodeProto, name: str, default: float) -> float:
    value = _attribute(node, name)
    return default if value is None else float(value)  # type: ignore[arg-type]


def _attr_ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    value = _attribute(node, name)
    return default if value is None else [int(v) for v in value]  # type: ignore[attr-defined]


def _attr_text(node: onnx.NodeProto, name: str, default: str) -> str:
    value = _attribute(node, name)
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_conv(graph: _Graph, node: onnx.NodeProto, index: int) -> _GraphConv:
    what = f"Conv #{index} ({node.name or 'unnamed'})"
    if len(node.input) < 3 or not node.input[2]:
        raise graph.error(f"{what} has no bias; expected weight and bias initializers")
    weight = graph.initializer(node.input[1], f"{what} weight")
    bias = graph.initializer(node.input[2], f"{what} bias")
    group = _attr_int(node, "group", 1)
    if group != 1:
        raise graph.error(f"{what} is grouped (group={group}); expected 1")
    dilations = _attr_ints(node, "dilations", [1, 1])
    if any(d != 1 for d in dilations):
        raise graph.error(f"{what} has dilations {dilations}; expected 1")
    strides = tuple(_attr_ints(node, "strides", [1, 1]))
    pads = _attr_ints(node, "pads", [0, 0, 0, 0])
    padding, amount = "none", None
    if any(pads):
        padding, amount = "zeros", (pads[0] if len(set(pads)) == 1 else -1)
    source = graph.producer.get(node.input[0])
    if source is not None and source.op_type == "Pad":
        mode = _attr_text(source, "mode", "constant")
        padding = "reflect" if mode == "reflect" and not any(pads) else f"other:{mode}"
        pad_values = graph.constant(source.input[1]) if len(source.input) > 1 else None
        if pad_values is not None:
            spatial = [int(v) for v in pad_values.reshape(-1)[[2, 3, 6, 7]]]
            amount = spatial[0] if len(set(spatial)) == 1 else -1
    return _GraphConv(node.name, weight, bias, strides, padding, amount)


def _read_linears(graph: _Graph) -> list[_GraphLinear]:
    """Gemm nodes, and MatMul + Add pairs, whose weights are initializers, in node order."""
    found: list[_GraphLinear] = []
    for node in graph.graph.node:
        what = f"{node.op_type} {node.name or 'unnamed'}"
        if node.op_type == "Gemm":
            if _attr_int(node, "transA", 0):
                raise graph.error(f"{what} has transA=1; expected the latent as a plain row")
            weight = graph.initializer(node.input[1], f"{what} weight")
            if len(node.input) < 3 or not node.input[2]:
                raise graph.error(f"{what} has no bias; expected weight and bias initializers")
            bias = graph.initializer(node.input[2], f"{what} bias")
            # Gemm uses B transposed only when transB is set; nn.Linear stores (out, in).
            if not _attr_int(node, "transB", 0):
                weight = np.ascontiguousarray(weight.T)
            weight = weight * np.float32(_attr_float(node, "alpha", 1.0))
            bias = bias * np.float32(_attr_float(node, "beta", 1.0))
            found.append(_GraphLinear(node.name, weight, bias))
        elif node.op_type == "MatMul" and node.input[1] in graph.initializers:
            weight = graph.initializer(node.input[1], f"{what} weight")
            adds = [
                n
                for n in graph.consumers.get(node.output[0], [])
                if n.op_type == "Add" and any(i in graph.initializers for i in n.input)
            ]
            if weight.ndim != 2 or len(adds) != 1:
                raise graph.error(
                    f"{what}: expected a (in, out) weight followed by one Add of a bias "
                    f"initializer, got weight shape {weight.shape} and {len(adds)} such Adds"
                )
            bias_name = next(i for i in adds[0].input if i in graph.initializers)
            bias = graph.initializer(bias_name, f"{what} bias")
            found.append(_GraphLinear(node.name, np.ascontiguousarray(weight.T), bias))
    return found


def _read_norm_eps(graph: _Graph) -> list[float]:
    """Every instance-norm epsilon: the scalar constant added to a ReduceMean (the variance), or
    the ``epsilon`` of an InstanceNormalization node."""
    found: list[float] = []
    for node in graph.graph.node:
        if node.op_type == "InstanceNormalization":
            found.append(_attr_float(node, "epsilon", 1e-5))
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        for mine, other in ((0, 1), (1, 0)):
            value = graph.constant(node.input[mine])
            source = graph.skip_casts(node.input[other])
            if (
                value is not None
                and value.size == 1
                and 0 < float(value.reshape(-1)[0]) < 1e-2
                and source is not None
                and source.op_type == "ReduceMean"
            ):
                found.append(float(value.reshape(-1)[0]))
    return found


def _read_single_setting(graph: _Graph, values: list[float], what: str, default: float) -> float:
    distinct = sorted(set(values))
    if len(distinct) > 1:
        raise graph.error(f"the graph uses several {what} values {distinct}; expected one")
    if not distinct:
        log.info("%s: no %s in the graph; using %g", graph.label, what, default)
        return default
    return distinct[0]


def _read_upsample_corners(graph: _Graph) -> bool:
    modes = set()
    for node in graph.graph.node:
        if node.op_type in ("Resize", "Upsample"):
            mode = _attr_text(node, "mode", "nearest")
            corners = _attr_text(node, "coordinate_transformation_mode", "half_pixel")
            if node.op_type == "Upsample" or mode != "linear":
                raise graph.error(
                    f"{node.op_type} {node.name or 'unnamed'} is {mode!r} with {corners!r} "
                    "coordinates; expected a bilinear Resize"
                )
            modes.add(corners)
    if modes - {"half_pixel", "pytorch_half_pixel", "align_corners"} or len(modes) > 1:
        raise graph.error(
            f"upsampling coordinate modes {sorted(modes)}; expected one of 'half_pixel', "
            "'pytorch_half_pixel' or 'align_corners'"
        )
    return modes == {"align_corners"}


def _group_padding(graph: _Graph, convs: list[_GraphConv], what: str) -> PaddingMode:
    modes = {c.padding for c in convs}
    if len(modes) != 1 or not modes <= {"zeros", "reflect"}:
        raise graph.error(
            f"the {what} 3x3 convs are padded {[c.padding for c in convs]}; expected all 'zeros' "
            "or all 'reflect'"
        )
    mode = modes.pop()
    return "reflect" if mode == "reflect" else "zeros"


def load_inswapper_onnx(path: str | os.PathLike[str]) -> tuple[InswapperGenerator, FloatArray]:
    """Rebuild ``inswapper_128.onnx`` (or a file with its structure) as an
    :class:`InswapperGenerator` in eval mode, float32, on the CPU; also return ``emap``
    (latent_size x latent_size float32), the file's last initializer.

    The file is parsed as protobuf data only; nothing in it is executed. Any structural mismatch
    (node count, tensor shape, missing tensor, missing emap) raises :class:`ModelError` naming
    the file.
    """
    import onnx

    label = os.fspath(path)
    try:
        model = onnx.load(label, load_external_data=False)
    except FileNotFoundError:
        raise ModelError(f"{label}: no such inswapper model file") from None
    except Exception as exc:  # protobuf raises several unrelated types for a corrupt file
        raise ModelError(f"{label}: not a readable ONNX file ({exc})") from None
    graph = _Graph(model, label)

    inputs = [i.name for i in graph.graph.input if i.name not in graph.initializers]
    if len(inputs) != 2 or len(graph.graph.output) != 1:
        raise graph.error(
            f"expected inputs (target, source) and one output, got inputs {inputs} and "
            f"{len(graph.graph.output)} outputs"
        )

    conv_nodes = [n for n in graph.graph.node if n.op_type == "Conv"]
    convs = [_read_conv(graph, node, i) for i, node in enumerate(conv_nodes)]
    linears = _read_linears(graph)
    blocks = len(linears) // 2
    if not linears or len(linears) % 2 or len(convs) != 8 + 2 * blocks:
        raise graph.error(
            f"found {len(convs)} Conv and {len(linears)} Gemm/MatMul layers; expected "
            "2 style layers per residual block and 8 + 2 x blocks convs (20 and 12 in the release)"
        )
    if convs[0].weight.ndim != 4 or linears[0].weight.ndim != 2:
        raise graph.error(
            f"first Conv weight has shape {convs[0].weight.shape} and first Gemm weight "
            f"{linears[0].weight.shape}; expected 4-D and 2-D"
        )

    widths = tuple(int(c.weight.shape[0]) for c in convs[:4])
    latent_size = int(linears[0].weight.shape[1])
    eps_values = _read_norm_eps(graph)
    if not eps_values:
        raise graph.error(
            "no instance-norm epsilon found (a small constant added to a ReduceMean variance, "
            "or an InstanceNormalization node); expected the AdaIN blocks' normalisation"
        )
    eps = _read_single_setting(graph, eps_values, "instance-norm epsilon", default=0.0)
    slopes = [_attr_float(n, "alpha", 0.01) for n in graph.graph.node if n.op_type == "LeakyRelu"]
    encoder_padding = _group_padding(graph, convs[1:4], "encoder")
    decoder_padding = _group_padding(graph, convs[-4:-1], "decoder")
    try:
        with torch.device("meta"):
            rebuilt = InswapperGenerator(
                widths=widths,
                blocks=blocks,
                latent_size=latent_size,
                eps=eps,
                negative_slope=_read_single_setting(graph, slopes, "LeakyReLU slope", 0.2),
                encoder_padding=encoder_padding,
                decoder_padding=decoder_padding,
                upsample_align_corners=_read_upsample_corners(graph),
            )
    except ValueError as exc:
        raise graph.error(f"the layer shapes do not describe an inswapper network: {exc}") from None

    names = {module: name for name, module in rebuilt.named_modules()}
    state: dict[str, torch.Tensor] = {}
    for index, (conv, layer) in enumerate(zip(convs, rebuilt.conv_layers(), strict=True)):
        where = f"Conv #{index} ({conv.node or 'unnamed'}, {names[layer]})"
        expected = (tuple(layer.weight.shape), tuple(layer.bias.shape))  # type: ignore[union-attr]
        got = (conv.weight.shape, conv.bias.shape)
        if got != expected:
            raise graph.error(f"{where} has weight/bias shapes {got}; expected {expected}")
        if conv.stride != layer.stride:
            raise graph.error(f"{where} has strides {conv.stride}; expected {layer.stride}")
        wanted = layer.padding_mode if layer.padding_mode == "reflect" else "zeros"
        if conv.padding != wanted or conv.pad_amount not in (None, layer.kernel_size[0] // 2):
            raise graph.error(
                f"{where} is padded {conv.padding!r} by {conv.pad_amount}; expected {wanted!r} "
                f"by {layer.kernel_size[0] // 2}"
            )
        state[f"{names[layer]}.weight"] = torch.from_numpy(conv.weight)
        state[f"{names[layer]}.bias"] = torch.from_numpy(conv.bias)
    for index, (linear, style) in enumerate(zip(linears, rebuilt.style_layers(), strict=True)):
        expected = (tuple(style.weight.shape), tuple(style.bias.shape))
        got = (linear.weight.shape, linear.bias.shape)
        if got != expected:
            raise graph.error(
                f"style layer #{index} ({linear.node or 'unnamed'}, {names[style]}) has "
                f"weight/bias shapes {got} as (out, in); expected {expected}"
            )
        state[f"{names[style]}.weight"] = torch.from_numpy(linear.weight)
        state[f"{names[style]}.bias"] = torch.from_numpy(linear.bias)

    emap = _read_emap(graph, latent_size)
    rebuilt.load_state_dict(state, strict=True, assign=True)
    log.info(
        "%s: inswapper widths %s, %d blocks, eps %g, padding %s/%s",
        label,
        widths,
        blocks,
        eps,
        encoder_padding,
        decoder_padding,
    )
    return rebuilt.eval(), emap


EMAP_NAME = "buff2fs"  # what InsightFace's exporter called the projection


def emap_tensor(model: onnx.ModelProto, latent_size: int = 512) -> onnx.TensorProto | None:
    """inswapper's ``emap`` among a graph's initializers: the one named ``buff2fs`` where the
    graph has it, else the last ``latent_size`` x ``latent_size`` initializer that no node
    uses (re-saved and batched variants of the release carry another such matrix after it,
    used by a node)."""
    graph = model.graph
    named: list[onnx.TensorProto] = [t for t in graph.initializer if t.name == EMAP_NAME]
    if named:
        return named[0]
    used = {name for node in graph.node for name in node.input}
    square: list[onnx.TensorProto] = [
        t
        for t in graph.initializer
        if list(t.dims) == [latent_size, latent_size] and t.name not in used
    ]
    return square[-1] if square else None


def _read_emap(graph: _Graph, latent_size: int) -> FloatArray:
    tensor = emap_tensor(graph.model, latent_size)
    if tensor is None:
        raise graph.error(
            f"has no initializer named {EMAP_NAME!r} and no unused {latent_size}x{latent_size} "
            "one: no emap"
        )
    return graph.initializer(tensor.name, "emap")
