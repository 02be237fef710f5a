"""Bridges between aiortc media tracks and the livswap pipeline.

``TrackSource`` turns a browser's incoming video track into a :class:`FrameSource`;
``SwappedVideoTrack`` is the outgoing track the pipeline's output is sent on; and
``DelayedAudioTrack`` sends the browser's audio back delayed by the video's processing time, so
sound and picture stay in sync.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from typing import Any

import av
import cv2
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from livswap.capture.base import SourceInfo
from livswap.errors import StreamEnded
from livswap.frame import Frame

__all__ = ["DelayedAudioTrack", "SwappedVideoTrack", "TrackSink", "TrackSource"]

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)


class TrackSource:
    """A :class:`FrameSource` reading a remote peer's video track.

    The incoming ``av.VideoFrame``'s pts and time base travel along on the frame (in
    ``frame.pts``, seconds) so the outgoing track can stamp the swapped frame with the same
    media time.
    """

    def __init__(
        self, track: MediaStreamTrack, width: int = 640, height: int = 480, fps: float = 30.0
    ) -> None:
        self.track = track
        self.info = SourceInfo(
            width=width,
            height=height,
            fps=fps,
            frame_count=None,
            live=True,
            description="browser camera",
        )
        self._seq = 0
        self.skipped = 0
        self.last_received = time.monotonic()

    async def recv(self) -> Frame:
        try:
            frame = await self.track.recv()
        except MediaStreamError:
            raise StreamEnded("browser track ended") from None
        # aiortc queues decoded frames without bound; when the loop falls behind, take the newest
        # and count the rest as dropped (latest frame wins here too, as between stages).
        queue = getattr(self.track, "_queue", None)
        while queue is not None and queue.qsize() > 0:
            newer = queue.get_nowait()
            if newer is None:  # end of stream marker: deliver what we have, end next time
                queue.put_nowait(None)
                break
            frame = newer
            self.skipped += 1
        self.last_received = time.monotonic()
        assert isinstance(frame, av.VideoFrame)
        image = frame.to_ndarray(format="rgb24").astype(np.uint8, copy=False)
        pts = (
            float(frame.pts * frame.time_base)
            if frame.pts is not None and frame.time_base
            else (self._seq / self.info.fps)
        )
        out = Frame(image=image, seq=self._seq, captured_ns=time.monotonic_ns(), pts=pts)
        self._seq += 1
        return out

    def close(self) -> None:
        pass


class SwappedVideoTrack(MediaStreamTrack):
    """The outgoing video: the newest composited frame, handed over by :class:`TrackSink`."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._latest: av.VideoFrame | None = None
        self._ready = asyncio.Event()
        # Not "_loop": aiortc tracks are pyee emitters, which keep their own _loop.
        self.owner_loop = asyncio.get_running_loop()
        self.frames_sent = 0

    def push(self, frame: av.VideoFrame) -> None:
        """Called on the event loop: replace the waiting frame (latest wins)."""
        self._latest = frame
        self._ready.set()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._ready.wait()
        self._ready.clear()
        frame = self._latest
        assert frame is not None
        self.frames_sent += 1
        return frame


class TrackSink:
    """A pipeline sink that converts frames to ``av.VideoFrame`` and feeds a
    :class:`SwappedVideoTrack` (called from the output thread; hands over thread-safely)."""

    name = "webrtc"

    def __init__(self, track: SwappedVideoTrack) -> None:
        self.track = track
        self.wants_stop = False
        self.frames_written = 0

    def send(self, frame: Frame) -> None:
        # The VP8 encoder wants I420; OpenCV converts RGB to it (BT.601 limited range, as
        # swscale does) in a third of the time of an rgb24 frame reformatted by the encoder.
        rgb = np.ascontiguousarray(frame.result)
        if rgb.shape[0] % 2 or rgb.shape[1] % 2:  # I420 needs even sides; rare, let PyAV pad
            video = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        else:
            yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).astype(np.uint8, copy=False)
            video = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        video.pts = round(frame.pts * 90000)
        video.time_base = VIDEO_TIME_BASE
        self.track.owner_loop.call_soon_threadsafe(self.track.push, video)
        self.frames_written += 1

    def close(self) -> None:
        pass


class DelayedAudioTrack(MediaStreamTrack):
    """Relays a remote audio track back, delayed by ``delay_ms()`` (the video's latency)."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack, delay_ms: Any) -> None:
        super().__init__()
        self.source = source
        self.delay_ms = delay_ms
        self._buffer: deque[tuple[float, av.AudioFrame]] = deque(maxlen=200)  # ~4 s at 20 ms

    async def recv(self) -> av.AudioFrame:
        while True:
            frame = await self.source.recv()
            assert isinstance(frame, av.AudioFrame)
            now = time.monotonic()
            self._buffer.append((now, frame))
            due, oldest = self._buffer[0]
            if now - due >= self.delay_ms() / 1000.0 or len(self._buffer) == self._buffer.maxlen:
                self._buffer.popleft()
                return oldest
