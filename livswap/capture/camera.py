"""Webcams through OpenCV, with reconnection when the camera disappears."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from livswap.capture.base import SourceInfo
from livswap.capture.pacing import Pacer
from livswap.errors import CameraError, StreamEnded
from livswap.frame import Frame, Image

__all__ = ["CameraSource", "list_cameras"]

log = logging.getLogger(__name__)


def list_cameras(probe_indices: int = 6) -> list[str]:
    """Describe the cameras this machine has, e.g. ``["0: /dev/video0 (HD Webcam)"]``."""
    found: list[str] = []
    if sys.platform.startswith("linux"):
        for dev in sorted(Path("/dev").glob("video*"), key=lambda p: (len(p.name), p.name)):
            name_file = Path("/sys/class/video4linux") / dev.name / "name"
            try:
                name = name_file.read_text().strip()
            except OSError:
                name = "unknown"
            found.append(f"{dev.name.removeprefix('video')}: {dev} ({name})")
        return found
    for index in range(probe_indices):
        cap = cv2.VideoCapture(index)
        try:
            if cap.isOpened():
                found.append(f"{index}: camera {index}")
        finally:
            cap.release()
    return found


def _lost_frame(last: Image | None, width: int, height: int, seconds_lost: float) -> Image:
    image: Image = np.zeros((height, width, 3), np.uint8) if last is None else last // np.uint8(3)
    image = np.ascontiguousarray(image)
    scale = max(image.shape[0] / 720, 0.4)
    text = f"camera lost - reconnecting ({seconds_lost:.0f} s)"
    cv2.putText(
        image,
        text,
        (int(40 * scale), image.shape[0] // 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        max(1, int(2 * scale)),
        cv2.LINE_AA,
    )
    return image


class CameraSource:
    """A webcam by index (``0``) or device path (``/dev/video2``).

    The requested size and rate are asked of the driver; ``info`` reports what it granted.
    If reads start failing (unplugged, driver reset) the source keeps producing frames at the
    nominal rate (the last good frame dimmed, with a "camera lost" caption) while it reopens the
    device with exponential back-off, so the virtual camera downstream never stalls.
    """

    def __init__(
        self,
        device: int | str,
        *,
        width: int,
        height: int,
        fps: float,
        max_backoff_s: float = 8.0,
    ) -> None:
        self.device = device
        self._requested = (width, height, fps)
        self.max_backoff_s = max_backoff_s
        cap = self._open()
        if cap is None:
            listing = list_cameras()
            available = "; ".join(listing) if listing else "none found"
            raise CameraError(
                f"camera {device!r} cannot be opened; available cameras: {available}. "
                "Without a camera, try --input VIDEO.mp4 or --input pattern"
            )
        self._cap: cv2.VideoCapture | None = cap
        got_w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) or width
        got_h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) or height
        got_fps = float(cap.get(cv2.CAP_PROP_FPS)) or fps
        if not 1 <= got_fps <= 240:
            got_fps = fps
        self.info = SourceInfo(
            width=got_w,
            height=got_h,
            fps=got_fps,
            frame_count=None,
            live=True,
            path=None,
            description=f"camera {device}",
        )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="livswap-camera")
        self._pacer = Pacer(got_fps)
        self._seq = 0
        self._t0_ns = time.monotonic_ns()
        self._last: Image | None = None
        self._lost_since: float | None = None
        self._lost_seq = 0
        self._reconnect: asyncio.Task[cv2.VideoCapture] | None = None
        self._closed = False
        self.lost_frames = 0
        self.reconnects = 0

    def _open(self) -> cv2.VideoCapture | None:
        width, height, fps = self._requested
        if isinstance(self.device, int) and sys.platform.startswith("linux"):
            cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            return None
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        cap.set(cv2.CAP_PROP_FPS, fps)
        # Keep the driver's queue short: an old buffered frame is latency, not data.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _read(self) -> Image | None:
        cap = self._cap
        if cap is None:
            return None
        ok, bgr = cap.read()
        if not ok or bgr is None:
            return None
        return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    async def _reopen_forever(self) -> cv2.VideoCapture:
        loop = asyncio.get_running_loop()
        delay = 0.25
        while True:
            cap = await loop.run_in_executor(self._executor, self._open)
            if cap is not None:
                return cap
            log.info("CameraSource(%s): still lost, next attempt in %.1f s", self.device, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)

    def _make(self, image: Image) -> Frame:
        now = time.monotonic_ns()
        frame = Frame(image=image, seq=self._seq, captured_ns=now, pts=(now - self._t0_ns) / 1e9)
        self._seq += 1
        return frame

    async def recv(self) -> Frame:
        if self._closed:
            raise StreamEnded(f"camera {self.device}")
        loop = asyncio.get_running_loop()
        if self._cap is not None:
            image = await loop.run_in_executor(self._executor, self._read)
            if image is not None:
                self._last = image
                return self._make(image)
            log.warning("CameraSource(%s): camera lost, reopening with back-off", self.device)
            with contextlib.suppress(Exception):
                self._cap.release()
            self._cap = None
            self._lost_since = time.monotonic()
            self._lost_seq = 0
            self._reconnect = asyncio.create_task(self._reopen_forever(), name="camera-reconnect")
        if self._reconnect is not None and self._reconnect.done():
            self._cap = self._reconnect.result()
            self._reconnect = None
            self.reconnects += 1
            log.warning("CameraSource(%s): camera is back", self.device)
            return await self.recv()
        # Keep the output's cadence while the camera is gone.
        if self._lost_seq == 0:
            self._pacer.start()
        await self._pacer.wait_until(self._lost_seq / self.info.fps)
        self._lost_seq += 1
        self.lost_frames += 1
        seconds = time.monotonic() - (self._lost_since or time.monotonic())
        frame = self._make(_lost_frame(self._last, self.info.width, self.info.height, seconds))
        frame.notes.add("camera_lost")
        return frame

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        self._executor.shutdown(wait=True)
        if self._cap is not None:
            self._cap.release()
            self._cap = None
