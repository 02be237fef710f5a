"""Frames between the server and its swap worker: I420 images in a shared-memory ring.

One writer and one reader per ring. The writer fills slot ``seq % slots`` and then sends the
reader a small message naming ``seq``; the reader copies the slot out at once. A slot is written
again only ``slots`` frames later, and its two tags (written before and after the pixels, like a
seqlock) let the reader notice the rare copy that raced with a rewrite: that frame is dropped
and counted, never shown torn.
"""

from __future__ import annotations

from multiprocessing.shared_memory import SharedMemory

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["RING_SLOTS", "FrameRing", "i420_shape", "i420_to_rgb", "rgb_to_i420"]

RING_SLOTS = 4  # a slot is rewritten 4 frames (~130 ms) later; the reader copies at once

_TAGS = 2  # int64 "writing seq" and "written seq" before each slot's pixels
_HEADER = _TAGS * 8

YuvImage = npt.NDArray[np.uint8]
"""An I420 frame as one (height * 3 / 2, width) uint8 array: Y, then U, then V."""


def i420_shape(height: int, width: int) -> tuple[int, int]:
    return height * 3 // 2, width


def rgb_to_i420(rgb: npt.NDArray[np.uint8]) -> YuvImage:
    """RGB (even sides) to I420, BT.601 limited range as swscale and the VP8 encoder expect."""
    return np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), np.uint8)


def i420_to_rgb(yuv: YuvImage) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420), np.uint8)


class FrameRing:
    """A ring of ``slots`` I420 frames of up to ``height`` x ``width`` in shared memory.

    Create with ``FrameRing.create(...)`` (the owner, who unlinks it in :meth:`close`) or attach
    by name with ``FrameRing.attach(...)``.
    """

    def __init__(self, shm: SharedMemory, height: int, width: int, slots: int, owner: bool) -> None:
        self.shm, self.height, self.width, self.slots, self.owner = shm, height, width, slots, owner
        self.slot_bytes = _HEADER + height * 3 // 2 * width

    @classmethod
    def create(cls, height: int, width: int, slots: int = 4) -> FrameRing:
        size = slots * (_HEADER + height * 3 // 2 * width)
        ring = cls(SharedMemory(create=True, size=size), height, width, slots, owner=True)
        for slot in range(slots):
            ring._tags(slot)[:] = -1
        return ring

    @classmethod
    def attach(cls, name: str, height: int, width: int, slots: int) -> FrameRing:
        return cls(SharedMemory(name=name), height, width, slots, owner=False)

    @property
    def name(self) -> str:
        return self.shm.name

    def fits(self, height: int, width: int) -> bool:
        return height * width <= self.height * self.width

    def _tags(self, slot: int) -> npt.NDArray[np.int64]:
        assert self.shm.buf is not None
        return np.ndarray((_TAGS,), np.int64, buffer=self.shm.buf, offset=slot * self.slot_bytes)

    def _pixels(self, slot: int, height: int, width: int) -> YuvImage:
        assert self.shm.buf is not None
        offset = slot * self.slot_bytes + _HEADER
        return np.ndarray(i420_shape(height, width), np.uint8, buffer=self.shm.buf, offset=offset)

    def write(self, seq: int, image: YuvImage) -> None:
        """Put ``image`` (I420, fitting this ring) into the slot of ``seq``."""
        slot = seq % self.slots
        tags = self._tags(slot)
        tags[0] = seq  # "being written": a reader that sees this change mid-copy drops its copy
        height, width = image.shape[0] * 2 // 3, image.shape[1]
        np.copyto(self._pixels(slot, height, width), image)
        tags[1] = seq

    def read(self, seq: int, height: int, width: int) -> YuvImage | None:
        """A private copy of frame ``seq``, or None if its slot was rewritten meanwhile."""
        slot = seq % self.slots
        tags = self._tags(slot)
        if tags[1] != seq:
            return None
        copy = self._pixels(slot, height, width).copy()
        return copy if tags[0] == seq else None

    def close(self) -> None:
        self.shm.close()
        if self.owner:
            self.shm.unlink()
