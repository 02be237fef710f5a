"""The StyleSwap generator (Xu et al., ECCV 2022), written from the architecture spec of the
authors' test code (generators-spec.md, section D.2); the authors released no weights.

The source identity (an ArcFace embedding) goes through one linear layer and a StyleGAN2
mapping network to a style ``w``; a GPEN-style encoder turns the target crop into feature maps
at every resolution; a StyleGAN2 decoder concatenates those maps at every styled convolution.
The 256 configuration also predicts a soft face mask at every level (a sigmoid each), flattens
the target's features inside it at 256 and above, and blends its output with the target by it.

Plain PyTorch throughout (``upfirdn2d`` as padding plus a depthwise convolution), so it runs on
any device and traces for ONNX and TensorRT like the other generators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StyleSwapConfig", "StyleSwapGenerator", "StyleSwapOutput"]

_BLUR = (1.0, 3.0, 3.0, 1.0)
_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class StyleSwapConfig:
    """What decides the network's shape. ``for_resolution`` gives the two published ones."""

    size: int = 256
    channel_multiplier: int = 1
    narrow: float = 0.5
    mask: bool = True
    style_dim: int = 512
    n_mlp: int = 8
    identity_dim: int = 512

    @staticmethod
    def for_resolution(size: Literal[256, 512]) -> StyleSwapConfig:
        if size == 256:
            return StyleSwapConfig(size=256, channel_multiplier=1, narrow=0.5, mask=True)
        if size == 512:
            return StyleSwapConfig(size=512, channel_multiplier=2, narrow=1.0, mask=False)
        raise ValueError(f"StyleSwap is published at 256 and 512, not {size}")

    def channels(self, resolution: int) -> int:
        """C_r: 512 up to 32x32, then 256, 128, 64, 32 (times the multiplier) per doubling,
        all times ``narrow``."""
        cm = self.channel_multiplier
        base = {64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}
        return int((512 if resolution <= 32 else base[resolution]) * self.narrow)

    @property
    def resolutions(self) -> list[int]:
        """4, 8, ..., size."""
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(
                f"StyleSwap's size must be a power of two of at least 8, not {self.size}"
            )
        return [2**k for k in range(2, int(math.log2(self.size)) + 1)]


# -- StyleGAN2 building blocks -------------------------------------------------------------------
def _blur_kernel(scale: float = 1.0) -> torch.Tensor:
    k = torch.tensor(_BLUR)
    kernel = k[None, :] * k[:, None]
    return kernel / kernel.sum() * scale


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by inserting zeros, pad, filter with ``kernel`` (per channel), downsample."""
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(batch, channels, height * up, width * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = kernel.flip(0, 1).to(x.dtype)[None, None].expand(channels, 1, *kernel.shape)
    x = F.conv2d(x, weight, groups=channels)
    return x[:, :, ::down, ::down] if down > 1 else x


class Blur(nn.Module):
    kernel: torch.Tensor

    def __init__(self, pad: tuple[int, int], scale: float = 1.0) -> None:
        super().__init__()
        self.pad = pad
        self.register_buffer("kernel", _blur_kernel(scale), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class FusedLeakyReLU(nn.Module):
    """act(x; b) = LReLU_0.2(x + b) * sqrt(2), with a bias per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return F.leaky_relu(x + self.bias.view(shape), 0.2) * _SQRT2


