"""The trivial engine: no swap. Measures the pipeline around an engine, and is a safe fallback."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from livswap.engine.base import Identity
from livswap.frame import Frame, Image

__all__ = ["PassthroughEngine"]


class PassthroughEngine:
    name = "passthrough"
    needs_faces = False

    def prepare(self, sources: Sequence[Image], names: Sequence[str] | None = None) -> Identity:
        digest = hashlib.sha256()
        for image in sources:
            digest.update(image.tobytes())
        return Identity(engine=self.name, key=digest.hexdigest()[:16])

    def swap(self, frame: Frame, identity: Identity) -> None:
        return None
