"""Glasses: painted out of a source photo, kept on a target's face, for every engine."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from livswap.engine import create_engine
from livswap.engine.mesh.source import (
    glasses_score,
    prepare_source,
    source_wears_glasses,
    without_glasses,
)
from livswap.engine.regions import TargetRegions
from livswap.frame import Frame
from livswap.session import build_stages
from livswap.track import detect_faces
from livswap.track.tracker import Face
from tests.checkpoints import cpu_config


def rims(shape: tuple[int, ...], face: Face) -> np.ndarray:
    """A mask of spectacle rims drawn around both eyes, joined by a bridge."""
    lm, ipd = face.landmarks[:, :2], face.ipd
    mask = np.zeros(shape[:2], np.uint8)
    thickness = max(2, int(ipd * 0.06))
    axes = (int(ipd * 0.38), int(ipd * 0.27))
    centers = [lm[[33, 133]].mean(axis=0), lm[[362, 263]].mean(axis=0)]
    for c in centers:
        cv2.ellipse(mask, (int(c[0]), int(c[1])), axes, 0, 0, 360, 255, thickness)
    bridge_y = int((centers[0][1] + centers[1][1]) / 2 - ipd * 0.05)
    cv2.line(
        mask,
        (int(centers[0][0] + axes[0]), bridge_y),
        (int(centers[1][0] - axes[0]), bridge_y),
        255,
        thickness,
    )
    return mask > 0


def wearing_glasses(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with dark spectacle frames drawn on its face, and where they are."""
    mask = rims(image.shape, detect_faces(image)[0])
    glassed = image.copy()
    glassed[mask] = (25, 20, 20)
    return glassed, mask


def test_a_source_with_glasses_gets_its_frames_painted_out(astronaut_image: np.ndarray) -> None:
    glassed, mask = wearing_glasses(astronaut_image)
    face = detect_faces(glassed)[0]
    assert glasses_score(glassed, face) > 2.3
    assert without_glasses(astronaut_image, detect_faces(astronaut_image)[0]) is None
    painted = without_glasses(glassed, face)
    assert painted is not None
    before = np.abs(glassed.astype(int) - astronaut_image)[mask].mean()
    after = np.abs(painted.astype(int) - astronaut_image)[mask].mean()
    assert after < 0.35 * before  # the frames are mostly gone
    untouched = ~cv2.dilate(mask.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
    assert (painted[untouched] != glassed[untouched]).any(axis=1).mean() < 0.01  # only the rims
    source = prepare_source(glassed)
    assert source.glasses
    # Its frames are the painted-out ones (elsewhere the shade of its hair is lifted); the
    # drawn rims differ from the painted ones by 158 on average.
    # (The photo is prepared around its face: the same pixels, shifted by the crop.)
    dx, dy = np.round(face.landmarks[1, :2] - source.face.landmarks[1, :2]).astype(int)
    h, w = source.image.shape[:2]
    window = (slice(dy, dy + h), slice(dx, dx + w))
    inside = mask[window]
    assert np.abs(source.image[inside].astype(int) - painted[window][inside]).mean() < 3.0
    # Its own eye surround is used, not left out for the target's.
    lm = source.face.landmarks
    below_eye = np.round(lm[[145, 374], :2] + (0, 0.12 * source.face.ipd)).astype(int)
    assert all(source.skin[y, x] > 0.5 for x, y in below_eye)


def test_a_dark_bridge_alone_is_not_taken_for_glasses(astronaut_image: np.ndarray) -> None:
    # Lit from above, the brows' shadow crosses the nose bridge as a dark band: the bridge
    # scores like a spectacle bridge, but no lower rim runs under the eyes. Painting "frames"
    # out of such a face smeared its eyes and brows.
    face = detect_faces(astronaut_image)[0]
    lm, ipd = face.landmarks[:, :2], face.ipd
    shade = np.zeros(astronaut_image.shape[:2], np.float32)
    y = int((lm[168, 1] + lm[6, 1]) / 2)
    shade[y - int(ipd * 0.06) : y + int(ipd * 0.06) + 1, int(lm[133, 0]) : int(lm[362, 0])] = 1
    soft = cv2.GaussianBlur(shade, (0, 0), ipd * 0.08)  # a soft shadow, 40% darker at most
    shadowed = (astronaut_image * (1 - 0.4 * soft[..., None])).astype(np.uint8)
    face = detect_faces(shadowed)[0]
    assert glasses_score(shadowed, face) > 2.3  # the bridge alone would say glasses
    assert not source_wears_glasses(shadowed, face)
    assert not prepare_source(shadowed).glasses
    glassed, _ = wearing_glasses(astronaut_image)
    assert source_wears_glasses(glassed, detect_faces(glassed)[0])


def test_glasses_are_remembered_per_face_with_hysteresis(astronaut_image: np.ndarray) -> None:
    glassed, _ = wearing_glasses(astronaut_image)
    face = detect_faces(glassed)[0]
    regions = TargetRegions()
    lm, ipd = face.landmarks[:, :2], face.ipd
    assert regions.wears_glasses(1, glassed, lm, ipd)
    assert not regions.wears_glasses(2, astronaut_image, lm, ipd)  # another face, no glasses
    # One frame without the frames' edges (motion blur, a glint) does not switch it off.
    assert regions.wears_glasses(1, astronaut_image, lm, ipd)
    for _ in range(20):
        regions.next_frame()
        wearing = regions.wears_glasses(1, astronaut_image, lm, ipd)
    assert not wearing


@pytest.mark.parametrize("engine_name", ["mesh", "simswap-224"])
def test_a_targets_glasses_stay_on_its_face(
    engine_name: str, model_folder: Path, astronaut_image: np.ndarray, hopper_image: np.ndarray
) -> None:
    cfg = cpu_config(engine_name, model_folder)
    engine = create_engine(cfg)
    identity = engine.prepare([hopper_image])
    glassed, mask = wearing_glasses(astronaut_image)
    outputs = {}
    for name, target in (("plain", astronaut_image), ("glasses", glassed)):
        frame = Frame(image=target, seq=0, captured_ns=time.monotonic_ns(), pts=0.0)
        for stage in build_stages(cfg, engine, identity, still=True):
            stage.run(frame)
        outputs[name] = frame.result
    changed = np.abs(outputs["plain"].astype(int) - astronaut_image).max(axis=2) > 8
    assert changed[mask].mean() > 0.3  # without glasses the eye area is swapped
    # With them, the rims stay dark: at most a third of the way to the swapped face's grey
    # (the mesh engine resamples them with the eyes it reshapes).
    rim = glassed.mean(axis=2)[mask].mean()
    swapped = outputs["plain"].mean(axis=2)[mask].mean()
    kept = outputs["glasses"].mean(axis=2)[mask].mean()
    assert kept < rim + (swapped - rim) / 3, (rim, kept, swapped)
