"""The capture contract: ``FrameSource`` and what describes a source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from livswap.frame import Frame

__all__ = ["FrameSource", "SourceInfo"]


@dataclass(frozen=True)
class SourceInfo:
    """What a sink needs to know about a source before the first frame.

    Attributes:
        width, height: frame size in pixels.
        fps: nominal frame rate.
        frame_count: number of frames for finite sources (files, images), else None.
        live: True for cameras and other unbounded sources.
        path: the file behind the source, if any (lets a file sink copy its audio).
    """

    width: int
    height: int
    fps: float
    frame_count: int | None
    live: bool
    path: Path | None = None
    description: str = ""


@runtime_checkable
class FrameSource(Protocol):
    """Produces frames. ``recv`` raises ``StreamEnded`` when there are no more."""

    info: SourceInfo

    async def recv(self) -> Frame: ...

    def close(self) -> None:
        """Release the device or file. Safe to call more than once."""
