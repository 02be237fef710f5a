from __future__ import annotations

import asyncio

import pytest

from livswap.errors import StreamEnded
from livswap.slot import LatestSlot


def test_newest_item_wins_and_overwrites_are_counted() -> None:
    async def scenario() -> None:
        slot: LatestSlot[int] = LatestSlot("s")
        for i in range(5):
            await slot.put(i)
        assert await slot.get() == 4
        assert slot.dropped == 4
        slot.close()
        with pytest.raises(StreamEnded):
            await slot.get()

    asyncio.run(scenario())


def test_put_nowait_counts_overwrites_like_put() -> None:
    async def scenario() -> None:
        slot: LatestSlot[int] = LatestSlot("s")
        for i in range(3):
            slot.put_nowait(i)
        assert await slot.get() == 2
        assert slot.dropped == 2
        slot.close()
        with pytest.raises(StreamEnded):
            slot.put_nowait(3)

    asyncio.run(scenario())


def test_lossless_slot_applies_back_pressure() -> None:
    async def scenario() -> None:
        slot: LatestSlot[int] = LatestSlot("s", lossless=True)
        received: list[int] = []

        async def reader() -> None:
            while True:
                try:
                    received.append(await slot.get())
                except StreamEnded:
                    return
                await asyncio.sleep(0.001)

        task = asyncio.create_task(reader())
        for i in range(50):
            await slot.put(i)
        slot.close()
        await task
        assert received == list(range(50))
        assert slot.dropped == 0

    asyncio.run(scenario())


def test_item_put_before_close_is_still_delivered() -> None:
    async def scenario() -> None:
        slot: LatestSlot[str] = LatestSlot("s")
        await slot.put("last")
        slot.close()
        assert await slot.get() == "last"
        with pytest.raises(StreamEnded):
            await slot.put("late")

    asyncio.run(scenario())
