"""The swap worker: one process that owns the engines and runs every browser peer's pipeline.

``livswap serve`` keeps aiortc (ICE, DTLS, RTP, the video codecs) in the server process and runs
each peer's :class:`~livswap.pipeline.Pipeline` (tracking, engine, compose, label) here: by
default the stages run in turn in one thread (on 2 cores, stages in threads of their own only
compete with the browser and the network for the same cores), or a thread per stage with
``[serve] overlap_stages``. Both sides are busy on every frame; in one process
they take turns on the GIL, and on a 2-core machine the swap's many short OpenCV calls queued
behind aiortc's Python until the frame rate fell under the camera's. Apart, they overlap.

One worker holds one instance of each engine in use and serves every peer with it (no per-peer
model copies); each peer has its own tracker and compositor state. Frames cross as I420 in
shared-memory rings (:mod:`livswap.webrtc.ring`); the pipe carries small messages: requests
(prepare a source, open or close a peer) answered by id, and one message per frame each way.
The newest frame wins on the worker's side too, so a slow swap never builds a backlog.

Server side, :class:`SwapWorker` runs the process (and restarts it, reopening the peers, if it
dies) and :class:`RemotePeer` feeds one browser's frames through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import av
import numpy as np

from livswap.capture.base import SourceInfo
from livswap.config import Config
from livswap.engine import Engine, Identity, create_engine
from livswap.errors import EngineError, LivswapError
from livswap.frame import Frame, Image
from livswap.label import DisclosureLabel
from livswap.pipeline import Pipeline, serial_stage
from livswap.slot import LatestSlot
from livswap.stats import PipelineStats
from livswap.webrtc.ring import FrameRing, YuvImage, i420_to_rgb, rgb_to_i420
from livswap.webrtc.tracks import VIDEO_TIME_BASE

__all__ = ["RemotePeer", "SwapWorker", "WorkerUnavailable"]

log = logging.getLogger(__name__)

_RING_SLOTS = 4  # a slot is rewritten 4 frames (~130 ms) later; the reader copies at once
_RESTART_DELAY_S = 1.0  # between a crash and the new worker (a crash loop stays cheap)


class WorkerUnavailable(RuntimeError):
    """The worker process is gone or did not answer in time."""


# -- messages ------------------------------------------------------------------------------
# Requests travel as (id, message) and are answered (id, result, error); frames travel as
# (None, message) both ways and are not answered.
@dataclass(frozen=True)
class _Prepare:
    """Cache the identity of ``image`` for ``engine`` (checks the photo has a usable face)."""

    source_id: str
    engine: str
    image: Image


@dataclass(frozen=True)
class _OpenPeer:
    """Start a peer's pipeline (tracker, shared engine, compositor) around its identity."""

    peer: int
    engine: str
    source_id: str | None
    image: Image | None


@dataclass(frozen=True)
class _ClosePeer:
    peer: int


@dataclass(frozen=True)
class _FrameIn:
    """Frame ``seq`` of ``peer`` waits in ring ``ring_in``; its result goes to ``ring_out``."""

    peer: int
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
class _FrameOut:
    """The swapped frame ``seq`` of ``peer`` is in ring ``ring_out``; counters are cumulative."""

    peer: int
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
class _PeerFailed:
    """A peer's pipeline stopped on an error (for example, the engine failed for good)."""

    peer: int
    error: str


_Request = _Prepare | _OpenPeer | _ClosePeer


# -- the worker process ----------------------------------------------------------------------
class _SharedEngine:
    """One engine for every peer: their stage threads (and preparation) take turns."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = engine.name
        self.needs_faces = engine.needs_faces
        self._lock = threading.Lock()

    def prepare(self, sources: Sequence[Image], names: Sequence[str] | None = None) -> Identity:
        with self._lock:
            return self.engine.prepare(sources, names)

    def swap(self, frame: Frame, identity: Identity) -> None:
        with self._lock:
            self.engine.swap(frame, identity)


class _PeerSource:
    """A peer's frames as they arrive from the server: the newest one wins."""

    info = SourceInfo(
        width=640, height=480, fps=30.0, frame_count=None, live=True, description="browser camera"
    )

    def __init__(self) -> None:
        self.slot: LatestSlot[Frame] = LatestSlot("received")

    def offer(self, frame: Frame) -> None:
        if not self.slot.closed:
            self.slot.put_nowait(frame)

    async def recv(self) -> Frame:
        return await self.slot.get()

    def close(self) -> None:
        self.slot.close()


