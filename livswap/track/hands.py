"""Hands in front of faces: MediaPipe Hands near the tracked faces, as occluder silhouettes.

A hand over the face is skin-coloured, so colour alone cannot tell it from the cheek behind it.
MediaPipe Hands (its models ship inside mediapipe, like FaceMesh) finds its 21 landmarks; the
silhouette is drawn from them (the palm polygon, each finger a tapered capsule along its bones,
a stub of the wrist), so it follows the fingers, not a box. Compose keeps these regions in front
of every engine's swapped face (:class:`livswap.compose.Compositor`).

Detection runs only on a square around the tracked faces (a hand that can cover a face is
within about one face size of it), and, while no hand is near a face, only every
``detect_every``-th frame: with no hand in view the stage costs a fraction of one detection.
The frames it looked at carry the model's own time as ``timings_ms["hand_model"]``, so a
benchmark can tell what one detection costs from what the stage costs on average.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from livswap.frame import Frame, Image

__all__ = ["MODEL_TIMING", "Hand", "HandTracker", "hand_silhouette", "occluder_mask"]

FloatArray = npt.NDArray[np.float32]

WRIST = 0
# Landmark chains from the wrist to each fingertip (MediaPipe's hand topology).
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
PALM = (0, 1, 2, 5, 9, 13, 17)
# Finger half-widths as a fraction of the palm's width (knuckle 5 to knuckle 17), at the
# finger's base and at its tip: measured fingers are about 0.4 palm widths wide at the base.
_BASE_RADIUS = 0.23
_TIP_RADIUS = 0.17
_THUMB_RADIUS = 0.26
_WRIST_LENGTH, _WRIST_RADIUS = 0.6, 0.45
# Where MediaPipe runs: a square of this many face sizes around the faces, at most this big.
_REGION_FACES = 3.0
_DETECT_SIDE = 256
MODEL_TIMING = "hand_model"  # frame.timings_ms key: the model's time on frames it looked at


@dataclass(frozen=True)
class Hand:
    """One hand in one frame: ``landmarks`` (21, 2) in frame pixels, and MediaPipe's score."""

    landmarks: FloatArray
    score: float

    @property
    def wrist_end(self) -> FloatArray:
        """Where the silhouette's stub of the wrist ends, below the palm."""
        down = _unit(self.landmarks[WRIST] - self.landmarks[9])
        end: FloatArray = self.landmarks[WRIST] + down * np.float32(self.palm_width * _WRIST_LENGTH)
        return end

    @property
    def palm_width(self) -> float:
        return max(float(np.linalg.norm(self.landmarks[5] - self.landmarks[17])), 1.0)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Bounding box of the silhouette (landmarks and the wrist's stub, grown by the
        fingers' width)."""
        width = self.palm_width
        points = np.vstack([self.landmarks, self.wrist_end])
        pad = width * max(_THUMB_RADIUS + 0.1, _WRIST_RADIUS)
        x0, y0 = points.min(axis=0) - pad
        x1, y1 = points.max(axis=0) + pad
        return float(x0), float(y0), float(x1), float(y1)


def hand_silhouette(
    hand: Hand, shape: tuple[int, int], transform: npt.NDArray[np.float64] | None = None
) -> npt.NDArray[Any]:
    """uint8 mask (0/255) of ``hand`` drawn into an image of ``shape``; ``transform`` (2x3, a
    similarity) maps frame pixels to the mask's (a face's crop), None for frame pixels."""
    mask = np.zeros(shape, np.uint8)
    pts, scale = hand.landmarks, 1.0
    if transform is not None:
        pts = (pts.astype(np.float64) @ transform[:, :2].T + transform[:, 2]).astype(np.float32)
        scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
    width = hand.palm_width * scale
    palm = np.round(pts[list(PALM)] * 16).astype(np.int32)  # 4 fractional bits: sub-pixel edges
    cv2.fillPoly(mask, [cv2.convexHull(palm)], (255,), cv2.LINE_AA, shift=4)
    for finger in FINGERS:
        base_r = (_THUMB_RADIUS if finger[0] == 1 else _BASE_RADIUS) * width
        tip_r = _TIP_RADIUS * width
        chain = [pts[WRIST] if finger[0] == 1 else pts[finger[0]]] + [pts[i] for i in finger]
        for k, (a, b) in enumerate(itertools.pairwise(chain)):
            t = k / max(len(chain) - 2, 1)
            r = base_r + (tip_r - base_r) * t
            _capsule(mask, a, b, r)
        # The tip landmark sits a little inside the fingertip: round it off beyond it.
        _capsule(mask, chain[-1], chain[-1] + _unit(chain[-1] - chain[-2]) * tip_r * 0.6, tip_r)
    # The wrist continues below the palm (a hand on the chin brings its wrist along).
    down = _unit(pts[WRIST] - pts[9])
    _capsule(mask, pts[WRIST], pts[WRIST] + down * width * _WRIST_LENGTH, width * _WRIST_RADIUS)
    return mask


def occluder_mask(
    hands: list[Hand], shape: tuple[int, int], transform: npt.NDArray[np.float64] | None = None
) -> FloatArray | None:
    """Soft float32 mask of every hand (see :func:`hand_silhouette`), grown a little and
    feathered outwards so the whole hand stays in front; None when there are no hands."""
    if not hands:
        return None
    mask = np.zeros(shape, np.uint8)
    for hand in hands:
        mask |= hand_silhouette(hand, shape, transform)
    scale = 1.0 if transform is None else float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
    grow = max(1, round(0.08 * scale * max(h.palm_width for h in hands)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    mask = np.asarray(cv2.dilate(mask, kernel), np.uint8)
    soft = cv2.GaussianBlur(mask, (0, 0), grow / 2)
    return np.maximum(soft, mask).astype(np.float32) * np.float32(1 / 255)


def _capsule(mask: npt.NDArray[Any], a: FloatArray, b: FloatArray, radius: float) -> None:
    thickness = max(1, round(2 * radius))
    p = (round(float(a[0])), round(float(a[1])))
    q = (round(float(b[0])), round(float(b[1])))
    cv2.line(mask, p, q, (255,), thickness, cv2.LINE_AA)


def _unit(v: FloatArray) -> FloatArray:
    n = float(np.linalg.norm(v)) or 1.0
    return (v / n).astype(np.float32)


def _region(faces: list[Any]) -> tuple[int, int, int] | None:
    """The square (x0, y0, side) around all faces where a hand could cover one of them,
    on a coarse grid so that it holds still while the face moves a little."""
    if not faces:
        return None
    x0 = min(f.box[0] for f in faces)
    y0 = min(f.box[1] for f in faces)
    x1 = max(f.box[2] for f in faces)
    y1 = max(f.box[3] for f in faces)
    size = max(max(f.box[2] - f.box[0], f.box[3] - f.box[1]) for f in faces)
    side = max(x1 - x0, y1 - y0) + (_REGION_FACES - 1) * size
    grid = max(16, int(size / 4))
    side = int(np.ceil(side / grid) * grid)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round((cx - side / 2) / grid) * grid)
    top = int(round((cy - side / 2) / grid) * grid)
    return left, top, side


@dataclass
class HandTracker:
    """One stream's hand finder: adds ``frame.hands``, the hands that overlap a tracked face.

    ``static`` is for unrelated still images (every image detected from scratch).
    """

    min_confidence: float = 0.5
    detect_every: int = 4
    static: bool = False
    _hands: Any = field(default=None, init=False, repr=False)
    _frames_without: int = field(default=0, init=False, repr=False)
    _had_hands: bool = field(default=False, init=False, repr=False)

    def _model(self) -> Any:
        if self._hands is None:
            import mediapipe as mp

            self._hands = mp.solutions.hands.Hands(
                static_image_mode=self.static,
                max_num_hands=2,
                model_complexity=0,
                min_detection_confidence=self.min_confidence,
                min_tracking_confidence=self.min_confidence,
            )
        return self._hands

    def close(self) -> None:
        if self._hands is not None:
            self._hands.close()
            self._hands = None

    def track(self, frame: Frame) -> None:
        frame.hands = []
        region = _region(frame.faces)
        if region is None:
            self._had_hands = False
            return
        if not self._had_hands and not self.static:
            # No hand lately: look only every few frames (a hand coming in is caught within
            # a tenth of a second; meanwhile the mesh engine's colour-based occlusion holds).
            # On every frame, a detection would cost a 2-core laptop a third of its budget.
            self._frames_without += 1
            if self._frames_without % self.detect_every:
                return
        start = time.perf_counter()
        found = self.find(frame.image, region)
        frame.timings_ms[MODEL_TIMING] = (time.perf_counter() - start) * 1e3
        hands = [h for h in found if _near_a_face(h, frame.faces)]
        frame.hands = hands
        self._had_hands = bool(hands)
        self._frames_without = 0 if hands else self._frames_without

    def find(self, image: Image, region: tuple[int, int, int]) -> list[Hand]:
        """Hands in the square ``region`` (x0, y0, side) of ``image``, in frame pixels."""
        left, top, side = region
        crop, scale = _square_crop(image, left, top, side, _DETECT_SIDE)
        result = self._model().process(crop)
        hands = []
        for lm, handed in zip(
            result.multi_hand_landmarks or [], result.multi_handedness or [], strict=False
        ):
            pts = np.array([(p.x, p.y) for p in lm.landmark], np.float32) * np.float32(
                crop.shape[0]
            )
            pts = pts / np.float32(scale) + np.array([left, top], np.float32)
            hands.append(Hand(landmarks=pts, score=float(handed.classification[0].score)))
        return hands


def _square_crop(image: Image, left: int, top: int, side: int, out: int) -> tuple[Image, float]:
    """The square (left, top, side) of ``image`` (padded black beyond its edges) resized to at
    most ``out`` pixels; returns it and the frame-to-crop scale."""
    h, w = image.shape[:2]
    x0, y0 = min(max(left, 0), w), min(max(top, 0), h)
    x1, y1 = max(min(left + side, w), x0), max(min(top + side, h), y0)
    crop: Any = cv2.copyMakeBorder(
        image[y0:y1, x0:x1],
        y0 - top,
        top + side - y1,
        x0 - left,
        left + side - x1,
        cv2.BORDER_CONSTANT,
        value=(0, 0, 0),
    )
    scale = min(1.0, out / side)
    if scale < 1.0:
        n = max(1, round(side * scale))
        crop = cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA)
        scale = n / side
    return np.ascontiguousarray(crop, np.uint8), scale


def _near_a_face(hand: Hand, faces: list[Any]) -> bool:
    hx0, hy0, hx1, hy1 = hand.box
    for face in faces:
        fx0, fy0, fx1, fy1 = face.box
        if hx0 < fx1 and hx1 > fx0 and hy0 < fy1 and hy1 > fy0:
            return True
    return False
