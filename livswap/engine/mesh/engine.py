"""The built-in ``mesh`` engine: a landmark-driven face swap that needs no model download.

Per face and frame, in a face-aligned square ("canonical" space, eyes level at fixed spots):

1. Shape: the source's 3D landmarks are rigidly aligned to the target's pose, and the target's
   landmarks move toward the source's proportions by ``shape_transfer`` (the face outline by
   ``outline_transfer``). The offset is taken against the target's *running neutral* shape, so
   the target's expressions, blinks and speech still come through.
2. Warp, one pass each: the source photo onto the new shape (the swapped skin and features) and
   the target frame onto the new shape (reshaping the target's own eyes, inner mouth and
   surroundings consistently; a fixed outer ring keeps the background in place).
3. Colour: a masked low-pass gain takes the target's lighting and skin tone at low spatial
   frequencies and keeps the source's detail (the source's baked-in shadows and make-up tint
   are replaced on purpose by the target's).
4. Masks: the source's skin mask (no hair, glasses frames, beard edges), minus the target's
   eyes and inner mouth, minus occluders in front of the target's face; feathered.

Temporal state (the target's neutral shape, the colour gain, the occlusion mask) is kept per
stream and tracked face in canonical space, so smoothing follows the face instead of smearing in
the frame, and streams sharing the engine never see each other's faces.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from scipy.spatial import Delaunay

from livswap.compose import feather, masked_lowpass
from livswap.config import ComposeConfig, EngineConfig
from livswap.engine.base import Identity
from livswap.engine.mesh.source import SourceFace, prepare_source
from livswap.engine.mesh.warp import rasterize
from livswap.frame import Frame, Image, SwappedFace
from livswap.track.landmarks import NUM_LANDMARKS, FaceIndex, face_index
from livswap.track.tracker import Face

__all__ = ["MeshEngine", "MeshIdentity", "MeshStream", "canonical_transform"]

log = logging.getLogger(__name__)

# OpenCV returns loosely typed arrays; intermediates here are float32 or uint8 by construction.
FloatArray = npt.NDArray[Any]
Affine = npt.NDArray[np.float64]

# Canonical square layout, as fractions of its side S.
EYE_DISTANCE = 0.2
EYE_LINE_Y = 0.41
RING_CENTER = (0.5, 0.49)
RING_RADII = (0.40, 0.46)
RING_POINTS = 32
# Points that move rigidly with the head (not with expressions), for pose alignment.
_RIGID = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
    33,
    133,
    362,
    263,
    1,
    4,
    5,
    6,
    168,
    197,
    195,
    98,
    327,
)
_CHANNEL_MEAN = np.full((1, 3), 1 / 3, np.float32)  # cv2.transform kernel: mean of R, G, B
_LEFT_EYE_CORNERS = (33, 133)  # image-left eye, outer and inner corner
_RIGHT_EYE_CORNERS = (362, 263)


def _eye_centers(points: FloatArray) -> tuple[FloatArray, FloatArray]:
    left = points[list(_LEFT_EYE_CORNERS), :2].mean(axis=0)
    right = points[list(_RIGHT_EYE_CORNERS), :2].mean(axis=0)
    return left, right


def canonical_transform(points: FloatArray, size: int) -> Affine:
    """Similarity (2x3) taking image pixels to a size x size canonical square of this face."""
    left, right = _eye_centers(points)
    p1, p2 = complex(*left), complex(*right)
    q1 = complex(size * (0.5 - EYE_DISTANCE / 2), size * EYE_LINE_Y)
    q2 = complex(size * (0.5 + EYE_DISTANCE / 2), size * EYE_LINE_Y)
    if abs(p2 - p1) < 1e-6:
        p2 = p1 + 1
    a = (q2 - q1) / (p2 - p1)
    b = q1 - a * p1
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], np.float64)


def _apply(m: Affine, pts: FloatArray) -> FloatArray:
    return (pts[:, :2].astype(np.float64) @ m[:, :2].T + m[:, 2]).astype(np.float32)


def _invert(m: Affine) -> Affine:
    return cv2.invertAffineTransform(m).astype(np.float64)


def _similarity_3d(
    src: FloatArray, dst: FloatArray
) -> tuple[float, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Umeyama: scale s, rotation R, translation t with dst ~ s R src + t (least squares)."""
    s64, d64 = src.astype(np.float64), dst.astype(np.float64)
    mu_s, mu_d = s64.mean(axis=0), d64.mean(axis=0)
    xs, xd = s64 - mu_s, d64 - mu_d
    cov = xd.T @ xs / len(s64)
    u, sv, vt = np.linalg.svd(cov)
    d = np.eye(3)
    d[2, 2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    r = u @ d @ vt
    var_s = (xs**2).sum() / len(s64)
    scale = float(np.trace(np.diag(sv) @ d) / max(var_s, 1e-12))
    t = mu_d - scale * r @ mu_s
    return scale, r, t


@functools.lru_cache(maxsize=8)
def _ring(size: int) -> FloatArray:
    """The fixed outer ring of the canonical square (read-only; built once per size)."""
    angles = np.linspace(0, 2 * np.pi, RING_POINTS, endpoint=False)
    cx, cy = RING_CENTER[0] * size, RING_CENTER[1] * size
    rx, ry = RING_RADII[0] * size, RING_RADII[1] * size
    ring = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1).astype(np.float32)
    ring.flags.writeable = False
    return ring


