"""MediaPipe tracking on real public-domain photos and motion generated from them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from livswap.config import load_config
from livswap.frame import Frame
from livswap.track import FaceTracker, detect_faces
from livswap.track.filters import OneEuroFilter
from livswap.track.landmarks import face_index
from livswap.track.motion import FaceMotion
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


@pytest.mark.parametrize("which", ["hopper", "astronaut"])
def test_a_new_face_that_holds_still_is_not_seen_sliding(
    which: str, hopper_image: np.ndarray, astronaut_image: np.ndarray
) -> None:
    """FaceMesh places a face it has just found where its detector's box put it, and refines it
    over the next frames: on a face that holds still, the smoothed landmarks slid by 0.014-0.016
    of the eye distance over 12 frames here (a swap sliding over a still face whenever one
    appears). A new face is refined on its first frame until it holds still."""
    image = hopper_image if which == "hopper" else astronaut_image
    tracker = FaceTracker(load_config().track)
    landmarks = []
    for i in range(12):
        frame = Frame(image=image, seq=i, captured_ns=0, pts=i / 30)
        tracker.track(frame)
        landmarks.append(frame.faces[0].landmarks[:, :2].copy())
    ipd = frame.faces[0].ipd
    tracker.close()
    slide = [float(np.linalg.norm(lm - landmarks[0], axis=1).mean()) / ipd for lm in landmarks]
    assert max(slide) < 0.006, slide


def _shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    shift = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    size = (image.shape[1], image.shape[0])
    return cv2.warpAffine(image, shift, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def test_face_motion_measures_a_sub_pixel_shift_of_the_face(astronaut_image: np.ndarray) -> None:
    landmarks = detect_faces(astronaut_image)[0].landmarks
    motion = FaceMotion()

    def grey_at(dx: float, dy: float) -> np.ndarray:
        # Both frames resampled, so both are as soft as interpolation leaves them.
        return cv2.cvtColor(_shifted(astronaut_image, dx, dy), cv2.COLOR_RGB2GRAY)

    assert motion.step(grey_at(0.25, 0.25), landmarks) is None  # nothing to compare with yet
    moved = motion.step(grey_at(0.55, 0.05), landmarks)
    assert moved is not None
    assert np.allclose(moved[:, 2], [0.3, -0.2], atol=0.03), moved
    # A face gone flat (a covered lens): no corners to follow, so no motion rather than a guess.
    flat = np.full_like(grey_at(0, 0), 120)
    motion.step(flat, landmarks)
    assert motion.step(flat, landmarks) is None


def _wander_and_lag(
    image: np.ndarray, path: list[tuple[float, float]], noise: float
) -> tuple[float, float]:
    """Tracked over ``image`` moved along ``path`` with sensor noise: how far the smoothed
    landmarks step from frame to frame beyond the true motion (mean, of the eye distance), and
    how far they trail the raw ones at the end (mean, of the eye distance)."""
    rng = np.random.default_rng(0)
    tracker = FaceTracker(load_config().track)
    smooth, raw = [], []
    for i, (dx, dy) in enumerate(path):
        noisy = _shifted(image, dx, dy).astype(np.float32) + rng.normal(0, noise, image.shape)
        frame = Frame(
            image=np.clip(noisy, 0, 255).astype(np.uint8), seq=i, captured_ns=0, pts=i / 30
        )
        tracker.track(frame)
        smooth.append(frame.faces[0].landmarks[:, :2] - np.array([dx, dy], np.float32))
        raw.append(frame.faces[0].raw_landmarks[:, :2] - np.array([dx, dy], np.float32))
    ipd = frame.faces[0].ipd
    tracker.close()
    s, r = np.stack(smooth), np.stack(raw)
    wander = float(np.linalg.norm(np.diff(s[10:], axis=0), axis=2).mean()) / ipd
    lag = float(np.linalg.norm((s - r)[-10:].mean(axis=0), axis=1).mean()) / ipd
    return wander, lag


def test_a_still_face_swaying_by_sub_pixels_is_followed_without_jitter(
    hopper_image: np.ndarray,
) -> None:
    """A webcam user sitting still: the face sways by a pixel over seconds under sensor noise.
    FaceMesh's landmarks jitter by half a pixel; smoothed only in time they still stepped by
    0.00062 of the eye distance per frame beyond the true motion here (0.0003 now), which a swap
    shows as a shimmer. Carried by the image's own motion, they can be smoothed far harder."""
    path = [
        (1.5 * np.sin(2 * np.pi * i / 120), 0.8 * np.sin(2 * np.pi * i / 93 + 1)) for i in range(60)
    ]
    wander, _ = _wander_and_lag(hopper_image, path, noise=2.0)
    assert wander < 0.00045, wander


def test_a_face_moving_steadily_is_not_trailed(hopper_image: np.ndarray) -> None:
    """A head turning across the frame at a steady 30 px/s: a filter that steadies a still
    face by smoothing harder in time trails it (0.056 of the eye distance here with this
    filter without the image's motion, 0.044 with the old, lighter one; 0.008 now): following
    the image keeps it on the face."""
    path = [(float(i), 0.3 * i) for i in range(45)]
    _, lag = _wander_and_lag(hopper_image, path, noise=2.0)
    assert lag < 0.02, lag


def test_face_motion_is_not_taken_from_something_sweeping_across_a_still_face(
    astronaut_image: np.ndarray,
) -> None:
    """A hand or an object passing over a still face drags the corners along with it; where
    the landmarks did not move alike, the image's motion is not the face's."""
    landmarks = detect_faces(astronaut_image)[0].landmarks
    motion = FaceMotion()
    grey = np.asarray(cv2.cvtColor(astronaut_image, cv2.COLOR_RGB2GRAY), np.uint8)
    motion.step(grey, landmarks)
    # The whole picture moves by 6 px (as everything under the corners would) while the
    # landmarks stay where they were.
    assert motion.step(np.roll(grey, 6, axis=1), landmarks) is None
    # With the landmarks moving alike, the same motion is the face's.
    motion = FaceMotion()
    motion.step(grey, landmarks)
    moved = landmarks.copy()
    moved[:, 0] += 6
    shift = motion.step(np.roll(grey, 6, axis=1), moved)
    assert shift is not None and abs(shift[0, 2] - 6) < 0.1, shift


def test_a_mouth_opening_on_a_still_head_is_followed_at_once() -> None:
    """Twenty of a hundred points (a mouth) open by 0.6 of the eye distance over six frames
    while the rest hold still, all with half a pixel of jitter: the filter that holds a still
    face steady must open for the points that move. (With the weak per-point term of before,
    0.25 and no jitter threshold, the mouth still trailed by 0.20-0.25 of the eye distance a
    frame after it stopped opening; now 0.014.)"""
    cfg = load_config().track
    f = OneEuroFilter(cfg.smoothing_min_cutoff, cfg.smoothing_beta)
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 200, (100, 3)).astype(np.float32)
    ipd = 100.0
    for i in range(45):
        true = base.copy()
        true[:20, 1] += 10.0 * float(np.clip(i - 30, 0, 6))  # 3 eye distances/s, then held
        noisy = true + rng.normal(0, 0.5, true.shape).astype(np.float32)
        out = f(noisy, i / 30, scale=ipd)
        if i == 30:
            still = float(np.abs(out[20:] - true[20:]).mean())
        if i == 37:
            trail = float(np.linalg.norm(out[:20, :2] - true[:20, :2], axis=1).mean()) / ipd
    assert trail < 0.1, trail
    assert still < 0.5, still  # the still points stay filtered (jitter is 0.4 px mean)
