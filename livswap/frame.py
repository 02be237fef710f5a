"""The one frame contract shared by every stage.

A :class:`Frame` is created by a capture source and then only added to: tracking attaches faces,
the engine's stream describes each swapped face (:class:`SwappedFace`), compose pastes them and
writes ``output``. Pixels are RGB, uint8, HxWx3 everywhere
inside livswap; conversion to and from OpenCV's BGR happens once, at the boundary.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Frame", "Image", "SwappedFace", "check_image"]

Image = npt.NDArray[np.uint8]
"""An RGB image, shape (H, W, 3), dtype uint8."""


def check_image(image: Any, what: str) -> Image:
    """Validate that ``image`` is an HxWx3 uint8 array; raise ``ValueError`` quoting what it is."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what}: expected an HxWx3 uint8 array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{what}: expected an HxWx3 uint8 array, got shape {image.shape} dtype {image.dtype}"
        )
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"{what}: image too small, got shape {image.shape}")
    return image


@dataclass(eq=False)
class SwappedFace:
    """One face as an engine describes it; compose pastes it (on the CPU or on the device).

    Attributes:
        track_id: the tracked face it belongs to (compose fades per track).
        to_crop: (2, 3) affine map from frame pixels to crop pixels.
        alpha: (S, S) float32 in 0..1, where the crop replaces the frame, in crop space.
        crop: the swapped crop: (S, S, 3) uint8 RGB, or a (3, S, S) float tensor in 0..1 on the
            engine's device; None while ``pending`` is still producing it.
        pending: the batched generator's job that produces ``crop``.
        strength: the engine's own weight for this face (0..1); compose multiplies its fade in.
        displacement: (R, R, 2) float32 or None. Where the face was reshaped, the frame's own
            pixels that show through (1 - alpha) come from elsewhere in the frame: at each point
            of the crop's square, from its frame position plus the displacement there (frame
            pixels, x and y). It is smooth, so it may cover the square at a lower resolution R
            than the crop's (pixel centres aligned as ``cv2.resize`` aligns them). None: they
            show where they are. (Only the mesh engine reshapes; it pastes on the CPU.)
    """

    track_id: int
    to_crop: npt.NDArray[np.float64]
    alpha: npt.NDArray[np.float32]
    crop: Any = None
    pending: Future[Any] | None = None
    strength: float = 1.0
    displacement: npt.NDArray[np.float32] | None = None

    @property
    def size(self) -> int:
        return int(self.alpha.shape[0])

    def resolve(self) -> Any:
        """The swapped crop, waiting for its generator job when it is still pending."""
        if self.crop is None and self.pending is not None:
            self.crop = self.pending.result()
            self.pending = None
        return self.crop


@dataclass(slots=True, eq=False)
class Frame:
    """One video frame on its way through the pipeline.

    Attributes:
        image: the captured pixels, RGB uint8 (H, W, 3). Never modified after capture.
        seq: sequence number assigned by the source, starting at 0.
        captured_ns: ``time.monotonic_ns()`` when the frame was captured (latency origin).
        pts: presentation time in seconds within the source (media time for files,
            seconds since start for cameras).
        timings_ms: per-stage processing time in milliseconds, filled in by each stage.
        faces: tracked faces (``livswap.track.Face``), filled in by the track stage.
        hands: hands overlapping a face (``livswap.track.hands.Hand``), filled in by the hands
            stage; compose keeps them in front of the swapped faces.
        swaps: the swapped faces the engine described, pasted by compose.
        device_image: the frame already uploaded by an engine's device path (compose pastes
            onto it instead of uploading again); opaque outside :mod:`livswap.cuda`.
        output: the composited result (RGB uint8), written by the compose stage.
        notes: small per-frame flags (for example ``"camera_lost"`` or ``"engine_failed"``).
    """

    image: Image
    seq: int
    captured_ns: int
    pts: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    faces: list[Any] = field(default_factory=list)
    hands: list[Any] = field(default_factory=list)
    swaps: list[SwappedFace] = field(default_factory=list)
    device_image: Any = None
    output: Image | None = None
    notes: set[str] = field(default_factory=set)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def result(self) -> Image:
        """The composited output if compose ran, else the captured image."""
        return self.output if self.output is not None else self.image

    def age_ms(self, now_ns: int | None = None) -> float:
        """Milliseconds since capture."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        return (now - self.captured_ns) / 1e6