@dataclass
class _WorkerPeer:
    source: _PeerSource
    pipeline: Pipeline
    task: asyncio.Task[PipelineStats]
    rings: dict[str, FrameRing] = field(default_factory=dict)
    # Rings only grow, so the newest output ring fits every frame still in the pipeline.
    out_ring: str = ""
    torn: int = 0  # frames whose slot was rewritten before the reader copied them


class _PeerSink:
    """Writes a peer's swapped frames into its output ring and tells the server."""

    name = "swap-worker"
    wants_stop = False

    def __init__(self, worker: _Worker, peer: int) -> None:
        self.worker, self.peer = worker, peer

    def send(self, frame: Frame) -> None:
        state = self.worker.peers.get(self.peer)
        if state is None:
            return
        yuv = rgb_to_i420(frame.result)
        with self.worker.rings_lock:
            ring = state.rings.get(state.out_ring)
            if ring is None:  # the peer is closing
                return
            ring.write(frame.seq, yuv)
        self.worker.send(
            _FrameOut(
                peer=self.peer,
                seq=frame.seq,
                ring_out=ring.name,
                height=frame.height,
                width=frame.width,
                pts=frame.pts,
                captured_ns=frame.captured_ns,
                timings_ms=dict(frame.timings_ms),
                notes=frozenset(frame.notes),
                dropped=state.torn + state.source.slot.dropped + state.pipeline.dropped,
                failed=state.pipeline.stats.frames_failed,
            )
        )

    def close(self) -> None:
        pass


