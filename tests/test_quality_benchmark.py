"""benchmarks/quality.py's own pieces: clips as people, the fixed split, the occlusion clips."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.quality import (
    Person,
    evaluate_video_from,
    half_of,
    occluded_clip,
    people_in,
    people_in_clips,
    relit,
    relit_people,
    run_clip,
    same_picture,
    split_check,
    still_clip,
)
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


def test_a_copy_of_the_source_photo_is_not_taken_for_the_gallery_view(
    hopper_image: np.ndarray, astronaut_image: np.ndarray, tmp_path: Path
) -> None:
    def save(path: Path, image: np.ndarray) -> None:
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    h, w = hopper_image.shape[:2]
    smaller = np.asarray(
        cv2.resize(hopper_image, (w // 2, h // 2), interpolation=cv2.INTER_AREA), np.uint8
    )
    other = np.asarray(cv2.resize(astronaut_image, (w, h)), np.uint8)  # another picture
    assert same_picture(hopper_image, smaller) and not same_picture(hopper_image, other)
    save(tmp_path / "grace" / "a.png", hopper_image)
    save(tmp_path / "grace" / "b.jpg", smaller)  # the same photo at half the size
    save(tmp_path / "grace" / "c.png", other)
    save(tmp_path / "only_copies" / "a.png", hopper_image)
    save(tmp_path / "only_copies" / "b.jpg", smaller)
    people = people_in(tmp_path)
    assert [p.name for p in people] == ["grace"]  # nothing to retrieve against: skipped
    assert people[0].gallery.shape == other.shape
    assert not same_picture(people[0].source, people[0].gallery)


def test_the_split_is_fixed_and_splits() -> None:
    names = [f"person{i}" for i in range(40)]
    halves = [half_of(n) for n in names]
    assert halves == [half_of(n) for n in names]  # the same every run: nobody picks them
    assert 10 < halves.count("A") < 30


def _rows(hits_by_source: dict[str, int], targets: int = 10) -> list[dict[str, object]]:
    return [
        {"source": s, "nearest": s if i < hits else "someone else"}
        for s, hits in hits_by_source.items()
        for i in range(targets)
    ]


def test_the_split_check_tells_a_chance_gap_from_one_chance_rarely_gives() -> None:
    names = [f"person{i}" for i in range(16)]
    in_a = [n for n in names if half_of(n) == "A"]
    assert 3 <= len(in_a) <= 13
    # Halves apart only by who is hard: one hard person among easy ones, in whichever half.
    mixed = split_check(_rows({n: 2 if n == names[0] else 8 for n in names}))
    assert mixed["per_source"][names[0]] == "2/10"
    assert mixed["chance_at_least_this_gap"] > 0.3
    # Every source of one half retrieved, none of the other's: chance almost never splits so.
    apart = split_check(_rows({n: 10 if n in in_a else 0 for n in names}))
    assert apart["gap_a_minus_b"] == 1.0
    assert apart["chance_at_least_this_gap"] < 0.01 < apart["chance_gap_p90"]
    assert split_check(_rows({n: 5 for n in in_a})) == {
        "per_source": {n: "5/10" for n in in_a}
    }  # one half only: nothing to compare


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


def test_flicker_is_the_worst_over_several_source_photos(
    hopper_image: np.ndarray, astronaut_image: np.ndarray, tmp_path: Path
) -> None:
    """One soft source photo would hide how much a crisp one shimmers: each source is run, and
    the clip's figure is the worst of them."""
    clip = write_video(tmp_path / "c.mp4", moving_frames(hopper_image, 20, (320, 384)), audio=None)
    args = argparse.Namespace(video_frames=20)
    cfg = load_config(None, {"output.label": False})
    soft = np.asarray(cv2.GaussianBlur(astronaut_image, (0, 0), 3.0), np.uint8)
    result = evaluate_video_from(args, cfg, clip, {"astronaut": astronaut_image, "soft": soft})
    ratios = result["by_source"]
    assert set(ratios) == {"astronaut", "soft"} and all(r > 0 for r in ratios.values())
    assert ratios["astronaut"] != ratios["soft"]
    assert result["flicker_ratio"] == max(ratios.values())
    assert result["source"] == max(ratios, key=ratios.get)


def test_relit_photos_are_lit_as_named(hopper_image: np.ndarray) -> None:
    h, w = hopper_image.shape[:2]
    box = (w * 0.25, h * 0.2, w * 0.75, h * 0.8)

    def mean(image: np.ndarray, part: object = np.s_[:, :]) -> np.ndarray:
        return image[part].reshape(-1, 3).astype(np.float64).mean(axis=0)

    plain = mean(hopper_image)
    assert mean(relit(hopper_image, "dim", box)).sum() < 0.65 * plain.sum()
    side = relit(hopper_image, "side", box)
    assert mean(side, np.s_[:, : w // 3]).sum() < 0.6 * mean(side, np.s_[:, -w // 3 :]).sum()
    top = relit(hopper_image, "top", box)
    assert mean(top, np.s_[: h // 3]).sum() > 1.5 * mean(top, np.s_[-h // 3 :]).sum()
    pink, tungsten = (
        mean(relit(hopper_image, "pink", box)),
        mean(relit(hopper_image, "tungsten", box)),
    )
    assert pink[0] / pink[1] > 1.2 * plain[0] / plain[1] and pink[2] > pink[1]
    assert tungsten[2] / tungsten[0] < 0.8 * plain[2] / plain[0]
    grey = relit(hopper_image, "grey", box).astype(int)
    assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 1
    with pytest.raises(ValueError, match="relight 'moon'"):
        relit(hopper_image, "moon", box)
    person = Person("grace", hopper_image, hopper_image, hopper_image)
    (target_relit,) = relit_people([person], "target-dim")
    assert target_relit.source is hopper_image and target_relit.gallery is hopper_image
    assert mean(target_relit.target).sum() < 0.65 * plain.sum()


def test_a_still_clip_holds_one_frame_swaying_with_sensor_noise(
    hopper_image: np.ndarray, tmp_path: Path
) -> None:
    clip = write_video(tmp_path / "c.mp4", moving_frames(hopper_image, 20, (320, 384)), audio=None)
    still = still_clip(clip, tmp_path / "still.mp4", 60)
    cap = cv2.VideoCapture(str(still))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32))
    cap.release()
    assert len(frames) == 60
    changes = [float(np.abs(b - a).mean()) for a, b in itertools.pairwise(frames)]
    assert all(0 < c < 4 for c in changes)  # it barely changes, but never stands still
    (dx, dy), _ = cv2.phaseCorrelate(frames[0], frames[30])  # a second later: swayed
    assert 0.5 < float(np.hypot(dx, dy)) < 4
