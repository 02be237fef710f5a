"""``livswap train``: trains a StyleSwap or SimSwap-style generator on a user's own photos and
videos, resumably, and puts the result in the model folder for ``--engine styleswap`` (or
``--engine simswap-224 --model NAME``).

Each step draws a batch of target faces and, for each, a source identity: half the time the
same person (then the swap must reconstruct the target), otherwise another. Losses (SimSwap's
and StyleSwap's): identity (cosine distance of the identity encoder's embeddings), L1
reconstruction for same-person pairs, hinge adversarial with a multi-scale patch discriminator,
weak feature matching, a penalty on an undecided (grey) mask, and R1 on real images every few
steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from livswap.engine.models.arcface import ArcFace, identity_of_crops
from livswap.engine.models.simswap import SimSwapGenerator
from livswap.engine.models.styleswap import StyleSwapConfig, StyleSwapGenerator
from livswap.engine.simswap import align_224_at
from livswap.engine.styleswap import align_ffhq
from livswap.errors import ConfigError, ModelError
from livswap.models import ModelStore
from livswap.models.download import sha256_of
from livswap.models.trained import check_name, save_trained
from livswap.train.data import FaceSet, prepare_faces
from livswap.train.losses import (
    MultiScaleDiscriminator,
    hinge_d,
    hinge_g,
    identity_loss,
    r1_penalty,
    weak_feature_matching,
)

__all__ = [
    "StepLosses",
    "TrainSettings",
    "Trainer",
    "estimate_text",
    "plot_losses",
    "training_alignment",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Everything a run depends on (defaults for a GPU; ``narrow`` None = the spec's width)."""

    arch: str
    data: tuple[Path, ...]
    name: str
    resolution: int = 256
    steps: int = 100_000
    batch: int = 8
    accumulate: int = 1
    narrow: float | None = None
    lr: float = 2e-3
    same_person: float = 0.5
    weight_identity: float = 10.0
    weight_reconstruction: float = 10.0
    weight_feature_matching: float = 10.0
    weight_adversarial: float = 1.0
    weight_mask: float = 0.1
    r1_gamma: float = 10.0
    r1_every: int = 16
    sheet_every: int = 1000
    save_every: int = 1000
    seed: int = 0

    def network(self) -> StyleSwapConfig:
        if self.resolution >= 512:
            return StyleSwapConfig(
                size=self.resolution, channel_multiplier=2, narrow=self.narrow or 1.0, mask=False
            )
        return StyleSwapConfig(size=self.resolution, narrow=self.narrow or 0.5, mask=True)

    def simswap_network(self) -> dict[str, Any]:
        """SimSwapGenerator's settings: the official widths, times ``narrow``."""
        width = max(2, 2 * round(32 * (self.narrow or 1.0)))
        return {"latent_size": 512, "blocks": 9, "width": width}

    def network_record(self) -> dict[str, Any]:
        """The generator's constructor settings, as the trained model's metadata keeps them."""
        if self.arch == "styleswap":
            return dataclasses.asdict(self.network())
        return {"variant": "224", **self.simswap_network()}


@dataclass(frozen=True)
class StepLosses:
    step: int
    generator: float
    discriminator: float
    identity: float
    reconstruction: float
    adversarial: float
    feature_matching: float
    mask: float
    seconds: float


