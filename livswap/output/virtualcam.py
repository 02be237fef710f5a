"""Virtual webcam output through pyvirtualcam."""

from __future__ import annotations

import logging
import sys

import cv2
import numpy as np
import pyvirtualcam

from livswap.capture.base import SourceInfo
from livswap.errors import VirtualCameraError
from livswap.frame import Frame
from livswap.output.base import Outcome

__all__ = ["VirtualCameraSink", "virtual_camera_help"]

log = logging.getLogger(__name__)


def virtual_camera_help(platform: str = sys.platform) -> str:
    """One line telling the user how to create a virtual camera device on ``platform``."""
    if platform.startswith("linux"):
        return (
            "create one with: sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback "
            'devices=1 video_nr=10 card_label="livswap" exclusive_caps=1'
        )
    if platform == "darwin":
        return (
            "install OBS Studio 30+ (https://obsproject.com), click 'Start Virtual Camera' once to "
            "install its system extension, then stop it and run livswap again"
        )
    if platform == "win32":
        return (
            "install OBS Studio 26+ (https://obsproject.com) and click 'Start Virtual Camera' "
            "once, or install Unity Capture; then run livswap again"
        )
    return "no virtual camera backend is known for this platform; use --output FILE instead"


class VirtualCameraSink:
    """Sends frames to a virtual webcam that video apps can pick.

    Frames whose size differs from the camera's (a webcam that renegotiated) are resized.
    """

    name = "virtualcam"

    def __init__(self, info: SourceInfo, *, backend: str = "auto", device: str = "") -> None:
        self.wants_stop = False
        try:
            self._cam = pyvirtualcam.Camera(
                width=info.width,
                height=info.height,
                fps=info.fps,
                fmt=pyvirtualcam.PixelFormat.RGB,
                backend=None if backend == "auto" else backend,
                device=device or None,
            )
        except (RuntimeError, ValueError) as exc:
            reason = " ".join(str(exc).split())
            raise VirtualCameraError(
                f"no virtual camera available ({reason}); {virtual_camera_help()}"
            ) from None
        self.device = self._cam.device
        self.size = (info.width, info.height)
        self._closed = False
        log.info("VirtualCameraSink: sending %dx%d to %s", *self.size, self.device)

    def send(self, frame: Frame) -> None:
        image = frame.result
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA).astype(np.uint8)
        self._cam.send(np.ascontiguousarray(image))

    def close(self, outcome: Outcome = "complete") -> None:
        if not self._closed:
            self._closed = True
            self._cam.close()
