"""The live pipeline: capture -> [track] -> swap -> compose -> output, on an asyncio loop.

Stages hand frames over through :class:`~livswap.slot.LatestSlot`s. Live runs drop stale frames
at each slot (counted) so latency never builds up; offline runs make every slot lossless so every
frame is written. Blocking work (decode, MediaPipe, OpenCV, torch, encoding) runs in one named
worker thread per stage, so stages overlap and the loop only moves frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from livswap.capture.base import FrameSource
from livswap.errors import LivswapError, StreamEnded
from livswap.frame import Frame
from livswap.output.base import Outcome, Sink
from livswap.slot import LatestSlot
from livswap.stats import PipelineStats

__all__ = ["Pipeline", "Stage", "close_stages", "concurrent_stage", "run_stage", "serial_stage"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """A named per-frame step run in its own worker thread.

    ``run`` adds to the frame in place. If it raises, ``recover`` (when given) is called to put
    the frame into a passable state (for example: no swapped faces, i.e. pass the face through)
    and the frame is counted as failed; without ``recover`` the error stops the pipeline.
    ``close`` releases what the stage holds for its stream (a tracker, an engine stream) when
    the pipeline ends.
    """

    name: str
    run: Callable[[Frame], None]
    recover: Callable[[Frame, BaseException], None] | None = None
    close: Callable[[], None] | None = None


def run_stage(stage: Stage, frame: Frame, failures_logged: set[str]) -> bool:
    """Run one stage on one frame; False when it failed and ``recover`` made the frame passable.

    A :class:`LivswapError`, or any error in a stage without ``recover``, propagates. Each
    stage's first failure is logged (its name goes into ``failures_logged``); a bad stream is
    loud enough with one line. The stage's time goes into ``frame.timings_ms``.
    """
    start = time.perf_counter()
    try:
        stage.run(frame)
        return True
    except Exception as exc:
        if stage.recover is None or isinstance(exc, LivswapError):
            raise
        if stage.name not in failures_logged:
            failures_logged.add(stage.name)
            log.warning(
                "Pipeline: stage %s failed on frame %d, passing it through: %r",
                stage.name,
                frame.seq,
                exc,
            )
        frame.notes.add(f"{stage.name}_failed")
        stage.recover(frame, exc)
        return False
    finally:
        frame.timings_ms[stage.name] = (time.perf_counter() - start) * 1e3


def serial_stage(stages: Sequence[Stage], name: str) -> Stage:
    """``stages`` run one after another in a single stage (one thread, no hand-overs).

    Each keeps its own recovery and timing. For a machine with few cores and other busy
    processes, where stages in threads of their own only compete for the same cores.
    """
    parts = list(stages)
    failures_logged: set[str] = set()

    def run(frame: Frame) -> None:
        for stage in parts:
            run_stage(stage, frame, failures_logged)

    return Stage(name, run, close=lambda: close_stages(parts))


def concurrent_stage(stages: Sequence[Stage], name: str) -> Stage:
    """``stages`` run at the same time on each frame, each in a thread of its own; the frame
    moves on when all are done.

    For steps that read the same inputs and fill in different parts of the frame (hands are
    found while the face is swapped): the frame waits for the slower of them instead of their
    sum. Each keeps its own recovery and timing.
    """
    first, *others = list(stages)
    failures_logged: set[str] = set()
    pool = ThreadPoolExecutor(max(1, len(others)), thread_name_prefix=f"livswap-{name}")

    def run(frame: Frame) -> None:
        pending = [pool.submit(run_stage, stage, frame, failures_logged) for stage in others]
        try:
            run_stage(first, frame, failures_logged)
        finally:
            for future in pending:  # errors that recovery does not handle propagate
                future.result()

    def close() -> None:
        pool.shutdown(wait=True)
        close_stages([first, *others])

    return Stage(name, run, close=close)


def close_stages(stages: Sequence[Stage]) -> None:
    """Close every stage that holds something (each is tried, whatever the others do)."""
    for stage in stages:
        if stage.close is not None:
            try:
                stage.close()
            except Exception:
                log.exception("Pipeline: closing stage %s failed", stage.name)


class Pipeline:
    """Runs frames from ``source`` through ``stages`` into every sink.

    Args:
        source: where frames come from.
        stages: processing steps in order (typically track, swap, compose).
        sinks: where composited frames go; each gets every output frame.
        lossless: never drop frames (offline jobs); otherwise the newest frame wins.
        max_frames: stop after this many captured frames (benchmarks, tests).
        on_output: called on the loop thread after each frame is written (progress bars).
    """

    def __init__(
        self,
        source: FrameSource,
        stages: Sequence[Stage],
        sinks: Sequence[Sink],
        *,
        lossless: bool,
        max_frames: int | None = None,
        on_output: Callable[[Frame], None] | None = None,
    ) -> None:
        self.source = source
        self.stages = list(stages)
        self.sinks = list(sinks)
        self.lossless = lossless
        self.max_frames = max_frames
        self.on_output = on_output
        self.stats = PipelineStats()
        names = ["captured", *(s.name for s in self.stages)]
        self._slots: list[LatestSlot[Frame]] = [LatestSlot(n, lossless=lossless) for n in names]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._error: BaseException | None = None
        self._failure_logged: set[str] = set()
        self._stop_requested = False
        self._source_ended = False

    @property
    def dropped(self) -> int:
        """Frames dropped so far at the hand-overs between stages (live runs)."""
        return sum(slot.dropped for slot in self._slots)

    def stop(self) -> None:
        """Ask the run to finish (safe from signal handlers on the loop thread)."""
        self._stop_requested = True
        self._stop.set()

    @property
    def outcome(self) -> Outcome:
        """How the run ended. A stop ends a live run normally (that is how a camera recording
        ends) but interrupts a file job, whose every frame was to be written."""
        if self._error is not None:
            return "failed"
        if self._stop_requested and self.lossless and not self._source_ended:
            return "interrupted"
        return "complete"

    async def run(self) -> PipelineStats:
        """Run until the source ends, :meth:`stop` is called, or a sink asks to stop."""
        loop_tasks = [
            asyncio.create_task(self._capture(self._slots[0]), name="capture"),
        ]
        for i, stage in enumerate(self.stages):
            executor = ThreadPoolExecutor(1, thread_name_prefix=f"livswap-{stage.name}")
            self._executors.append(executor)
            loop_tasks.append(
                asyncio.create_task(
                    self._process(stage, self._slots[i], self._slots[i + 1], executor),
                    name=stage.name,
                )
            )
        out_executor = ThreadPoolExecutor(1, thread_name_prefix="livswap-output")
        self._executors.append(out_executor)
        output = asyncio.create_task(self._output(self._slots[-1], out_executor), name="output")
        self._tasks = [*loop_tasks, output]
        stopper = asyncio.create_task(self._stop.wait(), name="stop-request")
        try:
            await asyncio.wait({output, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for executor in self._executors:
                executor.shutdown(wait=True)
            self._close_all()
            for slot in self._slots:
                self.stats.dropped_by_slot[slot.name] = slot.dropped
        if self._error is not None:
            raise self._error
        return self.stats

    def _close_all(self) -> None:
        close_stages(self.stages)
        try:
            self.source.close()
        except Exception:
            log.exception("Pipeline: closing the source failed")
        outcome = self.outcome
        for sink in self.sinks:
            try:
                sink.close(outcome)
            except LivswapError as exc:
                self._error = self._error or exc
            except Exception as exc:
                log.exception("Pipeline: closing sink %s failed", sink.name)
                self._error = self._error or exc

    def _fail(self, exc: BaseException) -> None:
        self._error = self._error or exc
        self._stop.set()

    async def _capture(self, out: LatestSlot[Frame]) -> None:
        try:
            while self.max_frames is None or self.stats.frames_in < self.max_frames:
                frame = await self.source.recv()
                self.stats.record_in()
                await out.put(frame)
            self._source_ended = True  # max_frames: as many as were asked for
        except StreamEnded:
            self._source_ended = True
        except Exception as exc:
            self._fail(exc)
        finally:
            out.close()

    async def _process(
        self,
        stage: Stage,
        inp: LatestSlot[Frame],
        out: LatestSlot[Frame],
        executor: ThreadPoolExecutor,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await inp.get()
                ok = await loop.run_in_executor(executor, self._run_stage, stage, frame)
                if not ok:
                    self.stats.frames_failed += 1
                await out.put(frame)
        except StreamEnded:
            pass
        except Exception as exc:
            self._fail(exc)
        finally:
            out.close()

    def _run_stage(self, stage: Stage, frame: Frame) -> bool:
        return run_stage(stage, frame, self._failure_logged)

    def _write(self, frame: Frame) -> None:
        start = time.perf_counter()
        for sink in self.sinks:
            sink.send(frame)
        frame.timings_ms["output"] = (time.perf_counter() - start) * 1e3

    async def _output(self, inp: LatestSlot[Frame], executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await inp.get()
                await loop.run_in_executor(executor, self._write, frame)
                self.stats.record_out(frame.age_ms(), frame.timings_ms)
                if "no_face" in frame.notes:
                    self.stats.frames_no_face += 1
                self.stats.faces_swapped += len(frame.swaps)
                if self.on_output is not None:
                    self.on_output(frame)
                if any(sink.wants_stop for sink in self.sinks):
                    self.stop()  # a preview window closed: stopped like Ctrl-C
        except StreamEnded:
            pass
        except Exception as exc:
            self._fail(exc)
