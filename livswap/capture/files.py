"""Video files (through PyAV), still images and a generated test pattern."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import cv2
import numpy as np

from livswap.capture.base import SourceInfo
from livswap.capture.pacing import Pacer
from livswap.errors import InputError, StreamEnded
from livswap.frame import Frame, Image
from livswap.photos import declared_size, quiet_native_stderr

__all__ = ["ImageSource", "PatternSource", "VideoFileSource", "read_image"]

log = logging.getLogger(__name__)

# A face needs far fewer; the bound keeps a photo that declares billions of pixels from taking
# the machine's memory before it fails.
MAX_PHOTO_PIXELS = 250_000_000
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".pbm"}
)


def read_image(path: str | Path, what: str = "image") -> Image:
    """Read an image file as RGB uint8; raise :class:`InputError` naming the file if it can't."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {str(p)!r} does not exist")
    if p.is_dir():
        raise InputError(f"{what} {str(p)!r} is a directory, expected an image file")
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{what} {str(p)!r} cannot be read: {exc.strerror}") from None
    header = declared_size(data[:65536].tobytes())
    if header is not None and header[1] * header[2] > MAX_PHOTO_PIXELS:
        _, width, height = header
        raise InputError(
            f"{what} {str(p)!r} declares {width}x{height} pixels "
            f"({width * height / 1e6:.0f} MP); livswap reads photos up to "
            f"{MAX_PHOTO_PIXELS / 1e6:.0f} MP: scale it down"
        )
    try:
        with quiet_native_stderr():
            bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error:  # OpenCV refuses what its header claims (e.g. beyond its pixel limit)
        raise InputError(
            f"{what} {str(p)!r} cannot be decoded: damaged, or larger than OpenCV allows"
        ) from None
    if bgr is None:
        if header is not None:
            raise InputError(
                f"{what} {str(p)!r} is a damaged {header[0].upper()} file "
                "(cut off or corrupted): it cannot be decoded"
            )
        raise InputError(
            f"{what} {str(p)!r} is not an image (expected PNG, JPEG, BMP, WebP or TIFF)"
        )
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


