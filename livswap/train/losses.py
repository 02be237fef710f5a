"""The discriminator and losses of ``livswap train``: a multi-scale patch discriminator with a
hinge loss (SimSwap's), weak feature matching on its last features, identity as the cosine
distance of identity embeddings, and the R1 penalty on real images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MultiScaleDiscriminator",
    "PatchDiscriminator",
    "hinge_d",
    "hinge_g",
    "identity_loss",
    "r1_penalty",
    "weak_feature_matching",
]


class PatchDiscriminator(nn.Module):
    """PatchGAN: stride-2 4x4 convolutions, a logit per patch; ``forward`` also returns each
    layer's features (for feature matching)."""

    def __init__(self, width: int = 64, layers: int = 4) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels, out = 3, width
        for i in range(layers):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, out, 4, stride=2 if i < layers - 1 else 1, padding=1),
                    nn.LeakyReLU(0.2),
                )
            )
            channels, out = out, min(out * 2, 8 * width)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(channels, 1, 4, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return self.head(x), features


class MultiScaleDiscriminator(nn.Module):
    """Patch discriminators at full and half size."""

    def __init__(self, width: int = 64, layers: int = 4, scales: int = 2) -> None:
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(width, layers) for _ in range(scales))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        outputs = []
        for i, disc in enumerate(self.scales):
            outputs.append(disc(x if i == 0 else F.avg_pool2d(x, 2**i)))
        return outputs


def hinge_d(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    losses = [
        F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean() for r, f in zip(real, fake, strict=True)
    ]
    return torch.stack(losses).mean()


def hinge_g(fake: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([-f.mean() for f in fake]).mean()


def weak_feature_matching(
    real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]
) -> torch.Tensor:
    """L1 between the real and swapped images' last discriminator features ("weak": the last
    layer only, so the target's identity is not pulled back in)."""
    losses = [F.l1_loss(f[-1], r[-1].detach()) for r, f in zip(real, fake, strict=True)]
    return torch.stack(losses).mean()


def identity_loss(swapped: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of the swap's embedding and the source's."""
    return (1.0 - F.cosine_similarity(swapped, source, dim=1)).mean()


def r1_penalty(real_logits: list[torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(
        outputs=torch.stack([r.sum() for r in real_logits]).sum(), inputs=real, create_graph=True
    )
    return grad.pow(2).flatten(1).sum(1).mean()
