"""Identity embeddings shared by the neural engines: a disk cache, averaging and blending."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from livswap.errors import EngineError
from livswap.frame import Image
from livswap.track import detect_faces

__all__ = ["EmbeddingCache", "blend", "mean_direction", "source_labels"]

Vector = npt.NDArray[np.float32]
# Turns a source photo and its 5 alignment keypoints into a raw embedding.
Encoder = Callable[[Image, npt.NDArray[np.float32]], Vector]


def source_labels(count: int, names: Sequence[str] | None) -> list[str]:
    return list(names) if names else [f"source photo {i + 1}" for i in range(count)]


def _unit(v: Vector) -> Vector:
    out: Vector = (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)
    return out


def mean_direction(vectors: Sequence[Vector]) -> Vector:
    """Several photos of one person: the mean of their unit embeddings, as a unit vector."""
    return _unit(np.mean([_unit(v) for v in vectors], axis=0))


def blend(base: Vector, other: Vector, weight: float) -> Vector:
    """MFIM's identity mixing at the embedding level: (1 - w) base + w other, as a unit vector."""
    return _unit((1 - weight) * _unit(base) + weight * _unit(other))


class EmbeddingCache:
    """Embeddings of source photos, computed once and kept on disk.

    Keyed by the photo's content hash and the encoder file's hash, so a restart with the same
    source is instant and a different encoder never reuses a stale vector.
    """

    def __init__(self, folder: Path, encoder_key: str, encode: Encoder) -> None:
        self.folder = folder
        self.encoder_key = encoder_key
        self.encode = encode

    def get(self, image: Image, label: str) -> Vector:
        key = hashlib.sha256(image.tobytes()).hexdigest()[:24]
        path = self.folder / f"id-{self.encoder_key}-{key}.npy"
        if path.exists():
            stored: Vector = np.load(path)
            return stored
        faces = detect_faces(image, max_faces=1)
        if not faces:
            raise EngineError(f"{label}: no face found (use a clear, frontal photo of one face)")
        vector = np.asarray(self.encode(image, faces[0].keypoints), np.float32)
        self.folder.mkdir(parents=True, exist_ok=True)
        np.save(path, vector)
        return vector

    def identity_vector(
        self, sources: Sequence[Image], names: Sequence[str] | None, engine: str
    ) -> Vector:
        if not sources:
            raise EngineError(f"engine {engine!r} needs a source photo: pass --source PHOTO")
        labels = source_labels(len(sources), names)
        return mean_direction(
            [self.get(img, lab) for img, lab in zip(sources, labels, strict=True)]
        )
