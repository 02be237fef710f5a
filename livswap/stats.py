"""Counters and timing samples a pipeline run collects (read by the status line and benchmarks)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PipelineStats", "percentiles"]

# Bounded so a live run of any length holds a fixed amount of history (~20 min at 30 fps).
_HISTORY = 36_000


def percentiles(
    samples: deque[float] | list[float], qs: tuple[float, ...] = (50, 95, 99)
) -> dict[str, float]:
    if not samples:
        return {f"p{q:g}": float("nan") for q in qs} | {"max": float("nan")}
    values = np.asarray(samples, dtype=np.float64)
    out = {f"p{q:g}": float(np.percentile(values, q)) for q in qs}
    out["max"] = float(values.max())
    return out


@dataclass
class PipelineStats:
    """Everything counted about one run. Mutated only from the event loop thread."""

    frames_in: int = 0
    frames_out: int = 0
    frames_failed: int = 0
    frames_no_face: int = 0
    faces_swapped: int = 0
    first_in_ns: int | None = None
    last_in_ns: int | None = None
    first_out_ns: int | None = None
    last_out_ns: int | None = None
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_HISTORY))
    out_times_ns: deque[int] = field(default_factory=lambda: deque(maxlen=_HISTORY))
    stage_ms: dict[str, deque[float]] = field(default_factory=dict)
    dropped_by_slot: dict[str, int] = field(default_factory=dict)

    @property
    def frames_dropped(self) -> int:
        return sum(self.dropped_by_slot.values())

    def record_in(self) -> None:
        now = time.monotonic_ns()
        self.frames_in += 1
        self.first_in_ns = self.first_in_ns or now
        self.last_in_ns = now

    def record_out(self, latency_ms: float, timings_ms: dict[str, float]) -> None:
        now = time.monotonic_ns()
        self.frames_out += 1
        self.first_out_ns = self.first_out_ns or now
        self.last_out_ns = now
        self.latency_ms.append(latency_ms)
        self.out_times_ns.append(now)
        for stage, ms in timings_ms.items():
            self.stage_ms.setdefault(stage, deque(maxlen=_HISTORY)).append(ms)

    @staticmethod
    def _rate(count: int, first: int | None, last: int | None) -> float:
        if count < 2 or first is None or last is None or last <= first:
            return 0.0
        return (count - 1) / ((last - first) / 1e9)

    @property
    def fps_in(self) -> float:
        return self._rate(self.frames_in, self.first_in_ns, self.last_in_ns)

    @property
    def fps_out(self) -> float:
        return self._rate(self.frames_out, self.first_out_ns, self.last_out_ns)

    def recent(self, seconds: float) -> tuple[float, float]:
        """(output fps, median latency ms) over the last ``seconds``."""
        cutoff = time.monotonic_ns() - int(seconds * 1e9)
        n = 0
        for t in reversed(self.out_times_ns):
            if t < cutoff:
                break
            n += 1
        lat = list(self.latency_ms)[-n:] if n else []
        return n / seconds, float(np.median(lat)) if lat else float("nan")

    def summary(self) -> str:
        """One line on a whole run: counts, median latency, median time per stage."""
        stages = ", ".join(
            f"{name} {float(np.median(ms)):.1f}" for name, ms in self.stage_ms.items() if ms
        )
        latency = float(np.median(self.latency_ms)) if self.latency_ms else float("nan")
        return (
            f"{self.frames_in} frames in, {self.frames_out} out, {self.frames_dropped} dropped, "
            f"{self.frames_failed} failed, {self.frames_no_face} without a face; median latency "
            f"{latency:.1f} ms; median ms per stage: {stages or 'none'}"
        )

    def status_line(self, seconds: float) -> str:
        fps, lat = self.recent(seconds)
        parts = [f"{fps:5.1f} fps", f"latency {lat:5.1f} ms", f"dropped {self.frames_dropped}"]
        if self.frames_no_face:
            parts.append(f"no face {self.frames_no_face}")
        if self.frames_failed:
            parts.append(f"failed {self.frames_failed}")
        return " | ".join(parts)