class EqualLinear(nn.Module):
    """y = x (W lr_mul / sqrt(in))^T + b lr_mul, optionally through the fused activation."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale)
        out = out + self.bias * self.lr_mul
        return F.leaky_relu(out, 0.2) * _SQRT2 if self.activation else out


class EqualConv2d(nn.Module):
    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, padding: int = 0
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, stride=self.stride, padding=self.padding)


class EncoderLayer(nn.Module):
    """GPEN's encoder step: a 1x1 conv at full size, or blur then a stride-2 3x3 conv;
    then the fused activation."""

    def __init__(self, in_ch: int, out_ch: int, *, downsample: bool) -> None:
        super().__init__()
        # Blur pads (2, 2) so that the stride-2 3x3 conv halves the size exactly.
        self.blur = Blur((2, 2)) if downsample else nn.Identity()
        self.conv = EqualConv2d(
            in_ch, out_ch, 3 if downsample else 1, stride=2 if downsample else 1
        )
        self.act = FusedLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.conv(self.blur(x)))
        return out


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution: weights scaled per input channel by A(w), then
    normalised per output channel (``demodulate``); ``upsample`` is a stride-2 transposed
    convolution followed by a blur."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        style_dim: int,
        *,
        demodulate: bool = True,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel, kernel))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel // 2
        self.in_ch, self.out_ch, self.kernel = in_ch, out_ch, kernel
        if upsample:
            self.blur = Blur((1, 1), scale=4.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        s = self.modulation(style).view(batch, 1, self.in_ch, 1, 1)
        weight = self.scale * self.weight * s
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        height, width = x.shape[2:]
        x = x.reshape(1, batch * self.in_ch, height, width)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(
                batch * self.in_ch, self.out_ch, self.kernel, self.kernel
            )
            out = F.conv_transpose2d(x, weight, stride=2, groups=batch)
            out = out.reshape(batch, self.out_ch, *out.shape[2:])
            blurred: torch.Tensor = self.blur(out)
            return blurred
        weight = weight.reshape(batch * self.out_ch, self.in_ch, self.kernel, self.kernel)
        out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.reshape(batch, self.out_ch, height, width)


class StyledConv(nn.Module):
    """act([ModConv(h, w); alpha F_r]): the target's feature map of this resolution is
    concatenated, scaled by a learned alpha (initially 0), so the output has twice the
    channels."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, *, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.feature_weight = nn.Parameter(torch.zeros(1))
        self.act = FusedLeakyReLU(2 * out_ch)

    def forward(self, x: torch.Tensor, style: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        out = self.conv(x, style)
        activated: torch.Tensor = self.act(torch.cat([out, self.feature_weight * features], dim=1))
        return activated


class ToImage(nn.Module):
    """A 1x1 modulated conv without demodulation, plus the previous level upsampled: the RGB
    branch (3 channels, a bias) or the mask branch (1 channel, no bias, a sigmoid at every
    level)."""

    kernel: torch.Tensor

    def __init__(self, in_ch: int, style_dim: int, *, channels: int, bias: bool) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, channels, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1)) if bias else None
        self.register_buffer("kernel", _blur_kernel(4.0), persistent=False)

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, previous: torch.Tensor | None
    ) -> torch.Tensor:
        out: torch.Tensor = self.conv(x, style)
        if self.bias is not None:
            out = out + self.bias
        if previous is not None:
            out = out + upfirdn2d(previous, self.kernel, up=2, pad=(2, 1))
        return out


@dataclass(frozen=True)
class StyleSwapOutput:
    """The swapped face in [-1, 1], the predicted face mask at full size (None without the
    mask branch) and the masks of every level (for the mask regulariser when training)."""

    image: torch.Tensor
    mask: torch.Tensor | None
    masks: tuple[torch.Tensor, ...]


