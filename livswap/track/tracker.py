"""MediaPipe FaceMesh tracking: faces with stable ids, smoothed landmarks, keypoints and pose."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from livswap.config import TrackConfig
from livswap.frame import Frame, Image
from livswap.track.filters import OneEuroFilter
from livswap.track.landmarks import (
    LEFT_IRIS_CENTER,
    MOUTH_LEFT,
    MOUTH_RIGHT,
    NOSE_TIP,
    NUM_LANDMARKS,
    RIGHT_IRIS_CENTER,
)
from livswap.track.motion import FaceMotion

__all__ = ["Face", "FaceTracker", "HeadPose", "StillFaceDetector", "detect_faces"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class HeadPose:
    """Head rotation in degrees: yaw (turn, + = towards the image's right), pitch (+ = up), roll."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class Face:
    """One tracked face in one frame.

    Attributes:
        track_id: stable across frames while the face stays tracked.
        landmarks: (478, 3) float32, x and y in pixels, z in pixels relative to the face centre
            (smaller = closer to the camera), One Euro filtered.
        raw_landmarks: the same before filtering.
        box: (x0, y0, x1, y1) bounding box of the landmarks, pixels.
        keypoints: (5, 2) float32 alignment points: left eye, right eye, nose tip, left and right
            mouth corner, "left" meaning the image's left (the order ArcFace templates use).
        pose: head pose estimated from the 3D landmarks.
    """

    track_id: int
    landmarks: FloatArray
    raw_landmarks: FloatArray
    box: tuple[float, float, float, float]
    keypoints: FloatArray
    pose: HeadPose

    @property
    def ipd(self) -> float:
        """Inter-pupil distance in pixels."""
        return _ipd(self.landmarks)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    @property
    def center(self) -> FloatArray:
        x0, y0, x1, y1 = self.box
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32)


def keypoints_of(landmarks: FloatArray) -> FloatArray:
    return landmarks[
        [LEFT_IRIS_CENTER, RIGHT_IRIS_CENTER, NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT], :2
    ].copy()


def pose_of(landmarks: FloatArray) -> HeadPose:
    """Yaw, pitch and roll from three 3D points: both eyes and the mouth centre."""
    left, right = landmarks[LEFT_IRIS_CENTER], landmarks[RIGHT_IRIS_CENTER]
    mouth = (landmarks[MOUTH_LEFT] + landmarks[MOUTH_RIGHT]) / 2
    x_axis = right - left
    y_axis = mouth - (left + right) / 2
    normal = np.cross(x_axis, y_axis)  # points away from the camera for a frontal face
    norm = float(np.linalg.norm(normal)) or 1.0
    nx, ny, nz = (normal / norm).tolist()
    yaw = math.degrees(math.atan2(-nx, nz))
    pitch = math.degrees(math.atan2(ny, nz))
    roll = math.degrees(math.atan2(float(x_axis[1]), float(x_axis[0])))
    return HeadPose(yaw=yaw, pitch=pitch, roll=roll)


def _to_pixels(result_landmarks: Any, width: int, height: int) -> FloatArray:
    pts = np.array([(p.x, p.y, p.z) for p in result_landmarks.landmark], dtype=np.float32)
    pts[:, 0] *= width
    pts[:, 1] *= height
    pts[:, 2] *= width  # MediaPipe's z uses the same scale as x
    return pts


def _box(landmarks: FloatArray) -> tuple[float, float, float, float]:
    x0, y0 = landmarks[:, :2].min(axis=0).tolist()
    x1, y1 = landmarks[:, :2].max(axis=0).tolist()
    return float(x0), float(y0), float(x1), float(y1)


def _make_face(track_id: int, raw: FloatArray, smoothed: FloatArray) -> Face:
    return Face(
        track_id=track_id,
        landmarks=smoothed,
        raw_landmarks=raw,
        box=_box(smoothed),
        keypoints=keypoints_of(smoothed),
        pose=pose_of(smoothed),
    )


