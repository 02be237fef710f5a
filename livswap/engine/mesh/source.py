"""Source preparation for the mesh engine, once per source photo: landmarks and a skin mask."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from livswap.errors import EngineError
from livswap.frame import Image
from livswap.track.landmarks import face_index
from livswap.track.tracker import Face, detect_faces

__all__ = ["SourceFace", "prepare_source", "skin_mask"]

# OpenCV returns loosely typed arrays; intermediates here are float32 or uint8 by construction.
FloatArray = npt.NDArray[Any]

# Cheek and mid-forehead landmarks: reliably bare skin, used to learn the skin colour.
_SKIN_SAMPLE_POINTS = (50, 280, 205, 425, 101, 330, 118, 347, 151, 9, 108, 337)


@dataclass(frozen=True)
class SourceFace:
    """A prepared source photo.

    Attributes:
        image: RGB uint8 source photo.
        face: its largest face (landmarks in the photo's pixels).
        skin: (H, W) float32 0..1: where the photo shows the face's own skin and features; 0 on
            hair, glasses (the whole eye surround when the photo has them: the target's own
            eyes and brows show there instead), beard edges and background.
        key: content hash of the photo.
    """

    image: Image
    face: Face
    skin: FloatArray
    key: str
    glasses: bool = False


def _poly_mask(shape: tuple[int, int], points: FloatArray) -> npt.NDArray[Any]:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return mask


def _lowered_forehead(
    lm: FloatArray, oval: npt.NDArray[np.intp], brows: npt.NDArray[np.intp], amount: float
) -> FloatArray:
    """The face outline with its forehead part pulled down toward the brows by ``amount``.

    FaceMesh's forehead points sit near the hairline, where a fringe often starts: the top of
    the source's forehead is the likeliest place to paste hair, and the least identity-bearing.
    """
    pts = lm[oval].copy()
    brow_y = float(lm[brows, 1].min())
    above = pts[:, 1] < brow_y
    pts[above, 1] = pts[above, 1] + amount * (brow_y - pts[above, 1])
    return pts


def _skin_model(ycc: FloatArray, lm: FloatArray, ipd: float) -> tuple[FloatArray, FloatArray]:
    r = max(2, int(ipd * 0.08))
    samples = []
    for p in _SKIN_SAMPLE_POINTS:
        x, y = np.round(lm[p]).astype(int)
        patch = ycc[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1].reshape(-1, 3)
        if patch.size:
            samples.append(patch)
    pts = np.concatenate(samples)
    mean = np.median(pts, axis=0)
    spread = np.maximum(np.percentile(np.abs(pts - mean), 90, axis=0), (6.0, 3.0, 3.0))
    return mean.astype(np.float32), spread.astype(np.float32)


def glasses_score(image: Image, face: Face) -> float:
    """How strongly the nose bridge shows horizontal edges, relative to the cheeks.

    Bare skin over the nose bridge is smooth; a spectacle bridge puts
    strong horizontal edges there. Scores above about 2.3 mean glasses (deep frown lines alone
    reach about 2; faint translucent rims stay below and are not caught).
    """
    lm = face.landmarks[:, :2]
    ipd = max(face.ipd, 8.0)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))

    def box_mean(center: FloatArray, rw: float, rh: float) -> float:
        x, y = int(center[0]), int(center[1])
        box = gy[max(y - int(rh), 0) : y + int(rh) + 1, max(x - int(rw), 0) : x + int(rw) + 1]
        return float(box.mean()) if box.size else 0.0

    bridge = box_mean((lm[168] + lm[6]) / 2, ipd * 0.08, ipd * 0.15)
    cheeks = (box_mean(lm[50], ipd * 0.1, ipd * 0.1) + box_mean(lm[280], ipd * 0.1, ipd * 0.1)) / 2
    return bridge / (cheeks + 2.0)


GLASSES_THRESHOLD = 2.3


def glasses_region(image: Image, face: Face) -> npt.NDArray[Any] | None:
    """Where spectacles sit (both eye surrounds, the brows and the bridge), or None."""
    if glasses_score(image, face) < GLASSES_THRESHOLD:
        return None
    idx = face_index()
    lm = face.landmarks[:, :2]
    h, w = image.shape[:2]
    ipd = max(face.ipd, 8.0)
    region = np.zeros((h, w), np.uint8)
    for loop in (idx.left_eye, idx.right_eye):
        region |= _poly_mask((h, w), lm[loop])
    for group in (idx.left_brow, idx.right_brow):
        region |= _poly_mask((h, w), cv2.convexHull(lm[group].astype(np.float32)).reshape(-1, 2))
    k = int(ipd * 0.8) | 1
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    x0, y0 = np.round(lm[168]).astype(int)
    x1, y1 = np.round(lm[6]).astype(int)
    cv2.line(region, (int(x0), int(y0)), (int(x1), int(y1)), 255, max(2, int(ipd * 0.35)))
    return region


def skin_mask(image: Image, face: Face) -> FloatArray:
    """Soft mask of the face's own skin and features inside the face outline.

    Skin colour is learned from the cheeks and forehead (YCrCb mean and spread); inside the
    outline, pixels far from it (hair, glasses frames, a beard, background showing through)
    are excluded, except on the brows, eyes and lips, which belong to the face whatever their
    colour. The result is cleaned up morphologically and feathered.
    """
    idx = face_index()
    lm = face.landmarks[:, :2]
    h, w = image.shape[:2]
    ipd = max(face.ipd, 8.0)
    brows = np.concatenate([idx.left_brow, idx.right_brow])
    oval = _poly_mask((h, w), _lowered_forehead(lm, idx.face_oval, brows, 0.3))
    ycc = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    mean, spread = _skin_model(ycc, lm, ipd)
    chroma = np.abs(ycc[..., 1:] - mean[1:]) / spread[1:]
    chroma_far = chroma.max(axis=2) > 3.0
    # Beards, stubble and moustaches are darker than the cheeks at the same chroma; below the
    # nose (where they grow, and where skin is rarely in deep shadow) the test is stricter.
    too_dark = ycc[..., 0] < mean[0] - 3.0 * spread[0] - 12
    below_nose = np.zeros((h, w), bool)
    below_nose[int(max(lm[2, 1], 0)) :, :] = True
    too_dark |= below_nose & (ycc[..., 0] < mean[0] - 2.4 * spread[0] - 10)
    non_skin = (chroma_far | too_dark).astype(np.uint8) * 255
    # The eyes, lips and brows belong to the face whatever their colour; protect them tightly so
    # that a moustache right above the lips is still left out.
    features = np.zeros((h, w), np.uint8)
    for loop in (idx.left_eye, idx.right_eye, idx.lips_outer):
        features |= _poly_mask((h, w), lm[loop])
    for group in (idx.left_brow, idx.right_brow):
        hull = cv2.convexHull(lm[group].astype(np.float32))
        features |= _poly_mask((h, w), hull.reshape(-1, 2))
    k = max(3, int(ipd * 0.04)) | 1
    features = cv2.dilate(features, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    non_skin[features > 0] = 0
    glasses = glasses_region(image, face)
    if glasses is not None:
        non_skin |= glasses
    ks = max(3, int(ipd * 0.06)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ks, ks))
    non_skin = cv2.morphologyEx(non_skin, cv2.MORPH_OPEN, kernel)
    non_skin = cv2.dilate(non_skin, kernel)
    keep = cv2.bitwise_and(oval, cv2.bitwise_not(non_skin))
    # The largest connected piece is the face; islands (a strand's gap, an earring) are dropped.
    count, labels, stats, _ = cv2.connectedComponentsWithStats((keep > 127).astype(np.uint8))
    if count > 1:
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        keep = np.where(labels == largest, keep, 0).astype(np.uint8)
    # Soft edges: wherever the source is left out, the target shows through without a step.
    sigma = max(1.0, ipd * 0.04)
    soft = cv2.GaussianBlur(keep.astype(np.float32) / 255.0, (0, 0), sigma)
    return np.minimum(soft, keep.astype(np.float32) / 255.0 + soft * 0.5).astype(np.float32)


def prepare_source(image: Image, what: str = "source photo") -> SourceFace:
    """Find the largest face in ``image`` and prepare it; EngineError when there is none."""
    faces = detect_faces(image, max_faces=4)
    if not faces:
        raise EngineError(f"{what}: no face found (use a clear, frontal photo of one face)")
    face = faces[0]
    if face.ipd < 12:
        raise EngineError(
            f"{what}: the face is too small ({face.ipd:.0f} px between the eyes, need at least 12)"
        )
    key = hashlib.sha256(image.tobytes()).hexdigest()[:16]
    return SourceFace(
        image=image,
        face=face,
        skin=skin_mask(image, face),
        key=key,
        glasses=glasses_score(image, face) >= GLASSES_THRESHOLD,
    )