class StyleSwapGenerator(nn.Module):
    """``forward(target, identity)``: target crops (B, 3, S, S) in [-1, 1] and identity
    embeddings (B, 512) (ArcFace, not normalised) to swapped crops (B, 3, S, S) in about
    [-1, 1]. :meth:`swap` also returns the masks."""

    def __init__(self, config: StyleSwapConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or StyleSwapConfig()
        resolutions = cfg.resolutions
        style = cfg.style_dim
        # Identity path: one linear layer, then StyleGAN2's mapping network (W space: the same
        # w for every layer).
        self.final_linear = EqualLinear(cfg.identity_dim, style, activation=True)
        self.mapping = nn.Sequential(
            *(EqualLinear(style, style, lr_mul=0.01, activation=True) for _ in range(cfg.n_mlp))
        )
        # Attribute encoder, full size down to 4x4.
        top = resolutions[-1]
        encoder = [EncoderLayer(3, cfg.channels(top), downsample=False)]
        for r in reversed(resolutions[:-1]):
            encoder.append(EncoderLayer(cfg.channels(2 * r), cfg.channels(r), downsample=True))
        self.encoder = nn.ModuleList(encoder)
        # Decoder.
        c4 = cfg.channels(4)
        self.constant = nn.Parameter(torch.randn(1, c4, 4, 4))
        self.conv1 = StyledConv(c4, c4, style)
        self.to_rgb1 = ToImage(2 * c4, style, channels=3, bias=True)
        self.to_mask1 = ToImage(2 * c4, style, channels=1, bias=False) if cfg.mask else None
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.to_masks = nn.ModuleList()
        previous = c4
        for r in resolutions[1:]:
            channels = cfg.channels(r)
            self.convs.append(StyledConv(2 * previous, channels, style, upsample=True))
            self.convs.append(StyledConv(2 * channels, channels, style))
            self.to_rgbs.append(ToImage(2 * channels, style, channels=3, bias=True))
            if cfg.mask:
                self.to_masks.append(ToImage(2 * channels, style, channels=1, bias=False))
            previous = channels

    def style(self, identity: torch.Tensor) -> torch.Tensor:
        """The style w of identity embeddings (B, 512) -> (B, style_dim)."""
        u = self.final_linear(identity)
        u = u * torch.rsqrt(u.pow(2).mean(dim=1, keepdim=True) + 1e-8)  # PixelNorm
        out: torch.Tensor = self.mapping(u)
        return out

    def encode(self, target: torch.Tensor) -> list[torch.Tensor]:
        """The target's feature maps, full size first, down to 4x4."""
        features = []
        x = target
        for layer in self.encoder:
            x = layer(x)
            features.append(x)
        return features

    def forward(self, target: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return self.swap(target, identity).image

    def swap(
        self,
        target: torch.Tensor,
        identity: torch.Tensor,
        *,
        mix: torch.Tensor | None = None,
        mix_weights: tuple[float, ...] = (),
    ) -> StyleSwapOutput:
        """The swap of ``target`` to ``identity``. With ``mix`` (a second identity), each
        resolution level's style moves toward the mix's by its weight in ``mix_weights``
        (4x4 first; missing levels: 0): coarse structure from one person, fine detail from
        another, which StyleGAN's per-layer styles allow and an embedding blend does not."""
        cfg = self.config
        if target.shape[-1] != cfg.size or target.shape[-2] != cfg.size:
            raise ValueError(
                f"StyleSwap {cfg.size}: expected {cfg.size}x{cfg.size} crops, got "
                f"{tuple(target.shape[-2:])}"
            )
        base = self.style(identity)
        other = self.style(mix) if mix is not None and any(mix_weights) else None

        def level_style(level: int) -> torch.Tensor:
            weight = mix_weights[level] if level < len(mix_weights) else 0.0
            return base if other is None or weight == 0.0 else torch.lerp(base, other, weight)

        w = level_style(0)
        features = self.encode(target)[::-1]  # 4x4 first
        h = self.constant.expand(target.shape[0], -1, -1, -1)
        h = self.conv1(h, w, features[0])
        rgb = self.to_rgb1(h, w, None)
        mask = torch.sigmoid(self.to_mask1(h, w, None)) if self.to_mask1 is not None else None
        masks = [mask] if mask is not None else []
        for level, resolution in enumerate(cfg.resolutions[1:]):
            w = level_style(level + 1)
            feature = features[level + 1]
            if mask is not None and resolution >= 256:
                # Inside the predicted face the target's features are flattened to their mean
                # there, so that identity comes from the source, not from the target's detail.
                region = F.interpolate(mask, size=feature.shape[-2:], mode="nearest")
                mean = (feature * region).sum(dim=(2, 3), keepdim=True) / region.sum(
                    dim=(2, 3), keepdim=True
                ).clamp_min(1e-8)
                feature = mean * region + (1.0 - region) * feature
            h = self.convs[2 * level](h, w, feature)
            h = self.convs[2 * level + 1](h, w, feature)
            rgb = self.to_rgbs[level](h, w, rgb)
            if mask is not None:
                mask = torch.sigmoid(self.to_masks[level](h, w, mask))
                masks.append(mask)
        image = rgb * mask + (1.0 - mask) * target if mask is not None else rgb
        return StyleSwapOutput(image=image, mask=mask, masks=tuple(masks))
