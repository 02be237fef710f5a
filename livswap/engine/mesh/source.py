"""Source preparation for the mesh engine, once per source photo: landmarks, a skin mask, the
photo brought to a fair exposure when it is dim, its spectacle frames painted out, a side
light's shadows and the shade hair casts beside it lifted."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from livswap.compose import masked_lowpass
from livswap.engine.mesh.warp import rasterize
from livswap.errors import EngineError
from livswap.frame import Image
from livswap.track.landmarks import face_index, mirror_map
from livswap.track.tracker import Face, detect_faces

__all__ = [
    "SourceFace",
    "deep_shadow_keep",
    "even_side_light",
    "glasses_area",
    "glasses_score",
    "lab_to_rgb",
    "lift_hair_shadows",
    "normalise_exposure",
    "prepare_source",
    "rgb_to_lab",
    "skin_mask",
    "source_wears_glasses",
    "spectacle_frames",
    "without_glasses",
]

# OpenCV returns loosely typed arrays; intermediates here are float32 or uint8 by construction.
FloatArray = npt.NDArray[Any]

# The nose's outer points (wings and bridge), for the middle of the face.
_NOSE_SIDES = np.array([48, 278, 129, 358, 98, 327, 168, 6], np.intp)
# Cheek and mid-forehead landmarks: reliably bare skin, used to learn the skin colour.
_SKIN_SAMPLE_POINTS = (50, 280, 205, 425, 101, 330, 118, 347, 151, 9, 108, 337)


@dataclass(frozen=True)
class SourceFace:
    """A prepared source photo.

    Attributes:
        image: RGB uint8 source photo, or the part around its face, no finer than it is ever
            drawn (:func:`_working_photo`; a dim photo brightened (:func:`normalise_exposure`),
            spectacle frames painted out, a side light evened out
            and hair's shade beside it lifted, when it has them: :func:`without_glasses`,
            :func:`even_side_light`, :func:`lift_hair_shadows`).
        face: its largest face (landmarks in ``image``'s pixels).
        skin: (H, W) float32 0..1: where the photo shows the face's own skin and features; 0 on
            hair and background.
        key: content hash of the photo.
        glasses: whether the photo showed glasses (see :func:`without_glasses`).
        expression: its mouth's smile and opening (:func:`mouth_expression`).
        eyes_open: each eye's openness (:func:`eye_openness`).
        side_light: how clearly the photo was lit from one side (0..1, :func:`even_side_light`).
        exposure: how much the photo was brightened (linear light, 1 = not at all:
            :func:`normalise_exposure`).
    """

    image: Image
    face: Face
    skin: FloatArray
    key: str
    glasses: bool = False
    expression: FloatArray = field(default_factory=lambda: np.zeros(2, np.float32))
    eyes_open: FloatArray = field(default_factory=lambda: np.full(2, 0.3, np.float32))
    side_light: float = 0.0
    exposure: float = 1.0

    # The photo at each size it is drawn at (:meth:`texture`), made on first use: a few sizes
    # per stream at most (the working square's sizes), shared by the streams of one identity.
    _textures: dict[int, tuple[Image, float, float]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def texture(self, ipd: float) -> tuple[Image, float, float]:
        """The photo area-averaged down so that its eyes are about ``TEXTURE_OVERSAMPLE`` x
        ``ipd`` apart (never enlarged), and its scale on x and y (texture pixels per photo
        pixel). Drawn into a face with bilinear sampling, a photo much finer than the face
        aliases: its fine detail shimmers with every sub-pixel movement of the face (a photo
        sampled 2-4x too fine made a still webcam face's swap change up to 1.3x as much as the
        face itself from frame to frame)."""
        key = max(1, round(ipd))
        cached = self._textures.get(key)
        if cached is not None:
            return cached
        h, w = self.image.shape[:2]
        scale = min(1.0, TEXTURE_OVERSAMPLE * key / max(self.face.ipd, 1e-6))
        if scale >= 0.97:  # within a few percent: not worth a blur of its own
            texture = (self.image, 1.0, 1.0)
        else:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.asarray(cv2.resize(self.image, size, interpolation=cv2.INTER_AREA))
            texture = (image, size[0] / w, size[1] / h)
        self._textures[key] = texture
        return texture


# How much finer than the face it is drawn into the source photo is sampled: sharp enough to
# keep its detail, too coarse to alias.
TEXTURE_OVERSAMPLE = 1.25


def _poly_mask(shape: tuple[int, int], points: FloatArray) -> npt.NDArray[Any]:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return mask


def _feature_mask(shape: tuple[int, int], points: FloatArray, grow: float) -> npt.NDArray[Any]:
    """uint8 mask of the eyes, lips and brows (their hulls) of a face with landmarks
    ``points`` (pixels of an image of ``shape``), grown by about ``grow`` pixels."""
    idx = face_index()
    features = np.zeros(shape, np.uint8)
    for loop in (idx.left_eye, idx.right_eye, idx.lips_outer):
        features |= _poly_mask(shape, points[loop])
    for group in (idx.left_brow, idx.right_brow):
        hull = cv2.convexHull(points[group].astype(np.float32)).reshape(-1, 2)
        features |= _poly_mask(shape, hull)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, int(grow)) | 1,) * 2)
    return np.asarray(cv2.dilate(features, kernel), np.uint8)


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


def rgb_to_lab(image: Image) -> FloatArray:
    """RGB (uint8 values) -> float32 Lab (L 0..100, a and b about -100..100)."""
    return cv2.cvtColor(image.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2Lab)


def lab_to_rgb(lab: FloatArray) -> Image:
    """float32 Lab -> uint8 RGB (saturated)."""
    return cv2.convertScaleAbs(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), alpha=255.0)


def patches_around(values: FloatArray, points: FloatArray, radius: int) -> FloatArray:
    """The pixels of ``values`` in a square of ``radius`` around each point, stacked; none for
    a point further than ``radius`` outside the image (the result may be empty)."""
    out = []
    for x, y in np.round(points).astype(int):
        rows = slice(max(y - radius, 0), max(y + radius + 1, 0))
        patch = values[rows, max(x - radius, 0) : max(x + radius + 1, 0)]
        if patch.size:
            out.append(patch.reshape(-1, *values.shape[2:]))
    return np.concatenate(out) if out else np.empty((0, *values.shape[2:]), values.dtype)


@dataclass(frozen=True)
class _SkinModel:
    """The face's own skin, learned from its cheeks and forehead: Lab median, the inverse
    covariance of its chroma (a, b), and how textured bare skin is at this scale."""

    mean: FloatArray
    chroma_inverse: FloatArray
    texture: float


def _skin_model(lab: FloatArray, energy: FloatArray, lm: FloatArray, ipd: float) -> _SkinModel:
    r = max(2, int(ipd * 0.08))
    pts = lm[list(_SKIN_SAMPLE_POINTS)]
    samples = patches_around(lab, pts, r)
    mean = np.median(samples, axis=0)
    # A strand or a mole inside a sample patch must not widen the model: the closest 85%.
    dist = np.linalg.norm(samples - mean, axis=1)
    core = samples[dist <= np.percentile(dist, 85)]
    cov = np.cov(core[:, 1:].T) + np.eye(2) * 2.0
    return _SkinModel(
        mean=mean.astype(np.float32),
        chroma_inverse=np.linalg.inv(cov).astype(np.float32),
        texture=float(np.median(patches_around(energy, pts, r))),
    )


def _like_the_hair(
    lab: FloatArray, lm: FloatArray, ipd: float, skin: _SkinModel, texture: FloatArray
) -> npt.NDArray[np.bool_]:
    """Pixels closer to the person's own hair than to their skin, and textured.

    The hair's colour is learned just outside the outline of the forehead and temples, from
    what there is clearly not skin (nothing when the person is bald or the hair is
    pulled back: then the test finds nothing).
    """
    idx = face_index()
    h, w = lab.shape[:2]
    center = lm[idx.face_oval].mean(axis=0)
    outline = lm[idx.face_oval]
    upper = outline[outline[:, 1] < lm[[33, 263], 1].mean()]
    rings = [center + (upper - center) * f for f in (1.08, 1.16, 1.24)]
    pts = np.concatenate(rings)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)]
    if len(pts) < 8:
        return np.zeros((h, w), bool)
    samples = patches_around(lab, pts, max(1, int(ipd * 0.04)))
    d = samples[:, 1:] - skin.mean[1:]
    chroma = np.sqrt(np.einsum("ni,ij,nj->n", d, skin.chroma_inverse, d))
    hair = samples[(chroma > 2.5) | (np.abs(samples[:, 0] - skin.mean[0]) > 20)]
    if len(hair) < 0.2 * len(samples):
        return np.zeros((h, w), bool)
    mean_h = hair.mean(axis=0)
    inv_h = np.linalg.inv(np.cov(hair.T) + np.eye(3) * 4.0).astype(np.float32)
    flat = lab.reshape(-1, 3)
    dh = flat - mean_h
    to_hair = np.sqrt(np.einsum("ni,ij,nj->n", dh, inv_h, dh)).reshape(h, w)
    ds = flat[:, 1:] - skin.mean[1:]
    to_skin = np.sqrt(np.einsum("ni,ij,nj->n", ds, skin.chroma_inverse, ds)).reshape(h, w)
    return (to_hair < 2.0) & (to_hair < to_skin) & (texture > 1.2)


def _facial_hair(image: Image, lm: FloatArray, ipd: float) -> npt.NDArray[Any]:
    """uint8 mask of a beard, stubble or moustache: below the nose, much darker than the cheeks
    for their spread of brightness (on someone else's chin, the source's beard texture is
    what looks most pasted-on). The lips and their corners are never facial hair."""
    idx = face_index()
    h, w = image.shape[:2]
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    samples = patches_around(
        luma[..., None], lm[list(_SKIN_SAMPLE_POINTS)], max(2, int(ipd * 0.08))
    )
    mean = float(np.median(samples))
    spread = max(float(np.percentile(np.abs(samples - mean), 90)), 6.0)
    beard = luma < mean - 2.4 * spread - 10
    beard[: int(max(lm[2, 1], 0)), :] = False
    lips = _poly_mask((h, w), lm[idx.lips_outer])
    k = max(3, int(ipd * 0.04)) | 1
    lips = cv2.dilate(lips, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return np.where(lips > 0, 0, beard.astype(np.uint8) * 255).astype(np.uint8)


def _hair_and_background(
    image: Image, lm: FloatArray, ipd: float, oval: npt.NDArray[Any]
) -> npt.NDArray[Any]:
    """uint8 mask of what inside the face outline may be hair or background rather than the
    face's skin. The evidence:

    - chroma far from the skin's (dark or coloured hair, background);
    - chroma somewhat off *and* textured (strands);
    - strongly textured and brighter than the skin, or much darker (blond strands share the
      skin's hue; shading is smooth, so it is not mistaken for them);
    - close to the colour of the person's own hair (:func:`_like_the_hair`) and textured.

    Facial hair is found separately (:func:`_facial_hair`).
    """
    h, w = image.shape[:2]
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    lum = lab[..., 0]
    detail = lum - cv2.GaussianBlur(lum, (0, 0), ipd * 0.025)
    energy = np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), ipd * 0.06))
    model = _skin_model(lab, energy, lm, ipd)
    d = (lab[..., 1:] - model.mean[1:]).reshape(-1, 2)
    chroma = np.sqrt(np.einsum("ni,ij,nj->n", d, model.chroma_inverse, d)).reshape(h, w)
    texture = energy / (model.texture + 1.0)
    brighter = lum - model.mean[0]
    far = chroma > 6.0
    strands = ((chroma > 2.5) & (texture > 2.0)) | _like_the_hair(lab, lm, ipd, model, texture)
    blond = (texture > 3.2) & (brighter > 8)
    return ((far | strands | blond) & (oval > 0)).astype(np.uint8) * 255


_MOUTH_CORNERS = (61, 291)
_LIP_MIDDLE = (0, 17)  # the top of the upper lip and the bottom of the lower lip, mid-line
_INNER_LIPS = (13, 14)


def mouth_expression(points: FloatArray) -> FloatArray:
    """A mouth's smile (corners above the lips' middle) and opening, over its width, measured
    across the eye line so that a tilted head reads the same."""
    across = points[263, :2] - points[33, :2]
    across = across / max(float(np.linalg.norm(across)), 1e-6)
    down = np.array([-across[1], across[0]], np.float32)
    left, right = points[list(_MOUTH_CORNERS), :2]
    width = max(float(np.linalg.norm(right - left)), 1.0)
    middle = points[list(_LIP_MIDDLE), :2].mean(axis=0)
    smile = float((middle - (left + right) / 2) @ down) / width
    opening = float((points[_INNER_LIPS[1], :2] - points[_INNER_LIPS[0], :2]) @ down) / width
    return np.array([smile, opening], np.float32)


# Per eye: (outer corner, inner corner, upper lid middle, lower lid middle).
_EYE_POINTS = ((33, 133, 159, 145), (263, 362, 386, 374))


def eye_openness(points: FloatArray) -> FloatArray:
    """Each eye's lid gap over its width (image-left eye first): about 0.3 open, under 0.1
    closed."""
    out = np.empty(2, np.float32)
    for i, (outer, inner, upper, lower) in enumerate(_EYE_POINTS):
        width = max(float(np.linalg.norm(points[inner, :2] - points[outer, :2])), 1.0)
        out[i] = float(np.linalg.norm(points[lower, :2] - points[upper, :2])) / width
    return out


def glasses_score(image: Image, face: Face) -> float:
    """How strongly the nose bridge shows horizontal edges, relative to the cheeks.

    Bare skin over the nose bridge is smooth; a spectacle bridge puts
    strong horizontal edges there. Scores above about 2.3 mean glasses (deep frown lines alone
    reach about 2; faint translucent rims stay below and are not caught).
    """
    return glasses_score_at(image, face.landmarks[:, :2], max(face.ipd, 8.0))


def glasses_score_at(image: Image, lm: FloatArray, ipd: float) -> float:
    """:func:`glasses_score` for landmarks ``lm`` (pixels of ``image``) ``ipd`` apart; only
    the boxes it measures are filtered, so it is cheap on a whole video frame."""
    bridge = _edge_strength(image, (lm[168] + lm[6]) / 2, ipd * 0.08, ipd * 0.15)
    return bridge / _cheek_edges(image, lm, ipd)


def lower_rim_score_at(image: Image, lm: FloatArray, ipd: float) -> float:
    """How strongly the skin below both eyes shows horizontal edges, relative to the cheeks.

    A full spectacle frame's lower rim crosses there (scores of 10 and more); bare skin, even
    with shadowed eye bags, stays under about 4. A dark bridge alone can be a brow's shadow
    under a light from above.
    """
    centers = (lm[[33, 133]].mean(axis=0), lm[[362, 263]].mean(axis=0))
    rims = []
    for below in (0.25, 0.32, 0.4):  # frames sit higher or lower on the nose
        down = np.array([0.0, ipd * below], np.float32)
        rims.append(
            np.mean([_edge_strength(image, c + down, ipd * 0.15, ipd * 0.05) for c in centers])
        )
    rim = float(max(rims))
    return rim / _cheek_edges(image, lm, ipd)


def _cheek_edges(image: Image, lm: FloatArray, ipd: float) -> float:
    left = _edge_strength(image, lm[50], ipd * 0.1, ipd * 0.1)
    return (left + _edge_strength(image, lm[280], ipd * 0.1, ipd * 0.1)) / 2 + 2.0


def _edge_strength(image: Image, center: FloatArray, rw: float, rh: float) -> float:
    """Mean vertical gradient (horizontal edges) of a box of ``image`` around ``center``."""
    x, y = int(center[0]), int(center[1])
    y0, x0 = max(y - int(rh) - 1, 0), max(x - int(rw) - 1, 0)
    patch = image[y0 : y + int(rh) + 2, x0 : x + int(rw) + 2]
    if patch.shape[0] < 3 or patch.shape[1] < 3:
        return 0.0
    gray = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))[1:-1, 1:-1].mean())


GLASSES_THRESHOLD = 2.3
# A source photo counts as one with glasses when its bridge scores over GLASSES_THRESHOLD and
# a lower rim shows, or when its bridge alone is unmistakable (frames without lower rims).
LOWER_RIM_THRESHOLD = 4.5
CLEAR_BRIDGE_THRESHOLD = 3.2


def source_wears_glasses(image: Image, face: Face) -> bool:
    """Whether a source photo shows glasses (its frames are then painted out: done on a bare
    face by mistake, that smears its eyes and brows)."""
    bridge = glasses_score(image, face)
    if bridge < GLASSES_THRESHOLD:
        return False
    rim = lower_rim_score_at(image, face.landmarks[:, :2], max(face.ipd, 8.0))
    return rim >= LOWER_RIM_THRESHOLD or bridge >= CLEAR_BRIDGE_THRESHOLD


def glasses_area(shape: tuple[int, int], lm: FloatArray, ipd: float) -> npt.NDArray[Any]:
    """uint8 mask of where spectacles would sit on a face with landmarks ``lm`` (pixels of an
    image of ``shape``, ``ipd`` apart): both eye surrounds, the brows and the bridge."""
    idx = face_index()
    h, w = shape
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


def spectacle_frames(image: Image, lm: FloatArray, ipd: float) -> npt.NDArray[Any]:
    """uint8 mask of spectacle frames on the face with landmarks ``lm`` (``ipd`` apart).

    Frames are thin lines darker than what is around them (a black-hat a sixth of the eye
    distance wide finds them) inside the spectacle area, outside the eye openings; thin
    bright metal rims are not found (they also show least as ghosts). A rim often runs along
    the brows: there only what is darker than the brow
    hair counts. Only the spectacle area's bounding box is filtered.
    """
    idx = face_index()
    h, w = image.shape[:2]
    area = glasses_area((h, w), lm, ipd)
    # No rim sits well above the brows, where hair strands are thin dark lines too.
    brow_top = float(lm[np.concatenate([idx.left_brow, idx.right_brow]), 1].min())
    area[: max(0, int(brow_top - 0.1 * ipd)), :] = 0
    x, y, bw, bh = cv2.boundingRect(area)
    frames = np.zeros((h, w), np.uint8)
    if bw < 3 or bh < 3:
        return frames
    gray = cv2.cvtColor(image[y : y + bh, x : x + bw], cv2.COLOR_RGB2GRAY)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, int(ipd / 6)) | 1,) * 2)
    box_area = area[y : y + bh, x : x + bw] > 0
    lines = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, k)
    # Against the typical level there (wrinkles, lashes, creases).
    found = (lines > max(14.0, 4.0 * float(np.median(lines[box_area])))) & box_area
    eyes = np.zeros((h, w), np.uint8)
    for loop in (idx.left_eye, idx.right_eye):
        eyes |= _poly_mask((h, w), lm[loop])
    brows = np.zeros((h, w), np.uint8)
    for group in (idx.left_brow, idx.right_brow):
        brows |= _poly_mask((h, w), cv2.convexHull(lm[group].astype(np.float32)).reshape(-1, 2))
    near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, int(ipd * 0.06)) | 1,) * 2)
    eyes = cv2.dilate(eyes, near)[y : y + bh, x : x + bw] > 0
    brows = cv2.dilate(brows, near)[y : y + bh, x : x + bw] > 0
    brow_level = float(np.median(gray[brows])) if brows.any() else 0.0
    found &= ~eyes & ~(brows & (gray > brow_level - 25))
    frames[y : y + bh, x : x + bw] = found.astype(np.uint8) * 255
    return frames


def without_glasses(image: Image, face: Face) -> Image | None:
    """``image`` with the spectacle frames on ``face`` painted out, or None without glasses.

    OpenCV's inpainting fills the frames (:func:`spectacle_frames`) from the skin around
    them. The lenses' tint and reflections stay: thin rims are what shows most on another face.
    """
    if not source_wears_glasses(image, face):
        return None
    ipd = max(face.ipd, 8.0)
    frames = spectacle_frames(image, face.landmarks[:, :2], ipd)
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, int(ipd * 0.05)) | 1,) * 2)
    painted = cv2.inpaint(image, cv2.dilate(frames, grow), max(2.0, ipd * 0.05), cv2.INPAINT_TELEA)
    return np.ascontiguousarray(painted, np.uint8)


def skin_mask(image: Image, face: Face) -> FloatArray:
    """Soft mask of the face's own skin and features inside the face outline.

    Skin is learned from the cheeks and forehead (:func:`_hair_and_background`); what reaches
    in from the outline and is not skin (hair, background showing through) and facial hair are
    excluded (hair never in the middle of the face: eyes, brows, nose, lips), and the outline
    of the forehead and temples fades out (:func:`_temple_ramp`). Feathered. (Glasses are
    painted out of the photo before, :func:`without_glasses`.)
    """
    idx = face_index()
    lm = face.landmarks[:, :2]
    h, w = image.shape[:2]
    ipd = max(face.ipd, 8.0)
    brows = np.concatenate([idx.left_brow, idx.right_brow])
    oval = _poly_mask((h, w), _lowered_forehead(lm, idx.face_oval, brows, 0.3))
    non_skin = _hair_and_background(image, lm, ipd, oval)
    # Hair and background come in from the outline: they never reach the middle of a face
    # that can be swapped from (the hull of its eyes, brows, nose and lips), where make-up,
    # creases and shading are the likelier cause of an off-skin pixel.
    middle = np.concatenate([idx.left_eye, idx.right_eye, brows, idx.lips_outer, _NOSE_SIDES])
    non_skin[
        _poly_mask((h, w), cv2.convexHull(lm[middle].astype(np.float32)).reshape(-1, 2)) > 0
    ] = 0
    ks = max(3, int(ipd * 0.05)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ks, ks))
    non_skin = cv2.morphologyEx(non_skin, cv2.MORPH_OPEN, kernel)
    # Even outside the middle, only what reaches in from the outline is hair or background.
    band = max(3, int(ipd * 0.25)) | 1
    edge = cv2.subtract(
        oval, cv2.erode(oval, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (band, band)))
    )
    _count, labels = cv2.connectedComponents(non_skin)
    touching = np.unique(labels[(edge > 0) & (non_skin > 0)])
    touching = touching[touching > 0]
    non_skin = np.isin(labels, touching).astype(np.uint8) * 255
    beard = cv2.morphologyEx(_facial_hair(image, lm, ipd), cv2.MORPH_OPEN, kernel)
    non_skin = cv2.bitwise_or(non_skin, cv2.bitwise_and(beard, oval))
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
    soft = np.minimum(soft, keep.astype(np.float32) / 255.0 + soft * 0.5)
    return (soft * _temple_ramp(oval, lm, ipd, lm[brows])).astype(np.float32)


def _temple_ramp(
    oval: npt.NDArray[Any], lm: FloatArray, ipd: float, brows: FloatArray
) -> FloatArray:
    """1 inside the face, falling to 0 at the outline of the forehead and temples.

    Hair falls there on most people, often as single strands too fine and too skin-coloured
    to be told from skin; the target's own skin is the safe thing to show there. Below the
    eyes the outline is the jaw and the cheeks, which carry the face's shape: kept. ``brows``
    are the brows' landmarks (pixels).
    """
    inside = cv2.distanceTransform((oval > 127).astype(np.uint8), cv2.DIST_L2, 5)
    # Over the middle of the forehead, above the brows, hair is a fringe (found as hair) far more
    # than a stray strand: there the ramp is short, so that the source's forehead covers the
    # target's brows wherever they are drawn (a band of the target's brow showed above the
    # source's: two pairs of brows).
    centre, half_span = float(brows[:, 0].mean()), float(np.ptp(brows[:, 0])) / 2
    cols = np.abs(np.arange(oval.shape[1], dtype=np.float32)[None, :] - centre)
    sides = np.clip((cols - 0.9 * half_span) / (0.3 * half_span), 0.0, 1.0)
    width = (0.1 + 0.2 * sides) * ipd
    ramp = np.clip(inside / width, 0.0, 1.0)
    eye_y = float(lm[[33, 263], 1].mean())
    rows = np.arange(oval.shape[0], dtype=np.float32)[:, None]
    below = np.clip((rows - eye_y) / (0.3 * ipd), 0.0, 1.0)  # 0 above the eyes, 1 below
    return np.maximum(ramp, below).astype(np.float32)


# The finest a source is ever drawn: twice the eye distance of the largest mesh_resolution
# (1024 x the engine's EYE_DISTANCE of 0.2); more is never sampled (:meth:`SourceFace.texture`).
SOURCE_MAX_IPD = 410.0
SOURCE_MARGIN = 1.0  # of the face's box, kept around it on each side: hair, outline, ears


def _working_photo(image: Image, face: Face) -> tuple[Image, Face]:
    """The part of ``image`` around ``face``, no finer than it is ever drawn, and the face in
    its pixels. A phone photo of 12-50 megapixels otherwise took tens of seconds to prepare
    (the masks are computed per pixel), for detail the swap never uses. The landmarks are
    carried over, not found again: a new detection moves them by a pixel or two, and that
    alone changed which of a few swaps were recognised."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = face.box
    mx, my = (x1 - x0) * SOURCE_MARGIN, (y1 - y0) * SOURCE_MARGIN
    left, top = int(max(x0 - mx, 0)), int(max(y0 - my, 0))
    right, bottom = int(min(x1 + mx, w)), int(min(y1 + my, h))
    scale = min(1.0, SOURCE_MAX_IPD / max(face.ipd, 1.0))
    if scale == 1.0 and (left, top, right, bottom) == (0, 0, w, h):
        return image, face
    part = image[top:bottom, left:right]
    if scale < 1.0:
        size = (max(1, round(part.shape[1] * scale)), max(1, round(part.shape[0] * scale)))
        part = cv2.resize(part, size, interpolation=cv2.INTER_AREA)
        # Pixel centres: x' = (x - left + 0.5) * s - 0.5, with s the size actually reached.
        sx, sy = size[0] / (right - left), size[1] / (bottom - top)
    else:
        sx = sy = 1.0

    def moved(points: FloatArray) -> FloatArray:
        out = np.array(points, np.float32, copy=True)
        out[..., 0] = (out[..., 0] - left + 0.5) * sx - 0.5
        out[..., 1] = (out[..., 1] - top + 0.5) * sy - 0.5
        if out.shape[-1] > 2:
            out[..., 2] *= sx  # depth is in pixels too
        return out

    bx = moved(np.array([[x0, y0], [x1, y1]], np.float32))
    return np.ascontiguousarray(part), replace(
        face,
        landmarks=moved(face.landmarks),
        raw_landmarks=moved(face.raw_landmarks),
        box=(float(bx[0, 0]), float(bx[0, 1]), float(bx[1, 0]), float(bx[1, 1])),
        keypoints=moved(face.keypoints),
    )


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
    image, face = _working_photo(image, face)
    image, exposure = normalise_exposure(image, face)
    painted = without_glasses(image, face)
    glasses = painted is not None
    if painted is not None:  # its own eyes, without the frames, are better than the target's
        image = painted
    skin = skin_mask(image, face)
    image, side_light = even_side_light(image, face, skin)
    # Under a side light the shadow side was lifted against its mirror image already; lifting
    # it again against the lit skin nearby leaves bright patches with hard edges by the hair.
    image = lift_hair_shadows(image, face, skin, strength=1.0 - side_light)
    skin = (skin * deep_shadow_keep(image, face, skin)).astype(np.float32)
    return SourceFace(
        image,
        face,
        skin,
        key,
        glasses,
        mouth_expression(face.landmarks),
        eye_openness(face.landmarks),
        side_light,
        exposure,
    )


# A dim photo's skin is brought up to this lightness (Lab L; never down). How much light fell
# on a face is not who it is, and a face far darker than the target's needed more light than the
# colour step gives, so the swap faded out (each shared photo at a fifth of its exposure was
# recognised in 56% of swaps instead of 85%).
SKIN_LIGHTNESS_FLOOR = 50.0
EXPOSURE_GAIN_MAX = 8.0  # at most this much more light (linear): beyond it, only noise is left


def _srgb_to_linear(image: Image) -> FloatArray:
    x = image.astype(np.float32) * np.float32(1 / 255)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _linear_to_srgb(linear: FloatArray) -> Image:
    y = np.clip(linear, 0.0, 1.0)
    srgb = np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.power(y, 1 / 2.4) - 0.055)
    return np.asarray(np.round(srgb * 255), np.uint8)


