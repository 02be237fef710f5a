"""Regions of the target's face that stay the target's, for every engine.

A target's glasses belong to the target: a swapped face pasted over them leaves ghost rims and
glints under a half-transparent edge. Each stream remembers, per tracked face, whether it wears
glasses (the bridge's edge score, smoothed, with hysteresis so that the eye area does not switch
back and forth on a borderline face) and takes the frames out of the face's alpha: thin lines
only, so a face taken for one with glasses by mistake loses little of its swap.
Hands are handled by compose (:class:`livswap.compose.HandsInFront`), the mesh engine's own
eye and mouth openings by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from livswap.engine.mesh.source import glasses_score_at, spectacle_frames
from livswap.frame import Image

__all__ = ["TargetRegions"]

FloatArray = npt.NDArray[np.float32]

_RATE = 0.2  # how fast the smoothed glasses score follows a new frame's
# Stricter than for a source photo: frown lines score up to about 3, and keeping a target's
# creases costs the swap its eyes, while a source's creases painted out cost nothing.
TARGET_GLASSES_THRESHOLD = 3.5
_HYSTERESIS = 0.5


@dataclass
class _Glasses:
    score: float
    wearing: bool
    last_seen: int


@dataclass
class TargetRegions:
    """One stream's memory of its faces' glasses, and the masks of what stays the target's."""

    _tracks: dict[int, _Glasses] = field(default_factory=dict, init=False, repr=False)
    _frame: int = field(default=0, init=False, repr=False)

    def next_frame(self) -> None:
        """Call once per frame: forgets faces not seen for a second."""
        self._frame += 1
        self._tracks = {k: v for k, v in self._tracks.items() if self._frame - v.last_seen < 30}

    def wears_glasses(self, track_id: int, image: Image, points: FloatArray, ipd: float) -> bool:
        """Whether the face ``track_id`` (``points``: its landmarks in ``image``'s pixels,
        ``ipd`` apart) wears glasses, from this frame and its history."""
        score = glasses_score_at(image, points, ipd)
        state = self._tracks.get(track_id)
        if state is None:
            state = self._tracks[track_id] = _Glasses(score, False, self._frame)
        else:
            state.score += _RATE * (score - state.score)
            state.last_seen = self._frame
        threshold = TARGET_GLASSES_THRESHOLD - (_HYSTERESIS if state.wearing else 0.0)
        state.wearing = state.score > threshold
        return state.wearing

    def kept(
        self, image: Image, face: Any, to_crop: npt.NDArray[np.float64], size: int
    ) -> FloatArray | None:
        """Soft (size, size) mask, in a face's crop space, of what stays the target's (its
        spectacle frames when it wears glasses), or None."""
        lm = face.landmarks[:, :2]
        if not self.wears_glasses(face.track_id, image, lm, max(face.ipd, 8.0)):
            return None
        points = (lm.astype(np.float64) @ to_crop[:, :2].T + to_crop[:, 2]).astype(np.float32)
        scale = float(np.sqrt(abs(np.linalg.det(to_crop[:, :2]))))
        ipd = max(face.ipd, 8.0) * scale
        crop = cv2.warpAffine(image, to_crop, (size, size), flags=cv2.INTER_LINEAR)
        mask = spectacle_frames(np.asarray(crop, np.uint8), points, ipd)
        radius = max(1.0, 0.06 * ipd)
        soft = cv2.GaussianBlur(mask, (0, 0), radius).astype(np.float32) * np.float32(1 / 255)
        return np.maximum(soft, mask.astype(np.float32) * np.float32(1 / 255))
