"""Test media made from public-domain images that packages ship (never third-party photos)."""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


def astronaut() -> Image:
    """scikit-image's astronaut (Eileen Collins, NASA, public domain), RGB 512x512."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def grace_hopper() -> Image:
    """matplotlib's Grace Hopper sample photo (public domain), RGB 600x512."""
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    data = np.fromfile(str(path), np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def moving_frames(
    image: Image,
    count: int,
    size: tuple[int, int],
    *,
    amplitude: float = 0.04,
    rotate_deg: float = 4.0,
) -> list[Image]:
    """``count`` frames of ``image`` gently panning, zooming and rolling (a head moving)."""
    w, h = size
    src_h, src_w = image.shape[:2]
    frames = []
    for i in range(count):
        phase = 2 * math.pi * i / max(count, 30)
        scale = min(w / src_w, h / src_h) * (1.0 + amplitude * math.sin(phase))
        angle = rotate_deg * math.sin(phase * 0.7)
        m = cv2.getRotationMatrix2D((src_w / 2, src_h / 2), angle, scale)
        m[0, 2] += w / 2 - src_w / 2 + amplitude * w * math.sin(phase * 1.3)
        m[1, 2] += h / 2 - src_h / 2 + amplitude * h * 0.5 * math.cos(phase)
        warped = cv2.warpAffine(
            image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        frames.append(warped.astype(np.uint8, copy=False))
    return frames


def write_video(
    path: Path,
    frames: list[Image],
    fps: int = 30,
    *,
    audio: str | None = "aac",
    codec: str = "libx264",
    gop: int | None = None,
    index_first: bool = False,
) -> Path:
    """Encode ``frames`` with PyAV; add a 440 Hz tone as ``audio`` (codec name) when given.
    ``gop``: a keyframe every that many frames (damage then stays local); ``index_first``: the
    MP4 index before the media (as streaming files have it), so a cut-off file still opens."""
    options = {"movflags": "faststart"} if index_first else {}
    container = av.open(str(path), mode="w", options=options)
    h, w = frames[0].shape[:2]
    video = cast(av.VideoStream, container.add_stream(codec, rate=fps))
    video.width, video.height, video.pix_fmt = w, h, "yuv420p"
    if gop is not None:
        video.codec_context.gop_size = gop
        video.options = {"keyint_min": str(gop), "sc_threshold": "0"}
    audio_stream: av.AudioStream | None = None
    if audio:
        audio_stream = cast(av.AudioStream, container.add_stream(audio, rate=48000))
        audio_stream.layout = "stereo"
    for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        frame.time_base = Fraction(1, fps)
        container.mux(video.encode(frame))
    container.mux(video.encode(None))
    if audio is not None and audio_stream is not None:
        seconds = len(frames) / fps
        chunk = 1024
        total = int(seconds * 48000)
        fmt = "s16" if audio.startswith("pcm") else "fltp"
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            t = (np.arange(start, start + n) / 48000.0).astype(np.float32)
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            if fmt == "s16":
                samples = (np.stack([tone, tone], axis=1).reshape(1, -1) * 32767).astype(np.int16)
            else:
                samples = np.stack([tone, tone])
            af = av.AudioFrame.from_ndarray(samples, format=fmt, layout="stereo")
            af.sample_rate = 48000
            af.pts = start
            af.time_base = Fraction(1, 48000)
            container.mux(audio_stream.encode(af))
        container.mux(audio_stream.encode(None))
    container.close()
    return path


def probe(path: Path) -> dict[str, object]:
    """Decode ``path`` fully: frame count, size, duration, audio codec and the decoded frames."""
    container = av.open(str(path))
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    audio = [s.codec_context.name for s in container.streams.audio]
    audio_packets = 0
    if audio:
        container.seek(0)
        audio_packets = sum(1 for p in container.demux(audio=0) if p.size)
    duration = float(container.duration / 1e6) if container.duration else 0.0
    container.close()
    return {
        "frames": frames,
        "count": len(frames),
        "size": frames[0].shape[1::-1] if frames else None,
        "audio": audio,
        "audio_packets": audio_packets,
        "duration": duration,
    }


def run_livswap(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "livswap", *args], capture_output=True, text=True, timeout=timeout
    )


def face_change(swapped: Image, original: Image) -> tuple[float, float]:
    """Mean change (summed over RGB) inside the original's face box and left of it."""
    from livswap.track import detect_faces

    diff = np.abs(swapped.astype(int) - original.astype(int)).sum(axis=2)
    x0, y0, x1, y1 = (int(v) for v in detect_faces(original)[0].box)
    return float(diff[y0:y1, x0:x1].mean()), float(diff[:, : max(x0 - 40, 1)].mean())