def _lightness_to_luminance(lightness: float) -> float:
    return float(((lightness + 16.0) / 116.0) ** 3)


def normalise_exposure(image: Image, face: Face) -> tuple[Image, float]:
    """``image`` with more light, as a camera's exposure would give it, when the face's skin is
    darker than :data:`SKIN_LIGHTNESS_FLOOR`; and the factor (linear light, 1 = unchanged).

    The skin's level is the median lightness of the cheeks and forehead. The colour step takes
    the target's lighting and skin tone anyway: what a dim photo loses is range, and a face much
    darker than the target's needs a brightening the swap does not trust (it fades to the
    target where the light must rise more than about 2x).
    """
    lightness = rgb_to_lab(image)[..., 0]
    points = face.landmarks[list(_SKIN_SAMPLE_POINTS), :2]
    samples = patches_around(lightness, points, max(1, int(0.05 * face.ipd)))
    if not samples.size:
        return image, 1.0
    level = float(np.median(samples))
    if level >= SKIN_LIGHTNESS_FLOOR:
        return image, 1.0
    gain = _lightness_to_luminance(SKIN_LIGHTNESS_FLOOR) / max(_lightness_to_luminance(level), 1e-4)
    gain = min(gain, EXPOSURE_GAIN_MAX)
    return _linear_to_srgb(_srgb_to_linear(image) * np.float32(gain)), gain


