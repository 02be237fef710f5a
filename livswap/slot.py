"""Latest-frame-wins hand-over between pipeline stages.

A live stage that is slower than the camera must never build a backlog: the writer overwrites
the waiting frame and the overwritten one is counted as dropped. Offline jobs need every frame,
so a slot can also be *lossless*: the writer then waits until the reader has taken the previous
item (a one-deep buffer with back-pressure). Either way at most one item waits.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from livswap.errors import StreamEnded

__all__ = ["LatestSlot"]

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-item buffer between two asyncio tasks on the same loop."""

    def __init__(self, name: str, *, lossless: bool = False) -> None:
        self.name = name
        self.lossless = lossless
        self.dropped = 0
        self.passed = 0
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, item: T) -> None:
        """Hand ``item`` to the reader (overwriting a waiting one unless lossless)."""
        if self._closed:
            raise StreamEnded(f"slot {self.name!r} is closed")
        if self.lossless:
            while self._has_item:
                self._writable.clear()
                await self._writable.wait()
                if self._closed:
                    raise StreamEnded(f"slot {self.name!r} is closed")
        self._store(item)

    def put_nowait(self, item: T) -> None:
        """:meth:`put` for a lossy slot, from plain (non-async) code on the loop thread."""
        if self._closed:
            raise StreamEnded(f"slot {self.name!r} is closed")
        assert not self.lossless, "a lossless slot may have to wait: use put()"
        self._store(item)

    def _store(self, item: T) -> None:
        if self._has_item:
            self.dropped += 1
        self._item = item
        self._has_item = True
        self._readable.set()

    async def get(self) -> T:
        """Take the newest item; raise :class:`StreamEnded` once closed and drained."""
        while not self._has_item:
            if self._closed:
                raise StreamEnded(f"slot {self.name!r} is closed")
            self._readable.clear()
            await self._readable.wait()
        item = self._item
        self._item = None
        self._has_item = False
        self.passed += 1
        self._writable.set()
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """No more items will come; a waiting item can still be read."""
        self._closed = True
        self._readable.set()
        self._writable.set()
