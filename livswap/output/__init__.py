"""Output sinks: virtual camera, video and image files, preview window."""

from livswap.output.base import Sink
from livswap.output.files import (
    IMAGE_OUTPUT_SUFFIXES,
    VIDEO_OUTPUT_SUFFIXES,
    ImageFileSink,
    VideoFileSink,
    check_writable,
)
from livswap.output.preview import NullSink, PreviewSink
from livswap.output.virtualcam import VirtualCameraSink, virtual_camera_help

__all__ = [
    "IMAGE_OUTPUT_SUFFIXES",
    "VIDEO_OUTPUT_SUFFIXES",
    "ImageFileSink",
    "NullSink",
    "PreviewSink",
    "Sink",
    "VideoFileSink",
    "VirtualCameraSink",
    "check_writable",
    "virtual_camera_help",
]
