"""Optional on-screen preview window (OpenCV highgui) and a discarding sink for benchmarks."""

from __future__ import annotations

import cv2
import numpy as np

from livswap.errors import OutputError
from livswap.frame import Frame, Image
from livswap.output.base import Outcome

__all__ = ["NullSink", "PreviewSink"]


class PreviewSink:
    """Shows frames in a window; pressing q or Esc, or closing the window, asks to stop."""

    name = "preview"

    def __init__(self, title: str = "livswap preview") -> None:
        self.title = title
        self.wants_stop = False
        self._opened = False

    def send(self, frame: Frame) -> None:
        if not self._opened:
            try:
                cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            except cv2.error as exc:
                raise OutputError(f"preview window cannot be opened (no display?): {exc}") from None
            self._opened = True
        cv2.imshow(self.title, cv2.cvtColor(frame.result, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.wants_stop = True

    def close(self, outcome: Outcome = "complete") -> None:
        if self._opened:
            self._opened = False
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)


class NullSink:
    """Copies each frame into a reused buffer and discards it (the cost of a device write)."""

    name = "null"

    def __init__(self) -> None:
        self.wants_stop = False
        self.frames_written = 0
        self._buffer: Image | None = None

    def send(self, frame: Frame) -> None:
        image = frame.result
        if self._buffer is None or self._buffer.shape != image.shape:
            self._buffer = np.empty_like(image)
        np.copyto(self._buffer, image)
        self.frames_written += 1

    def close(self, outcome: Outcome = "complete") -> None:
        pass
