"""The sink contract, modelled on pyvirtualcam's ``Backend``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from livswap.frame import Frame

__all__ = ["Sink"]


@runtime_checkable
class Sink(Protocol):
    """Consumes composited frames (``frame.result``).

    ``send`` is called from one worker thread, in frame order. ``close`` is idempotent and is
    always called, also after an error. A sink may set ``wants_stop`` (a preview window whose
    user pressed q) to ask the pipeline to finish.
    """

    name: str
    wants_stop: bool

    def send(self, frame: Frame) -> None: ...

    def close(self) -> None: ...
