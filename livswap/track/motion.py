"""How a tracked face moved from one frame to the next, measured on the image itself.

FaceMesh's landmarks on a face that holds still wander by about half a pixel from frame to
frame, and much of that wander is the whole mesh shifting together. A low-pass filter steadies
them only by lagging behind real movement. The image knows better: corners on the upper face
(brows, eye corners, nostrils, skin texture, the hairline) followed by pyramidal Lucas-Kanade
flow give the head's frame-to-frame motion to a few hundredths of a pixel. The landmark
filter (:class:`~livswap.track.filters.OneEuroFilter`) carries its state along by that motion
before it filters, so it can stay closed against FaceMesh's jitter without lagging behind a
moving head.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from livswap.track.landmarks import NOSE_TIP, face_index

__all__ = ["FaceMotion", "Similarity"]

FloatArray = npt.NDArray[np.float32]
GreyImage = npt.NDArray[np.uint8]
# (2, 3): x' = A @ x + t, A a scaled rotation. FaceMotion measures a translation only (A = I):
# fitted with rotation and scale too, the motion was noisier on a still face, and the landmark
# filter follows a head's slower turning and nearing on its own.
Similarity = npt.NDArray[np.float64]

MAX_CORNERS = 80
MIN_CORNERS = 12  # fewer followed corners than this (a blurred or covered face): no motion
INLIER_PX = 0.75  # a corner whose shift is farther than this from the median shift is not rigid
MIN_INLIER_SHARE = 0.5  # most corners must agree, or the face did not move as one
# The image's motion is trusted only where the landmarks moved alike, within FaceMesh's jitter
# (a quarter pixel) plus this much: else the corners followed something else (a hand sweeping
# across a still face drags most of them along).
DISAGREE_PX = 1.0
DISAGREE_OF_FACE = 0.005  # ... plus this share of the upper face's size
REFRESH_FRAMES = 10  # followed corners are kept this many frames, then looked for afresh


def _upper_face(landmarks: FloatArray) -> npt.NDArray[np.int32]:
    """The polygon of the face above its nose tip: it moves rigidly with the head, while the
    mouth and jaw move with speech."""
    index = face_index()
    oval = landmarks[index.face_oval, :2]
    eyes = (landmarks[index.left_iris, :2].mean(0) + landmarks[index.right_iris, :2].mean(0)) / 2
    down = landmarks[NOSE_TIP, :2] - eyes
    down /= max(float(np.linalg.norm(down)), 1e-6)
    above = (oval - landmarks[NOSE_TIP, :2]) @ down < 0
    points = np.vstack([oval[above], landmarks[NOSE_TIP, :2][None]])
    hull: npt.NDArray[np.int32] = cv2.convexHull(np.round(points).astype(np.int32))
    return hull


class FaceMotion:
    """One face's motion between consecutive frames of one stream (state: the last frame).

    Call :meth:`step` once per frame with the frame in grey and the face's landmarks there; it
    returns the motion that carries points of the previous frame's face onto this frame's (a
    translation), or None on the first frame and wherever the flow cannot be trusted.
    """

    def __init__(self) -> None:
        self._grey: GreyImage | None = None  # the last frame around the face (region's pixels)
        self._region: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in the frame
        self._corners: FloatArray | None = None  # (K, 1, 2) in the region's pixels
        self._followed: FloatArray | None = None  # the corners that moved with the face, found
        # again in this frame (the last region's pixels)
        self._age = 0  # frames since the corners were looked for
        self._centroid: FloatArray | None = None  # the landmarks' mean in the last frame

    def reset(self) -> None:
        self._grey = self._region = self._corners = self._followed = self._centroid = None

    def step(self, grey: GreyImage, landmarks: FloatArray) -> Similarity | None:
        motion = self._follow(grey)
        centroid = landmarks[:, :2].mean(axis=0)
        if motion is not None and self._centroid is not None and self._region is not None:
            size = max(self._region[2] - self._region[0], self._region[3] - self._region[1])
            disagree = np.linalg.norm(motion[:, 2] - (centroid - self._centroid))
            if disagree > DISAGREE_PX + DISAGREE_OF_FACE * size:
                motion = None
        self._remember(grey, landmarks)
        self._centroid = centroid if self._region is not None else None
        return motion

    def _follow(self, grey: GreyImage) -> Similarity | None:
        self._followed = None
        if self._grey is None or self._region is None or self._corners is None:
            return None
        x0, y0, x1, y1 = self._region
        if x1 > grey.shape[1] or y1 > grey.shape[0]:  # the stream changed size
            return None
        # Only the region around the face: the flow's pyramids of a whole HD frame cost more
        # than everything else here.
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            self._grey,
            grey[y0:y1, x0:x1],
            self._corners,
            self._corners.copy(),
            winSize=(15, 15),
            maxLevel=2,
            criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01),
        )
        found = status.ravel() == 1
        if found.sum() < MIN_CORNERS:
            return None
        shifts = (moved[found] - self._corners[found]).reshape(-1, 2)
        agree = np.linalg.norm(shifts - np.median(shifts, axis=0), axis=1) < INLIER_PX
        if agree.sum() < max(MIN_CORNERS, MIN_INLIER_SHARE * found.sum()):
            return None
        motion = np.eye(2, 3)
        motion[:, 2] = shifts[agree].mean(axis=0)
        self._followed = moved[found][agree].reshape(-1, 1, 2)
        return motion

    def _remember(self, grey: GreyImage, landmarks: FloatArray) -> None:
        """This frame's corners on the upper face, in a region around it wide enough for the
        next frame's face to still be inside."""
        polygon = _upper_face(landmarks)
        x, y, w, h = cv2.boundingRect(polygon)
        margin = max(w, h) // 4 + 16
        x0, y0 = max(x - margin, 0), max(y - margin, 0)
        x1, y1 = min(x + w + margin, grey.shape[1]), min(y + h + margin, grey.shape[0])
        if min(w, h) < 16 or x1 - x0 < 32 or y1 - y0 < 32:
            self.reset()
            return
        last = self._region
        corners: FloatArray | None
        if (
            self._followed is not None
            and last is not None
            and len(self._followed) >= MAX_CORNERS // 2
            and self._age < REFRESH_FRAMES
        ):
            # Looking for corners costs more than following them: the ones that moved with the
            # face are kept, for a few frames.
            corners = self._followed + np.array([last[0] - x0, last[1] - y0], np.float32)
            self._age += 1
        else:
            corners = _find_corners(grey, polygon, (x0, y0))
            self._age = 0
        region = grey[y0:y1, x0:x1]
        if corners is None or len(corners) < MIN_CORNERS:
            self.reset()
            return
        self._grey, self._region = region, (x0, y0, x1, y1)
        self._corners = corners.astype(np.float32)


def _find_corners(
    grey: GreyImage, polygon: npt.NDArray[np.int32], origin: tuple[int, int]
) -> FloatArray | None:
    """Corners inside ``polygon`` (looked for in its bounding box only: what costs here is
    looking), in the pixels of a region whose top-left corner is ``origin``."""
    x, y, w, h = cv2.boundingRect(polygon)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, grey.shape[1]), min(y + h, grey.shape[0])
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(mask, (polygon - np.array([x0, y0])).astype(np.int32), (255,))
    found = cv2.goodFeaturesToTrack(
        grey[y0:y1, x0:x1],
        maxCorners=MAX_CORNERS,
        qualityLevel=0.01,
        minDistance=max(max(w, h) / 30, 3.0),
        mask=mask,
        blockSize=5,
    )
    if found is None:
        return None
    return np.asarray(found + np.array([x0 - origin[0], y0 - origin[1]], np.float32), np.float32)
