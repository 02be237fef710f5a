"""The swap worker process: it owns the engines and runs every stream's pipeline.

One worker holds one instance of each engine in use and serves every stream with it (no
per-stream model copies; a neural engine batches all streams' faces through one generator).
Each stream has its own pipeline (tracking, engine stream, compose, label): by default its stages
run in turn in one thread (on 2 cores, stages in threads of their own only compete with the rest
of the machine), or a thread per stage with ``[serve] overlap_stages``. Frames arrive as I420 in
shared-memory rings (:mod:`livswap.worker.ring`) and the newest one wins, so a slow swap never
builds a backlog. The client side is :mod:`livswap.worker.client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from livswap.capture.base import SourceInfo
from livswap.config import Config
from livswap.engine import Engine, Identity, create_engine
from livswap.errors import EngineError, LivswapError
from livswap.frame import Frame, Image
from livswap.output.base import Outcome
from livswap.pipeline import Pipeline, serial_stage
from livswap.runloop import run_async
from livswap.slot import LatestSlot
from livswap.stats import PipelineStats
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
from livswap.worker.ring import RING_SLOTS, FrameRing, i420_to_rgb, rgb_to_i420

__all__ = ["worker_main"]

log = logging.getLogger(__name__)


class _StreamSource:
    """A stream's frames as they arrive from the server: the newest one wins."""

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
class _WorkerStream:
    source: _StreamSource
    pipeline: Pipeline
    task: asyncio.Task[PipelineStats]
    rings: dict[str, FrameRing] = field(default_factory=dict)
    # Rings only grow, so the newest output ring fits every frame still in the pipeline.
    out_ring: str = ""
    torn: int = 0  # frames whose slot was rewritten before the reader copied them


