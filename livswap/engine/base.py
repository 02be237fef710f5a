"""The swap-engine contract shared by the built-in and the neural engines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from livswap.frame import Frame, Image

__all__ = ["Engine", "Identity"]


@dataclass(frozen=True)
class Identity:
    """What an engine computed once from the source photo(s) and reuses for every frame.

    ``data`` is engine-specific (an embedding, a prepared face texture) and opaque to the
    pipeline; ``key`` identifies it (content hash of the sources plus engine name) for caching.
    """

    engine: str
    key: str
    data: Any = None


@runtime_checkable
class Engine(Protocol):
    """Turns a tracked frame into swapped face patches.

    ``prepare`` runs once per source set; ``swap`` runs per frame in a worker thread and only
    appends to ``frame.patches`` (compose pastes them). Engines never touch capture or output.
    """

    name: str
    needs_faces: bool

    def prepare(self, sources: Sequence[Image], names: Sequence[str] | None = None) -> Identity:
        """Prepare the identity from source photos; ``names`` label them in error messages."""
        ...

    def swap(self, frame: Frame, identity: Identity) -> None: ...
