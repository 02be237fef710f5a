"""Photos from people we do not know (``livswap serve``'s uploads): the header is read before
any pixel is decoded, and decoding runs in a child process under a memory bound, so a photo
that lies or a decoder bug costs that child, never the server or the swap worker.

Kept light on purpose (numpy and OpenCV only): the decoder child imports this module.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

import numpy as np

from livswap.errors import InputError
from livswap.frame import Image

__all__ = [
    "PhotoDecoder",
    "PhotoLimits",
    "PhotoRefused",
    "check_photo",
    "declared_size",
    "photo_format",
    "quiet_native_stderr",
]

log = logging.getLogger(__name__)

_MAGIC = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"BM": "bmp",
}
# What a decoder needs beyond the pixels it returns (row buffers, the compressed input, the
# library's own tables); the pixels themselves are counted three times (decoded, the RGB
# conversion, the copy sent back).
_DECODER_OVERHEAD_BYTES = 128 * 2**20


class PhotoRefused(InputError):
    """An uploaded photo that is refused: ``reason`` says whether it is too large (413) or not
    an accepted, decodable image (415)."""

    def __init__(self, reason: Literal["too_large", "unsupported"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PhotoLimits:
    """What an upload may be: bytes, pixels (as its header declares), formats."""

    max_bytes: int
    max_megapixels: float
    accepted_types: tuple[str, ...]
    max_aspect: float = 20.0


def photo_format(data: bytes) -> str | None:
    """``"jpeg"``, ``"png"``, ``"bmp"`` or ``"webp"`` by the file's first bytes, else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, name in _MAGIC.items():
        if data.startswith(magic):
            return name
    return None


def check_photo(data: bytes, limits: PhotoLimits) -> tuple[str, int, int]:
    """(format, width, height) of an upload that may be decoded; :class:`PhotoRefused` with the
    reason otherwise. Reads the header only: a file of a few hundred bytes can declare billions
    of pixels."""
    if len(data) > limits.max_bytes:
        raise PhotoRefused(
            "too_large",
            f"photo is {len(data) / 2**20:.1f} MB; the limit is {limits.max_bytes / 2**20:g} MB",
        )
    kind = photo_format(data)
    if kind is None or kind not in limits.accepted_types:
        raise PhotoRefused(
            "unsupported", f"not an accepted image; send {', '.join(limits.accepted_types)}"
        )
    size = _header_size(data, kind)
    if size is None:
        raise PhotoRefused(
            "unsupported", f"the {kind} file could not be decoded: its header is damaged"
        )
    width, height = size
    if width < 1 or height < 1:
        raise PhotoRefused("unsupported", f"the {kind} file declares {width}x{height} pixels")
    if width * height > limits.max_megapixels * 1e6:
        raise PhotoRefused(
            "too_large",
            f"photo declares {width}x{height} pixels ({width * height / 1e6:.0f} MP); the "
            f"limit is {limits.max_megapixels:g} MP",
        )
    if max(width, height) > limits.max_aspect * min(width, height):
        raise PhotoRefused(
            "unsupported", f"photo declares {width}x{height} pixels: not a photo's shape"
        )
    return kind, width, height


