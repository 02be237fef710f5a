"""The sink contract, modelled on pyvirtualcam's ``Backend``."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from livswap.frame import Frame

__all__ = ["Outcome", "Sink"]

Outcome = Literal["complete", "interrupted", "failed"]
"""How a run ended: every frame through, stopped early (Ctrl-C on a file job), or an error."""


@runtime_checkable
class Sink(Protocol):
    """Consumes composited frames (``frame.result``).

    ``send`` is called from one worker thread, in frame order. ``close`` is idempotent and is
    always called, also after an error, with how the run ended: a file sink puts its file under
    the real name only for a complete run. A sink may set ``wants_stop`` (a preview window whose
    user pressed q) to ask the pipeline to finish.
    """

    name: str
    wants_stop: bool

    def send(self, frame: Frame) -> None: ...

    def close(self, outcome: Outcome = "complete") -> None: ...
