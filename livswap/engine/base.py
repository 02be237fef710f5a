"""The swap-engine contract shared by the built-in and the neural engines.

An :class:`Engine` holds what every stream shares: weights, compiled runners, caches, the
batched generator. :meth:`Engine.open_stream` gives one stream (a camera, a browser peer) its
:class:`EngineStream`, which owns everything that changes from frame to frame: per-face track
state, mask smoothing, the running neutral shape, the device buffers. ``livswap serve`` runs many
streams on one engine, so nothing temporal lives on the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from livswap.frame import Frame, Image

if TYPE_CHECKING:
    from livswap.cuda.frame_path import DeviceFramePath

__all__ = ["Engine", "EngineStream", "Identity", "MixingEngine"]


@dataclass(frozen=True)
class Identity:
    """What an engine computed once from the source photo(s) and reuses for every frame.

    ``data`` is engine-specific (an embedding, a prepared face texture) and opaque to the
    pipeline; ``key`` identifies it (content hash of the sources plus engine name) for caching.
    An identity is read-only: many streams may use one.
    """

    engine: str
    key: str
    data: Any = None


@runtime_checkable
class EngineStream(Protocol):
    """One stream's swap: ``swap`` runs per frame and only appends to ``frame.swaps``.

    ``device_path`` is where compose pastes this stream's faces: the stream's device frame
    path, or None for OpenCV on the CPU.
    """

    @property
    def device_path(self) -> DeviceFramePath | None: ...

    def swap(self, frame: Frame) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """Shared by all streams; capabilities (needs a source, faces, mixing) are in its spec."""

    name: str

    def prepare(self, sources: Sequence[Image], names: Sequence[str] | None = None) -> Identity:
        """Prepare the identity from source photos; ``names`` label them in error messages."""
        ...

    def open_stream(self, identity: Identity) -> EngineStream: ...


@runtime_checkable
class MixingEngine(Engine, Protocol):
    """An engine that can blend a second identity in (``--source-mix``)."""

    def prepare_mix(
        self,
        sources: Sequence[Image],
        mix: Image,
        weight: float,
        names: Sequence[str] | None = None,
    ) -> Identity: ...