class Trainer:
    """One training run: its networks, optimisers, data and where it writes (the model
    folder's ``training/NAME/``: checkpoint, loss log, sheets)."""

    def __init__(
        self,
        settings: TrainSettings,
        store: ModelStore,
        arcface: ArcFace,
        encoder_path: Path,
        device: torch.device,
        *,
        progress: Callable[[list[Path]], Any] = iter,
    ) -> None:
        if settings.arch not in ("styleswap", "simswap"):
            raise ConfigError(f"train: --arch {settings.arch!r}: expected styleswap or simswap")
        check_name(settings.name)
        if settings.resolution < 16 or settings.resolution & (settings.resolution - 1):
            raise ConfigError(
                f"train: --resolution {settings.resolution}: a power of two, 16 or more"
            )
        self.settings = settings
        self.store = store
        self.device = device
        self.folder = store.folder / "training" / settings.name
        self.arcface = arcface.to(device).eval().requires_grad_(False)
        self.encoder_key = f"arcface-{sha256_of(encoder_path)[:16]}"
        self.faces: FaceSet = prepare_faces(
            list(settings.data),
            settings.resolution,
            align=training_alignment(settings.arch, settings.resolution),
            embed=self._embed_crops,
            cache=store.folder / "cache",
            encoder_key=self.encoder_key,
            progress=progress,
        )
        torch.manual_seed(settings.seed)
        self.generator: nn.Module = (
            StyleSwapGenerator(settings.network())
            if settings.arch == "styleswap"
            else SimSwapGenerator("224", **settings.simswap_network())
        ).to(device)
        width = max(8, int(128 * (settings.narrow or 0.5)))
        # As many layers (at most 4) as leave the half-size scale a few patches.
        layers = min(4, 1 + int(math.log2(settings.resolution / 6)))
        self.discriminator = MultiScaleDiscriminator(width, layers).to(device)
        betas = (0.0, 0.99)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=settings.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=settings.lr, betas=betas)
        self.sampler = torch.Generator().manual_seed(settings.seed)
        self.step = 0
        use_amp = device.type == "cuda"
        self.amp_dtype = (
            torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        )
        self.use_amp = use_amp
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=use_amp and self.amp_dtype == torch.float16
        )
        self.crops = torch.from_numpy(self.faces.crops).permute(0, 3, 1, 2)  # uint8, CPU
        self.embeddings = F.normalize(torch.from_numpy(self.faces.embeddings), dim=1)
        self.person = torch.from_numpy(self.faces.person)
        self._by_person = [
            torch.nonzero(self.person == p).flatten() for p in range(len(self.faces.people))
        ]

    # -- identity ----------------------------------------------------------------------------
    def _embed(self, images01: torch.Tensor) -> torch.Tensor:
        """Identity embeddings of crops in [0, 1], as the styleswap engine computes them."""
        return F.normalize(identity_of_crops(self.arcface, images01).float(), dim=1)

    def _embed_crops(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255).to(self.device)
        with torch.inference_mode():
            out: npt.NDArray[np.float32] = self._embed(x).cpu().numpy()
        return out

    # -- one step ------------------------------------------------------------------------------
    def _draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target indices, source indices, and which pairs are the same person."""
        n, batch = len(self.crops), self.settings.batch
        targets = torch.randint(n, (batch,), generator=self.sampler)
        same = torch.rand(batch, generator=self.sampler) < self.settings.same_person
        if len(self._by_person) < 2:
            same[:] = True
        sources = torch.randint(n, (batch,), generator=self.sampler)
        for i in range(batch):
            pool = self._by_person[int(self.person[targets[i]])]
            if same[i]:
                sources[i] = pool[int(torch.randint(len(pool), (1,), generator=self.sampler))]
            else:
                while int(self.person[sources[i]]) == int(self.person[targets[i]]):
                    sources[i] = int(torch.randint(n, (1,), generator=self.sampler))
        return targets, sources, same

    def _swap(
        self, real: torch.Tensor, identity: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The swap of targets in [-1, 1] (and StyleSwap's mask): one convention for both
        architectures (SimSwap's generator works in [0, 1] and has no mask)."""
        if isinstance(self.generator, StyleSwapGenerator):
            out = self.generator.swap(real, identity)
            return out.image, out.mask
        image: torch.Tensor = self.generator(real.add(1.0).div(2.0), identity)
        return image.mul(2.0).sub(1.0), None

    def _images(self, indices: torch.Tensor) -> torch.Tensor:
        return self.crops[indices].to(self.device).float().div(127.5).sub(1.0)

    def train_step(self) -> StepLosses:
        s = self.settings
        started = time.perf_counter()
        totals = dict.fromkeys(
            ("g", "d", "identity", "reconstruction", "adversarial", "feature_matching", "mask"), 0.0
        )
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        r1_step = s.r1_every > 0 and self.step % s.r1_every == 0
        batches = [self._draw() for _ in range(s.accumulate)]
        # Discriminator.
        for targets, sources, _ in batches:
            real = self._images(targets)
            identity = self.embeddings[sources].to(self.device)
            with torch.no_grad(), self._autocast():
                fake, _ = self._swap(real, identity)
            real.requires_grad_(r1_step)
            with self._autocast():
                real_out = self.discriminator(real)
                fake_out = self.discriminator(fake.detach())
                loss_d = hinge_d([o[0] for o in real_out], [o[0] for o in fake_out])
            if r1_step:
                penalty = r1_penalty([o[0].float() for o in real_out], real)
                loss_d = loss_d + s.r1_gamma / 2 * penalty * s.r1_every
            self.scaler.scale(loss_d / s.accumulate).backward()  # type: ignore[no-untyped-call]
            totals["d"] += float(loss_d.detach()) / s.accumulate
        self.scaler.step(self.opt_d)
        # Generator.
        self.discriminator.requires_grad_(False)
        for targets, sources, same in batches:
            real = self._images(targets)
            identity = self.embeddings[sources].to(self.device)
            with self._autocast():
                image, soft_mask = self._swap(real, identity)
                fake_out = self.discriminator(image)
                with torch.no_grad():
                    real_out = self.discriminator(real)
                adversarial = hinge_g([o[0] for o in fake_out])
                matching = weak_feature_matching([o[1] for o in real_out], [o[1] for o in fake_out])
            swapped_identity = self._embed(image.float().add(1.0).div(2.0))
            id_loss = identity_loss(swapped_identity, identity)
            pairs = same.to(self.device)
            reconstruction = (
                (image.float() - real).abs().mean(dim=(1, 2, 3))[pairs].mean()
                if bool(pairs.any())
                else real.new_zeros(())
            )
            # The mask regulariser asks for a crisp mask (each pixel swapped or not), not a
            # small one: a penalty on its area lets reconstruction pairs shrink it to nothing.
            mask = (
                (soft_mask.float() * (1.0 - soft_mask.float())).mean()
                if soft_mask is not None
                else real.new_zeros(())
            )
            loss_g = (
                s.weight_adversarial * adversarial
                + s.weight_feature_matching * matching
                + s.weight_identity * id_loss
                + s.weight_reconstruction * reconstruction
                + s.weight_mask * mask
            )
            self.scaler.scale(loss_g / s.accumulate).backward()  # type: ignore[no-untyped-call]
            for key, value in (
                ("g", loss_g),
                ("identity", id_loss),
                ("reconstruction", reconstruction),
                ("adversarial", adversarial),
                ("feature_matching", matching),
                ("mask", mask),
            ):
                totals[key] += float(value.detach()) / s.accumulate
        self.scaler.step(self.opt_g)
        self.scaler.update()
        self.discriminator.requires_grad_(True)
        self.step += 1
        return StepLosses(
            step=self.step,
            generator=totals["g"],
            discriminator=totals["d"],
            identity=totals["identity"],
            reconstruction=totals["reconstruction"],
            adversarial=totals["adversarial"],
            feature_matching=totals["feature_matching"],
            mask=totals["mask"],
            seconds=time.perf_counter() - started,
        )

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    # -- files ---------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.folder / "checkpoint.pt"

    @property
    def log_path(self) -> Path:
        return self.folder / "losses.jsonl"

    def save_checkpoint(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "rng": torch.get_rng_state(),
            "sampler": self.sampler.get_state(),
            "settings": json.dumps(_settings_record(self.settings), sort_keys=True),
        }
        partial = self.checkpoint_path.with_name("checkpoint.pt.partial")
        torch.save(state, partial)
        os.replace(partial, self.checkpoint_path)

    def resume(self) -> None:
        """Continue from the checkpoint: weights, optimisers, step and random state."""
        if not self.checkpoint_path.is_file():
            raise ModelError(f"train --resume: no checkpoint at {self.checkpoint_path}")
        try:
            state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        except Exception as exc:
            raise ModelError(
                f"train --resume: {self.checkpoint_path} is unreadable: {exc}"
            ) from None
        saved = json.loads(state["settings"])
        for key in ("arch", "resolution", "narrow"):
            if saved[key] != _settings_record(self.settings)[key]:
                raise ConfigError(
                    f"train --resume: the checkpoint was trained with {key} = {saved[key]!r}, "
                    f"not {_settings_record(self.settings)[key]!r}"
                )
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"].cpu())
        self.sampler.set_state(state["sampler"].cpu())
        # The log keeps what was logged up to the checkpoint, not the steps after it.
        if self.log_path.is_file():
            kept = [
                line
                for line in self.log_path.read_text("utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= self.step
            ]
            self.log_path.write_text("".join(line + "\n" for line in kept), "utf-8")

    def log(self, losses: StepLosses) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(dataclasses.asdict(losses)) + "\n")

    def sheet(self) -> Path:
        """A PNG of source | target | swap for four fixed pairs (the same ones every time)."""
        import cv2

        picker = torch.Generator().manual_seed(1234)
        n = len(self.crops)
        targets = torch.randint(n, (4,), generator=picker)
        sources = torch.randint(n, (4,), generator=picker)
        with torch.no_grad():
            swapped, _ = self._swap(self._images(targets), self.embeddings[sources].to(self.device))
        out = swapped.float().add(1).mul(127.5).clamp(0, 255).byte().cpu()
        rows = [
            torch.cat([self.crops[sources[i]], self.crops[targets[i]], out[i]], dim=2)
            for i in range(4)
        ]
        image = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"sheet-{self.step:07d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return path

    def finish(self) -> Path:
        """Save the checkpoint and the trained model (its weights, metadata and sha256)."""
        self.save_checkpoint()
        return save_trained(
            self.store,
            self.settings.name,
            self.generator.state_dict(),
            arch=self.settings.arch,
            resolution=self.settings.resolution,
            network=self.settings.network_record(),
            identity_encoder="arcface-simswap",
            data_sha256=self.faces.sha256,
            steps=self.step,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )


def training_alignment(arch: str, size: int) -> Callable[[npt.NDArray[np.float32]], Any]:
    """How faces are aligned for ``arch`` at ``size`` (the engine that runs it aligns the same
    way): FFHQ for StyleSwap, SimSwap's 224 templates scaled for SimSwap."""
    if arch == "styleswap":
        ffhq: Callable[[npt.NDArray[np.float32]], Any] = align_ffhq(size)
        return ffhq
    return align_224_at(size)


def _settings_record(settings: TrainSettings) -> dict[str, Any]:
    record = dataclasses.asdict(settings)
    record["data"] = [str(p) for p in settings.data]
    return record


def plot_losses(log_path: Path, out: Path) -> Path:
    """The loss curves of a run's log as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text("utf-8").splitlines() if line.strip()]
    if not rows:
        raise ModelError(f"{log_path} has no steps logged yet")
    keys = (
        "generator",
        "discriminator",
        "identity",
        "reconstruction",
        "adversarial",
        "feature_matching",
    )
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True)
    for ax, key in zip(axes.flat, keys, strict=True):
        values = [r[key] for r in rows]
        ax.plot(steps, values, lw=0.6, alpha=0.5)
        window = max(1, len(values) // 50)
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, lw=1.5)
        ax.set_title(key.replace("_", " "))
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.suptitle(f"livswap train: {log_path.parent.name}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def estimate_text(seconds_per_step: float, steps: int, device: torch.device) -> str:
    total = seconds_per_step * steps
    if total < 120:
        when = f"{total:.0f} s"
    elif total < 7200:
        when = f"{total / 60:.0f} min"
    else:
        when = f"{total / 3600:.1f} h"
    return f"{seconds_per_step:.2f} s per step on {device.type}; {steps} steps take about {when}"