def _still_landmarks(mesh: Any, detector: Any, image: Image, max_faces: int) -> list[FloatArray]:
    """All faces' landmarks in one still image, small faces included.

    FaceMesh finds faces with MediaPipe's short-range detector on the whole image shrunk to
    128 px, so faces smaller than about a tenth of the image are missed. The bundled
    full-range detector finds those; FaceMesh then runs on an enlarged crop around each.
    """
    h, w = image.shape[:2]
    result = mesh.process(image)
    found = [_to_pixels(lm, w, h) for lm in (result.multi_face_landmarks or [])]
    if len(found) >= max_faces:
        return found[:max_faces]
    for det in detector.process(image).detections or []:
        if len(found) >= max_faces:
            break
        box = det.location_data.relative_bounding_box
        bx, by, bw, bh = box.xmin * w, box.ymin * h, box.width * w, box.height * h
        cx, cy = bx + bw / 2, by + bh / 2
        boxes = [_box(f) for f in found]
        if any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes):
            continue  # FaceMesh already has this face
        half = max(bw, bh) * 1.6
        x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
        x1, y1 = int(min(cx + half, w)), int(min(cy + half, h))
        if x1 - x0 < 8 or y1 - y0 < 8:
            continue
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        scale = max(1.0, 256 / max(x1 - x0, y1 - y0))  # enlarge small crops for the mesh model
        if scale > 1.0:
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        sub = mesh.process(crop)
        for lm in (sub.multi_face_landmarks or [])[:1]:
            pts = _to_pixels(lm, crop.shape[1], crop.shape[0]) / np.float32(scale)
            pts[:, 0] += x0
            pts[:, 1] += y0
            found.append(pts)
    return found


def _open_still_models(max_faces: int, min_confidence: float) -> tuple[Any, Any]:
    import mediapipe as mp

    mesh = mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True,
        max_num_faces=max_faces,
        refine_landmarks=True,
        min_detection_confidence=min_confidence,
    )
    detector = mp.solutions.face_detection.FaceDetection(
        model_selection=1, min_detection_confidence=min_confidence
    )
    return mesh, detector


class StillFaceDetector:
    """Faces in still images, one after another, with MediaPipe's models opened once (opening
    them costs more than a detection): ``with StillFaceDetector() as detect: detect(image)``."""

    def __init__(self, *, max_faces: int = 4, min_confidence: float = 0.5) -> None:
        self.max_faces = max_faces
        self._mesh, self._detector = _open_still_models(max_faces, min_confidence)

    def __call__(self, image: Image) -> list[Face]:
        """Landmarks of every face (no tracking, no smoothing), largest first."""
        points = _still_landmarks(self._mesh, self._detector, image, self.max_faces)
        faces = [
            _make_face(i, pts, pts) for i, pts in enumerate(points) if len(pts) == NUM_LANDMARKS
        ]
        return sorted(faces, key=lambda f: -f.area)

    def close(self) -> None:
        self._mesh.close()
        self._detector.close()

    def __enter__(self) -> StillFaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def detect_faces(image: Image, *, max_faces: int = 4, min_confidence: float = 0.5) -> list[Face]:
    """Landmarks of every face in a still image (no tracking, no smoothing), largest first."""
    with StillFaceDetector(max_faces=max_faces, min_confidence=min_confidence) as detect:
        return detect(image)


def _ipd(landmarks: FloatArray) -> float:
    """The distance between the iris centres, in pixels."""
    return float(np.linalg.norm(landmarks[LEFT_IRIS_CENTER, :2] - landmarks[RIGHT_IRIS_CENTER, :2]))


def _placement(landmarks: FloatArray) -> tuple[FloatArray, float]:
    """The centre of the landmarks' box and its larger side, in pixels: where a face is, for
    matching it to a track."""
    box = _box(landmarks)
    center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)
    return center, max(box[2] - box[0], box[3] - box[1], 1.0)


def _mesh_landmarks(mesh: Any, image: Image) -> list[FloatArray]:
    h, w = image.shape[:2]
    result = mesh.process(image)
    return [_to_pixels(lm, w, h) for lm in (result.multi_face_landmarks or [])]


# A face FaceMesh has just found sits where its detector's box put it; each tracking pass then
# refines it from the last one, and on a face that holds still the landmarks moved 1-4 px per
# frame for 3-5 frames (mean of all 478). Smoothed over time, that was a swap sliding over a
# still face for most of a second whenever a face appeared. So a new face is looked at again,
# on the same frame, until its landmarks hold still.
SETTLE_PASSES = 4  # most extra passes (a face appears seldom: a few ms, once)
SETTLED = 0.005  # of the inter-pupil distance: a mean move this small is settled


def _settled(mesh: Any, image: Image, detections: list[FloatArray]) -> list[FloatArray]:
    """``detections`` refined by up to :data:`SETTLE_PASSES` more tracking passes of ``mesh``
    on the same ``image``, until they move less than :data:`SETTLED` (the same faces, or the
    last detections that were)."""
    for _ in range(SETTLE_PASSES):
        again = _mesh_landmarks(mesh, image)
        if len(again) != len(detections):
            break
        moves = []
        for before, after in zip(detections, again, strict=True):
            ipd = _ipd(after)
            moves.append(
                float(np.linalg.norm(after[:, :2] - before[:, :2], axis=1).mean()) / max(ipd, 1.0)
            )
        detections = again
        if max(moves) < SETTLED:
            break
    return detections


