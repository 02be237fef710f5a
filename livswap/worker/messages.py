"""What the server and the swap worker say to each other over their pipe.

Requests travel as ``(id, message)`` and are answered ``(id, result, error)``; frames travel as
``(None, message)`` both ways and are not answered. Pixels never travel here: they are in the
shared-memory rings (:mod:`livswap.worker.ring`) the frame messages name.
"""

from __future__ import annotations

from dataclasses import dataclass

from livswap.frame import Image

__all__ = [
    "CloseStream",
    "FrameIn",
    "FrameOut",
    "OpenStream",
    "Prepare",
    "Request",
    "Stats",
    "StreamFailed",
]


@dataclass(frozen=True)
class Prepare:
    """Cache the identity of ``image`` for ``engine`` (checks the photo has a usable face)."""

    source_id: str
    engine: str
    image: Image


@dataclass(frozen=True)
class OpenStream:
    """Start a stream's pipeline (tracker, engine stream, compositor) around its identity."""

    stream: int
    engine: str
    source_id: str | None
    image: Image | None


@dataclass(frozen=True)
class CloseStream:
    stream: int


@dataclass(frozen=True)
class FrameIn:
    """Frame ``seq`` of ``stream`` waits in ring ``ring_in``; its result goes to ``ring_out``."""

    stream: int
    seq: int
    ring_in: str
    ring_out: str
    ring_height: int
    ring_width: int
    height: int
    width: int
    pts: float
    captured_ns: int


@dataclass(frozen=True)
class FrameOut:
    """The swapped frame ``seq`` of ``stream`` is in ring ``ring_out``; counters are cumulative."""

    stream: int
    seq: int
    ring_out: str
    height: int
    width: int
    pts: float
    captured_ns: int
    timings_ms: dict[str, float]
    notes: frozenset[str]
    dropped: int
    failed: int


@dataclass(frozen=True)
class StreamFailed:
    """A stream's pipeline stopped on an error (for example, the engine failed for good)."""

    stream: int
    error: str


@dataclass(frozen=True)
class Stats:
    """Ask for the worker's counters: generator calls per batch size, per engine."""


Request = Prepare | OpenStream | CloseStream | Stats
