"""The server's side of the swap worker: :class:`SwapWorker` runs the process (and restarts
it, reopening the streams, if it dies) and :class:`RemoteStream` feeds one stream's frames
through it.

``livswap serve`` keeps aiortc (ICE, DTLS, RTP, the video codecs) in the server process and runs
each stream's pipeline in the worker: in one process the two take turns on the GIL, and on a
2-core machine the swap's many short OpenCV calls queued behind aiortc's Python until the frame
rate fell under the camera's. Apart, they overlap. Nothing here is WebRTC-specific: any set of
streams of decoded video frames (``benchmarks/streams.py`` feeds a clip) goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import itertools
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import av
import numpy as np

from livswap.config import Config
from livswap.errors import EngineError
from livswap.frame import Image
from livswap.label import DisclosureLabel
from livswap.stats import PipelineStats
from livswap.worker.child import worker_main
from livswap.worker.messages import (
    CloseStream,
    FrameIn,
    FrameOut,
    OpenStream,
    Prepare,
    Request,
    Stats,
    StreamFailed,
)
from livswap.worker.ring import RING_SLOTS, FrameRing, YuvImage, i420_to_rgb, rgb_to_i420

__all__ = ["VIDEO_TIME_BASE", "RemoteStream", "SwapWorker", "WorkerUnavailable", "to_i420"]

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)  # RTP's video clock
_RESTART_DELAY_S = 1.0  # between a crash and the new worker (a crash loop stays cheap)


class WorkerUnavailable(RuntimeError):
    """The worker process is gone or did not answer in time."""


class SwapWorker:
    """The server's handle on the worker process. Thread-safe.

    Requests are awaited (:meth:`request`); frames are sent without waiting (:meth:`send_frame`)
    and their results arrive at the handler each stream registered. If the process dies it is
    started again after a second and the registered streams are reopened in it.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._pending: dict[int, Future[Any]] = {}
        self._handlers: dict[int, Callable[[FrameOut | StreamFailed], None]] = {}
        self._open: dict[int, OpenStream] = {}
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        return self._conn is not None

    @property
    def pid(self) -> int | None:
        """The worker process's id while it runs (for monitoring, and the crash test)."""
        process = self._process
        return process.pid if process is not None and self._conn is not None else None

    def start(self) -> None:
        """Start the process (a second or two of imports) and its reply reader."""
        with self._lock:
            if self._closed:
                raise WorkerUnavailable("the swap worker was shut down")
            if self._conn is not None:
                return
            context = multiprocessing.get_context("spawn")  # never fork a process with threads
            ours, theirs = context.Pipe()
            process = context.Process(
                target=worker_main, args=(self.cfg, theirs), name="livswap-swap-worker"
            )
            process.daemon = True
            process.start()
            theirs.close()
            self._process, self._conn = process, ours
            reopen = list(self._open.values())
        threading.Thread(
            target=self._read, args=(ours, process), name="livswap-worker-reader", daemon=True
        ).start()
        for message in reopen:  # after a restart: the streams carry on in the new process
            self._submit(message)
        log.debug("SwapWorker: started process %s", process.pid)

    def _read(self, conn: Connection, process: BaseProcess) -> None:
        while True:
            try:
                envelope = conn.recv()
            except (EOFError, OSError):
                break
            request_id, *rest = envelope
            if request_id is None:
                output: FrameOut | StreamFailed = rest[0]
                handler = self._handlers.get(output.stream)
                if handler is not None:
                    handler(output)
                continue
            with self._lock:
                future = self._pending.pop(request_id, None)
            if future is None or future.done():
                continue
            result, error = rest
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(EngineError(error))
        process.join(timeout=2.0)
        with self._lock:
            self._conn = None
            orphans = list(self._pending.values())
            self._pending.clear()
            closed = self._closed
        for future in orphans:
            if not future.done():
                future.set_exception(
                    WorkerUnavailable(f"the swap worker stopped (exit code {process.exitcode})")
                )
        if not closed:
            log.warning(
                "SwapWorker: the worker process stopped (exit code %s); starting a new one",
                process.exitcode,
            )
            time.sleep(_RESTART_DELAY_S)
            with contextlib.suppress(WorkerUnavailable):
                self.start()

    def _submit(self, message: Request) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            conn = self._conn
            if conn is None:
                future.set_exception(WorkerUnavailable("the swap worker is not running"))
                return future
            request_id = next(self._ids)
            self._pending[request_id] = future
            try:
                conn.send((request_id, message))
            except (OSError, ValueError) as exc:
                self._pending.pop(request_id, None)
                future.set_exception(WorkerUnavailable(f"the swap worker is gone: {exc!r}"))
        return future

    async def request(self, message: Request) -> Any:
        """Send a request and wait for its answer (EngineError carries the worker's reason)."""
        if not self.running:
            await asyncio.get_running_loop().run_in_executor(None, self.start)
        return await asyncio.wrap_future(self._submit(message))

    async def stats(self) -> dict[str, Any]:
        """Per neural engine in the worker: generator calls by batch size, faces generated."""
        report: dict[str, Any] = await self.request(Stats())
        return report

    async def prepare(self, source_id: str, engine: str, image: Image) -> None:
        await self.request(Prepare(source_id, engine, image))

    async def open_stream(
        self, message: OpenStream, handler: Callable[[FrameOut | StreamFailed], None]
    ) -> None:
        self._handlers[message.stream] = handler
        try:
            await self.request(message)
        except BaseException:
            self._handlers.pop(message.stream, None)
            raise
        self._open[message.stream] = message

    def close_stream(self, stream: int) -> None:
        self._handlers.pop(stream, None)
        if self._open.pop(stream, None) is not None:
            self._submit(CloseStream(stream))

    def send_frame(self, message: FrameIn) -> bool:
        """Hand a frame to the worker; False when it is not running (the caller passes it on)."""
        conn = self._conn
        if conn is None:
            return False
        with self._lock:
            try:
                conn.send((None, message))
            except (OSError, ValueError):
                return False
        return True

    def close(self) -> None:
        """Stop the process (politely, then by force); whatever still waits fails."""
        with self._lock:
            self._closed = True
            conn, process = self._conn, self._process
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        if process is not None:
            process.join(timeout=5.0)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5.0)
        if conn is not None:
            conn.close()


