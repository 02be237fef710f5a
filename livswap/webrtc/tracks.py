"""Bridges between aiortc media tracks and the livswap pipeline.

``TrackReader`` takes the newest frame of a browser's incoming video track;
``SwappedVideoTrack`` is the outgoing track the swapped frames are sent on; and
``DelayedAudioTrack`` sends the browser's audio back delayed by the video's processing time, so
sound and picture stay in sync.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from livswap.errors import StreamEnded
from livswap.worker.client import VIDEO_TIME_BASE

__all__ = ["VIDEO_TIME_BASE", "DelayedAudioTrack", "SwappedVideoTrack", "TrackReader"]

log = logging.getLogger(__name__)


class TrackReader:
    """The newest decoded frame of a remote peer's video track.

    aiortc queues decoded frames without bound; when the reader falls behind, it takes the
    newest and counts the rest as skipped (latest frame wins here too, as between stages).
    """

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.skipped = 0
        self.last_received = time.monotonic()

    async def recv(self) -> av.VideoFrame:
        try:
            frame = await self.track.recv()
        except MediaStreamError:
            raise StreamEnded("browser track ended") from None
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
        return frame


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
        """Replace the waiting frame (latest wins); on the event loop."""
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