HAIR_SHADOW_REACH = 0.15  # of the eye distance: how far into the skin a hair's shadow falls
HAIR_SHADOW_SLACK = 1.15  # skin up to this much darker than its surroundings is left alone


def lift_hair_shadows(image: Image, face: Face, skin: FloatArray, strength: float = 1.0) -> Image:
    """``image`` with the shadow that hair casts on the skin beside it lifted (by ``strength``,
    0..1, of what it takes).

    Skin next to a strand or a fringe is often darker than the skin around it: it is in the
    hair's shade. The skin mask rightly keeps it (it is skin), and the swap then carries a dark
    streak along the hair's edge onto every target. Within reach of what the skin mask leaves
    out inside the face outline, skin much darker than its neighbourhood's skin level is brought
    up to it; eyes, brows and lips are left alone.
    """
    idx = face_index()
    lm = face.landmarks[:, :2]
    h, w = image.shape[:2]
    ipd = max(face.ipd, 8.0)
    reach = HAIR_SHADOW_REACH * ipd
    pad = int(reach) + 2
    x0, y0 = np.maximum(np.floor(lm[idx.face_oval].min(axis=0)).astype(int) - pad, 0)
    x1, y1 = np.ceil(lm[idx.face_oval].max(axis=0)).astype(int) + pad
    x1, y1 = min(int(x1), w), min(int(y1), h)
    if x1 - x0 < 8 or y1 - y0 < 8 or strength <= 0.0:
        return image
    shape = (y1 - y0, x1 - x0)
    points = (lm - [x0, y0]).astype(np.float32)
    own = skin[y0:y1, x0:x1]
    oval = _poly_mask(shape, points[idx.face_oval]) > 127
    left_out = oval & (own < 0.02)
    if not left_out.any():
        return image
    distance = cv2.distanceTransform((~left_out).astype(np.uint8), cv2.DIST_L2, 5)
    # Fading with the distance from the hair (lifting the whole reach fully flattened the
    # cheeks' own shading: retrieval 78.1 -> 76.5% on the shared photos); and up to the mask's
    # soft edge: what is pasted there at partial strength is lifted too.
    near = np.clip(1.0 - distance / reach, 0.0, 1.0) * (own > 0.02)
    if not near.any():
        return image
    features = _feature_mask(shape, points, ipd * 0.08)
    region = ((own > 0.5) & (features == 0)).astype(np.float32)
    lab = rgb_to_lab(image[y0:y1, x0:x1])
    lightness = lab[..., 0]
    # The skin's level from its lit part: the shadow itself would pull it down (second pass
    # without what the first found much darker).
    level = masked_lowpass(lab, region, 2.0 * reach, downscale=2)[..., 0]
    lit = region * (lightness * HAIR_SHADOW_SLACK > level)
    level = masked_lowpass(lab, lit.astype(np.float32), 2.0 * reach, downscale=2)[..., 0]
    lift = np.log((level + 1.0) / (lightness + 1.0)) - np.log(HAIR_SHADOW_SLACK)
    lift = np.clip(lift, 0.0, np.log(2.5))
    weight = (
        near
        * cv2.GaussianBlur((features == 0).astype(np.float32), (0, 0), max(1.0, 0.02 * ipd))
        * min(strength, 1.0)
    )
    lab[..., 0] = lightness * np.exp(weight * lift)
    out = image.copy()
    out[y0:y1, x0:x1] = lab_to_rgb(lab)
    return out