def to_i420(video: av.VideoFrame) -> YuvImage:
    """A decoded frame as one I420 array, cropped to even sides (I420 needs them)."""
    width, height = video.width - video.width % 2, video.height - video.height % 2
    if video.format.name != "yuv420p" or (width, height) != (video.width, video.height):
        video = video.reformat(width=width, height=height, format="yuv420p")
    return np.asarray(video.to_ndarray(format="yuv420p"), np.uint8)


class RemoteStream:
    """One browser's video through the worker: frames in, swapped frames out, counted.

    ``deliver`` gets each swapped frame (on the event loop). While the worker is not running
    the frames pass through unswapped but labelled, and are counted as failed.
    """

    def __init__(
        self,
        worker: SwapWorker,
        stream: int,
        open_message: OpenStream,
        deliver: Callable[[av.VideoFrame], None],
        label: DisclosureLabel | None,
    ) -> None:
        self.worker = worker
        self.stream = stream
        self.open_message = open_message
        self.deliver = deliver
        self.label = label
        self.stats = PipelineStats()
        self._loop = asyncio.get_running_loop()
        self._rings: list[FrameRing] = []
        self._rings_lock = threading.Lock()  # the reader thread reads rings the loop may close
        self._in: FrameRing | None = None
        self._out: FrameRing | None = None
        self._seq = 0
        self._passed_through = 0
        self._failed: str | None = None  # why the worker gave up on this stream, if it did

    async def open(self) -> None:
        """Start the stream's pipeline in the worker (EngineError: the source photo will not do)."""
        await self.worker.open_stream(self.open_message, self._on_output)

    def send(self, video: av.VideoFrame) -> None:
        """Hand one decoded browser frame to the worker (on the event loop)."""
        self.stats.record_in()
        captured_ns = time.monotonic_ns()
        yuv = to_i420(video)
        height, width = yuv.shape[0] * 2 // 3, yuv.shape[1]
        seq, self._seq = self._seq, self._seq + 1
        if video.pts is not None and video.time_base:
            pts = float(video.pts * video.time_base)
        else:
            pts = seq / 30.0
        if self._in is None or self._out is None or not self._in.fits(height, width):
            self._in = FrameRing.create(height, width, RING_SLOTS)
            self._out = FrameRing.create(height, width, RING_SLOTS)
            with self._rings_lock:  # old rings stay mapped until the stream closes
                self._rings += [self._in, self._out]
        self._in.write(seq, yuv)
        message = FrameIn(
            stream=self.stream,
            seq=seq,
            ring_in=self._in.name,
            ring_out=self._out.name,
            ring_height=self._in.height,
            ring_width=self._in.width,
            height=height,
            width=width,
            pts=pts,
            captured_ns=captured_ns,
        )
        if self._failed is not None or not self.worker.send_frame(message):
            self._pass_through(yuv, video, captured_ns)

    def _pass_through(self, yuv: YuvImage, video: av.VideoFrame, captured_ns: int) -> None:
        rgb = i420_to_rgb(yuv)
        if self.label is not None:
            self.label.draw(rgb)
        out = av.VideoFrame.from_ndarray(rgb_to_i420(rgb), format="yuv420p")
        out.pts, out.time_base = video.pts, video.time_base
        self._passed_through += 1
        self.stats.frames_failed += 1
        self._record(out, captured_ns, {}, frozenset())

    def _on_output(self, output: FrameOut | StreamFailed) -> None:
        """A swapped frame is ready (called on the worker reader thread)."""
        if isinstance(output, StreamFailed):
            log.warning(
                "Stream(%d): the swap stopped (%s); passing the video through, labelled",
                self.stream,
                output.error,
            )
            self._failed = output.error
            return
        with self._rings_lock:
            ring = next((r for r in self._rings if r.name == output.ring_out), None)
            yuv = ring.read(output.seq, output.height, output.width) if ring is not None else None
        if yuv is None:
            return  # overwritten already (or the stream just closed): counted with the drops
        video = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        video.pts = round(output.pts * 90000)
        video.time_base = VIDEO_TIME_BASE
        self._loop.call_soon_threadsafe(self._arrived, video, output)

    def _arrived(self, video: av.VideoFrame, output: FrameOut) -> None:
        self.stats.dropped_by_slot["worker"] = output.dropped
        self.stats.frames_failed = self._passed_through + output.failed
        self._record(video, output.captured_ns, output.timings_ms, output.notes)

    def _record(
        self,
        video: av.VideoFrame,
        captured_ns: int,
        timings_ms: dict[str, float],
        notes: frozenset[str],
    ) -> None:
        self.deliver(video)
        self.stats.record_out((time.monotonic_ns() - captured_ns) / 1e6, timings_ms)
        if "no_face" in notes:
            self.stats.frames_no_face += 1

    def close(self) -> None:
        """Stop the stream's pipeline in the worker and free the shared memory."""
        self.worker.close_stream(self.stream)
        with self._rings_lock:
            rings, self._rings = self._rings, []
        self._in = self._out = None
        for ring in rings:
            ring.close()
