"""Hands out frame deadlines at a fixed rate, re-anchoring when the consumer falls behind."""

from __future__ import annotations

import asyncio
import time

__all__ = ["Pacer"]


class Pacer:
    """Deadline clock for a source that should behave like a camera running at ``fps``."""

    def __init__(self, fps: float) -> None:
        self.interval_ns = int(1e9 / fps)
        self._start_ns: int | None = None

    def start(self) -> None:
        self._start_ns = time.monotonic_ns()

    async def wait_until(self, media_time_s: float) -> None:
        """Sleep until ``media_time_s`` after :meth:`start`; return at once if already late.

        A source more than half a second late (a stall: paused debugger, blocked disk) is
        re-anchored instead of bursting frames to catch up, as a camera would.
        """
        if self._start_ns is None:
            self.start()
        assert self._start_ns is not None
        due = self._start_ns + int(media_time_s * 1e9)
        now = time.monotonic_ns()
        if due > now:
            await asyncio.sleep((due - now) / 1e9)
        elif now - due > 500_000_000:
            self._start_ns += now - due
