"""Frame sources: webcams, video files, still images and a test pattern."""

from __future__ import annotations

from pathlib import Path

import av

from livswap.capture.base import FrameSource, SourceInfo
from livswap.capture.camera import CameraSource, list_cameras
from livswap.capture.files import (
    IMAGE_SUFFIXES,
    ImageSource,
    PatternSource,
    VideoFileSource,
    read_image,
)
from livswap.config import CaptureConfig
from livswap.errors import InputError

__all__ = [
    "CameraSource",
    "FrameSource",
    "ImageSource",
    "PatternSource",
    "SourceInfo",
    "VideoFileSource",
    "input_kind",
    "list_cameras",
    "open_source",
    "read_image",
]


def input_kind(spec: str) -> str:
    """Classify an input spec: ``"camera"``, ``"pattern"``, ``"image"`` or ``"video"``."""
    if spec == "pattern":
        return "pattern"
    if spec.isdigit() or spec.startswith("/dev/video"):
        return "camera"
    path = Path(spec)
    if not path.exists():
        raise InputError(
            f"input {spec!r} does not exist (expected a camera index, a file, or 'pattern')"
        )
    if path.is_dir():
        return "directory"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    return "video"


def open_source(cfg: CaptureConfig, *, offline: bool) -> FrameSource:
    """Open the source ``cfg.input`` names.

    ``offline`` means the result goes to a file: video files then decode as fast as the pipeline
    takes frames (``pacing = "auto"``) and a still image is a single frame.
    """
    kind = input_kind(cfg.input)
    if kind == "pattern":
        return PatternSource(cfg.width, cfg.height, cfg.fps)
    if kind == "camera":
        device: int | str = int(cfg.input) if cfg.input.isdigit() else cfg.input
        return CameraSource(
            device,
            width=cfg.width,
            height=cfg.height,
            fps=cfg.fps,
            max_backoff_s=cfg.reconnect_max_backoff_s,
        )
    if kind == "directory":
        raise InputError(f"input {cfg.input!r} is a directory; folder input needs --output DIR")
    if kind == "image":
        return ImageSource(cfg.input, repeat=not offline, fps=cfg.fps)
    realtime = cfg.pacing == "realtime" or (cfg.pacing == "auto" and not offline)
    try:
        return VideoFileSource(cfg.input, realtime=realtime, loop=cfg.loop)
    except av.error.FFmpegError as exc:
        raise InputError(f"input {cfg.input!r} is not a video: {exc}") from None
