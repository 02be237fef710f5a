"""The trivial engine: no swap. Measures the pipeline around an engine, and is a safe fallback."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from livswap.engine.base import EngineStream, Identity
from livswap.frame import Frame, Image

__all__ = ["PassthroughEngine"]


class _NoSwap:
    device_path = None

    def swap(self, frame: Frame) -> None:
        return None

    def close(self) -> None:
        return None


class PassthroughEngine:
    name = "passthrough"

    def prepare(self, sources: Sequence[Image], names: Sequence[str] | None = None) -> Identity:
        digest = hashlib.sha256()
        for image in sources:
            digest.update(image.tobytes())
        return Identity(engine=self.name, key=digest.hexdigest()[:16])

    def open_stream(self, identity: Identity) -> EngineStream:
        return _NoSwap()
