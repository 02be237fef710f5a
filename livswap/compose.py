"""Compose: paste the engine's face patches into the frame and add the disclosure label."""

from __future__ import annotations

from livswap.config import ComposeConfig
from livswap.frame import Frame
from livswap.label import DisclosureLabel

__all__ = ["Compositor"]


class Compositor:
    """Writes ``frame.output``: the captured image, swapped faces pasted in, label on top."""

    def __init__(self, cfg: ComposeConfig, *, label: DisclosureLabel | None) -> None:
        self.cfg = cfg
        self.label = label

    def compose(self, frame: Frame) -> None:
        output = frame.image.copy()  # the captured image may be shared (still images repeat)
        for patch in frame.patches:
            patch.paste(output)
        if self.label is not None:
            self.label.draw(output)
        frame.output = output

    def recover(self, frame: Frame, exc: BaseException) -> None:
        """Compose failed: show the unswapped frame, still labelled."""
        frame.patches = []
        self.compose(frame)