def declared_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) as the header declares them, for the formats
    :func:`photo_format` knows; None for other files or a header that cannot be read."""
    kind = photo_format(data)
    size = _header_size(data, kind) if kind is not None else None
    return None if kind is None or size is None else (kind, *size)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what C libraries print straight to file descriptor 2 (libpng's "Not enough
    image data" for a cut-off PNG) while decoding: livswap says it once, as one line."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _header_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """The width and height the header of ``kind`` declares; None where it cannot be read."""
    try:
        if kind == "png" and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return int(width), int(height)
        if kind == "bmp":
            width, height = struct.unpack("<ii", data[18:26])
            return int(width), abs(int(height))  # negative height: rows stored top-down
        if kind == "webp":
            chunk = data[12:16]
            if chunk == b"VP8X":
                width = 1 + int.from_bytes(data[24:27], "little")
                return width, 1 + int.from_bytes(data[27:30], "little")
            if chunk == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
            if chunk == b"VP8 ":
                width, height = struct.unpack("<HH", data[26:30])
                return int(width) & 0x3FFF, int(height) & 0x3FFF
            return None
        if kind == "jpeg":
            at = 2
            while at + 9 < len(data):
                if data[at] != 0xFF:
                    return None
                marker = data[at + 1]
                if marker == 0xFF:  # fill byte
                    at += 1
                    continue
                length = struct.unpack(">H", data[at + 2 : at + 4])[0]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    height, width = struct.unpack(">HH", data[at + 5 : at + 9])
                    return int(width), int(height)
                at += 2 + length
    except struct.error:
        return None
    return None


class PhotoDecoder:
    """Decodes checked photos in one child process whose address space is capped
    (``RLIMIT_AS``) at what a photo of ``max_megapixels`` needs. A decode that runs out of
    memory, crashes the child or takes longer than ``timeout_s`` is refused; the child is then
    replaced. One decode at a time (uploads are rate-limited; a photo decodes in well under a
    second). Thread-safe."""

    def __init__(self, max_megapixels: float, timeout_s: float = 20.0) -> None:
        self.memory_bound = int(max_megapixels * 1e6 * 3 * 3) + _DECODER_OVERHEAD_BYTES
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._child: Any = None
        self._conn: Connection | None = None
        self.restarts = 0

    def decode(self, data: bytes, kind: str) -> Image:
        """The photo as an RGB uint8 array; :class:`PhotoRefused` if it cannot be decoded
        within the bound."""
        with self._lock:
            conn = self._ensure_child()
            try:
                conn.send_bytes(data)
                if not conn.poll(self.timeout_s):
                    self._replace_child("took too long")
                    raise PhotoRefused(
                        "unsupported",
                        f"the {kind} file took over {self.timeout_s:g} s to decode; refused",
                    )
                status, height, width = conn.recv()
                if status != "ok":
                    raise PhotoRefused("unsupported", f"the {kind} file {status}")
                pixels = bytearray(height * width * 3)
                conn.recv_bytes_into(pixels)
            except (EOFError, OSError, BrokenPipeError):
                self._replace_child("died")
                raise PhotoRefused(
                    "unsupported",
                    f"the {kind} file could not be decoded within "
                    f"{self.memory_bound / 2**20:.0f} MB",
                ) from None
        image: Image = np.frombuffer(pixels, np.uint8).reshape(height, width, 3)
        return image

    def start(self) -> None:
        """Start the child now (a fraction of a second of imports) rather than at the first
        photo."""
        with self._lock:
            self._ensure_child()

    def close(self) -> None:
        with self._lock:
            self._stop_child()

    def _ensure_child(self) -> Connection:
        if self._conn is None or self._child is None or not self._child.is_alive():
            self._stop_child()
            context = multiprocessing.get_context("spawn")
            parent, child = context.Pipe(duplex=True)
            self._child = context.Process(
                target=_decoder_main,
                args=(child, self.memory_bound),
                name="livswap-photo-decoder",
                daemon=True,
            )
            self._child.start()
            child.close()
            self._conn = parent
        return self._conn

    def _replace_child(self, why: str) -> None:
        log.warning("photo decoder %s; starting a new one", why)
        self.restarts += 1
        self._stop_child()

    def _stop_child(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._child is not None:
            if self._child.is_alive():
                self._child.kill()
            self._child.join(timeout=5)
            self._child = None


def _decoder_main(conn: Connection, memory_bound: int) -> None:
    """The decoder child: caps its own address space, then decodes what it is sent."""
    import resource

    import cv2

    cv2.setNumThreads(1)
    with open("/proc/self/statm") as statm:  # pages of address space in use now
        in_use = int(statm.read().split()[0]) * resource.getpagesize()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = in_use + memory_bound
    unlimited = hard == resource.RLIM_INFINITY
    resource.setrlimit(resource.RLIMIT_AS, (limit if unlimited else min(limit, hard), hard))
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:
            bgr = None
        except MemoryError:
            conn.send(("needs more memory than allowed to decode", 0, 0))
            continue
        del data
        if bgr is None:
            conn.send(("could not be decoded", 0, 0))
            continue
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)
        rgb = np.ascontiguousarray(bgr)
        conn.send(("ok", rgb.shape[0], rgb.shape[1]))
        conn.send_bytes(rgb.reshape(-1).data)
        del bgr, rgb
