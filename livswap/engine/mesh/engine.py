"""The built-in ``mesh`` engine: a landmark-driven face swap that needs no model download.

Per face and frame, in a face-aligned square ("canonical" space, eyes level at fixed spots):

1. Shape: the source's 3D landmarks are rigidly aligned to the target's pose, and the target's
   landmarks move toward the source's proportions by ``shape_transfer`` (the face outline by
   ``outline_transfer``). The offset is taken against the target's *running neutral* shape, so
   the target's expressions, blinks and speech still come through.
2. Warp, one pass each: the source photo (at the pyramid level nearest the face's size, so its
   fine detail does not alias) onto the new shape (the swapped skin and features) and
   the target frame onto the new shape (what its colour, glasses and occluders are read from).
3. Colour, in Lab: a masked low-pass gain on lightness takes the target's lighting at coarse
   scales (finer, the shading is the source's own relief, which carries its likeness; a side
   light's shadows were lifted off the source photo when it was prepared), an offset on chroma
   takes the target's skin tone and colour casts at fine ones (the source's coloured light and
   make-up tint are replaced on purpose); facial hair on either face is left out of the
   lighting (it is dark over an area as large as a shadow); where the source has more detail
   on its skin than the target, it is toned down to the target's (a crisp photo on a soft
   video shimmers with every small head movement).
4. Masks: the source's skin mask (no hair, glasses, beard), minus the target's eyes inside
   their lash lines and its inner mouth (its whole lips when the two mouths' expressions
   differ, its upper lids when its eyes close, and its spectacle frames when it wears
   glasses), minus occluders in front of the target's face; feathered. Hands are kept in
   front later, by compose, for every engine.
5. Paste: the crop is the swapped face alone, with its alpha. Where the target shows through
   (its own eyes, inner mouth, surroundings), compose takes the frame's pixels once, moved by
   the reshaping (the crop's ``displacement``, faded out inside a fixed outer ring, so the
   background stays in place), not resampled into the square and back out.

Temporal state (the target's neutral shape, the colour change, contrast, mouth, eyelids and
glasses, the occlusion mask) is kept per stream and tracked face in canonical space, so
smoothing follows the face instead of smearing in the frame, and streams sharing the engine
never see each other's faces. The colour change is averaged over more frames while the face
holds still under steady light (there its per-frame estimates change only with the noise).
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
from livswap.engine.mesh.source import (
    SourceFace,
    eye_openness,
    lab_to_rgb,
    mouth_expression,
    patches_around,
    prepare_source,
    rgb_to_lab,
    spectacle_frames,
)
from livswap.engine.mesh.warp import rasterize
from livswap.engine.regions import TargetRegions
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
    return _Topology(triangles=np.concatenate(tris), kind=np.concatenate(kinds))


# Colour estimates on a still face are averaged over this much more history (per frame: about
# 7 frames' worth); a face moving by MOVING_FACE_STEP of its eye distance per frame (about 0.3
# of it per second at 30 fps) or a lighting gain changing by LIGHT_CHANGE_STEP per frame is
# followed at ``[compose] temporal_smoothing``.
STILL_COLOUR_SMOOTHING = 0.85
MOVING_FACE_STEP = 0.01
LIGHT_CHANGE_STEP = 0.02


def _colour_smoothing(
    face_speed: float, change: FloatArray, last: FloatArray, smoothing: float
) -> float:
    """How much of the last frame's colour change to keep. The change is estimated anew
    from every frame's noisy pixels; on a still face under steady light it hardly changes
    for real, so there it is averaged over more frames (:data:`STILL_COLOUR_SMOOTHING`),
    and as fast as ``smoothing`` once the face moves (its shading moves with it) or the
    light changes."""
    if smoothing >= STILL_COLOUR_SMOOTHING:
        return smoothing
    light_step = float(cv2.absdiff(change[..., 0], last[..., 0]).mean())
    still = min(
        max(1.0 - face_speed / MOVING_FACE_STEP, 0.0),
        max(1.0 - light_step / LIGHT_CHANGE_STEP, 0.0),
    )
    return smoothing + (STILL_COLOUR_SMOOTHING - smoothing) * still


@dataclass
class _TrackState:
    """What the engine remembers about one tracked face between frames."""

    size: int
    neutral: FloatArray | None = None  # target's running mean shape, in the source's 3D frame
    gain: FloatArray | None = None  # colour change (S/2, S/2, 3): L gain, a and b offsets
    contrast: float | None = None  # the source's detail scaled to the target's (<= 1)
    mouth: float | None = None  # how much the target's own mouth shows (expression mismatch)
    eyes: FloatArray | None = None  # how much each of the target's own eyelids shows (closed)
    rims: FloatArray | None = None  # the target's spectacle frames (S/2, S/2), smoothed
    occlusion: FloatArray | None = None  # (S, S) 0..1
    offsets: FloatArray | None = None  # smoothed shape-transfer offsets, image pixels (478, 2)
    centre: FloatArray | None = None  # the landmarks' mean, last frame (image pixels)
    speed: float = float("inf")  # how far they moved since the frame before, of the eye distance
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
                    "MeshEngine: %s seems to show glasses; their frames are painted out. "
                    "A photo without glasses swaps better",
                    label,
                )
            if sf.side_light > 0.5:
                log.warning(
                    "MeshEngine: %s seems lit from one side; its shadows are lifted. "
                    "A photo lit from the front swaps better",
                    label,
                )
            if sf.exposure > 2.0:
                log.warning(
                    "MeshEngine: %s is dim; it was brightened %.1fx. A well-lit photo swaps better",
                    label,
                    sf.exposure,
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
    # Low-pass scales, as fractions of S (the eyes are 0.2 S apart).
    light_sigma: float = 0.08  # the target's lighting taken below it, the source's relief above
    colour_sigma: float = 0.0225  # the target's skin tone and colour casts
    detail_sigma: float = 0.045  # the source's skin detail toned to the target's above it
    device_path: None = None  # pasted on the CPU
    # Keyed by (track id, source key): state is in the source's frame and a face's own history.
    _tracks: dict[tuple[int, str], _TrackState] = field(
        default_factory=dict, init=False, repr=False
    )
    _frame_count: int = field(default=0, init=False, repr=False)
    _regions: TargetRegions = field(default_factory=TargetRegions, init=False, repr=False)

    def close(self) -> None:
        self._tracks.clear()

    def swap(self, frame: Frame) -> None:
        sources = self.identity.sources
        self._frame_count += 1
        self._regions.next_frame()
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
        centre = face.landmarks[:, :2].mean(axis=0)
        if state.centre is not None:
            state.speed = float(np.linalg.norm(centre - state.centre)) / max(face.ipd, 1e-6)
        state.centre = centre
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
        (hsx, hsy), (htx, hty) = raster.maps_for(src_pts, tgt_pts)
        full = (size, size)
        sx, sy = cv2.resize(hsx, full), cv2.resize(hsy, full)
        tx, ty = cv2.resize(htx, full), cv2.resize(hty, full)
        texture, scale_x, scale_y = source.texture(EYE_DISTANCE * size)
        if (scale_x, scale_y) != (1.0, 1.0):  # pixel centres: (x + 0.5) * scale - 0.5
            sx, sy = (sx + 0.5) * scale_x - 0.5, (sy + 0.5) * scale_y - 0.5
        src_warp = cv2.remap(texture, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
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
            # Inside its lash line: the target's eyeballs carry its gaze, the source's lid
            # margins and lashes its likeness (retrieval on the shared photos 81.4 -> 83.7%).
            eyes = _fill(shape, dst_h[idx.left_eye]) | _fill(shape, dst_h[idx.right_eye])
            keep |= cv2.erode(eyes, _disk(_LASH_LINE * EYE_DISTANCE * half))
        if self.cfg.keep_target_mouth:
            keep |= _fill(shape, dst_h[idx.lips_inner])
        ipd, points = EYE_DISTANCE * size, dst[:NUM_LANDMARKS]
        oval_in = cv2.erode(oval, _disk(2.0 * unit))
        keep_soft = feather(cv2.dilate(keep, _disk(0.5 * unit)), 0.8 * unit)
        if self._regions.wears_glasses(face.track_id, tgt_warp, points, ipd):
            # The target's glasses stay on its face: its frames show, not ghost rims. Which
            # pixels are rim varies a little from frame to frame: smoothed like the other masks.
            frames = spectacle_frames(tgt_warp, points, ipd)
            rims = feather(
                cv2.resize(cv2.dilate(frames, _disk(0.06 * ipd)), shape, cv2.INTER_AREA), 0.8 * unit
            )
            if state.rims is not None and state.rims.shape == rims.shape and smoothing > 0:
                rims = np.maximum(rims, smoothing * state.rims + (1 - smoothing) * rims)
            state.rims = rims
            keep_soft = np.maximum(keep_soft, rims)
        else:
            state.rims = None
        tgt_half = cv2.resize(tgt_warp, shape, interpolation=cv2.INTER_AREA)
        occlusion = self._occlusion(tgt_half, oval_in, dst_h, idx, state, smoothing, unit)
        alpha = feather(oval_in, 2.5 * unit) * skin * (1 - keep_soft) * (1 - occlusion)
        # A source photo's expression lives in its lips and the creases beside them: a grin
        # pasted onto a closed or pursed mouth stays a grin, skewed. Where the two mouths'
        # expressions differ, the target's own lips and mouth corners show.
        mouth = self._mouth_mismatch(source, face, state)
        if mouth > 0.01:
            lips = cv2.dilate(_fill(shape, dst_h[idx.lips_outer]), _disk(2.5 * unit))
            alpha *= 1 - mouth * feather(lips, 3.0 * unit)
        # An open source eye cannot close: over a target's shut or narrowed eye its lashes and
        # lid crease are stretched into a dark smear above the lid line (at every blink); a
        # closed one cannot open. There the target's own lids show, each eye on its own.
        for eye, brow, closed in zip(
            (idx.left_eye, idx.right_eye),
            (idx.left_brow, idx.right_brow),
            self._eye_closure(source, face, state),
            strict=True,
        ):
            if closed > 0.01:
                lids = _upper_lid(shape, dst_h, eye, brow, EYE_DISTANCE * half)
                alpha *= 1 - closed * feather(lids, 0.05 * EYE_DISTANCE * half)

        # 4. Colour, in Lab: the target's lighting (a gain on L, at a coarse scale) and its
        # skin tone and colour casts (an offset on a and b, at a fine one) under the source's
        # detail. Finer than ``light_sigma`` the shading is mostly the face's own relief
        # (eye sockets, cheekbones, the nose), which makes it recognisable; a coloured lamp
        # leaves streaks on the source far finer than its shading, hence the finer scale for
        # chroma. An offset cannot overshoot the way a per-channel RGB gain does (a tanned
        # source onto a pale target needed blue x3 and was clipped to yellow).
        if self.compose_cfg.color_transfer:
            face_rgb, usable = self._match_colour(
                src_warp,
                tgt_half,
                skin,
                oval_in,
                keep,
                occlusion,
                dst_h,
                source,
                state,
                size,
                smoothing,
            )
            alpha *= usable
        else:  # the source's own colours, as asked (config: compose.color_transfer)
            face_rgb = src_warp
        alpha_full = cv2.resize(alpha, full, interpolation=cv2.INTER_LINEAR)

        # 5. Where the patch replaces the frame: the swapped face plus wherever reshaping moved
        # pixels, faded out well inside the ring (where the target is undisturbed).
        gx, gy = _half_grid(size)
        ix = from_canon[0, 0] * gx + from_canon[0, 1] * gy + from_canon[0, 2]
        iy = from_canon[1, 0] * gx + from_canon[1, 1] * gy + from_canon[1, 2]
        covered = kind >= 0
        moved = np.where(covered[..., None], cv2.merge([htx - ix, hty - iy]), np.float32(0))
        moved_px = (np.hypot(moved[..., 0], moved[..., 1]) > 0.35) & covered
        changed = (moved_px | (alpha > 0.01)).astype(np.uint8) * 255
        changed = cv2.dilate(changed, _disk(2.0 * unit))
        inside_ring = cv2.erode(covered.astype(np.uint8) * 255, _disk(3.0 * unit))
        patch_half = np.asarray(
            feather(changed, 2.0 * unit) * feather(inside_ring, 2.0 * unit), np.float32
        )
        patch_alpha = cv2.resize(patch_half, full, interpolation=cv2.INTER_LINEAR)
        # The target's own pixels that show (its kept eyes and mouth, occluders, the feathered
        # edge) are not drawn into the crop: resampled into it and back out at a sub-pixel phase
        # that moves with the face, they were blurred anew on every frame, and a still face's
        # swap shimmered (benchmarks/quality.py --still). The paste takes them from the frame,
        # moved as the reshaping moved them, resampled once.
        displacement = cv2.multiply(moved.astype(np.float32), cv2.merge([patch_half, patch_half]))
        return SwappedFace(
            face.track_id,
            to_canon,
            patch_alpha * alpha_full,
            crop=face_rgb,
            displacement=displacement,
        )

    def _match_colour(
        self,
        src_warp: Image,
        tgt_half: Image,
        skin: FloatArray,
        oval_in: npt.NDArray[Any],
        keep: npt.NDArray[Any],
        occlusion: FloatArray,
        dst_h: FloatArray,
        source: SourceFace,
        state: _TrackState,
        size: int,
        smoothing: float,
    ) -> tuple[Image, FloatArray]:
        """The warped source in the target's lighting, skin tone and detail (step 4), and
        where that was possible (0 where the needed brightness change is too extreme).
        ``dst_h``: the landmarks on the half-resolution canvas."""
        half = size // 2
        shape = (half, half)
        unit = half / 100.0
        region = ((oval_in > 0) & (keep == 0)).astype(np.float32)
        src_lab = rgb_to_lab(cv2.resize(src_warp, shape, interpolation=cv2.INTER_AREA))
        tgt_lab = rgb_to_lab(tgt_half)
        src_region, tgt_region = region * (skin > 0.5), region * (1 - occlusion)
        # Facial hair is the face's own colour, not its light, yet it is dark over an area as
        # large as a shadow: taken into the target's lighting, a bearded target's dark chin came
        # back on every swap (it held the swap to the target), and a source's beard was lifted
        # to the level of its skin. The beard of either face is left out of the lighting and of
        # the detail's local mean and amount, which fill in from the skin around it (retrieval
        # on the shared photos 83.7 -> 84.6%, clips unchanged). Not out of the skin tone: at its
        # fine scale there is too little skin nearby to fill a beard in from (a stubbled
        # source's chin came out red).
        lower_face = _lower_face(dst_h, oval_in, unit)
        src_hair = _facial_hair_mask(src_lab[..., 0], dst_h, lower_face, unit)
        tgt_hair = _facial_hair_mask(tgt_lab[..., 0], dst_h, lower_face, unit)
        src_lit, tgt_lit = src_region * (1 - src_hair), tgt_region * (1 - tgt_hair)
        # A source lit from one side keeps less of its own shading: there its relief and the
        # light cannot be told apart, and what the lifting missed (skin next to hair) stays dark.
        light_sigma = self.light_sigma + source.side_light * (self.detail_sigma - self.light_sigma)
        light_src = masked_lowpass(src_lab, src_lit, light_sigma * half, downscale=4)
        light_tgt = masked_lowpass(tgt_lab, tgt_lit, light_sigma * half, downscale=4)
        detail_sigma, colour_sigma = self.detail_sigma * half, self.colour_sigma * half
        low_src = masked_lowpass(src_lab, src_lit, detail_sigma, downscale=2)
        low_tgt = masked_lowpass(tgt_lab, tgt_lit, detail_sigma, downscale=2)
        tone_src = masked_lowpass(src_lab, src_region, colour_sigma, downscale=2)
        tone_tgt = masked_lowpass(tgt_lab, tgt_region, colour_sigma, downscale=2)
        gain = (light_tgt[..., 0] + 1.0) / (light_src[..., 0] + 1.0)
        # Bounded against the face's own overall change (a dim room, a darker or paler skin,
        # taken whole): beyond about 2.5x more than that the source has too little light there
        # to recover (a deep shadow), and amplifying it shows as a blown patch. Where the needed
        # brightness change is that extreme, the swap fades to the target instead. (Against 1,
        # a target in a dim room, whose whole face needed a third of the source's light, faded
        # the swap out everywhere: 23% of swaps onto the shared photos at a fifth of their
        # exposure were recognised.)
        overall = _overall_gain(gain, src_lit * tgt_lit)
        relative = gain * np.float32(1.0 / overall)
        usable = np.clip(np.minimum((3.2 - relative) / 1.2, (relative - 0.3) / 0.25), 0, 1)
        usable = cv2.GaussianBlur(usable.astype(np.float32), (0, 0), 2.0 * unit)
        tint = cv2.subtract(tone_tgt, tone_src)
        bounded = np.clip(gain, 0.4 * overall, 2.5 * overall).astype(np.float32)
        change = cv2.merge([bounded, tint[..., 1], tint[..., 2]])
        colour_smoothing = smoothing
        if state.gain is not None and state.gain.shape == change.shape and smoothing > 0:
            colour_smoothing = _colour_smoothing(state.speed, change, state.gain, smoothing)
            change = cv2.addWeighted(state.gain, colour_smoothing, change, 1 - colour_smoothing, 0)
        state.gain = change
        # Contrast: the source's detail above the lighting scale (features, creases, and the
        # edges of its own shadows) is toned down to the target's where the source has more,
        # never up. A crisp photo on a soft video frame looks pasted on, and every small head
        # movement would change the swap more than the face it replaces.
        contrast = _detail_ratio(tgt_lab, low_tgt, tgt_lit, src_lab, low_src, src_lit, overall)
        if state.contrast is not None and colour_smoothing > 0:
            contrast = colour_smoothing * state.contrast + (1 - colour_smoothing) * contrast
        state.contrast = contrast
        # Lightness: L' = gain * (base + kept * (L - base)), with base the source's local mean
        # and ``kept`` how much of its detail stays; that is L * scale + offset, both smooth, so
        # they are built at half resolution and applied to the full-size face in two passes.
        light_gain = change[..., 0]
        if contrast < 0.99:
            # Only on what is the source's own skin: towards the edge of a left-out beard the
            # local mean is the skin's, and toning the beard towards it would paint it white.
            # (Sparing the stubble the facial-hair mask finds too made the swap flicker: that
            # mask is found anew on every frame's warp; lp_s18's flicker ratio 1.037 -> 1.054.)
            kept = 1.0 - (1.0 - contrast) * np.clip(skin * 2.0 - 1.0, 0.0, 1.0)
            scale_l = (kept * light_gain).astype(np.float32)
            offset_l = ((1.0 - kept) * light_gain * low_src[..., 0]).astype(np.float32)
        else:
            scale_l, offset_l = light_gain, np.zeros_like(light_gain)
        ones = np.ones_like(scale_l)
        full = (size, size)
        scale = cv2.resize(cv2.merge([scale_l, ones, ones]), full)  # bilinear
        offset = cv2.resize(cv2.merge([offset_l, change[..., 1], change[..., 2]]), full)
        face_lab = cv2.add(cv2.multiply(rgb_to_lab(src_warp), scale), offset)
        face_rgb = lab_to_rgb(face_lab)
        return face_rgb, usable

    def _mouth_mismatch(self, source: SourceFace, face: Face, state: _TrackState) -> float:
        """0 when the source's and the target's mouths show the same expression, rising to 1
        as the smile or the opening differ (smoothed over time)."""
        difference = float(np.linalg.norm(source.expression - mouth_expression(face.landmarks)))
        weight = float(np.clip((difference - _MOUTH_ALIKE) / _MOUTH_RAMP, 0.0, 1.0))
        if state.mouth is not None:
            weight = 0.7 * state.mouth + 0.3 * weight
        state.mouth = weight
        return weight

    def _eye_closure(
        self, source: SourceFace, face: Face, state: _TrackState
    ) -> tuple[float, float]:
        """Per eye, 0 while the target's eye is about as open as the source's, rising to 1 as
        one of the two is much more closed (a blink, or a source photo that winks). Follows a
        blink at once and lets go over a few frames."""
        target = np.maximum(eye_openness(face.landmarks), _EYE_OPEN_FLOOR)
        own = np.maximum(source.eyes_open, _EYE_OPEN_FLOOR)
        ratio = np.minimum(target / own, own / target)
        closed = np.clip((_EYE_CLOSING - ratio) / _EYE_RAMP, 0.0, 1.0)
        if state.eyes is not None:
            closed = np.maximum(closed, 0.5 * state.eyes)
        state.eyes = closed
        return float(closed[0]), float(closed[1])

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
        # Eyes move as a whole: their openness stays the target's.
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
        # The lips keep the target's shape and place: they carry its speech and expression,
        # and moving them toward the source's width bought little likeness for the most
        # landmark error (and a mouth that looks skewed while it talks). All of their points:
        # with only the outlines held, the points between them moved, and a wide-open mouth's
        # lips folded over its teeth in specks.
        delta[idx.lips, :2] = 0.0
        # The brows carry the most likeness for the landmark error they cost (measured per
        # feature): they follow the source further than the rest.
        weights[np.concatenate([idx.left_brow, idx.right_brow])] *= _BROW_TRANSFER
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
        pts = patches_around(ycc, dst[[50, 280, 205, 425, 101, 330]], r).astype(np.float32)
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
        # Brows too: a dark brow drawn out to the temple touches the hair, and kept as an
        # occluder it showed above the source's brows (two pairs of brows).
        brows = _hull(shape, dst[idx.left_brow]) | _hull(shape, dst[idx.right_brow])
        candidate[cv2.dilate(brows, _disk(3.0 * unit)) > 0] = 0
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


# Below the nose, lightness under this share of the upper cheek's on its side is facial hair.
_FACIAL_HAIR_LIGHTNESS = 0.65
# FaceMesh points on the upper cheeks, above any beard: one side's, then their mirror images.
_UPPER_CHEEKS = ((50, 101, 117), (280, 330, 346))
# Canvas units (1%): an opening this wide drops what is narrower than about twice it. A beard
# is an area; a crease beside the mouth or the nose and a nostril are lines and specks. Taken
# for hair, they let a source's shadow beside its nose travel (with 1 unit, the shadow test's
# ratio 0.90 against the target's 0.99: test_a_shadow_beside_the_sources_nose_does_not_travel).
_FACIAL_HAIR_RADIUS = 2.0


def _lower_face(points: FloatArray, oval: npt.NDArray[Any], unit: float) -> npt.NDArray[Any]:
    """uint8 mask of ``oval`` below the nose, the lips (with a unit's margin) left out."""
    lower = oval.copy()
    lower[: int(np.clip(points[2, 1], 0, lower.shape[0])), :] = 0
    lower[cv2.dilate(_fill(lower.shape, points[face_index().lips_outer]), _disk(unit)) > 0] = 0
    return lower


def _facial_hair_mask(
    lightness: FloatArray, points: FloatArray, lower_face: npt.NDArray[Any], unit: float
) -> FloatArray:
    """Soft mask (0..1) of a beard, stubble or moustache: what in ``lower_face``
    (:func:`_lower_face`) is much darker than the upper cheek on its side. ``lightness``: a
    face's Lab L on the half-resolution canvas, ``points`` its landmarks there, ``unit`` 1% of
    the canvas. The soft edge reaches a unit or two past ``lower_face``.

    The upper cheeks' brighter part is the skin's level even on a full beard, which covers the
    lower cheeks. Each side against its own: under a light from one side, the shadow side's
    lower face is as dark against the lit cheek as a beard (with one level for both, half of it
    was taken for one), but not against the cheek above it.
    (:func:`livswap.engine.mesh.source.skin_mask` leaves a source's beard out of the swap only
    when it is far darker still.)
    """
    h, w = lightness.shape
    r = max(2, int(2.5 * unit))
    levels, centres = [], []
    for group in _UPPER_CHEEKS:
        samples = patches_around(lightness, points[list(group)], r)
        if not samples.size:  # a cheek off the canvas: no level to compare with
            return np.zeros((h, w), np.float32)
        levels.append(float(np.percentile(samples, 60)))
        centres.append(float(points[list(group), 0].mean()))
    # Across the face, from one cheek's level to the other's (a light from one side shades the
    # face gradually; a step at the midline cost two swaps on the shared photos).
    order = np.argsort(centres)
    columns = np.arange(w, dtype=np.float32)
    level = np.interp(columns, np.asarray(centres)[order], np.asarray(levels)[order])
    threshold = (_FACIAL_HAIR_LIGHTNESS * level).astype(np.float32)
    dark = (lightness < threshold[None, :]).astype(np.uint8) * 255
    dark = cv2.morphologyEx(
        cv2.bitwise_and(dark, lower_face), cv2.MORPH_OPEN, _disk(_FACIAL_HAIR_RADIUS * unit)
    )
    return feather(cv2.dilate(dark, _disk(unit)), unit)


# The face's overall lightness change is taken whole within these bounds: a face with a third
# of the light of the target's is lit up, one three times as bright is dimmed.
_OVERALL_GAIN = (1 / 3, 3.0)


def _overall_gain(gain: FloatArray, region: FloatArray) -> float:
    """The median of ``gain`` where both faces are lit skin (``region`` > 0.5), within
    :data:`_OVERALL_GAIN`; 1 where there is none."""
    values = gain[region > 0.5]
    if values.size < 16:
        return 1.0
    return float(np.clip(np.median(values), *_OVERALL_GAIN))


_CONTRAST_FLOOR = 0.5  # the source keeps at least half its detail: it carries the identity


def _detail_ratio(
    target: FloatArray,
    target_low: FloatArray,
    target_region: FloatArray,
    source: FloatArray,
    source_low: FloatArray,
    source_region: FloatArray,
    source_gain: float = 1.0,
) -> float:
    """The target's lightness detail (above the low-pass) over the source's once its lightness
    is scaled by ``source_gain`` (the face's overall change of light, which scales its detail
    too), where each is face skin and features; between the floor and 1. (Against the source's
    own detail, a target in a dim room, whose detail is as dim as it is, had the source's detail
    toned down twice: a flat, blurred face.)"""

    def amplitude(lab: FloatArray, low: FloatArray, region: FloatArray) -> float:
        weight = float(region.sum())
        if weight < 1.0:
            return 0.0
        return float((np.abs(lab[..., 0] - low[..., 0]) * region).sum()) / weight

    src = amplitude(source, source_low, source_region) * source_gain
    if src <= 1e-3:
        return 1.0
    ratio = amplitude(target, target_low, target_region) / src
    return float(np.clip(ratio, _CONTRAST_FLOOR, 1.0))


# Expressions closer than this (smile and opening, over the mouth's width) count as the same;
# the target's lips take over fully this much beyond it. A neutral and a grinning mouth
# differ by about 0.25.
_MOUTH_ALIKE, _MOUTH_RAMP = 0.12, 0.1
# An eye open less than this fraction of the other face's starts to show the target's own lids,
# and fully this much below it; openness is counted from a floor (a closed eye is closed).
_EYE_CLOSING, _EYE_RAMP, _EYE_OPEN_FLOOR = 0.6, 0.3, 0.05
_BROW_TRANSFER = 1.5  # how much further than ``shape_transfer`` the brows follow the source
_LASH_LINE = 0.05  # of the eye distance: the lid margin and lashes inside the eye's outline


def _upper_lid(
    shape: tuple[int, int],
    points: FloatArray,
    eye: npt.NDArray[Any],
    brow: npt.NDArray[Any],
    ipd: float,
) -> npt.NDArray[Any]:
    """The eye, its lower lid line and its upper lid up to the brow (the brow itself left
    out: it is the source's), as a 0/255 mask."""
    lid = _hull(shape, np.concatenate([points[eye], points[brow]]))
    lid |= cv2.dilate(_fill(shape, points[eye]), _disk(0.08 * ipd))
    brows = cv2.dilate(_hull(shape, points[brow]), _disk(0.04 * ipd))
    return cv2.bitwise_and(lid, cv2.bitwise_not(brows))


def _unit(v: FloatArray) -> FloatArray:
    n = float(np.linalg.norm(v)) or 1.0
    return (v / n).astype(np.float32)


def _fill(shape: tuple[int, int], points: FloatArray) -> npt.NDArray[Any]:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
    return mask


def _hull(shape: tuple[int, int], points: FloatArray) -> npt.NDArray[Any]:
    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(np.round(points[:, :2] * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255, cv2.LINE_8, shift=4)
    return mask


def _disk(radius: float) -> npt.NDArray[Any]:
    d = max(1, round(radius * 2)) | 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
