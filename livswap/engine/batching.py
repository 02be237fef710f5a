"""Batched generation: the face crops of every stream that are ready at the same moment go
through the generator in one call.

One :class:`BatchedGenerator` belongs to one neural engine and serves all of its streams (every
browser peer of ``livswap serve``, or the several faces of one camera frame). Streams submit
their faces and get futures; one thread runs the generator, so a compiled backend (CUDA graphs,
TensorRT, ONNX Runtime) is only ever called from one thread.

When to run: as soon as every stream that is currently sending frames has submitted, or the
batch is full, or the batch has waited ``[engine] batch_wait`` of a frame interval since it could
have started: latency stays bounded, and a lone stream never waits. The frame interval is the
camera's, or the streams' own time between frames where a slow generator lets fewer through
(each stream then waits for its result before its next frame, and a wait of a camera interval
would only ever catch the stream that is already there).
Batches are padded up to fixed buckets (1, 2, 4, 8, 16, 32) so compiled backends build one
specialisation per bucket, lazily, instead of one per count.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

__all__ = ["BUCKETS", "BatchedGenerator", "bucket_for"]

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16, 32)
# A stream that submitted nothing for this long is not waited for (a paused peer).
ACTIVE_WINDOW_S = 0.5

Generator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bucket_for(count: int) -> int:
    """The smallest bucket that holds ``count`` faces (at most the largest bucket)."""
    return next((size for size in BUCKETS if size >= count), BUCKETS[-1])


@dataclass
class _Job:
    stream: int
    crop: torch.Tensor  # (3, S, S) in 0..1
    latent: torch.Tensor  # (L,)
    ready: torch.cuda.Event | None
    future: Future[torch.Tensor]
    submitted: float


@dataclass
class BatchStats:
    """Generator calls by bucket size, and how many real faces they carried."""

    calls: Counter[int] = field(default_factory=Counter)
    faces: int = 0
    generator_ms: float = 0.0


class BatchedGenerator:
    """Runs ``generator`` ((B, 3, S, S) crops in 0..1, (B, L) latents -> (B, 3, S, S)) on
    batches gathered across streams."""

    def __init__(
        self,
        generator: Generator,
        *,
        device: torch.device,
        max_batch: int = 32,
        frame_interval_s: float = 1 / 30,
        wait_fraction: float = 0.25,
        active_window_s: float = ACTIVE_WINDOW_S,
    ) -> None:
        self.generator = generator
        self.device = device
        # A batch never holds more than the largest bucket that max_batch allows.
        self.max_batch = max(b for b in BUCKETS if b <= max(max_batch, 1))
        self.frame_interval_s = frame_interval_s
        self.wait_fraction = max(0.0, wait_fraction)
        self.active_window_s = active_window_s
        self.stats = BatchStats()
        self._ids = itertools.count(1)
        self._lock = threading.Condition()
        self._jobs: list[_Job] = []
        self._last_submit: dict[int, float] = {}
        self._interval: dict[int, float] = {}  # each stream's smoothed time between frames
        self._free_since = 0.0  # when the generator last finished a batch
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None  # type: ignore[no-untyped-call]

    # -- streams -----------------------------------------------------------------------------
    def open_stream(self) -> int:
        """A new stream's id (its faces are batched with everyone else's)."""
        return next(self._ids)

    def close_stream(self, stream: int) -> None:
        with self._lock:
            self._last_submit.pop(stream, None)
            self._interval.pop(stream, None)
            self._lock.notify_all()

    def submit(
        self,
        stream: int,
        crops: torch.Tensor,
        latents: torch.Tensor,
        ready: torch.cuda.Event | None = None,
    ) -> list[Future[torch.Tensor]]:
        """Queue ``crops`` (N, 3, S, S) with their ``latents`` (N, L); one future per face,
        resolving to its swapped (3, S, S) crop. ``ready``: the CUDA event after which the
        crops exist (they were made on the stream's own CUDA stream)."""
        now = time.monotonic()
        futures: list[Future[torch.Tensor]] = []
        with self._lock:
            if self._closed:
                raise RuntimeError("the batched generator is closed")
            for crop, latent in zip(crops, latents, strict=True):
                future: Future[torch.Tensor] = Future()
                self._jobs.append(_Job(stream, crop, latent, ready, future, now))
                futures.append(future)
            last = self._last_submit.get(stream)
            if last is not None and now - last < 10.0:
                gap = now - last
                previous = self._interval.get(stream, gap)
                self._interval[stream] = 0.8 * previous + 0.2 * gap
            self._last_submit[stream] = now
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="livswap-generator", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()
        return futures

    def generate(self, stream: int, crops: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Submit and wait: the swapped crops (N, 3, S, S)."""
        return torch.stack([f.result() for f in self.submit(stream, crops, latents)])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    # -- the generator thread ------------------------------------------------------------------
    def _frame_interval(self) -> float:
        """The streams' time between frames: the camera's, or longer where the streams get
        fewer frames through (a generator slower than the camera)."""
        intervals = sorted(self._interval.values())
        typical = intervals[len(intervals) // 2] if intervals else 0.0
        return max(self.frame_interval_s, typical)

    def _everyone_in(self, now: float, interval: float) -> bool:
        """Every stream that sent a frame recently has a face waiting."""
        window = max(self.active_window_s, 3 * interval)
        waiting = {job.stream for job in self._jobs}
        active = {s for s, t in self._last_submit.items() if now - t < window}
        return active <= waiting

    def _next_batch(self) -> list[_Job] | None:
        with self._lock:
            while not self._jobs and not self._closed:
                self._lock.wait()
            if self._closed and not self._jobs:
                return None
            # The wait batching adds is counted from when the batch could have started: the
            # first face's arrival, or the generator coming free if it was busy then.
            interval = self._frame_interval()
            started = max(self._jobs[0].submitted, self._free_since)
            deadline = started + self.wait_fraction * interval
            while not self._closed:
                now = time.monotonic()
                if (
                    len(self._jobs) >= self.max_batch
                    or now >= deadline
                    or self._everyone_in(now, interval)
                ):
                    break
                self._lock.wait(timeout=deadline - now)
            batch, self._jobs = self._jobs[: self.max_batch], self._jobs[self.max_batch :]
            return batch

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                outputs = self._run(batch)
            except BaseException as exc:  # every waiting stream gets the error, none hangs
                for job in batch:
                    job.future.set_exception(exc)
                continue
            with self._lock:
                self._free_since = time.monotonic()
            for job, out in zip(batch, outputs, strict=True):
                job.future.set_result(out)

    def _run(self, batch: Sequence[_Job]) -> list[torch.Tensor]:
        count = len(batch)
        size = bucket_for(count)
        crops = [job.crop for job in batch]
        latents = [job.latent for job in batch]
        # Padding repeats the first face: a real input keeps every normalisation well defined.
        crops += [crops[0]] * (size - count)
        latents += [latents[0]] * (size - count)
        started = time.perf_counter()
        with torch.inference_mode():
            if self._stream is None:
                out = self.generator(torch.stack(crops), torch.stack(latents))
            else:
                with torch.cuda.stream(self._stream):
                    for event in {id(j.ready): j.ready for j in batch if j.ready}.values():
                        self._stream.wait_event(event)
                    out = self.generator(
                        torch.stack(crops).to(self.device), torch.stack(latents).to(self.device)
                    )
                # The streams paste on their own CUDA streams: the batch is finished first.
                self._stream.synchronize()
        elapsed_ms = (time.perf_counter() - started) * 1e3
        with self._lock:
            self.stats.calls[size] += 1
            self.stats.faces += count
            self.stats.generator_ms += elapsed_ms
        return list(out[:count])