@dataclass
class _Track:
    track_id: int
    filter: OneEuroFilter
    center: FloatArray
    size: float
    missed: int = 0
    motion: FaceMotion = field(default_factory=FaceMotion)


@dataclass
class FaceTracker:
    """Tracks faces frame to frame with MediaPipe FaceMesh in tracking mode.

    Adds ``frame.faces`` (the faces chosen by the selection policy, largest first). A frame
    with no face is left with an empty list: the engine then passes it through unchanged.
    """

    cfg: TrackConfig
    static: bool = False
    _mesh: Any = field(default=None, init=False, repr=False)
    _detector: Any = field(default=None, init=False, repr=False)
    _tracks: list[_Track] = field(default_factory=list, init=False, repr=False)
    _next_id: int = field(default=0, init=False, repr=False)
    _selected_id: int | None = field(default=None, init=False, repr=False)

    def _ensure_mesh(self) -> Any:
        if self._mesh is None:
            if self.static:
                self._mesh, self._detector = _open_still_models(
                    self.cfg.max_faces, self.cfg.min_detection_confidence
                )
            else:
                import mediapipe as mp

                self._mesh = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=False,
                    max_num_faces=self.cfg.max_faces,
                    refine_landmarks=True,
                    min_detection_confidence=self.cfg.min_detection_confidence,
                    min_tracking_confidence=self.cfg.min_tracking_confidence,
                )
        return self._mesh

    def close(self) -> None:
        for model in (self._mesh, self._detector):
            if model is not None:
                model.close()
        self._mesh = self._detector = None

    def track(self, frame: Frame) -> None:
        mesh = self._ensure_mesh()
        if self.static:
            detections = _still_landmarks(mesh, self._detector, frame.image, self.cfg.max_faces)
        else:
            detections = _mesh_landmarks(mesh, frame.image)
            if any(self._match(*_placement(raw), self._tracks) is None for raw in detections):
                detections = _settled(mesh, frame.image, detections)
        grey: npt.NDArray[np.uint8] | None = None
        if detections and not self.static:
            grey = np.asarray(cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY), np.uint8)
        faces = self._associate(detections, frame.pts, grey)
        frame.faces = self._select(faces)

    @staticmethod
    def _match(center: FloatArray, size: float, candidates: list[_Track]) -> _Track | None:
        """The track among ``candidates`` that a face at ``center`` of ``size`` (its
        :func:`_placement`) continues: the nearest, if within half the face's size; None for a
        new face."""
        best = min(
            candidates, key=lambda tr: float(np.linalg.norm(tr.center - center)), default=None
        )
        if best is not None and np.linalg.norm(best.center - center) < 0.5 * max(size, best.size):
            return best
        return None

    def _associate(
        self, detections: list[FloatArray], t: float, grey: npt.NDArray[np.uint8] | None
    ) -> list[Face]:
        faces: list[Face] = []
        if self.static:
            # Independent images: every face is new, so no state leaks from one photo to the next.
            self._tracks = []
        unmatched = list(self._tracks)
        for raw in detections:
            center, size = _placement(raw)
            best = self._match(center, size, unmatched)
            if best is not None:
                unmatched.remove(best)
                track = best
            else:
                track = _Track(
                    self._next_id,
                    OneEuroFilter(self.cfg.smoothing_min_cutoff, self.cfg.smoothing_beta),
                    center,
                    size,
                )
                self._next_id += 1
                self._tracks.append(track)
            track.center, track.size, track.missed = center, size, 0
            ipd = _ipd(raw)
            if grey is None:
                smoothed = raw
            else:
                smoothed = track.filter(raw, t, ipd, track.motion.step(grey, raw))
            faces.append(_make_face(track.track_id, raw, smoothed))
        for track in unmatched:
            track.missed += 1
        # Forget a track after a few frames without it: a face that comes back starts fresh.
        self._tracks = [tr for tr in self._tracks if tr.missed <= 3]
        return sorted(faces, key=lambda f: -f.area)

    def _select(self, faces: list[Face]) -> list[Face]:
        if not faces or self.cfg.select == "all":
            return faces
        if self.cfg.select == "nearest" and self._selected_id is not None:
            same = [f for f in faces if f.track_id == self._selected_id]
            if same:
                return same
        chosen = faces[0]  # the largest
        self._selected_id = chosen.track_id
        return [chosen]
