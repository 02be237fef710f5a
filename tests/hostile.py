"""Hostile files, written the way an attacker would: photos that lie about their size, pickles
that reach for ``os.system``, archives that inflate or lie. Used by the tests and by
``benchmarks/attacks.py`` (which replays them against any checkout)."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path
from typing import Literal

__all__ = [
    "MEMO_SYSTEM_PICKLE",
    "PREFIXED_MODULE_PICKLE",
    "forged_png",
    "write_lying_archive",
    "write_pickle_bomb",
    "write_pickle_zip",
]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return struct.pack(">I", len(body)) + kind + body + crc


def forged_png(width: int, height: int, *, rows: int = 0) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels. With ``rows`` = 0 its pixel
    data is a token few bytes (a tiny file; decoding it would still need width * height * 3
    bytes); with ``rows`` = ``height`` every row is really there, as zeros that compress about a
    thousandfold (30000x30000 is a 2.5 MB file that decodes to 2.7 GB)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    if rows == 0:
        pixels = zlib.compress(b"\x00" * 64)
    else:
        packer = zlib.compressobj(9)
        row = b"\x00" * (1 + 3 * width)
        per_block = max(1, 2**24 // len(row))
        parts = [
            packer.compress(row * min(per_block, rows - start))
            for start in range(0, rows, per_block)
        ]
        pixels = b"".join([*parts, packer.flush()])
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


def _short(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


# os.system taken from the memo: the strings right before STACK_GLOBAL are harmless ones, which
# fooled the old opcode scan into reading "torch.Size".
MEMO_SYSTEM_PICKLE = (
    b"\x80\x04" + _short("os") + b"\x94" + _short("system") + b"\x94" + b"00"
    + _short("torch") + _short("Size") + b"00" + b"h\x00h\x01\x93"
    + _short("touch EVIL_RAN") + b"\x85R."
)  # fmt: skip
# A module whose name only starts like torch's.
PREFIXED_MODULE_PICKLE = (
    b"\x80\x02ctorch.serialization os\nsystem\n" + _short("touch EVIL_RAN") + b"\x85R."
)


def write_pickle_zip(path: Path, data: bytes) -> Path:
    """``data`` as the pickle of a PyTorch zip archive."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/version", "3\n")
    return path


def write_pickle_bomb(path: Path, mib: int) -> Path:
    """A PyTorch archive whose data.pkl inflates to ``mib`` MiB of zeros (a small file)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data.pkl", "w", force_zip64=True) as member:
            block = bytes(2**20)
            for _ in range(mib):
                member.write(block)
        archive.writestr("archive/version", "3\n")
    return path


def write_lying_archive(
    honest: Path, path: Path, declared: Literal["smaller", "larger"] = "smaller"
) -> Path:
    """A copy of the archive ``honest`` whose largest member records half (or twice) its real
    size."""
    with zipfile.ZipFile(honest) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        biggest = max(dst.filelist, key=lambda i: i.file_size)
        biggest.file_size = (
            biggest.file_size // 2 if declared == "smaller" else 2 * biggest.file_size
        )
    return path
