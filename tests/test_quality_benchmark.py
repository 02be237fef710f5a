"""benchmarks/quality.py's own pieces: clips as people, the fixed split, the occlusion clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.quality import half_of, occluded_clip, people_in_clips, run_clip
from livswap.config import load_config
from tests.media import moving_frames, write_video


def test_a_clip_is_a_person_with_three_views(hopper_image: np.ndarray, tmp_path: Path) -> None:
    clip = write_video(tmp_path / "hopper.mp4", moving_frames(hopper_image, 40, (320, 384)))
    blank = write_video(tmp_path / "blank.mp4", [np.zeros((64, 64, 3), np.uint8)] * 10)
    people = people_in_clips([clip, blank])  # the clip without a face is skipped
    assert [p.name for p in people] == ["hopper"]
    person = people[0]
    views = [person.source, person.target, person.gallery]
    assert all(v.shape == (384, 320, 3) for v in views)
    assert not np.array_equal(person.source, person.gallery)  # different moments of the clip


def test_the_split_is_fixed_and_splits() -> None:
    names = [f"person{i}" for i in range(40)]
    halves = [half_of(n) for n in names]
    assert halves == [half_of(n) for n in names]  # the same every run: nobody picks them
    assert 10 < halves.count("A") < 30


def test_a_hand_sweeps_across_the_face_and_is_scored(
    hopper_image: np.ndarray, tmp_path: Path
) -> None:
    clip = write_video(tmp_path / "c.mp4", moving_frames(hopper_image, 30, (320, 384)), audio=None)
    hand = np.full((60, 40, 3), (200, 150, 120), np.uint8)  # a flat stand-in: scored, not detected
    alpha = np.ones((60, 40), np.float32)
    out = tmp_path / "occluded.mp4"
    alphas = occluded_clip(clip, hand, alpha, out, 30)
    assert len(alphas) == 30
    centres = [np.nonzero(a.max(axis=0) > 0.5)[0].mean() for a in alphas if a.max() > 0.5]
    assert centres[len(centres) // 2] > centres[0] + 40  # it moves across the face...
    assert abs(centres[-1] - centres[0]) < 20  # ...and back
    cfg = load_config(None, {"output.label": False})
    frames = run_clip(cfg, out, hopper_image, 30)
    assert len(frames) == 30 and all(f.hull is not None for f in frames[5:])
