"""What the neural engines (SimSwap, inswapper) share.

The engine holds the generator (behind one :class:`~livswap.engine.batching.BatchedGenerator`
for all streams), the identity encoder and the embedding cache. Each stream
(:class:`NeuralStream`) places its faces, keeps the target's glasses in front
(:class:`~livswap.engine.regions.TargetRegions`), smooths their masks over time, crops them (with
OpenCV, or on the device through its own :class:`~livswap.cuda.DeviceFramePath`), and submits
the crops to the batched generator; compose waits for the swapped crops and pastes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch

from livswap.compose import MaskSmoother
from livswap.config import Config
from livswap.cuda.frame_path import DeviceFramePath
from livswap.engine.backends import GeneratorRunner
from livswap.engine.base import EngineStream, Identity
from livswap.engine.batching import BatchedGenerator
from livswap.engine.identity import EmbeddingCache, blend
from livswap.engine.regions import TargetRegions
from livswap.frame import Frame, Image, SwappedFace

__all__ = ["Latent", "NeuralEngine", "NeuralStream"]


@dataclass(frozen=True)
class Latent:
    vector: torch.Tensor  # (1, L) on the engine's device: what the generator is fed


class NeuralEngine:
    """Base of the neural engines. Subclasses set ``name``, ``device``, ``generator``, ``crop``
    and ``embeddings``, call :meth:`_start`, and define :meth:`latent` (raw embedding ->
    generator input) and :meth:`placement` (one face -> crop transform and paste alpha)."""

    name: str
    device: torch.device
    generator: GeneratorRunner
    crop: int
    embeddings: EmbeddingCache
    batcher: BatchedGenerator
    smoothing: float = 0.0
    paste_on_device: bool = False

    def _start(self, cfg: Config) -> None:
        """The shared batched generator, and where streams paste (``[compose] paste``)."""
        self.batcher = BatchedGenerator(
            self.generator,
            device=self.device,
            max_batch=cfg.engine.max_batch,
            frame_interval_s=1.0 / cfg.capture.fps,
            wait_fraction=cfg.engine.batch_wait,
        )
        self.smoothing = cfg.compose.temporal_smoothing
        paste = cfg.compose.paste
        self.paste_on_device = paste == "device" or (paste == "auto" and self.device.type == "cuda")

    def latent(self, embedding: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The generator's identity input (1, L) from the averaged raw embedding."""
        raise NotImplementedError

    def placement(self, face: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
        """A face's frame -> crop transform and its paste-back alpha in crop space."""
        raise NotImplementedError

    def target_regions(self) -> TargetRegions | None:
        """A new stream's memory of what stays the target's (its glasses), or None for faces
        without landmarks to find them by."""
        return TargetRegions()

    # -- identity ----------------------------------------------------------------------------
    def _identity(self, embedding: npt.NDArray[np.float32]) -> Identity:
        return self._identity_of_latent(self.latent(embedding))

    def _identity_of_latent(self, latent: npt.NDArray[np.float32]) -> Identity:
        latent = np.ascontiguousarray(latent, np.float32)
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
        """Mix a second identity in (MFIM's identity mixing; see :meth:`mixed_latent`)."""
        base = self.embeddings.identity_vector(sources, names, self.name)
        other = self.embeddings.identity_vector([mix], ["mix photo"], self.name)
        return self._identity_of_latent(self.mixed_latent(base, other, weight))

    def mixed_latent(
        self, base: npt.NDArray[np.float32], other: npt.NDArray[np.float32], weight: float
    ) -> npt.NDArray[np.float32]:
        """The generator input of two identities: by default their embeddings blended."""
        return self.latent(blend(base, other, weight))

    def open_stream(self, identity: Identity) -> EngineStream:
        return NeuralStream(self, identity)


class NeuralStream:
    """One stream of a neural engine: its mask smoothing, its device buffers, its batch id."""

    def __init__(self, engine: NeuralEngine, identity: Identity) -> None:
        latent: Latent = identity.data
        self.engine = engine
        self.latent = latent.vector
        self.mask_smoother = MaskSmoother(engine.smoothing)
        self.regions = engine.target_regions()
        self.device_path = DeviceFramePath(engine.device) if engine.paste_on_device else None
        self.batch_id = engine.batcher.open_stream()

    def swap(self, frame: Frame) -> None:
        engine = self.engine
        if self.regions is not None:
            self.regions.next_frame()
        placed = {}
        for face in frame.faces:
            m, alpha = engine.placement(face)
            kept = None
            if self.regions is not None:
                kept = self.regions.kept(frame.image, face, m, alpha.shape[0])
            placed[face.track_id] = (m, alpha if kept is None else alpha * (1.0 - kept))
        alphas = self.mask_smoother.smooth({tid: alpha for tid, (_, alpha) in placed.items()})
        if not placed:
            return
        transforms = [m for m, _ in placed.values()]
        ready = None
        if self.device_path is not None:
            frame.device_image = self.device_path.upload(frame.image)
            crops, ready = self.device_path.crops(frame.device_image, transforms, engine.crop)
        else:
            size = engine.crop
            pixels = np.stack(
                [
                    cv2.warpAffine(frame.image, m, (size, size), flags=cv2.INTER_LINEAR)
                    for m in transforms
                ]
            )
            crops = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(engine.device).float() / 255
            if engine.device.type == "cuda":  # copied on this thread's stream: the generator waits
                ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
                ready.record()
        latents = self.latent.expand(len(transforms), -1)
        futures = engine.batcher.submit(self.batch_id, crops, latents, ready)
        for (track_id, (m, _)), future in zip(placed.items(), futures, strict=True):
            frame.swaps.append(SwappedFace(track_id, m, alphas[track_id], pending=future))

    def close(self) -> None:
        self.engine.batcher.close_stream(self.batch_id)