class _StreamSink:
    """Writes a stream's swapped frames into its output ring and tells the server."""

    name = "swap-worker"
    wants_stop = False

    def __init__(self, worker: _Worker, stream: int) -> None:
        self.worker, self.stream = worker, stream

    def send(self, frame: Frame) -> None:
        state = self.worker.streams.get(self.stream)
        if state is None:
            return
        yuv = rgb_to_i420(frame.result)
        with self.worker.rings_lock:
            ring = state.rings.get(state.out_ring)
            if ring is None:  # the stream is closing
                return
            ring.write(frame.seq, yuv)
        self.worker.send(
            FrameOut(
                stream=self.stream,
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

    def close(self, outcome: Outcome = "complete") -> None:
        pass


def held_bytes(value: object, depth: int = 0) -> int:
    """Roughly the memory an object holds in arrays and tensors (walking its fields, lists and
    dicts a few levels deep); what a cache of identities is bounded by."""
    import dataclasses

    import numpy as np
    import torch

    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, torch.Tensor):
        return int(value.element_size() * value.nelement())
    if depth > 4:
        return 0
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        parts: Any = (getattr(value, f.name) for f in dataclasses.fields(value))
    elif isinstance(value, dict):
        parts = value.values()
    elif isinstance(value, list | tuple):
        parts = value
    elif hasattr(value, "__dict__"):
        parts = vars(value).values()
    else:
        return 0
    return sum(held_bytes(part, depth + 1) for part in parts)


class _Worker:
    """Everything the worker process holds: engines, identities and the streams' pipelines."""

    def __init__(self, cfg: Config, conn: Connection) -> None:
        self.cfg = cfg
        self.conn = conn
        self.engines: dict[str, Engine] = {}
        self.identities: OrderedDict[tuple[str, str], Identity] = OrderedDict()
        self._identity_bytes: dict[tuple[str, str], int] = {}
        self.streams: dict[int, _WorkerStream] = {}
        self._send_lock = threading.Lock()  # the streams' output threads and the loop all send
        self._setup_lock = threading.Lock()  # engine creation and identities, off the loop
        self.rings_lock = threading.Lock()  # rings are attached, written and closed by 3 threads
        self._done = asyncio.Event()

    def send(self, message: Any) -> None:
        with self._send_lock, contextlib.suppress(OSError, ValueError):
            self.conn.send(message if isinstance(message, tuple) else (None, message))

    # -- setup (in executor threads: engines load and identities are prepared off the loop)
    def engine(self, name: str) -> Engine:
        """The one instance of engine ``name`` that every stream shares (built on first use)."""
        with self._setup_lock:
            if name not in self.engines:
                self.engines[name] = create_engine(self.cfg.replace({"engine.name": name}))
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
            if key not in self._identity_bytes:
                self._identity_bytes[key] = held_bytes(cached)
            # Bounded like the server's photos, in count and in bytes (an identity holds
            # textures and maps the size of its photo): many large uploads cannot fill memory.
            budget = self.cfg.serve.max_sources_mb * 2**20
            while len(self.identities) > self.cfg.serve.max_sources or (
                len(self.identities) > 1 and sum(self._identity_bytes.values()) > budget
            ):
                oldest, _ = self.identities.popitem(last=False)
                self._identity_bytes.pop(oldest, None)
        return cached

    # -- requests (on the loop) -----------------------------------------------------------
    async def handle(self, request_id: int, message: Request) -> None:
        loop = asyncio.get_running_loop()
        result: Any = None
        try:
            if isinstance(message, Prepare):
                await loop.run_in_executor(
                    None, self.identity, message.engine, message.source_id, message.image
                )
            elif isinstance(message, OpenStream):
                await self.open_stream(message)
            elif isinstance(message, CloseStream):
                await self.close_stream(message.stream)
            elif isinstance(message, Stats):
                result = self.stats()
            self.send((request_id, result, None))
        except Exception as exc:  # every failure goes back to the caller, named
            error = str(exc) if isinstance(exc, LivswapError) else repr(exc)
            self.send((request_id, None, error))

    def stats(self) -> dict[str, Any]:
        """Generator calls per batch size and faces generated, per neural engine."""
        report: dict[str, Any] = {}
        for name, engine in self.engines.items():
            batcher = getattr(engine, "batcher", None)
            if batcher is not None:
                stats = batcher.stats
                report[name] = {
                    "batch_sizes": {str(k): v for k, v in sorted(stats.calls.items())},
                    "faces": stats.faces,
                    "generator_ms": round(stats.generator_ms, 1),
                }
        return report

    async def open_stream(self, message: OpenStream) -> None:
        from livswap.session import build_stages

        loop = asyncio.get_running_loop()
        identity = await loop.run_in_executor(
            None, self.identity, message.engine, message.source_id, message.image
        )
        engine = await loop.run_in_executor(None, self.engine, message.engine)
        await self.close_stream(message.stream)  # reopened: start afresh
        stages = build_stages(self.cfg, engine, identity)
        if not self.cfg.serve.overlap_stages:
            stages = [serial_stage(stages, "+".join(stage.name for stage in stages))]
        source = _StreamSource()
        pipeline = Pipeline(source, stages, [_StreamSink(self, message.stream)], lossless=False)
        task = asyncio.create_task(pipeline.run(), name=f"stream-{message.stream}")
        task.add_done_callback(lambda done: self._pipeline_ended(message.stream, done))
        self.streams[message.stream] = _WorkerStream(source=source, pipeline=pipeline, task=task)

    def _pipeline_ended(self, stream_id: int, task: asyncio.Task[PipelineStats]) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.task is not task or task.cancelled():
            return  # closed on purpose
        exc = task.exception()
        if exc is not None:
            error = str(exc) if isinstance(exc, LivswapError) else repr(exc)
            self.send(StreamFailed(stream_id, error))

    async def close_stream(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        stream.source.close()
        stream.pipeline.stop()
        with contextlib.suppress(Exception):
            await stream.task
        with self.rings_lock:
            for ring in stream.rings.values():
                ring.close()
            stream.rings.clear()

    # -- frames (on the reader thread) --------------------------------------------------------
    def frame_in(self, message: FrameIn, loop: asyncio.AbstractEventLoop) -> None:
        stream = self.streams.get(message.stream)
        if stream is None:
            return
        with self.rings_lock:
            rings = stream.rings
            for name in (message.ring_in, message.ring_out):
                if name not in rings:
                    rings[name] = FrameRing.attach(
                        name, message.ring_height, message.ring_width, RING_SLOTS
                    )
            yuv = rings[message.ring_in].read(message.seq, message.height, message.width)
            if yuv is None:  # overwritten before we got to it
                stream.torn += 1
                return
            stream.out_ring = message.ring_out
        frame = Frame(
            image=i420_to_rgb(yuv),
            seq=message.seq,
            captured_ns=message.captured_ns,
            pts=message.pts,
        )
        loop.call_soon_threadsafe(stream.source.offer, frame)

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
            for stream_id in list(self.streams):
                await self.close_stream(stream_id)


def worker_main(cfg: Config, conn: Connection) -> None:
    """Entry point of the worker process: serve the server until the pipe closes."""

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    logging.basicConfig(
        level=cfg.pipeline.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    run_async(lambda: _Worker(cfg, conn).run())