class _Worker:
    """Everything the worker process holds: engines, identities and the peers' pipelines."""

    def __init__(self, cfg: Config, conn: Connection) -> None:
        self.cfg = cfg
        self.conn = conn
        self.engines: dict[str, _SharedEngine] = {}
        self.identities: OrderedDict[tuple[str, str], Identity] = OrderedDict()
        self.peers: dict[int, _WorkerPeer] = {}
        self._send_lock = threading.Lock()  # the peers' output threads and the loop all send
        self._setup_lock = threading.Lock()  # engine creation and identities, off the loop
        self.rings_lock = threading.Lock()  # rings are attached, written and closed by 3 threads
        self._done = asyncio.Event()

    def send(self, message: Any) -> None:
        with self._send_lock, contextlib.suppress(OSError, ValueError):
            self.conn.send(message if isinstance(message, tuple) else (None, message))

    # -- setup (in executor threads: engines load and identities are prepared off the loop)
    def engine(self, name: str) -> _SharedEngine:
        with self._setup_lock:
            if name not in self.engines:
                engine = create_engine(self.cfg.replace({"engine.name": name}))
                self.engines[name] = _SharedEngine(engine)
            return self.engines[name]

    def identity(self, engine_name: str, source_id: str | None, image: Image | None) -> Identity:
        engine = self.engine(engine_name)
        if source_id is None:
            return engine.prepare([])
        key = (source_id, engine_name)
        with self._setup_lock:
            cached = self.identities.get(key)
        if cached is None:
            if image is None:
                raise EngineError(f"unknown source {source_id!r}: upload the photo again")
            cached = engine.prepare([image], ["source photo"])
        with self._setup_lock:
            self.identities[key] = cached
            self.identities.move_to_end(key)
            while len(self.identities) > self.cfg.serve.max_sources:
                self.identities.popitem(last=False)
        return cached

    # -- requests (on the loop) -----------------------------------------------------------
    async def handle(self, request_id: int, message: _Request) -> None:
        loop = asyncio.get_running_loop()
        try:
            if isinstance(message, _Prepare):
                await loop.run_in_executor(
                    None, self.identity, message.engine, message.source_id, message.image
                )
            elif isinstance(message, _OpenPeer):
                await self.open_peer(message)
            elif isinstance(message, _ClosePeer):
                await self.close_peer(message.peer)
            self.send((request_id, None, None))
        except Exception as exc:  # every failure goes back to the caller, named
            error = str(exc) if isinstance(exc, LivswapError) else repr(exc)
            self.send((request_id, None, error))

    async def open_peer(self, message: _OpenPeer) -> None:
        from livswap.session import build_stages

        loop = asyncio.get_running_loop()
        identity = await loop.run_in_executor(
            None, self.identity, message.engine, message.source_id, message.image
        )
        engine = await loop.run_in_executor(None, self.engine, message.engine)
        await self.close_peer(message.peer)  # reopened: start afresh
        stages = build_stages(self.cfg, engine, identity, track_id_base=message.peer * 1_000_000)
        if not self.cfg.serve.overlap_stages:
            stages = [serial_stage(stages, "+".join(stage.name for stage in stages))]
        source = _PeerSource()
        pipeline = Pipeline(source, stages, [_PeerSink(self, message.peer)], lossless=False)
        task = asyncio.create_task(pipeline.run(), name=f"peer-{message.peer}")
        task.add_done_callback(lambda done: self._pipeline_ended(message.peer, done))
        self.peers[message.peer] = _WorkerPeer(source=source, pipeline=pipeline, task=task)

    def _pipeline_ended(self, peer_id: int, task: asyncio.Task[PipelineStats]) -> None:
        peer = self.peers.get(peer_id)
        if peer is None or peer.task is not task or task.cancelled():
            return  # closed on purpose
        exc = task.exception()
        if exc is not None:
            error = str(exc) if isinstance(exc, LivswapError) else repr(exc)
            self.send(_PeerFailed(peer_id, error))

    async def close_peer(self, peer_id: int) -> None:
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return
        peer.source.close()
        peer.pipeline.stop()
        with contextlib.suppress(Exception):
            await peer.task
        with self.rings_lock:
            for ring in peer.rings.values():
                ring.close()
            peer.rings.clear()

    # -- frames (on the reader thread) --------------------------------------------------------
    def frame_in(self, message: _FrameIn, loop: asyncio.AbstractEventLoop) -> None:
        peer = self.peers.get(message.peer)
        if peer is None:
            return
        with self.rings_lock:
            rings = peer.rings
            for name in (message.ring_in, message.ring_out):
                if name not in rings:
                    rings[name] = FrameRing.attach(
                        name, message.ring_height, message.ring_width, _RING_SLOTS
                    )
            yuv = rings[message.ring_in].read(message.seq, message.height, message.width)
            if yuv is None:  # overwritten before we got to it
                peer.torn += 1
                return
            peer.out_ring = message.ring_out
        frame = Frame(
            image=i420_to_rgb(yuv),
            seq=message.seq,
            captured_ns=message.captured_ns,
            pts=message.pts,
        )
        loop.call_soon_threadsafe(peer.source.offer, frame)

    def read(self, loop: asyncio.AbstractEventLoop) -> None:
        """The reader thread: blocking reads (uvloop makes a watched pipe non-blocking, which
        would cut a large message short)."""
        try:
            while True:
                envelope = self.conn.recv()
                if envelope is None:
                    break
                request_id, message = envelope
                if request_id is None:
                    self.frame_in(message, loop)
                else:
                    asyncio.run_coroutine_threadsafe(self.handle(request_id, message), loop)
        except (EOFError, OSError):
            pass
        loop.call_soon_threadsafe(self._done.set)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self.read, args=(loop,), name="livswap-worker-reader", daemon=True
        ).start()
        try:
            await self._done.wait()
        finally:
            for peer_id in list(self.peers):
                await self.close_peer(peer_id)