# Skin lightness (Lab L) over the lit skin around it: below DEEP_SHADOW_OUT it is left out of
# the swap, above DEEP_SHADOW_IN kept, faded between.
DEEP_SHADOW_OUT = 0.45
DEEP_SHADOW_IN = 0.6
DEEP_SHADOW_SCALE = 0.5  # of the eye distance: how far around the lit skin's level is taken
# The nose's wings, tip and underside, whose own shade is the face's relief.
_NOSE_BOTTOM = np.array([48, 278, 64, 294, 98, 327, 2, 94, 19, 1, 4, 240, 460], np.intp)


def deep_shadow_keep(image: Image, face: Face, skin: FloatArray) -> FloatArray:
    """How much of ``face``'s skin to swap (0..1): 0 where it lies in a shadow too deep to
    relight, once side light and hair shadows are lifted.

    A head turned from the lamp leaves its far cheek and temple dark, and hair often shades the
    skin along it; where no mirror image or nearby lit skin can lift them, a 2x darker band
    pasted onto a target shows as a dark stripe down the face. The target's own skin is the
    better guess there. Only above the nose's underside: below it darkness is mostly beard,
    stubble and a smile's creases, which belong to the face (leaving them out cost retrieval).
    Eyes, brows, the lids between and the nose's underside are always kept.
    """
    idx = face_index()
    lm = face.landmarks[:, :2]
    h, w = image.shape[:2]
    ipd = max(face.ipd, 8.0)
    features = _feature_mask((h, w), lm, ipd * 0.1)
    for group in (
        _NOSE_BOTTOM,
        np.concatenate([idx.left_eye, idx.left_brow]),
        np.concatenate([idx.right_eye, idx.right_brow]),
    ):
        hull = cv2.convexHull(lm[group].astype(np.float32)).reshape(-1, 2)
        features |= _poly_mask((h, w), hull)
    k = max(3, int(ipd * 0.1)) | 1
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    features = cv2.dilate(features, disk)
    region = ((skin > 0.5) & (features == 0)).astype(np.float32)
    if not region.any():
        return np.ones((h, w), np.float32)
    lab = rgb_to_lab(image)
    lightness = lab[..., 0]
    sigma = DEEP_SHADOW_SCALE * ipd
    # The level of the lit skin: a second pass without what the first found much darker.
    level = masked_lowpass(lab, region, sigma, downscale=4)[..., 0]
    lit = (region * (lightness > 0.7 * level)).astype(np.float32)
    level = masked_lowpass(lab, lit, sigma, downscale=4)[..., 0]
    ratio = (lightness + 1.0) / (level + 1.0)
    keep = np.clip((ratio - DEEP_SHADOW_OUT) / (DEEP_SHADOW_IN - DEEP_SHADOW_OUT), 0.0, 1.0)
    keep[features > 0] = 1.0
    keep[int(np.clip(lm[2, 1], 0, h)) :, :] = 1.0  # below the nose's underside
    # A shadow is an area; creases and wrinkles, as dark, are lines and stay.
    keep = 1.0 - cv2.morphologyEx(1.0 - keep, cv2.MORPH_OPEN, disk)
    soft = cv2.GaussianBlur(keep.astype(np.float32), (0, 0), max(1.0, 0.03 * ipd))
    return np.asarray(soft, np.float32)


