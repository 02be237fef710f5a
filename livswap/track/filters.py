"""One Euro filter (Casiez et al., CHI 2012) for landmark arrays.

Low cut-off when still (kills jitter), rising with speed (keeps lag small in fast motion).
Speeds are measured in units of the face's inter-pupil distance per second, so the same
parameters behave the same for a small face far away and a large face close up.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from livswap.track.motion import Similarity

__all__ = ["OneEuroFilter"]

FloatArray = npt.NDArray[np.float32]


def _moved(points: FloatArray, motion: Similarity) -> FloatArray:
    moved = points.copy()
    moved[:, :2] = points[:, :2] @ motion[:, :2].T.astype(np.float32) + motion[:, 2]
    if points.shape[1] > 2:  # depth scales with the face's size
        moved[:, 2:] *= np.float32(math.sqrt(abs(np.linalg.det(motion[:, :2]))))
    return moved


# Speed (IPD/s) that FaceMesh's jitter alone reaches on a still face: only speed beyond it is
# movement, and opens the filter.
JITTER_SPEED = 0.05
# The same for a point's own speed beyond the face's: per point, the jitter is larger. Beyond
# it, a point's own motion opens its filter strongly (point_weight), so a mouth opening or a
# blink is followed at once (at 0.25 and no threshold, the mouth's opening trailed by 0.07 of
# the eye distance on average while speaking, lp_d6; now 0.04).
OWN_JITTER_SPEED = 0.3


def _alpha(cutoff: FloatArray | float, dt: float) -> FloatArray | float:
    tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filters an (N, D) array sampled at irregular times.

    Args:
        min_cutoff: cut-off frequency in Hz when the points are still.
        beta: how fast the cut-off rises with speed (per IPD/s).
        d_cutoff: cut-off for the speed estimate itself, in Hz.
        point_weight: how much a point's own motion (beyond the face's) opens its filter.
    """

    def __init__(
        self, min_cutoff: float, beta: float, d_cutoff: float = 1.0, point_weight: float = 10.0
    ) -> None:
        self.point_weight = point_weight
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self._x: FloatArray | None = None
        self._dx: FloatArray | None = None
        self._t: float | None = None

    def reset(self) -> None:
        self._x = self._dx = None
        self._t = None

    def __call__(
        self, x: FloatArray, t: float, scale: float, motion: Similarity | None = None
    ) -> FloatArray:
        """Filter sample ``x`` taken at time ``t`` (s); ``scale`` is the IPD in x's units.

        ``motion``, where known, is how the image moved since the last sample (a similarity on
        x and y, :class:`~livswap.track.motion.FaceMotion`): the filter's state moves with it
        first, so what is filtered, and what its speed opens it to, is only what the image's
        motion does not explain: jitter, and the face's own changes of shape."""
        if self._x is None or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x
        if motion is not None:
            self._x = _moved(self._x, motion)
        dt = t - self._t
        dx = (x - self._x) / dt
        assert self._dx is not None
        a_d = _alpha(self.d_cutoff, dt)
        dx_hat = self._dx + a_d * (dx - self._dx)
        # Speed from the face's mean velocity, and from each point's own velocity beyond it:
        # only what exceeds the jitter of each counts (jitter would open the filter exactly
        # when it should stay closed), and a point's own motion beyond that opens it strongly
        # (a mouth that opens while the head holds still).
        mean_v = dx_hat[:, :2].mean(axis=0, keepdims=True)
        own = np.linalg.norm(dx_hat[:, :2] - mean_v, axis=1, keepdims=True)
        face_speed = max(float(np.linalg.norm(mean_v)) / max(scale, 1e-6) - JITTER_SPEED, 0.0)
        own_speed = np.maximum(own / max(scale, 1e-6) - OWN_JITTER_SPEED, 0.0)
        speed = face_speed + self.point_weight * own_speed
        cutoff = self.min_cutoff + self.beta * speed
        a = _alpha(cutoff, dt)
        x_hat = (self._x + a * (x - self._x)).astype(np.float32)
        self._x, self._dx, self._t = x_hat, dx_hat.astype(np.float32), t
        return x_hat
