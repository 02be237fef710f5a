"""SimSwap generators (224, 512 and the "deep" variant), written from the architecture spec.

State-dict keys match the official checkpoints (``latest_net_G.pth``, ``550000_net_G.pth``)
exactly. The identity is injected into nine residual blocks through AdaIN-style modulation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from livswap.errors import ModelError

__all__ = ["SimSwapGenerator", "Variant", "load_simswap", "variant_of"]

log = logging.getLogger(__name__)

Variant = Literal["224", "512", "deep"]


class InstanceNorm(nn.Module):
    """Instance norm without affine parameters, eps 1e-8, statistics always in fp32.

    SimSwap's eps of 1e-8 underflows in fp16, which is what turns faces to mush in half
    precision; computing mean and variance in fp32 keeps fp16/bf16 inference faithful.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        centred = x32 - x32.mean(dim=(2, 3), keepdim=True)
        scale = torch.rsqrt(centred.pow(2).mean(dim=(2, 3), keepdim=True) + self.eps)
        out: torch.Tensor = (centred * scale).to(x.dtype)
        return out


class ApplyStyle(nn.Module):
    """x * (1 + gamma(z)) + beta(z), with gamma and beta from one Linear."""

    def __init__(self, latent_size: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(latent_size, channels * 2)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        # The affine step in fp32 like the statistics: fp16 activations times (1 + gamma) can
        # overflow, and the rounding error compounds over nine blocks.
        style = self.linear(latent).float().view(-1, 2, x.size(1), 1, 1)
        out: torch.Tensor = (x.float() * (style[:, 0] + 1.0) + style[:, 1]).to(x.dtype)
        return out


class AdaINBlock(nn.Module):
    def __init__(self, channels: int, latent_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), InstanceNorm()
        )
        self.style1 = ApplyStyle(latent_size, channels)
        self.conv2 = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), InstanceNorm()
        )
        self.style2 = ApplyStyle(latent_size, channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.act(self.style1(self.conv1(x), latent))
        y = self.style2(self.conv2(y), latent)
        return x + y


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SimSwapGenerator(nn.Module):
    """``Generator_Adain_Upsample``: target crop (B, 3, H, W) in [0, 1] and an L2-normalised
    identity (B, 512) -> swapped crop (B, 3, H, W) in [0, 1].

    Args:
        variant: "224" (official 224 model), "512" (official 512 beta), or "deep" (224 widths
            with an extra down/up level, as community 512 checkpoints use).
        latent_size: identity embedding size.
        blocks: number of AdaIN residual blocks.
        width: channels of the first layer (64 in the official models; the others follow).
    """

    def __init__(
        self, variant: Variant = "224", latent_size: int = 512, blocks: int = 9, width: int = 64
    ) -> None:
        super().__init__()
        if variant not in ("224", "512", "deep"):
            raise ValueError(f"variant must be '224', '512' or 'deep', got {variant!r}")
        if width < 2 or width % 2:
            raise ValueError(f"width must be an even number of at least 2, got {width}")
        self.variant = variant
        w = width  # 64 in the official models; smaller for models trained with livswap train
        first = w // 2 if variant == "512" else w
        self.first_layer = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, first, 7),
            nn.BatchNorm2d(first),
            nn.ReLU(inplace=True),
        )
        self.down0 = _down(w // 2, w) if variant == "512" else None
        self.down1 = _down(w, 2 * w)
        self.down2 = _down(2 * w, 4 * w)
        self.down3 = _down(4 * w, 8 * w)
        self.down4 = _down(8 * w, 8 * w) if variant == "deep" else None
        self.BottleNeck = nn.ModuleList(AdaINBlock(8 * w, latent_size) for _ in range(blocks))
        self.up4 = _up(8 * w, 8 * w) if variant == "deep" else None
        self.up3 = _up(8 * w, 4 * w)
        self.up2 = _up(4 * w, 2 * w)
        self.up1 = _up(2 * w, w)
        self.up0 = _up(w, w // 2) if variant == "512" else None
        self.last_layer = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(first, 3, 7), nn.Tanh())

    def forward(self, target: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        x = self.first_layer(target)
        if self.down0 is not None:
            x = self.down0(x)
        x = self.down3(self.down2(self.down1(x)))
        if self.down4 is not None:
            x = self.down4(x)
        for block in self.BottleNeck:
            x = block(x, latent)
        if self.up4 is not None:
            x = self.up4(x)
        x = self.up1(self.up2(self.up3(x)))
        if self.up0 is not None:
            x = self.up0(x)
        out: torch.Tensor = (self.last_layer(x) + 1) / 2
        return out


def variant_of(state: Mapping[str, Any]) -> Variant:
    """Which generator a state dict belongs to, from its first layer width and extra levels."""
    first = state.get("first_layer.1.weight")
    if first is None or not hasattr(first, "shape"):
        raise ModelError("not a SimSwap generator: no 'first_layer.1.weight'")
    if first.shape[0] == 32:
        return "512"
    return "deep" if "down4.0.weight" in state else "224"


def load_simswap(
    state: Mapping[str, Any], label: str, expect: str | None = None
) -> SimSwapGenerator:
    """Build the generator for ``state`` and load it: every expected key must be present with
    its exact shape; extra keys are reported and ignored."""
    variant = variant_of(state)
    # The deep variant is what community 512 checkpoints use; it also runs on 224 crops.
    if expect is not None and variant != expect and variant != "deep":
        raise ModelError(f"{label}: this is a SimSwap {variant} generator, expected {expect}")
    model = SimSwapGenerator(variant)
    try:
        result = model.load_state_dict(dict(state), strict=False)
    except RuntimeError as exc:
        detail = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise ModelError(f"{label}: wrong tensor shapes for SimSwap {variant}: {detail}") from None
    if result.missing_keys:
        shown = ", ".join(result.missing_keys[:4])
        more = f" and {len(result.missing_keys) - 4} more" if len(result.missing_keys) > 4 else ""
        raise ModelError(
            f"{label}: missing {len(result.missing_keys)} SimSwap {variant} tensors ({shown}{more})"
        )
    if result.unexpected_keys:
        log.info(
            "%s: ignored %d extra tensors (%s...)",
            label,
            len(result.unexpected_keys),
            result.unexpected_keys[0],
        )
    return model.eval()