@functools.lru_cache(maxsize=8)
def _half_grid(size: int) -> tuple[FloatArray, FloatArray]:
    """Full-resolution x and y of each half-resolution pixel centre (read-only, once per size)."""
    half = np.arange(size // 2, dtype=np.float32) * 2 + 0.5
    gx, gy = np.meshgrid(half, half)
    gx.flags.writeable = False
    gy.flags.writeable = False
    return gx, gy


@dataclass(frozen=True)
class _Topology:
    """Triangles over the 478 landmarks plus the outer ring (fixed per identity)."""

    triangles: npt.NDArray[np.int32]
    kind: npt.NDArray[np.int8]  # 0 face, 1 eye/mouth hole, 2 ring
    weights: FloatArray  # (478, 1) per-landmark shape-transfer weight multiplier class


def _build_topology(idx: FaceIndex, reference: FloatArray) -> _Topology:
    """Face triangles, fans over the eye and mouth openings, and a ring around the face.

    ``reference`` is one face's canonical landmarks (S = 1), used only to triangulate the band
    between the face outline and the ring.
    """
    tris = [idx.triangles]
    kinds = [np.zeros(len(idx.triangles), np.int8)]
    for loop in (idx.left_eye, idx.right_eye, idx.lips_inner):
        fan = np.array([[loop[0], loop[i], loop[i + 1]] for i in range(1, len(loop) - 1)], np.int32)
        tris.append(fan)
        kinds.append(np.ones(len(fan), np.int8))
    oval = idx.face_oval
    ring = _ring(1)
    band_pts = np.concatenate([reference[oval, :2], ring])
    delaunay = Delaunay(band_pts)
    oval_path = reference[oval, :2]
    centroids = band_pts[delaunay.simplices].mean(axis=1)
    inside = np.array(
        [
            cv2.pointPolygonTest(oval_path.astype(np.float32), (float(x), float(y)), False) > 0
            for x, y in centroids
        ]
    )
    band = delaunay.simplices[~inside]
    vertex_ids = np.concatenate([oval, NUM_LANDMARKS + np.arange(RING_POINTS)])
    tris.append(vertex_ids[band].astype(np.int32))
    kinds.append(np.full(len(band), 2, np.int8))
    return _Topology(
        triangles=np.concatenate(tris),
        kind=np.concatenate(kinds),
        weights=np.ones((NUM_LANDMARKS, 1), np.float32),
    )


@dataclass
class _TrackState:
    """What the engine remembers about one tracked face between frames."""

    size: int
    neutral: FloatArray | None = None  # target's running mean shape, in the source's 3D frame
    gain: FloatArray | None = None  # colour gain map (S, S, 3)
    occlusion: FloatArray | None = None  # (S, S) 0..1
    offsets: FloatArray | None = None  # smoothed shape-transfer offsets, image pixels (478, 2)
    last_seen: int = 0


@dataclass(frozen=True)
class MeshIdentity:
    """The prepared source faces and the triangulation built from the first of them."""

    sources: list[SourceFace]
    topology: _Topology


@dataclass
class MeshEngine:
    """The built-in, landmark-driven engine (the default). Holds only settings: the prepared
    sources are in the :class:`Identity`, each stream's face history in its :class:`MeshStream`.
    """

    cfg: EngineConfig
    compose_cfg: ComposeConfig
    name: str = "mesh"

    def prepare(self, sources: Sequence[Image], names: Sequence[str] | None = None) -> Identity:
        labels = list(names) if names else [f"source photo {i + 1}" for i in range(len(sources))]
        prepared = [prepare_source(img, label) for img, label in zip(sources, labels, strict=True)]
        first = prepared[0].face.landmarks
        topology = _build_topology(face_index(), _apply(canonical_transform(first, 1), first))
        for label, sf in zip(labels, prepared, strict=True):
            if sf.glasses:
                log.warning(
                    "MeshEngine: %s seems to show glasses; the eye area is taken from the "
                    "target instead. A photo without glasses swaps better",
                    label,
                )
            if abs(sf.face.pose.yaw) > 25:
                log.warning(
                    "MeshEngine: source photo is turned %.0f degrees; a frontal photo swaps better",
                    sf.face.pose.yaw,
                )
        key = "+".join(sf.key for sf in prepared)
        return Identity(engine=self.name, key=key, data=MeshIdentity(prepared, topology))

    def open_stream(self, identity: Identity) -> MeshStream:
        return MeshStream(self.cfg, self.compose_cfg, identity.data)


@dataclass
class MeshStream:
    """One stream of the mesh engine: the history of each of its tracked faces."""

    cfg: EngineConfig
    compose_cfg: ComposeConfig
    identity: MeshIdentity
    colour_sigma: float = 0.045  # low-pass sigma for colour, as a fraction of S
    device_path: None = None  # pasted on the CPU
    # Keyed by (track id, source key): state is in the source's frame and a face's own history.
    _tracks: dict[tuple[int, str], _TrackState] = field(
        default_factory=dict, init=False, repr=False
    )
    _frame_count: int = field(default=0, init=False, repr=False)

    def close(self) -> None:
        self._tracks.clear()

    def swap(self, frame: Frame) -> None:
        sources = self.identity.sources
        self._frame_count += 1
        ordered = sorted(frame.faces, key=lambda f: f.center[0])
        for i, face in enumerate(ordered):
            source = sources[i % len(sources)] if self.cfg.assign == "by_position" else sources[0]
            frame.swaps.append(self.swap_face(frame.image, face, source))
        # Forget faces not seen for a while.
        self._tracks = {
            k: v for k, v in self._tracks.items() if self._frame_count - v.last_seen < 30
        }

    def _state(self, face: Face, source: SourceFace) -> _TrackState:
        ideal = face.ipd / EYE_DISTANCE
        size = int(np.clip(round(ideal / 32) * 32, 192, self.cfg.mesh_resolution))
        key = (face.track_id, source.key)
        state = self._tracks.get(key)
        if state is None or abs(size - state.size) > 0.25 * state.size:
            state = _TrackState(size=size)
            self._tracks[key] = state
        state.last_seen = self._frame_count
        return state

    def swap_face(self, image: Image, face: Face, source: SourceFace) -> SwappedFace:
        """Swap ``source`` onto ``face`` of ``image``; returns the face to paste."""
        topo, idx = self.identity.topology, face_index()
        state = self._state(face, source)
        size = state.size
        smoothing = self.compose_cfg.temporal_smoothing

        # 1. Shape: the target's landmarks moved toward the source's proportions.
        moved = self._transfer_shape(face, source, state)

        # 2. Warp: source photo and target frame onto the new shape, in canonical space.
        target = face.landmarks
        src = source.face.landmarks
        to_canon = canonical_transform(target, size)
        from_canon = _invert(to_canon)
        ring = _ring(size)
        dst = np.concatenate([_apply(to_canon, moved), ring])
        src_pts = np.concatenate(
            [src[:, :2], _apply(_invert(canonical_transform(src, size)), ring)]
        )
        tgt_pts = np.concatenate([target[:, :2], _apply(from_canon, ring)])
        far = float(target[:, 2].max())
        tri_depth = target[:, 2][np.minimum(topo.triangles, NUM_LANDMARKS - 1)].mean(axis=1)
        tri_depth[topo.kind == 1] = far + 0.5  # eye and mouth openings behind the face
        tri_depth[topo.kind == 2] = far + 1.0  # the ring band behind everything
        # The piecewise-affine map is continuous, so it is built on a half-resolution canvas and
        # upsampled bilinearly. Half-canvas u sits at full-res (2u + 0.5), which is exactly
        # where cv2.resize's centre-aligned interpolation puts it.
        half = size // 2
        raster = rasterize((dst - 0.5) * 0.5, topo.triangles, half, tri_depth.astype(np.float32))
        hsx, hsy = raster.maps(src_pts)
        htx, hty = raster.maps(tgt_pts)
        full = (size, size)
        sx, sy = cv2.resize(hsx, full), cv2.resize(hsy, full)
        tx, ty = cv2.resize(htx, full), cv2.resize(hty, full)
        src_warp = cv2.remap(
            source.image, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        tgt_warp = cv2.remap(image, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

        # 3. Masks, at half resolution (they are smooth; this halves their cost twice over).
        kind = np.append(topo.kind, -1)[raster.tri_id]  # -1: uncovered
        skin = cv2.remap(
            source.skin, hsx, hsy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        skin = np.where(kind == 0, skin, 0).astype(np.float32)
        dst_h = (dst[:NUM_LANDMARKS] - 0.5) * 0.5
        shape = (half, half)
        unit = half / 100.0
        oval = _fill(shape, dst_h[idx.face_oval])
        keep = np.zeros(shape, np.uint8)
        if self.cfg.keep_target_eyes:
            keep |= _fill(shape, dst_h[idx.left_eye]) | _fill(shape, dst_h[idx.right_eye])
        if self.cfg.keep_target_mouth:
            keep |= _fill(shape, dst_h[idx.lips_inner])
        oval_in = cv2.erode(oval, _disk(2.0 * unit))
        keep_soft = feather(cv2.dilate(keep, _disk(0.5 * unit)), 0.8 * unit)
        tgt_half = cv2.resize(tgt_warp, shape, interpolation=cv2.INTER_AREA)
        occlusion = self._occlusion(tgt_half, oval_in, dst_h, idx, state, smoothing, unit)
        alpha = feather(oval_in, 2.5 * unit) * skin * (1 - keep_soft) * (1 - occlusion)

        # 4. Colour: target lighting and tone at low frequencies, source detail above them.
        region = ((oval_in > 0) & (keep == 0)).astype(np.float32)
        src_half = cv2.resize(src_warp, shape, interpolation=cv2.INTER_AREA).astype(np.float32)
        sigma = self.colour_sigma * half
        low_src = masked_lowpass(src_half, region * (skin > 0.5), sigma, downscale=2)
        low_tgt = masked_lowpass(
            tgt_half.astype(np.float32), region * (1 - occlusion), sigma, downscale=2
        )
        raw_gain = (low_tgt + 1.0) / (low_src + 1.0)
        # Bounded: beyond about 2.5x the source has too little light there to recover (a deep
        # shadow, a coloured lamp), and amplifying it shows as a blown patch. Where the needed
        # brightness change is that extreme, the swap fades to the target instead.
        brightness = cv2.transform(raw_gain, _CHANNEL_MEAN)  # = mean(axis=2), 20x faster
        usable = np.clip(np.minimum((3.2 - brightness) / 1.2, (brightness - 0.3) / 0.25), 0, 1)
        alpha *= cv2.GaussianBlur(usable.astype(np.float32), (0, 0), 2.0 * unit)
        gain = np.clip(raw_gain, 0.4, 2.5)
        if state.gain is not None and state.gain.shape == gain.shape and smoothing > 0:
            gain = smoothing * state.gain + (1 - smoothing) * gain
        state.gain = gain
        gain_full = cv2.resize(gain, (size, size), interpolation=cv2.INTER_LINEAR)
        face_rgb = cv2.multiply(src_warp, gain_full, dtype=cv2.CV_8U)
        alpha_full = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_LINEAR)
        out = cv2.blendLinear(face_rgb, tgt_warp, alpha_full, 1.0 - alpha_full)

        # 5. Where the patch replaces the frame: the swapped face plus wherever reshaping moved
        # pixels, faded out well inside the ring (where the target is undisturbed).
        gx, gy = _half_grid(size)
        ix = from_canon[0, 0] * gx + from_canon[0, 1] * gy + from_canon[0, 2]
        iy = from_canon[1, 0] * gx + from_canon[1, 1] * gy + from_canon[1, 2]
        covered = (kind >= 0).astype(np.uint8) * 255
        moved_px = (np.hypot(htx - ix, hty - iy) > 0.35) & (covered > 0)
        changed = (moved_px | (alpha > 0.01)).astype(np.uint8) * 255
        changed = cv2.dilate(changed, _disk(2.0 * unit))
        inside_ring = cv2.erode(covered, _disk(3.0 * unit))
        patch_alpha = feather(changed, 2.0 * unit) * feather(inside_ring, 2.0 * unit)
        patch_alpha = cv2.resize(patch_alpha, (size, size), interpolation=cv2.INTER_LINEAR)
        return SwappedFace(face.track_id, to_canon, patch_alpha, crop=out)

    def _transfer_shape(self, face: Face, source: SourceFace, state: _TrackState) -> FloatArray:
        """Target landmarks (image pixels, x and y) moved toward the source's proportions.

        The source's 3D landmarks are rigidly aligned to the target's (pose removed), and the
        identity offset is measured against the target's running neutral shape, so the target's
        current expression is kept on top of the source's proportions.
        """
        idx = face_index()
        target = face.landmarks
        src = source.face.landmarks
        rigid = list(_RIGID)
        scale, rot, trans = _similarity_3d(target[rigid], src[rigid])
        target_in_src = (scale * target.astype(np.float64) @ rot.T + trans).astype(np.float32)
        if state.neutral is None:
            state.neutral = target_in_src
        else:
            rate = 0.04  # ~1 s memory at 30 fps: an expression held longer becomes "neutral"
            state.neutral = (1 - rate) * state.neutral + rate * target_in_src
        delta_src = src - state.neutral
        delta = ((delta_src.astype(np.float64) @ rot) / scale).astype(np.float32)  # to image
        weights = np.full((NUM_LANDMARKS, 1), self.cfg.shape_transfer, np.float32)
        weights[idx.face_oval] = self.cfg.outline_transfer * self.cfg.shape_transfer
        # Eyes move as a whole (their openness stays the target's). The mouth moves as a whole
        # and takes the source's width, but its opening and curvature stay the target's: a
        # per-point offset would carry the source photo's expression (a closed mouth) along.
        for group in (
            np.concatenate([idx.left_eye, idx.left_iris]),
            np.concatenate([idx.right_eye, idx.right_iris]),
        ):
            delta[group] = delta[group].mean(axis=0)
        # Below the nose, vertical offsets mostly measure how open the mouth is in either photo;
        # keep one shared vertical shift there and the per-point horizontal ones (face width).
        up = _unit(target[263, :2] - target[33, :2])
        down = np.array([-up[1], up[0]], np.float32)
        height = (target[:, :2] - target[1, :2]) @ down
        lower = height > 0
        vertical = (delta[:, :2] @ down)[:, None] * down
        delta[lower, :2] += (np.median(vertical[lower] @ down) * down) - vertical[lower]
        lips = np.concatenate([idx.lips_outer, idx.lips_inner])
        lips_t = target[lips, :2]
        center = lips_t.mean(axis=0)
        width_t = float(np.ptp(target[idx.lips_outer, 0])) or 1.0
        width_s = float(np.ptp(src[idx.lips_outer, 0])) * (
            width_t / max(float(np.ptp(target_in_src[idx.lips_outer, 0])), 1e-3)
        )
        stretch = np.array([width_s / width_t - 1.0, 0.0], np.float32)
        delta[lips, :2] = delta[lips, :2].mean(axis=0) + (lips_t - center) * stretch
        offsets = weights * delta[:, :2]
        # The per-frame pose fit jitters a little; smoothing the offsets keeps the transferred
        # shape from wobbling (they change only as slowly as the head turns).
        smoothing = self.compose_cfg.temporal_smoothing
        if state.offsets is not None and smoothing > 0:
            offsets = smoothing * state.offsets + (1 - smoothing) * offsets
        state.offsets = offsets
        moved: FloatArray = target[:, :2] + offsets
        return moved

    def _occlusion(
        self,
        tgt: Image,
        oval: npt.NDArray[Any],
        dst: FloatArray,
        idx: FaceIndex,
        state: _TrackState,
        smoothing: float,
        unit: float,
    ) -> FloatArray:
        """Where something not-skin covers the target's face (a microphone, a hand-held object).

        Skin colour is learned from the target's cheeks; pixels inside the face far from it in
        chroma, outside the target's own features, and connected to the face's edge (things come
        in from outside) count as occluders. Smoothed over time in canonical space.
        """
        shape = oval.shape
        if not self.compose_cfg.occlusion_aware:
            return np.zeros(shape, np.float32)
        ycc = cv2.cvtColor(tgt, cv2.COLOR_RGB2YCrCb)
        r = max(2, int(2.5 * unit))
        samples = []
        for p in (50, 280, 205, 425, 101, 330):
            x, y = np.round(dst[p]).astype(int)
            samples.append(ycc[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1].reshape(-1, 3))
        pts = np.concatenate(samples).astype(np.float32)
        if len(pts) < 10:
            return np.zeros(shape, np.float32)
        mean = np.median(pts, axis=0)
        spread = np.maximum(np.percentile(np.abs(pts - mean), 90, axis=0), (8.0, 4.0, 4.0))
        # Chroma distance, thresholded with OpenCV (much cheaper than float numpy on every pixel).
        lo = np.clip(mean[1:] - 4.0 * spread[1:], 0, 255)
        hi = np.clip(mean[1:] + 4.0 * spread[1:], 0, 255)
        skin_like = cv2.inRange(
            ycc, (0, float(lo[0]), float(lo[1])), (255, float(hi[0]), float(hi[1]))
        )
        candidate = cv2.bitwise_and(cv2.bitwise_not(skin_like), oval)
        # The target's own lips, eyes and brows are not skin-coloured either, but they are
        # islands inside the face; only what reaches in from the face's edge is an occluder.
        eyes = _fill(shape, dst[idx.left_eye]) | _fill(shape, dst[idx.right_eye])
        candidate[cv2.dilate(eyes, _disk(1.5 * unit)) > 0] = 0
        candidate = cv2.morphologyEx(candidate, cv2.MORPH_OPEN, _disk(1.2 * unit))
        occl = np.zeros(shape, np.float32)
        if cv2.countNonZero(candidate):
            edge = cv2.subtract(oval, cv2.erode(oval, _disk(3.0 * unit)))
            _count, labels = cv2.connectedComponents(candidate)
            touching = np.unique(labels[(edge > 0) & (candidate > 0)])
            touching = touching[touching > 0]
            if touching.size:
                occl = np.isin(labels, touching).astype(np.float32)
                occl = feather(cv2.dilate(occl, _disk(1.5 * unit)), 1.5 * unit)
        if state.occlusion is not None and state.occlusion.shape == shape and smoothing > 0:
            occl = smoothing * state.occlusion + (1 - smoothing) * occl
        state.occlusion = occl
        return occl


def _unit(v: FloatArray) -> FloatArray:
    n = float(np.linalg.norm(v)) or 1.0
    return (v / n).astype(np.float32)


def _fill(shape: tuple[int, int], points: FloatArray) -> npt.NDArray[Any]:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
    return mask


def _disk(radius: float) -> npt.NDArray[Any]:
    d = max(1, round(radius * 2)) | 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
