"""MediaPipe tracking on real public-domain photos and motion generated from them."""

from __future__ import annotations

import cv2
import numpy as np

from livswap.config import load_config
from livswap.frame import Frame
from livswap.track import FaceTracker, detect_faces
from livswap.track.filters import OneEuroFilter
from livswap.track.landmarks import face_index
from tests.media import moving_frames


def test_detects_478_landmarks_keypoints_and_a_frontal_pose(hopper_image: np.ndarray) -> None:
    faces = detect_faces(hopper_image)
    assert len(faces) == 1
    face = faces[0]
    assert face.landmarks.shape == (478, 3)
    left_eye, right_eye, nose, mouth_left, mouth_right = face.keypoints
    assert left_eye[0] < nose[0] < right_eye[0]
    assert mouth_left[0] < mouth_right[0] and nose[1] < mouth_left[1]
    assert abs(face.pose.yaw) < 20 and abs(face.pose.roll) < 10
    assert 60 < face.ipd < 120  # Grace Hopper's eyes are ~85 px apart in the 512-wide photo


def test_track_ids_are_stable_while_the_head_moves(hopper_image: np.ndarray) -> None:
    tracker = FaceTracker(load_config().track)
    ids = []
    for i, image in enumerate(moving_frames(hopper_image, 30, (320, 240))):
        frame = Frame(image=image, seq=i, captured_ns=0, pts=i / 30)
        tracker.track(frame)
        assert len(frame.faces) == 1
        ids.append(frame.faces[0].track_id)
    tracker.close()
    assert len(set(ids)) == 1


def test_no_face_gives_an_empty_list() -> None:
    tracker = FaceTracker(load_config().track)
    frame = Frame(image=np.full((240, 320, 3), 90, np.uint8), seq=0, captured_ns=0, pts=0.0)
    tracker.track(frame)
    assert frame.faces == []


def test_selection_policies(astronaut_image: np.ndarray, hopper_image: np.ndarray) -> None:
    # Two people side by side; Grace Hopper's face is the larger one.
    canvas = np.full((600, 1024, 3), 128, np.uint8)
    canvas[44:556, :512] = astronaut_image
    canvas[:, 512:] = hopper_image
    for select, expected in (("all", 2), ("largest", 1)):
        cfg = load_config(None, {"track.select": select, "track.max_faces": 4})
        tracker = FaceTracker(cfg.track, static=True)
        frame = Frame(image=canvas, seq=0, captured_ns=0, pts=0.0)
        tracker.track(frame)
        assert len(frame.faces) == expected, select
        assert frame.faces[0].center[0] > 512  # largest first: Grace Hopper


def test_one_euro_filter_cuts_jitter_on_a_still_face(hopper_image: np.ndarray) -> None:
    """A still face with sensor-like noise: raw landmarks jitter, filtered ones far less."""
    rng = np.random.default_rng(0)
    tracker = FaceTracker(load_config().track)
    raw, smooth = [], []
    for i in range(60):
        noisy = np.clip(
            hopper_image.astype(np.int16) + rng.integers(-6, 7, hopper_image.shape), 0, 255
        ).astype(np.uint8)
        frame = Frame(image=noisy, seq=i, captured_ns=0, pts=i / 30)
        tracker.track(frame)
        raw.append(frame.faces[0].raw_landmarks[:, :2])
        smooth.append(frame.faces[0].landmarks[:, :2])
    jitter_raw = np.abs(np.diff(np.stack(raw[10:]), axis=0)).mean()
    jitter_smooth = np.abs(np.diff(np.stack(smooth[10:]), axis=0)).mean()
    assert jitter_smooth < jitter_raw / 3, (jitter_raw, jitter_smooth)


def test_one_euro_filter_follows_fast_motion_with_little_lag() -> None:
    f = OneEuroFilter(min_cutoff=1.0, beta=4.0)
    lag = 0.0
    for i in range(90):
        x = np.array([[i * 10.0, 0.0, 0.0]], np.float32)  # 300 px/s, ipd 60 -> 5 ipd/s
        out = f(x, i / 30, scale=60.0)
        lag = float(x[0, 0] - out[0, 0])
    assert 0 < lag < 6.0  # well under one frame's motion (10 px)


def test_the_lips_points_are_both_outlines_and_those_between(astronaut_image: np.ndarray) -> None:
    idx = face_index()
    lips = set(idx.lips.tolist())
    assert set(idx.lips_outer.tolist()) | set(idx.lips_inner.tolist()) <= lips
    assert {0, 11, 12, 13, 14, 15, 16, 17} <= lips  # the mid-line, top to bottom
    face = detect_faces(astronaut_image)[0]
    points = face.landmarks[:, :2]
    outline = points[idx.lips_outer].astype(np.float32)
    for i in range(468):
        inside = cv2.pointPolygonTest(outline, (float(points[i, 0]), float(points[i, 1])), True)
        if i in lips:
            assert inside > -1.0, i  # within the outer outline, or on it
        else:
            assert inside < 0.0, i  # the rest of the face is outside it
