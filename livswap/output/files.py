"""File outputs: H.264 video through PyAV (keeping the input's audio) and still images."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.audio
import cv2
import numpy as np

from livswap.capture.base import SourceInfo
from livswap.errors import OutputError
from livswap.frame import Frame
from livswap.output.base import Outcome

__all__ = [
    "IMAGE_OUTPUT_SUFFIXES",
    "VIDEO_OUTPUT_SUFFIXES",
    "ImageFileSink",
    "VideoFileSink",
    "check_writable",
    "incomplete_path",
    "partial_path",
]

log = logging.getLogger(__name__)

VIDEO_OUTPUT_SUFFIXES = frozenset({".mp4", ".mkv", ".mov"})
IMAGE_OUTPUT_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pnm"}
)
# Audio codecs that go into MP4/MKV/MOV unchanged; anything else is re-encoded to AAC.
_COPYABLE_AUDIO = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})


def check_writable(path: Path) -> None:
    """Raise :class:`OutputError` unless ``path`` can be created or overwritten: by creating
    the file it is written to until complete (permission bits alone say nothing for root, on
    read-only or special file systems)."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"output {str(path)!r} is a directory, expected a file path")
    if not parent.is_dir():
        raise OutputError(
            f"output {str(path)!r} cannot be written: folder {str(parent)!r} does not exist"
        )
    probe = partial_path(path)
    try:
        with open(probe, "xb"):
            pass
    except FileExistsError:
        pass  # another run's leftover (or a run in progress): its writer replaces it
    except OSError as exc:
        raise OutputError(
            f"output {str(path)!r} cannot be written: {exc.strerror or exc}"
        ) from None
    else:
        probe.unlink(missing_ok=True)


def partial_path(final: Path) -> Path:
    """Where a file is written until it is complete: a hidden sibling (the same folder, so the
    rename into place is atomic; the same suffix, so the format is the final one's)."""
    return final.with_name(f".{final.stem}.livswap-partial{final.suffix}")


def incomplete_path(final: Path) -> Path:
    """Where the frames of a stopped or failed job are kept: beside the real name, never
    over it."""
    return final.with_name(f"{final.stem}.incomplete{final.suffix}")


def settle(partial: Path, final: Path, outcome: Outcome) -> Path | None:
    """Move a written partial file where it belongs: the real name for a complete run, else
    ``NAME.incomplete.EXT`` (what was written is not lost; a good file under the real name is
    not overwritten). Returns where it went, None when nothing was written."""
    try:
        if not partial.exists():
            return None
        if outcome == "complete":
            os.replace(partial, final)
            return final
        if partial.stat().st_size == 0:
            partial.unlink()
            return None
        kept = incomplete_path(final)
        os.replace(partial, kept)
        if outcome == "interrupted":  # a failure says where in its error instead
            log.warning(
                "livswap: stopped before the end; what was written is in %s (%s is untouched)",
                kept,
                final,
            )
        return kept
    except OSError as exc:
        raise OutputError(f"output {str(final)!r} cannot be put in place: {exc}") from None


def _rate(fps: float) -> Fraction:
    # 29.97 -> 30000/1001, 25 -> 25/1: the fraction a video player expects.
    return Fraction(fps).limit_denominator(1001)


