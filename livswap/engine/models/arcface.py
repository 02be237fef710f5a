"""SimSwap's identity encoder: SE-LResNet101E-IR ("ArcFace"), 112x112 RGB -> 512-d embedding.

Also converts the released ``arcface_checkpoint.tar`` (a whole pickled module) into a plain state
dict *without running any code from the file*: a restricted unpickler replaces every module class
with an inert stub that only records its state, and allows only tensor-rebuilding helpers.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from livswap.errors import ModelError
from livswap.models.safety import load_pickled_module, module_state

__all__ = ["ArcFace", "convert_pickled_arcface", "identity_of_crops"]

_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def identity_of_crops(arcface: nn.Module, crops01: torch.Tensor) -> torch.Tensor:
    """Raw (not normalised) embeddings of aligned face crops (B, 3, S, S) in [0, 1], as SimSwap
    computes them: ImageNet-normalised, resized to 112 (nearest, as the official code),
    through ArcFace. Differentiable (training uses it on its swaps)."""
    x = (crops01 - _IMAGENET_MEAN.to(crops01)) / _IMAGENET_STD.to(crops01)
    out: torch.Tensor = arcface(nn.functional.interpolate(x, size=(112, 112)))
    return out


class SEBlock(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.PReLU(),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        weights = self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)
        out: torch.Tensor = x * weights
        return out


class IRBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = SEBlock(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.se(self.bn2(self.conv2(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        result: torch.Tensor = self.prelu(out + shortcut)
        return result


class ArcFace(nn.Module):
    """ResNet(IRBlock, layers, use_se=True); 112x112 ImageNet-normalised RGB -> (B, 512).

    The embedding is not L2-normalised (callers do that).
    """

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 23, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(2, 2)
        widths = (64, 128, 256, 512)
        cin = 64
        self.layer1: nn.Sequential
        self.layer2: nn.Sequential
        self.layer3: nn.Sequential
        self.layer4: nn.Sequential
        for index, (width, count) in enumerate(zip(widths, layers, strict=True)):
            blocks = []
            for i in range(count):
                stride = 2 if (i == 0 and index > 0) else 1
                blocks.append(IRBlock(cin, width, stride))
                cin = width
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.bn2 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.bn3 = nn.BatchNorm1d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
        x = self.dropout(self.bn2(x)).flatten(1)
        out: torch.Tensor = self.bn3(self.fc(x))
        return out


def convert_pickled_arcface(
    path: Path, label: str = "model arcface-simswap"
) -> dict[str, torch.Tensor]:
    """The state dict inside SimSwap's ``arcface_checkpoint.tar``, read without running its code."""
    root, _ = load_pickled_module(path, label)
    state: dict[str, torch.Tensor] = OrderedDict(module_state(root))
    if "conv1.weight" not in state:
        raise ModelError(f"{label}: {path.name} holds no ArcFace weights")
    model = ArcFace()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n")[0]
        raise ModelError(f"{label}: {path.name} does not match SE-ResNet-101-IR: {first}") from None
    return state
