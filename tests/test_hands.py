"""Hands in front of the swapped face: silhouettes, compose for every engine, the hand stage."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from livswap.compose import HandsInFront
from livswap.config import load_config
from livswap.engine import create_engine
from livswap.frame import Frame, SwappedFace
from livswap.session import build_stages
from livswap.track.hands import MODEL_TIMING, Hand, HandTracker, hand_silhouette, occluder_mask
from tests.checkpoints import cpu_config

# An open right hand, palm towards the camera, in palm widths (knuckle 5 to knuckle 17 is
# about 1), wrist at the origin, fingers up: MediaPipe's 21-point order.
_OPEN_HAND = np.array(
    [
        (0.0, 0.0),
        (-0.35, -0.2),
        (-0.6, -0.45),
        (-0.8, -0.7),
        (-0.95, -0.95),
        (-0.45, -1.0),
        (-0.6, -1.45),
        (-0.68, -1.75),
        (-0.75, -2.0),
        (-0.12, -1.05),
        (-0.14, -1.55),
        (-0.16, -1.88),
        (-0.17, -2.15),
        (0.2, -1.0),
        (0.27, -1.45),
        (0.31, -1.75),
        (0.34, -2.0),
        (0.5, -0.9),
        (0.68, -1.22),
        (0.8, -1.47),
        (0.9, -1.7),
    ],
    np.float32,
)


def open_hand(wrist: tuple[float, float], palm_width: float) -> Hand:
    return Hand(landmarks=_OPEN_HAND * palm_width + np.array(wrist, np.float32), score=0.99)


def test_the_silhouette_follows_the_fingers() -> None:
    hand = open_hand((200, 300), 60)
    mask = hand_silhouette(hand, (400, 400)) > 127
    for x, y in np.round(hand.landmarks).astype(int):
        assert mask[y, x], (x, y)
    # Between the spread index and pinky tips, above the knuckles: not the hand.
    gap = np.round((hand.landmarks[8] + hand.landmarks[20]) / 2 + (0, -10)).astype(int)
    assert not mask[gap[1], gap[0]]
    # Everything it covers lies inside its box, and it is much less than the box.
    x0, y0, x1, y1 = hand.box
    ys, xs = np.nonzero(mask)
    assert xs.min() >= x0 - 1 and xs.max() <= x1 + 1 and ys.min() >= y0 - 1 and ys.max() <= y1 + 1
    assert mask.sum() < 0.6 * (x1 - x0) * (y1 - y0)


def test_a_silhouette_drawn_in_crop_space_matches_the_frame_one() -> None:
    hand = open_hand((200, 300), 60)
    to_crop = np.array([[0.5, 0.0, -20.0], [0.0, 0.5, -40.0]])  # half size, shifted
    in_crop = hand_silhouette(hand, (200, 200), to_crop) > 127
    in_frame = hand_silhouette(hand, (400, 400)) > 127
    resampled = in_frame[40 * 2 + 1 :: 2, 20 * 2 + 1 :: 2][:200, :200]
    overlap = (in_crop[: resampled.shape[0], : resampled.shape[1]] == resampled).mean()
    assert overlap > 0.97


def _face(track_id: int, size: int = 100) -> SwappedFace:
    crop = np.zeros((size, size, 3), np.uint8)
    return SwappedFace(track_id, np.eye(2, 3), np.ones((size, size), np.float32), crop=crop)


def test_hands_cover_at_once_and_uncover_over_a_few_frames() -> None:
    in_front = HandsInFront(release=0.5)
    hand = open_hand((30, 95), 25)  # over the lower left of a 100 x 100 face
    under = tuple(np.round(hand.landmarks[9]).astype(int))[::-1]  # a knuckle (row, col)
    covered = in_front.apply([_face(1), _face(2)], [hand])
    for face in covered:
        assert face.alpha[under] == pytest.approx(0.0, abs=1e-3)
        assert face.alpha[10, 90] == pytest.approx(1.0)  # far from the hand
    held = [in_front.apply([_face(1)], [])[0].alpha[under] for _ in range(4)]
    assert held[0] == pytest.approx(0.5, abs=0.01)
    assert held == sorted(held) and held[-1] > 0.9
    in_front.apply([_face(1)], [])
    assert in_front.apply([_face(1)], [])[0].alpha[under] == 1.0  # forgotten once faint


def test_no_hands_leaves_faces_untouched() -> None:
    faces = [_face(1)]
    assert HandsInFront().apply(faces, []) is faces
    assert occluder_mask([], (10, 10)) is None


@pytest.mark.parametrize("engine_name", ["mesh", "simswap-224"])
def test_a_hand_over_the_face_stays_in_front_for_every_engine(
    engine_name: str, model_folder: Path, astronaut_image: np.ndarray, hopper_image: np.ndarray
) -> None:
    cfg = cpu_config(engine_name, model_folder)
    engine = create_engine(cfg)
    stages = build_stages(cfg, engine, engine.prepare([astronaut_image]), still=True)
    # Hands are found while the face is swapped (compose is the first to use them).
    assert [s.name for s in stages] == ["track", "swap+hands", "compose"]
    frame = Frame(image=hopper_image, seq=0, captured_ns=time.monotonic_ns(), pts=0.0)
    for stage in stages:
        stage.run(frame)
        if stage.name == "swap+hands":
            assert {"swap", "hands"} <= frame.timings_ms.keys()
            assert frame.hands == []  # the photo has no hand in it
            x0, y0, x1, y1 = frame.faces[0].box
            frame.hands = [open_hand(((x0 + x1) / 2, y1), (x1 - x0) * 0.35)]
    hand = hand_silhouette(frame.hands[0], (hopper_image.shape[0], hopper_image.shape[1])) > 127
    x0, y0, x1, y1 = (int(v) for v in frame.faces[0].box)
    face = np.zeros_like(hand)
    face[y0:y1, x0:x1] = True
    changed = np.abs(frame.result.astype(int) - hopper_image.astype(int)).max(axis=2) > 3
    assert changed[face & ~hand].mean() > 0.2  # the face is swapped around the hand
    assert changed[face & hand].mean() < 0.01  # and the hand is the frame's own pixels


def test_the_hand_stage_looks_every_few_frames_while_there_is_none(
    astronaut_image: np.ndarray,
) -> None:
    cfg = load_config(None, {})
    from livswap.track import FaceTracker

    tracker = FaceTracker(cfg.track)
    hands = HandTracker(cfg.track.hand_min_confidence)
    looked = []
    original_find = hands.find

    def find(image: np.ndarray, region: tuple[int, int, int]) -> list[Hand]:
        looked.append(region)
        return original_find(image, region)

    hands.find = find  # type: ignore[method-assign]
    try:
        timed = []
        for i in range(8):
            frame = Frame(image=astronaut_image, seq=i, captured_ns=0, pts=i / 30)
            tracker.track(frame)
            looks_before = len(looked)
            hands.track(frame)
            assert frame.faces and frame.hands == []
            # The model's own time is on the frames it ran on, and only there.
            assert (MODEL_TIMING in frame.timings_ms) == (len(looked) > looks_before)
            timed += [frame.timings_ms[MODEL_TIMING]] if MODEL_TIMING in frame.timings_ms else []
        assert len(looked) == 8 // hands.detect_every
        assert len(timed) == len(looked) and all(ms > 0 for ms in timed)
        left, top, side = looked[0]
        x0, y0, x1, y1 = frame.faces[0].box
        assert left <= x0 and top <= y0 and left + side >= x1 and top + side >= y1
        blank = Frame(image=np.zeros_like(astronaut_image), seq=9, captured_ns=0, pts=1.0)
        hands.track(blank)  # no face: nothing to look around
        assert len(looked) == 8 // hands.detect_every
    finally:
        hands.close()
        tracker.close()


def test_hands_can_be_turned_off(astronaut_image: np.ndarray) -> None:
    cfg = load_config(None, {"track.hands": False})
    engine = create_engine(cfg)
    stages = build_stages(cfg, engine, engine.prepare([astronaut_image]), still=True)
    assert [s.name for s in stages] == ["track", "swap", "compose"]


def test_a_hand_shows_where_it_is_not_where_the_face_was_reshaped() -> None:
    moved = np.full((100, 100, 2), 4.0, np.float32)
    face = replace(_face(1), displacement=moved)
    hand = open_hand((30, 95), 25)
    under = tuple(np.round(hand.landmarks[9]).astype(int))[::-1]
    covered = HandsInFront().apply([face], [hand])[0]
    assert covered.displacement is not None
    assert np.abs(covered.displacement[under]).max() < 1e-3
    assert np.array_equal(covered.displacement[10, 90], (4.0, 4.0))  # far from the hand
