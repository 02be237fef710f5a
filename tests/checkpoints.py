"""Weight files in the exact official formats, generated with a fixed seed (random weights)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import torch

from livswap.config import Config
from livswap.engine.models.arcface import ArcFace, IRBlock, SEBlock
from livswap.engine.models.simswap import SimSwapGenerator


def write_simswap_224(path: Path, seed: int = 0) -> Path:
    """Like ``latest_net_G.pth``: torch.save of the generator's state dict."""
    torch.manual_seed(seed)
    torch.save(SimSwapGenerator("224").state_dict(), path)
    return path


def write_simswap_512(path: Path, seed: int = 0) -> Path:
    """Like the 512 beta's ``550000_net_G.pth``: the 512 generator's state dict."""
    torch.manual_seed(seed)
    torch.save(SimSwapGenerator("512").state_dict(), path)
    return path


def write_release_arcface(path: Path, seed: int = 0) -> Path:
    """Like ``arcface_checkpoint.tar``: torch.save of the whole module, whose classes pickle as
    ``models.arcface_models.{ResNet, IRBlock, SEBlock}``."""
    torch.manual_seed(seed)
    model = ArcFace()
    fake = types.ModuleType("models.arcface_models")
    saved = {name: sys.modules.get(name) for name in ("models", "models.arcface_models")}
    sys.modules["models"] = types.ModuleType("models")
    sys.modules["models.arcface_models"] = fake
    classes: dict[type, type] = {}
    for cls, name in ((ArcFace, "ResNet"), (IRBlock, "IRBlock"), (SEBlock, "SEBlock")):
        release_cls = type(name, (cls,), {"__module__": "models.arcface_models"})
        setattr(fake, name, release_cls)
        classes[cls] = release_cls
    try:
        for sub in model.modules():
            if type(sub) in classes:
                sub.__class__ = classes[type(sub)]
        torch.save(model, path)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return path


def _save_graph(graph: Any, path: Path) -> Path:
    """Wrap a graph in an opset-17 model the way the releases are stored, check it, save it."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_inswapper_onnx(path: Path, seed: int = 0, fails_when_run: bool = False) -> Path:
    """inswapper_128's I/O contract: inputs ``target`` (1,3,128,128) in [0,1] and ``source``
    (1,512); one output (1,3,128,128) in [0,1]; the 512x512 ``emap`` as the last initializer.
    The body is a small stand-in network (a 1x1 conv modulated by the latent).
    ``fails_when_run``: a valid graph that ONNX Runtime loads but cannot run (the latent is
    reshaped to a shape known only at run time, which does not fit): a hostile or broken file."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (3, 3, 1, 1)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(0, 0.05, (512, 3)).astype(np.float32), "style_w"),
        numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "style_shape"),
        numpy_helper.from_array(rng.normal(0, 1 / 22.6, (512, 512)).astype(np.float32), "emap"),
    ]
    nodes = [
        helper.make_node("Conv", ["target", "conv_w"], ["conv"]),
        helper.make_node("MatMul", ["source", "style_w"], ["style"]),
        helper.make_node("Reshape", ["style", "style_shape"], ["style4"]),
        *(
            [
                helper.make_node("Shape", ["source"], ["source_shape"]),
                helper.make_node("Reshape", ["style", "source_shape"], ["unfit"]),
                helper.make_node("ReduceSum", ["unfit"], ["unfit_sum"], keepdims=1),
                helper.make_node("Add", ["conv", "unfit_sum"], ["conv_unfit"]),
            ]
            if fails_when_run
            else []
        ),
        helper.make_node("Add", ["conv_unfit" if fails_when_run else "conv", "style4"], ["mixed"]),
        helper.make_node("Sigmoid", ["mixed"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "inswapper_128_contract",
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
            helper.make_tensor_value_info(
                "source", TensorProto.FLOAT, [1, "width" if fails_when_run else 512]
            ),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])],
        initializer=inits,
    )
    return _save_graph(graph, path)


def write_w600k_onnx(path: Path, seed: int = 0, embedding: int = 512) -> Path:
    """w600k_r50's I/O: a (1,3,112,112) face, (x-127.5)/127.5, to a raw 512-d embedding
    (``embedding`` wide: another width is a file that is not what it is named as)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 1, (3 * 8 * 8, embedding)).astype(np.float32), "fc")
    ]
    nodes = [
        helper.make_node(
            "AveragePool", ["input.1"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "w600k_r50_contract",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, embedding])],
        initializer=inits,
    )
    return _save_graph(graph, path)


def build_small_inswapper(
    seed: int = 0,
    widths: tuple[int, int, int, int] = (8, 16, 16, 32),
    blocks: int = 2,
    eps: float = 1e-6,
    encoder_padding: str = "zeros",
    decoder_padding: str = "zeros",
) -> torch.nn.Module:
    """A small random ``InswapperGenerator`` in eval mode; the same seed gives the same weights."""
    from livswap.engine.models.inswapper import InswapperGenerator

    torch.manual_seed(seed)
    model = InswapperGenerator(
        widths=widths,
        blocks=blocks,
        eps=eps,
        encoder_padding=encoder_padding,  # type: ignore[arg-type]
        decoder_padding=decoder_padding,  # type: ignore[arg-type]
    )
    # Default init leaves gamma near 0, which would hide a mixed-up [gamma | beta] split.
    with torch.no_grad():
        for style in model.style_layers():
            style.bias[: style.out_features // 2] += 1.0
    return model.eval()


def inswapper_test_emap(seed: int = 0) -> torch.Tensor:
    """The 512x512 float32 emap that :func:`write_inswapper_torch_onnx` stores for ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(512, 512, generator=generator) / 22.6


def write_inswapper_torch_onnx(
    path: Path,
    seed: int = 0,
    widths: tuple[int, int, int, int] = (8, 16, 16, 32),
    blocks: int = 2,
    eps: float = 1e-6,
    encoder_padding: str = "zeros",
    decoder_padding: str = "zeros",
) -> Path:
    """inswapper_128's exact I/O contract and structure with small random weights: a
    :func:`build_small_inswapper` network exported by the TorchScript-based exporter (opset 17,
    inputs ``target`` (1,3,128,128) and ``source`` (1,512)), plus the 512x512 ``emap`` appended
    as the last initializer and used by no node, as in the release."""
    import warnings

    import onnx
    from onnx import numpy_helper

    model = build_small_inswapper(seed, widths, blocks, eps, encoder_padding, decoder_padding)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and folding notes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.rand(1, 3, 128, 128), torch.randn(1, 512)),
            str(path),
            input_names=["target", "source"],
            output_names=["output"],
            opset_version=17,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    emap = numpy_helper.from_array(inswapper_test_emap(seed).numpy(), "emap")
    proto.graph.initializer.append(emap)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def cpu_config(engine_name: str, model_folder: Path) -> Config:
    """The default config with ``engine_name`` on the CPU, models from ``model_folder``, no
    label (so output pixels compare with input pixels)."""
    from livswap.config import load_config

    return load_config(
        None,
        {
            "engine.name": engine_name,
            "engine.device": "cpu",
            "models.dir": str(model_folder),
            "output.label": False,
        },
    )