class VideoFileSource:
    """Decodes a video file with PyAV, off the event loop.

    ``realtime=True`` paces frames at the file's own timestamps, like a camera (stale frames are
    then dropped downstream if a stage is slow); ``realtime=False`` hands out frames as fast as
    the consumer takes them (offline jobs). ``loop=True`` restarts at the end.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        realtime: bool,
        loop: bool = False,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.size = size
        if not self.path.exists():
            raise InputError(f"input {str(self.path)!r} does not exist")
        try:
            # Text tags in a damaged or hostile file need not be UTF-8: replaced, not fatal.
            self._container = av.open(str(self.path), metadata_errors="replace")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise InputError(f"input {str(self.path)!r} is not a video: {exc}") from None
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"input {str(self.path)!r} has no video stream")
        self._stream = self._container.streams.video[0]
        ctx = self._stream.codec_context
        if ctx is None or not ctx.width or not ctx.height:
            self._container.close()
            raise InputError(
                f"input {str(self.path)!r} has no decodable video stream (damaged, or a codec "
                "FFmpeg does not know)"
            )
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        fps = float(rate) if rate and 0 < float(rate) <= 1000 else 30.0
        seconds = (
            float(self._stream.duration * self._stream.time_base)
            if self._stream.duration and self._stream.time_base
            else None
        )
        frames: int | None = self._stream.frames or None
        if frames is not None and seconds is not None and frames > seconds * fps * 1.5 + 2:
            frames = None  # a header count that contradicts the duration: not to be trusted
        if frames is None and seconds is not None:
            frames = round(seconds * fps)
        self.declared_frames = frames
        width, height = size if size is not None else (int(ctx.width), int(ctx.height))
        self.info = SourceInfo(
            width=width,
            height=height,
            fps=fps,
            frame_count=None if loop else frames,
            live=realtime,
            path=self.path,
            description=f"video file {self.path.name}",
        )
        self.realtime = realtime
        self.loop = loop
        self._pacer = Pacer(fps)
        self._packets = self._container.demux(self._stream)
        self._decoded: deque[av.VideoFrame] = deque()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="livswap-decode")
        self._seq = 0
        self._loop_offset_s = 0.0
        self._last_pts_s = 0.0
        self._first_pts_s: float | None = None
        self._closed = False
        self.damaged_packets = 0  # packets that would not decode (skipped)
        self.unreadable_tail = False  # the container could not be read to its end
        self.frames_decoded = 0

    def _next_video_frame(self) -> av.VideoFrame:
        """The next decodable frame. Packets are demuxed and decoded one by one, so a corrupt
        packet costs its own frames (counted), not the rest of the file."""
        while not self._decoded:
            try:
                packet = next(self._packets)
            except StopIteration:
                raise StreamEnded(str(self.path)) from None
            except av.error.FFmpegError as exc:
                # The container itself cannot be read on (a cut-off file): what came is all.
                self.unreadable_tail = True
                log.warning("VideoFileSource(%s): the file ends early: %s", self.path.name, exc)
                raise StreamEnded(str(self.path)) from None
            try:
                self._decoded.extend(packet.decode())
            except av.error.FFmpegError as exc:
                self.damaged_packets += 1
                if self.damaged_packets == 1:
                    log.warning(
                        "VideoFileSource(%s): skipping damaged data (%s); counted in the summary",
                        self.path.name,
                        exc,
                    )
        return self._decoded.popleft()

    def _next_image(self) -> tuple[Image, float]:
        while True:
            try:
                frame = self._next_video_frame()
            except StreamEnded:
                if not self.loop or self.frames_decoded == 0:
                    raise
                self._container.seek(0)
                self._packets = self._container.demux(self._stream)
                self._decoded.clear()
                self._loop_offset_s = self._last_pts_s + 1.0 / self.info.fps
                self._first_pts_s = None
                continue
            self.frames_decoded += 1
            pts = float(frame.time) if frame.time is not None else self._seq / self.info.fps
            if self._first_pts_s is None:
                self._first_pts_s = pts
            t = pts - self._first_pts_s + self._loop_offset_s
            self._last_pts_s = t
            if self.size is not None:
                w, h = self.size
                rgb = frame.to_ndarray(width=w, height=h, format="rgb24")
            else:
                rgb = frame.to_ndarray(format="rgb24")
            return rgb.astype(np.uint8, copy=False), t

    def damage_report(self) -> str:
        """What was wrong with the file, read to its end: "" when nothing was."""
        problems = []
        if self.damaged_packets:
            problems.append(f"{self.damaged_packets} damaged packets skipped")
        declared = self.declared_frames or 0
        if not self.loop and declared and self.frames_decoded < declared:
            problems.append(
                f"{declared - self.frames_decoded} of the {declared} frames it declares are "
                "missing or damaged"
            )
        elif self.unreadable_tail:
            problems.append("the file ends early (cut off?)")
        return "; ".join(problems)

    async def recv(self) -> Frame:
        if self._closed:
            raise StreamEnded(str(self.path))
        loop = asyncio.get_running_loop()
        image, t = await loop.run_in_executor(self._executor, self._next_image)
        if self.realtime:
            await self._pacer.wait_until(t)
        frame = Frame(image=image, seq=self._seq, captured_ns=time.monotonic_ns(), pts=t)
        self._seq += 1
        return frame

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        self._container.close()


class ImageSource:
    """A still image: one frame (offline), or repeated at ``fps`` like a camera (live)."""

    def __init__(self, path: str | Path, *, repeat: bool, fps: float = 30.0) -> None:
        self.path = Path(path)
        self.image = read_image(self.path, "input")
        h, w = self.image.shape[:2]
        self.info = SourceInfo(
            width=w,
            height=h,
            fps=fps,
            frame_count=None if repeat else 1,
            live=repeat,
            path=self.path,
            description=f"image {self.path.name}",
        )
        self.repeat = repeat
        self._pacer = Pacer(fps)
        self._seq = 0

    async def recv(self) -> Frame:
        if not self.repeat and self._seq >= 1:
            raise StreamEnded(str(self.path))
        t = self._seq / self.info.fps
        if self.repeat:
            await self._pacer.wait_until(t)
        frame = Frame(image=self.image, seq=self._seq, captured_ns=time.monotonic_ns(), pts=t)
        self._seq += 1
        return frame

    def close(self) -> None:
        pass


class PatternSource:
    """A generated moving test pattern (colour bars, a sweeping bar and a frame counter)."""

    def __init__(self, width: int, height: int, fps: float, frame_count: int | None = None) -> None:
        self.info = SourceInfo(
            width=width,
            height=height,
            fps=fps,
            frame_count=frame_count,
            live=True,
            description=f"test pattern {width}x{height}@{fps:g}",
        )
        self._pacer = Pacer(fps)
        self._seq = 0
        bars = np.array(
            [
                [235, 235, 235],
                [235, 235, 16],
                [16, 235, 235],
                [16, 235, 16],
                [235, 16, 235],
                [235, 16, 16],
                [16, 16, 235],
                [16, 16, 16],
            ],
            dtype=np.uint8,
        )
        columns = (np.arange(width) * len(bars) // width).astype(np.intp)
        self._base = np.ascontiguousarray(np.broadcast_to(bars[columns], (height, width, 3)))

    def render(self, seq: int) -> Image:
        image = self._base.copy()
        w, h = self.info.width, self.info.height
        x = int((math.sin(seq / self.info.fps * 2.0) * 0.5 + 0.5) * (w - w // 10))
        image[h // 3 : 2 * h // 3, x : x + w // 10] = (128, 128, 128)
        scale = max(h / 480, 0.4)
        cv2.putText(
            image,
            f"livswap {seq:06d}",
            (w // 20, h - h // 10),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            max(1, int(2 * scale)),
            cv2.LINE_AA,
        )
        return image

    async def recv(self) -> Frame:
        if self.info.frame_count is not None and self._seq >= self.info.frame_count:
            raise StreamEnded("pattern")
        t = self._seq / self.info.fps
        await self._pacer.wait_until(t)
        frame = Frame(
            image=self.render(self._seq), seq=self._seq, captured_ns=time.monotonic_ns(), pts=t
        )
        self._seq += 1
        return frame

    def close(self) -> None:
        pass