def _worker_main(cfg: Config, conn: Connection) -> None:
    """Entry point of the worker process: serve the server until the pipe closes."""
    from livswap.cli import run_async

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    logging.basicConfig(
        level=cfg.pipeline.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    run_async(lambda: _Worker(cfg, conn).run())


# -- the server side -------------------------------------------------------------------------
class SwapWorker:
    """The server's handle on the worker process. Thread-safe.

    Requests are awaited (:meth:`request`); frames are sent without waiting (:meth:`send_frame`)
    and their results arrive at the handler each peer registered. If the process dies it is
    started again after a second and the registered peers are reopened in it.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._pending: dict[int, Future[Any]] = {}
        self._handlers: dict[int, Callable[[_FrameOut | _PeerFailed], None]] = {}
        self._open: dict[int, _OpenPeer] = {}
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
                target=_worker_main, args=(self.cfg, theirs), name="livswap-swap-worker"
            )
            process.daemon = True
            process.start()
            theirs.close()
            self._process, self._conn = process, ours
            reopen = list(self._open.values())
        threading.Thread(
            target=self._read, args=(ours, process), name="livswap-worker-reader", daemon=True
        ).start()
        for message in reopen:  # after a restart: the peers carry on in the new process
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
                output: _FrameOut | _PeerFailed = rest[0]
                handler = self._handlers.get(output.peer)
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

    def _submit(self, message: _Request) -> Future[Any]:
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

    async def request(self, message: _Request) -> None:
        """Send a request and wait for it (EngineError carries the worker's reason)."""
        if not self.running:
            await asyncio.get_running_loop().run_in_executor(None, self.start)
        await asyncio.wrap_future(self._submit(message))

    async def prepare(self, source_id: str, engine: str, image: Image) -> None:
        await self.request(_Prepare(source_id, engine, image))

    async def open_peer(
        self, message: _OpenPeer, handler: Callable[[_FrameOut | _PeerFailed], None]
    ) -> None:
        self._handlers[message.peer] = handler
        try:
            await self.request(message)
        except BaseException:
            self._handlers.pop(message.peer, None)
            raise
        self._open[message.peer] = message

    def close_peer(self, peer: int) -> None:
        self._handlers.pop(peer, None)
        if self._open.pop(peer, None) is not None:
            self._submit(_ClosePeer(peer))

    def send_frame(self, message: _FrameIn) -> bool:
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


class RemotePeer:
    """One browser's video through the worker: frames in, swapped frames out, counted.

    ``deliver`` gets each swapped frame (on the event loop). While the worker is not running
    the frames pass through unswapped but labelled, and are counted as failed.
    """

    def __init__(
        self,
        worker: SwapWorker,
        peer: int,
        open_message: _OpenPeer,
        deliver: Callable[[av.VideoFrame], None],
        label: DisclosureLabel | None,
    ) -> None:
        self.worker = worker
        self.peer = peer
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
        self._failed: str | None = None  # why the worker gave up on this peer, if it did

    async def open(self) -> None:
        """Start the peer's pipeline in the worker (EngineError: the source photo will not do)."""
        await self.worker.open_peer(self.open_message, self._on_output)

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
            self._in = FrameRing.create(height, width, _RING_SLOTS)
            self._out = FrameRing.create(height, width, _RING_SLOTS)
            with self._rings_lock:  # old rings stay mapped until the peer closes
                self._rings += [self._in, self._out]
        self._in.write(seq, yuv)
        message = _FrameIn(
            peer=self.peer,
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

    def _on_output(self, output: _FrameOut | _PeerFailed) -> None:
        """A swapped frame is ready (called on the worker reader thread)."""
        if isinstance(output, _PeerFailed):
            log.warning(
                "Peer(%d): the swap stopped (%s); passing the video through, labelled",
                self.peer,
                output.error,
            )
            self._failed = output.error
            return
        with self._rings_lock:
            ring = next((r for r in self._rings if r.name == output.ring_out), None)
            yuv = ring.read(output.seq, output.height, output.width) if ring is not None else None
        if yuv is None:
            return  # overwritten already (or the peer just closed): counted with the drops
        video = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        video.pts = round(output.pts * 90000)
        video.time_base = VIDEO_TIME_BASE
        self._loop.call_soon_threadsafe(self._arrived, video, output)

    def _arrived(self, video: av.VideoFrame, output: _FrameOut) -> None:
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
        """Stop the peer's pipeline in the worker and free the shared memory."""
        self.worker.close_peer(self.peer)
        with self._rings_lock:
            rings, self._rings = self._rings, []
        self._in = self._out = None
        for ring in rings:
            ring.close()