SIDE_LIGHT_SCALE = 0.05  # of the eye distance: how finely a shadow's lift follows it
SIDE_LIGHT_MAX_YAW = 15.0  # degrees: a head turned further is shaded unevenly by its turn
# How far (in log lightness) the shadow side is lifted toward its mirror image: half-way, to the
# geometric mean of the two sides, as chroma is brought to their mean. Lifting it all the way
# flattened that side into an even, pale patch that took the face's relief with it (retrieval
# on the shared photos 81.4% at 0.5, 78.1% at 1; 80.7-81.4% anywhere from 0.3 to 0.7).
SIDE_LIGHT_LIFT = 0.5


def even_side_light(image: Image, face: Face, skin: FloatArray) -> tuple[Image, float]:
    """``image`` with the shadows of a light from one side lifted off ``face``'s skin, and how
    clearly the face is lit from one side (0..1; 0: returned as it is).

    A face's own colouring is close to symmetric, the light on it seldom is: a side light
    leaves one cheek dark and a hard shadow band beside the nose. The swap takes the target's
    lighting only at coarse scales, so the source's finer shading would travel with it. Each
    skin pixel is compared with its mirror image (the face warped onto itself through
    :func:`mirror_map`): where the mirror is brighter, the pixel is lifted half-way to it
    (:data:`SIDE_LIGHT_LIFT`), the ratio smoothed by a guided filter on the photo's own
    lightness, so that it follows a shadow's hard edge and not the skin's texture. The brighter
    side is left as it is (it shows the face's own colours); chroma is brought half-way, to the
    mean of the two sides. Eyes, brows and lips are left alone: one may look or be shaped
    differently from its mirror image.
    """
    idx = face_index()
    lm = face.landmarks
    h, w = image.shape[:2]
    ipd = max(face.ipd, 8.0)
    x0, y0 = np.maximum(np.floor(lm[:468, :2].min(axis=0)).astype(int) - 2, 0)
    x1, y1 = np.ceil(lm[:468, :2].max(axis=0)).astype(int) + 3
    x1, y1 = min(int(x1), w), min(int(y1), h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return image, 0.0
    side = max(x1 - x0, y1 - y0)
    points = (lm[:468, :2] - [x0, y0]).astype(np.float32)
    depth = lm[:468, 2][idx.triangles].mean(axis=1).astype(np.float32)
    raster = rasterize(points, idx.triangles, side, depth)
    map_x, map_y = raster.maps(points[mirror_map(lm)])
    crop = np.zeros((side, side, 3), np.float32)
    crop[: y1 - y0, : x1 - x0] = image[y0:y1, x0:x1]
    own_skin = np.zeros((side, side), np.float32)
    own_skin[: y1 - y0, : x1 - x0] = skin[y0:y1, x0:x1]
    features = _feature_mask((side, side), points, ipd * 0.12)
    lab = rgb_to_lab(crop)
    mirrored = cv2.remap(lab, map_x, map_y, cv2.INTER_LINEAR)
    mirrored_skin = cv2.remap(own_skin, map_x, map_y, cv2.INTER_LINEAR, borderValue=0)
    mirrored_features = cv2.remap(features, map_x, map_y, cv2.INTER_NEAREST, borderValue=255)
    region = (
        (own_skin > 0.5)
        & (mirrored_skin > 0.5)
        & raster.covered
        & (features == 0)
        & (mirrored_features == 0)
    ).astype(np.float32)
    if region.sum() < 0.1 * ipd * ipd:
        return image, 0.0
    noise = max(0.5, SIDE_LIGHT_SCALE * 0.2 * ipd)
    log_l = np.log(lab[..., 0] + 1.0)
    log_mirrored = np.log(cv2.GaussianBlur(mirrored[..., 0], (0, 0), noise) + 1.0)
    ratio = np.where(region > 0, log_mirrored - cv2.GaussianBlur(log_l, (0, 0), noise), 0.0)
    radius = max(1, int(SIDE_LIGHT_SCALE * ipd))
    lift = np.maximum(_guided_filter(log_l, ratio.astype(np.float32), region, radius), 0.0)
    # Only a clear side light is evened out: a face lit from the front differs from its
    # mirror image too (a turned head's far cheek, its own asymmetries), and those carry the
    # likeness. Clear: more than 3-6% of the skin would be lifted by over 1.6x (under a side
    # light a quarter or more, a shadow beside the nose alone about 6%; lit from the front,
    # under 1%).
    strong = float((lift[region > 0] > np.log(1.6)).mean())
    strength = float(np.clip((strong - 0.03) / 0.03, 0.0, 1.0))
    strength *= float(np.clip((SIDE_LIGHT_MAX_YAW - abs(face.pose.yaw)) / 5.0, 0.0, 1.0))
    if strength <= 0.0:
        return image, 0.0
    weight = cv2.GaussianBlur(region, (0, 0), max(1.0, 0.03 * ipd)) * strength
    lab[..., 0] *= np.exp(weight * SIDE_LIGHT_LIFT * lift)
    sigma = SIDE_LIGHT_SCALE * ipd
    low = masked_lowpass(lab, region, sigma, downscale=2)
    low_mirrored = masked_lowpass(mirrored, region, sigma, downscale=2)
    lab[..., 1:] += weight[..., None] * 0.5 * (low_mirrored[..., 1:] - low[..., 1:])
    evened = lab_to_rgb(lab)
    out = image.copy()
    out[y0:y1, x0:x1] = evened[: y1 - y0, : x1 - x0]
    return out, strength


def _guided_filter(
    guide: FloatArray, values: FloatArray, mask: FloatArray, radius: int, eps: float = 4e-3
) -> FloatArray:
    """He et al.'s guided filter of ``values`` (where ``mask``) by ``guide``: smooth, except
    across the guide's own strong edges."""
    k = (2 * radius + 1,) * 2

    def mean(a: FloatArray) -> FloatArray:
        return cv2.boxFilter(a * mask, -1, k) / np.maximum(cv2.boxFilter(mask, -1, k), 1e-4)

    mean_g, mean_v = mean(guide), mean(values)
    var_g: FloatArray = mean(guide * guide) - mean_g * mean_g
    cov: FloatArray = mean(guide * values) - mean_g * mean_v
    a = cov / (var_g + eps)
    b = mean_v - a * mean_g
    return np.asarray(cv2.boxFilter(a, -1, k) * guide + cv2.boxFilter(b, -1, k), np.float32)