class VideoFileSink:
    """Writes H.264 (yuv420p) video and, when ``audio_from`` is a file, muxes its audio along.

    Frame timestamps come from ``frame.pts`` so the output has the input's timing. Audio
    packets are interleaved as the video advances, up to the end of the last frame written (a
    stopped job or a damaged input gives a shorter video, and the audio is cut to it). The
    file is written under a hidden partial name and put in place by ``close``.
    """

    name = "video"

    def __init__(
        self,
        path: str | Path,
        info: SourceInfo,
        *,
        crf: int = 20,
        preset: str = "veryfast",
        audio_from: Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.wants_stop = False
        if self.path.suffix.lower() not in VIDEO_OUTPUT_SUFFIXES:
            raise OutputError(
                f"output {str(self.path)!r}: expected a video file ending in "
                f"{', '.join(sorted(VIDEO_OUTPUT_SUFFIXES))}"
            )
        check_writable(self.path)
        self._partial = partial_path(self.path)
        try:
            self._container = av.open(str(self._partial), mode="w")
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(f"output {str(self.path)!r} cannot be written: {exc}") from None
        self.rate = _rate(info.fps)
        # yuv420p needs even dimensions: drop a last odd row/column rather than rescale.
        self.width, self.height = info.width - info.width % 2, info.height - info.height % 2
        stream = self._container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / self.rate
        stream.options = {"crf": str(crf), "preset": preset}
        self._video = stream
        self._last_pts = -1
        self._closed = False
        self.frames_written = 0
        self._audio_in: av.container.InputContainer | None = None
        self._audio_packets: Iterator[av.Packet[Any]] | None = None
        self._audio_out: av.audio.AudioStream | None = None
        self._pending_audio: av.Packet[Any] | None = None
        self._resampler: av.AudioResampler | None = None
        self._fifo: av.AudioFifo | None = None
        if audio_from is not None:
            self._open_audio(audio_from)

    def _open_audio(self, source: Path) -> None:
        try:
            container = av.open(str(source), metadata_errors="replace")
        except (av.error.FFmpegError, OSError, ValueError):
            return
        if not container.streams.audio:
            container.close()
            return
        in_audio = container.streams.audio[0]
        name = in_audio.codec_context.name
        self._audio_in = container
        if name in _COPYABLE_AUDIO:
            self._audio_out = self._container.add_stream_from_template(in_audio)
        else:
            rate = in_audio.codec_context.sample_rate or 48000
            self._audio_out = self._container.add_stream("aac", rate=rate)
            self._audio_out.layout = in_audio.codec_context.layout.name or "stereo"
            self._resampler = av.AudioResampler(
                format="fltp", layout=self._audio_out.layout, rate=rate
            )
            self._fifo = av.AudioFifo()
            log.info("VideoFileSink: re-encoding %s audio to AAC", name)
        self._audio_packets = container.demux(in_audio)

    def _mux_audio_until(self, seconds: float) -> None:
        """Mux input audio up to ``seconds`` of media time."""
        if self._audio_packets is None or self._audio_out is None:
            return
        while True:
            packet = self._pending_audio
            self._pending_audio = None
            if packet is None:
                packet = next(self._audio_packets, None)
                if packet is None:
                    self._audio_packets = None
                    return
            if packet.dts is None and packet.size == 0:
                continue
            t = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
            if t >= seconds:
                self._pending_audio = packet
                return
            if self._resampler is None:
                packet.stream = self._audio_out
                self._container.mux(packet)
            else:
                self._transcode(packet)

    def _transcode(self, packet: av.Packet[Any]) -> None:
        assert (
            self._resampler is not None and self._fifo is not None and self._audio_out is not None
        )
        for decoded in packet.decode():
            for resampled in self._resampler.resample(decoded):  # type: ignore[arg-type]
                resampled.pts = None
                self._fifo.write(resampled)
        frame_size = self._audio_out.codec_context.frame_size or 1024
        while self._fifo.samples >= frame_size:
            chunk = self._fifo.read(frame_size)
            self._container.mux(self._audio_out.encode(chunk))

    def _flush_audio(self) -> None:
        """The transcoder's last samples (copied audio has nothing held back)."""
        if self._resampler is None or self._audio_out is None or self._fifo is None:
            return
        if self._fifo.samples:
            self._container.mux(self._audio_out.encode(self._fifo.read()))
        self._container.mux(self._audio_out.encode(None))

    def send(self, frame: Frame) -> None:
        image = frame.result
        if image.shape[0] != self.height or image.shape[1] != self.width:
            if image.shape[0] >= self.height and image.shape[1] >= self.width:
                image = image[: self.height, : self.width]
            else:
                size = (self.width, self.height)
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.uint8)
        video_frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        pts = max(round(frame.pts * self.rate), self._last_pts + 1)
        video_frame.pts = pts
        self._last_pts = pts
        try:
            self._container.mux(self._video.encode(video_frame))
            self._mux_audio_until(float(pts / self.rate))
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(f"output {str(self.path)!r}: writing failed: {exc}") from None
        self.frames_written += 1

    def close(self, outcome: Outcome = "complete") -> None:
        if self._closed:
            return
        self._closed = True
        error: Exception | None = None
        try:
            self._container.mux(self._video.encode(None))
            self._mux_audio_until(float((self._last_pts + 1) / self.rate))
            self._flush_audio()
        except (av.error.FFmpegError, OSError) as exc:
            error = exc
        finally:
            try:
                self._container.close()  # writes the index: where a full disk shows
            except (av.error.FFmpegError, OSError) as exc:
                error = error or exc
            if self._audio_in is not None:
                self._audio_in.close()
        kept = settle(self._partial, self.path, "failed" if error else outcome)
        if error is not None:
            where = f"; what was written is in {str(kept)!r}" if kept else ""
            raise OutputError(f"output {str(self.path)!r}: writing failed: {error}{where}")


class ImageFileSink:
    """Writes the (last) frame it receives to an image file, put in place by ``close``."""

    name = "image"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.wants_stop = False
        if self.path.suffix.lower() not in IMAGE_OUTPUT_SUFFIXES:
            raise OutputError(
                f"output {str(self.path)!r}: expected an image file ending in "
                f"{', '.join(sorted(IMAGE_OUTPUT_SUFFIXES))}"
            )
        check_writable(self.path)
        self._partial = partial_path(self.path)
        self._closed = False
        self.frames_written = 0

    def send(self, frame: Frame) -> None:
        bgr = cv2.cvtColor(frame.result, cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(self.path.suffix.lower(), bgr)
        if not ok:
            raise OutputError(f"output {str(self.path)!r}: image encoding failed")
        try:
            data.tofile(self._partial)
        except OSError as exc:
            raise OutputError(
                f"output {str(self.path)!r} cannot be written: {exc.strerror}"
            ) from None
        self.frames_written += 1

    def close(self, outcome: Outcome = "complete") -> None:
        if self._closed:
            return
        self._closed = True
        settle(self._partial, self.path, outcome if self.frames_written else "failed")
