"""What the neural engines (SimSwap, inswapper) share: the source identity, computed once and
cached (several photos averaged, a second identity blended in), and the per-frame swap: on CUDA
the device path of :mod:`livswap.cuda`, else a CPU crop, the generator, and a
:class:`FacePatch` that compose pastes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import torch

from livswap.compose import FacePatch
from livswap.config import Config
from livswap.cuda.frame_path import DeviceCompositor, DeviceFramePath
from livswap.engine.backends import GeneratorRunner
from livswap.engine.base import Identity
from livswap.engine.identity import EmbeddingCache, blend
from livswap.frame import Frame, Image

__all__ = ["Latent", "NeuralEngine", "Placement"]

# (track id, frame -> crop transform, crop-space paste-back alpha) of one face.
Placement = tuple[int, npt.NDArray[np.float64], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class Latent:
    vector: torch.Tensor  # (1, 512) on the engine's device: what the generator is fed


class NeuralEngine:
    """Base of the neural engines. Subclasses set ``name``, ``device``, ``generator``, ``crop``
    and ``embeddings``, call :meth:`_start_device_path`, and define :meth:`latent` (raw
    embedding -> generator input) and :meth:`placements`."""

    name: str
    needs_faces = True
    device: torch.device
    generator: GeneratorRunner
    crop: int
    embeddings: EmbeddingCache
    device_compositor: DeviceCompositor | None = None

    def _start_device_path(self, cfg: Config) -> None:
        """On a GPU the whole paste-back stays on the device (one upload, one download)."""
        if self.device.type == "cuda":
            path = DeviceFramePath(self.generator, self.crop, self.device)
            self.device_compositor = DeviceCompositor(path, cfg.compose.fade_frames)

    def latent(self, embedding: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The generator's identity input (1, L) from the averaged raw embedding."""
        raise NotImplementedError

    def placements(self, frame: Frame) -> list[Placement]:
        raise NotImplementedError

    # -- identity ----------------------------------------------------------------------------
    def _identity(self, embedding: npt.NDArray[np.float32]) -> Identity:
        latent = np.ascontiguousarray(self.latent(embedding), np.float32)
        key = hashlib.sha256(latent.tobytes()).hexdigest()[:16]
        vector = torch.from_numpy(latent).to(self.device)
        return Identity(engine=self.name, key=key, data=Latent(vector))

    def prepare(self, sources: Sequence[Image], names: Sequence[str] | None = None) -> Identity:
        return self._identity(self.embeddings.identity_vector(sources, names, self.name))

    def prepare_mix(
        self,
        sources: Sequence[Image],
        mix: Image,
        weight: float,
        names: Sequence[str] | None = None,
    ) -> Identity:
        """Blend a second identity in (MFIM's identity mixing, at the embedding level)."""
        base = self.embeddings.identity_vector(sources, names, self.name)
        other = self.embeddings.identity_vector([mix], ["mix photo"], self.name)
        return self._identity(blend(base, other, weight))

    # -- per frame ---------------------------------------------------------------------------
    def swap(self, frame: Frame, identity: Identity) -> None:
        latent: Latent = identity.data
        placements = self.placements(frame)
        if self.device_compositor is not None:
            self.device_compositor.swap(frame, placements, latent.vector)
            return
        size = self.crop
        for track_id, m, alpha in placements:
            crop = cv2.warpAffine(frame.image, m, (size, size), flags=cv2.INTER_LINEAR)
            x = torch.from_numpy(crop).permute(2, 0, 1)[None].to(self.device).float() / 255.0
            y = self.generator(x, latent.vector)[0].clamp(0, 1).permute(1, 2, 0)
            out = (y.cpu().numpy() * 255 + 0.5).astype(np.uint8)
            frame.patches.append(
                FacePatch(
                    track_id=track_id,
                    image=np.ascontiguousarray(out),
                    alpha=alpha,
                    to_frame=cv2.invertAffineTransform(m).astype(np.float64),
                )
            )
