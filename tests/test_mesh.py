"""The built-in mesh engine on two different real people (public-domain photos)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from livswap.compose import Compositor, paste_on_cpu
from livswap.config import Config, load_config
from livswap.engine import create_engine
from livswap.engine.base import Engine, Identity
from livswap.engine.mesh.engine import MeshStream
from livswap.errors import EngineError
from livswap.frame import Frame, SwappedFace
from livswap.label import label_box
from livswap.output import NullSink
from livswap.runloop import run_async
from livswap.session import build_run, build_stages, swap_folder
from livswap.track import Face, detect_faces
from livswap.track.landmarks import face_index
from tests.media import moving_frames, probe, run_livswap, write_video


def mesh_config(**overrides: object) -> Config:
    return load_config(None, {"engine.name": "mesh", **overrides})


def swap_image(cfg: Config, source: np.ndarray, target: np.ndarray) -> Frame:
    engine = create_engine(cfg)
    identity = engine.prepare([source])
    frame = Frame(image=target, seq=0, captured_ns=0, pts=0.0)
    for stage in build_stages(cfg, engine, identity, still=True):
        stage.run(frame)
    return frame


def nose_drop(face: Face) -> float:
    """How far the nose sits below the eye line, over the eye distance (scale-free)."""
    lm = face.landmarks[:, :2]
    left, right = lm[[33, 133]].mean(axis=0), lm[[362, 263]].mean(axis=0)
    axis = right - left
    scale = float(np.linalg.norm(axis))
    down = np.array([-axis[1], axis[0]]) / scale
    return float((lm[face_index().nose].mean(axis=0) - (left + right) / 2) @ down / scale)


@pytest.fixture(scope="module")
def hopper_onto_astronaut(astronaut_image: np.ndarray, hopper_image: np.ndarray) -> Frame:
    return swap_image(mesh_config(**{"output.label": False}), hopper_image, astronaut_image)


def test_swap_moves_inner_proportions_toward_the_source(
    astronaut_image: np.ndarray, hopper_image: np.ndarray
) -> None:
    # The astronaut's nose is shorter than Grace Hopper's (0.50 against 0.55 eye distances).
    # Swapped from the astronaut: Hopper's translucent spectacle frames are too faint to be
    # found and painted out (glasses_score), so from her photo they are pasted with the skin,
    # and where MediaPipe reads the eye corners on a swap from her moved with the look of the
    # eyes' rims and lashes, not only with the shape.
    target = nose_drop(detect_faces(hopper_image)[0])
    source = nose_drop(detect_faces(astronaut_image)[0])
    assert target - source > 0.03

    def moved(shape_transfer: float | None) -> float:
        overrides: dict[str, object] = {"output.label": False}
        if shape_transfer is not None:
            overrides["engine.shape_transfer"] = shape_transfer
        swapped = swap_image(mesh_config(**overrides), astronaut_image, hopper_image).result
        return (nose_drop(detect_faces(swapped)[0]) - target) / (source - target)

    # Fractions of the way from the target's to the source's. The skin alone (no shape
    # transfer) does not move it (MediaPipe reads it a little longer: -0.74); the transfer
    # does, in proportion (-0.55 at the default 0.4, 0.15 at 1).
    without_shape, default, full = moved(0.0), moved(None), moved(1.0)
    assert without_shape < default < full
    assert full - without_shape > 0.6


def test_swap_keeps_the_targets_pose_and_expression(
    hopper_onto_astronaut: Frame, astronaut_image: np.ndarray
) -> None:
    target = detect_faces(astronaut_image)[0]
    swapped = detect_faces(hopper_onto_astronaut.result)[0]
    error = np.linalg.norm(swapped.landmarks[:, :2] - target.landmarks[:, :2], axis=1).mean()
    assert error / target.ipd < 0.06
    assert abs(swapped.pose.yaw - target.pose.yaw) < 5
    assert abs(swapped.pose.roll - target.pose.roll) < 3
    # The smile (mouth opening) stays the target's.
    idx = face_index()
    opening = lambda f: np.ptp(f.landmarks[idx.lips_inner, 1]) / f.ipd  # noqa: E731
    assert opening(swapped) == pytest.approx(opening(target), abs=0.05)
    width = lambda f: np.ptp(f.landmarks[idx.lips_outer, 0]) / f.ipd  # noqa: E731
    assert width(swapped) == pytest.approx(width(target), abs=0.05)


def test_swapped_face_differs_from_the_target_only_around_the_face(
    hopper_onto_astronaut: Frame, astronaut_image: np.ndarray
) -> None:
    diff = np.abs(hopper_onto_astronaut.result.astype(int) - astronaut_image.astype(int)).sum(
        axis=2
    )
    x0, y0, x1, y1 = detect_faces(astronaut_image)[0].box
    pad = 0.6 * (x1 - x0)
    inside = diff[int(y0) : int(y1), int(x0) : int(x1)]
    outside = diff.copy()
    outside[int(y0 - pad) : int(y1 + pad), int(x0 - pad) : int(x1 + pad)] = 0
    assert inside.mean() > 20
    assert outside.max() == 0


def test_colour_is_continuous_across_the_blend_boundary(
    hopper_onto_astronaut: Frame, astronaut_image: np.ndarray
) -> None:
    """Colour just inside vs just outside the face outline: no step beyond the original's."""
    idx = face_index()
    face = detect_faces(astronaut_image)[0]
    oval = np.zeros(astronaut_image.shape[:2], np.uint8)
    cv2.fillPoly(oval, [np.round(face.landmarks[idx.face_oval, :2]).astype(np.int32)], 255)
    k = max(3, int(face.ipd * 0.12)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    inner = cv2.subtract(oval, cv2.erode(oval, kernel)) > 0
    outer = cv2.subtract(cv2.dilate(oval, kernel), oval) > 0
    # Only the cheeks and jaw sides: the forehead borders hair in the original already.
    rows = np.zeros_like(inner)
    rows[int(face.landmarks[1, 1]) : int(face.box[3])] = True

    def step(image: np.ndarray) -> np.ndarray:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
        return lab[inner & rows].mean(axis=0) - lab[outer & rows].mean(axis=0)

    swapped, original = step(hopper_onto_astronaut.result), step(astronaut_image)
    assert np.abs(swapped - original).max() < 12, (swapped, original)


def test_source_without_a_face_is_a_clear_error() -> None:
    engine = create_engine(mesh_config())
    with pytest.raises(EngineError, match="no face found"):
        engine.prepare([np.full((200, 200, 3), 120, np.uint8)])


def test_frame_without_a_face_passes_through_unchanged(hopper_image: np.ndarray) -> None:
    blank = np.full((240, 320, 3), (40, 90, 160), np.uint8)
    frame = swap_image(mesh_config(), hopper_image, blank)
    assert "no_face" in frame.notes and frame.swaps == []
    out = frame.result.copy()
    x0, y0, x1, y1 = label_box(320, 240)
    out[y0:y1, x0:x1] = blank[y0:y1, x0:x1]
    assert np.array_equal(out, blank)


def test_an_object_in_front_of_the_mouth_stays_in_front(
    astronaut_image: np.ndarray, hopper_image: np.ndarray
) -> None:
    target = astronaut_image.copy()
    face = detect_faces(target)[0]
    mx, my = face.landmarks[[61, 291], :2].mean(axis=0)
    w = int(face.ipd * 0.9)
    # A blue microphone-like bar coming in from below, over the mouth.
    x0, y0 = int(mx - w / 4), int(my - w / 5)
    target[y0 : int(face.box[3]) + 40, x0 : x0 + w // 2] = (30, 60, 200)
    frame = swap_image(mesh_config(**{"output.label": False}), hopper_image, target)
    # Measured below the lips: where the two mouths' expressions differ (the astronaut smiles),
    # the target's own lips show anyway.
    chin = int(face.landmarks[17, 1] + 0.3 * face.ipd)
    region = (slice(chin, int(face.box[3])), slice(x0 + 4, x0 + w // 2 - 4))
    kept = np.abs(frame.result[region].astype(int) - target[region].astype(int)).mean()
    assert kept < 12, kept
    off = swap_image(
        mesh_config(**{"output.label": False, "compose.occlusion_aware": False}),
        hopper_image,
        target,
    )
    painted = np.abs(off.result[region].astype(int) - target[region].astype(int)).mean()
    assert painted > kept + 10  # without occlusion handling the face is painted over it


def test_faces_fade_in_and_out() -> None:
    """A face that appears fades in, one that goes fades out; one already there when the
    stream starts is swapped in full from its first frame (nothing to pop from)."""
    cfg = load_config(None, {"compose.fade_frames": 4})
    white = np.full((64, 64, 3), 255, np.uint8)
    patch = SwappedFace(
        track_id=7,
        to_crop=np.array([[1.0, 0, 0], [0, 1.0, 0]]),
        alpha=np.ones((64, 64), np.float32),
        crop=white,
    )

    def levels_of(has_face: list[bool]) -> list[float]:
        compositor = Compositor(cfg.compose, label=None)
        levels = []
        for i, face in enumerate(has_face):
            frame = Frame(image=np.zeros((64, 64, 3), np.uint8), seq=i, captured_ns=0, pts=0.0)
            frame.swaps = [patch] if face else []
            compositor.compose(frame)
            levels.append(float(frame.result[32, 32, 0]))
        return levels

    levels = levels_of([False] + [True] * 5 + [False] * 3)
    assert levels[0] == 0
    assert levels[1] < levels[2] < levels[3] < levels[4] == 255  # fades in
    assert levels[5] == 255
    assert 255 > levels[6] > levels[7] > levels[8] >= 0  # fades out, no pop
    assert levels_of([True] * 3) == [255, 255, 255]


def test_each_face_can_have_its_own_source(
    astronaut_image: np.ndarray, hopper_image: np.ndarray
) -> None:
    canvas = np.full((512, 1024, 3), 128, np.uint8)
    canvas[:, :512] = astronaut_image
    canvas[:, 512:] = hopper_image[44:556]
    cfg = mesh_config(
        **{"track.select": "all", "track.max_faces": 4, "engine.assign": "by_position"}
    )
    engine = create_engine(cfg)
    identity = engine.prepare([hopper_image, astronaut_image])
    frame = Frame(image=canvas, seq=0, captured_ns=0, pts=0.0)
    for stage in build_stages(cfg, engine, identity, still=True):
        stage.run(frame)
    assert len(frame.swaps) == 2
    centres = sorted(
        float(np.linalg.inv(np.vstack([f.to_crop, [0, 0, 1]]))[0, 2]) for f in frame.swaps
    )
    assert centres[0] < 512 < centres[1]


def test_video_swap_is_smooth_over_time(
    hopper_image: np.ndarray, astronaut_jpg: Path, tmp_path: Path
) -> None:
    clip = write_video(tmp_path / "h.mp4", moving_frames(hopper_image, 45, (384, 448)), audio=None)
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    idx = face_index()

    class Collect(NullSink):
        def send(self, frame: Frame) -> None:
            oval = frame.faces[0].landmarks[idx.face_oval, :2] if frame.faces else None
            frames.append((frame.image, frame.result, oval))

    cfg = mesh_config(
        **{
            "capture.input": str(clip),
            "engine.source": [str(astronaut_jpg)],
            "capture.pacing": "fast",
        }
    )
    stats = run_async(build_run(cfg, sinks=[Collect()]).pipeline.run)
    assert stats.frames_out == 45 and stats.frames_no_face == 0 and stats.frames_failed == 0
    swap_change = orig_change = 0.0
    for (o0, s0, _), (o1, s1, oval) in itertools.pairwise(frames[8:]):
        assert oval is not None
        mask = np.zeros(o1.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(oval).astype(np.int32)], 255)
        m = mask > 0
        swap_change += np.abs(s1.astype(int) - s0.astype(int))[m].mean()
        orig_change += np.abs(o1.astype(int) - o0.astype(int))[m].mean()
    assert swap_change / orig_change < 1.3


def test_folder_of_images(astronaut_jpg: Path, hopper_jpg: Path, tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    (inp / "a.jpg").write_bytes(astronaut_jpg.read_bytes())
    (inp / "notes.txt").write_text("not an image")
    (inp / "broken.png").write_bytes(b"\x89PNG garbage")
    cv2.imwrite(str(inp / "empty.png"), np.full((100, 100, 3), 200, np.uint8))
    cfg = mesh_config(**{"engine.source": [str(hopper_jpg)]})
    result = swap_folder(cfg, inp, out)
    assert result.written == 2 and result.no_face == 1
    assert len(result.skipped) == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "empty.png"]


def test_cli_image_swap_and_video_swap(
    astronaut_jpg: Path, hopper_jpg: Path, hopper_image: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "swap.png"
    result = run_livswap(
        "--source",
        str(hopper_jpg),
        "--input",
        str(astronaut_jpg),
        "--output",
        str(out),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert out.exists()
    clip = write_video(tmp_path / "c.mp4", moving_frames(hopper_image, 20, (320, 384)))
    out_video = tmp_path / "swap.mp4"
    result = run_livswap(
        "--source",
        str(astronaut_jpg),
        "--input",
        str(clip),
        "--output",
        str(out_video),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    got = probe(out_video)
    assert got["count"] == 20 and got["audio"] == ["aac"]


def test_mouth_expression_reads_the_same_on_a_tilted_head(astronaut_image: np.ndarray) -> None:
    from livswap.engine.mesh.source import mouth_expression as _expression

    points = detect_faces(astronaut_image)[0].landmarks
    smile, opening = _expression(points)
    assert smile > 0.05  # she smiles: the mouth corners sit above the lips' middle
    angle = np.radians(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    tilted = points.copy()
    tilted[:, :2] = (points[:, :2] - 256) @ rotation.T + 256
    assert np.allclose(_expression(tilted), (smile, opening), atol=1e-4)


def _closed_eyes(face: Face) -> Face:
    """``face`` with both eyelid loops squeezed onto the line through their corners (a blink)."""
    idx = face_index()
    points = face.landmarks.copy()
    for loop, corners in ((idx.left_eye, [33, 133]), (idx.right_eye, [362, 263])):
        a, b = points[corners, :2]
        along = (b - a) / np.linalg.norm(b - a)
        across = np.array([-along[1], along[0]])
        offset = (points[loop, :2] - a) @ across
        points[loop, :2] -= 0.9 * offset[:, None] * across
    return dataclasses.replace(face, landmarks=points)


def shape_kept(source_image: np.ndarray) -> tuple[Engine, Identity]:
    """The mesh engine with the shape kept (shape_transfer 0), and its identity from
    ``source_image``: the target's own pixels are then the target photo in the canonical
    square, so what of a swap is the target's own is measurable."""
    engine = create_engine(mesh_config(**{"output.label": False, "engine.shape_transfer": 0.0}))
    return engine, engine.prepare([source_image])


def as_shown(swapped: SwappedFace, image: np.ndarray) -> np.ndarray:
    """The swapped face as the paste shows it, in its crop's square: the crop where its alpha
    is, and the frame's own pixels (moved as the reshaping moved them) everywhere else."""
    size = swapped.size
    to_frame = cv2.invertAffineTransform(swapped.to_crop)
    u, v = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    x = to_frame[0, 0] * u + to_frame[0, 1] * v + to_frame[0, 2]
    y = to_frame[1, 0] * u + to_frame[1, 1] * v + to_frame[1, 2]
    if swapped.displacement is not None:
        moved = cv2.resize(swapped.displacement, (size, size))
        x, y = x + moved[..., 0], y + moved[..., 1]
    behind = cv2.remap(
        image,
        x.astype(np.float32),
        y.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    ).astype(np.float32)
    alpha = swapped.alpha[..., None]
    return alpha * np.asarray(swapped.crop, np.float32) + (1 - alpha) * behind


def change_in_crop(
    engine: Engine, identity: Identity, image: np.ndarray, target: Face
) -> tuple[np.ndarray, np.ndarray]:
    """A swap of ``target`` in ``image`` on a new stream: how much each pixel of its crop
    differs from the target's own (grey levels, mean over RGB), and the target's landmarks in
    the crop."""
    stream = engine.open_stream(identity)
    assert isinstance(stream, MeshStream)
    swapped = stream.swap_face(image, target, identity.data.sources[0])
    own = cv2.warpAffine(image, swapped.to_crop, (swapped.size, swapped.size))
    change = np.abs(as_shown(swapped, image) - own.astype(np.float32)).mean(axis=2)
    return change, cv2.transform(target.landmarks[None, :, :2], swapped.to_crop)[0]


def test_a_blinking_target_shows_its_own_upper_lids(
    astronaut_image: np.ndarray, hopper_image: np.ndarray
) -> None:
    # An open source eye cannot close: stretched over a shut eye, its lashes and lid crease
    # became a dark smear. With the shape kept (shape_transfer 0), the target's own pixels are
    # the target photo in the canonical square, so "its own lids" is measurable.
    from livswap.engine.mesh.source import eye_openness

    engine, identity = shape_kept(hopper_image)
    face = detect_faces(astronaut_image)[0]
    shut = _closed_eyes(face)
    assert np.all(eye_openness(face.landmarks) > 0.3)
    assert np.all(eye_openness(shut.landmarks) < 0.3 * eye_openness(face.landmarks))
    idx = face_index()

    def lid_difference(target: Face) -> float:
        change, points = change_in_crop(engine, identity, astronaut_image, target)
        lid = np.zeros(change.shape, np.uint8)
        for eye, brow in ((idx.left_eye, idx.left_brow), (idx.right_eye, idx.right_brow)):
            # Between the eye's middle line and its brow, well clear of both, and of the corners.
            top, bottom = points[brow, 1].max(), points[eye, 1].mean()
            x0, x1 = points[eye, 0].min(), points[eye, 0].max()
            y0, y1 = top + 0.4 * (bottom - top), bottom - 0.1 * (bottom - top)
            lid[int(y0) : int(y1), int(x0 + 0.2 * (x1 - x0)) : int(x1 - 0.2 * (x1 - x0))] = 1
        return float(change[lid > 0].mean())

    # The source's lashes stretched over the shut eye differed by 41 grey levels here; its
    # lids over the open eye by 7 (skin on skin), the target's own lids by 8.
    blinking, open_eyes = lid_difference(shut), lid_difference(face)
    assert blinking < 12.0
    assert blinking < open_eyes + 4.0


def test_the_target_keeps_its_eyeballs_and_the_source_gives_its_lash_lines(
    astronaut_image: np.ndarray, hopper_image: np.ndarray
) -> None:
    # keep_target_eyes keeps the target's gaze (its irises), not its whole eye outline: the lid
    # margins and lashes inside the outline carry the source's likeness.
    engine, identity = shape_kept(hopper_image)
    change, points = change_in_crop(
        engine, identity, astronaut_image, detect_faces(astronaut_image)[0]
    )
    size = change.shape[0]
    idx = face_index()
    ipd = float(np.linalg.norm(points[468] - points[473]))
    for eye, iris in ((idx.left_eye, idx.left_iris), (idx.right_eye, idx.right_iris)):
        outline = np.zeros((size, size), np.uint8)
        cv2.fillPoly(outline, [np.round(points[eye]).astype(np.int32)], 1)
        k = max(3, int(0.1 * ipd)) | 1
        margin = (outline > 0) & (cv2.erode(outline, np.ones((k, k), np.uint8)) == 0)
        x, y = np.round(points[iris].mean(axis=0)).astype(int)
        r = max(1, int(0.03 * ipd))
        # The iris is the target's own; the margin was too (2-3 grey levels) before the lash
        # lines came from the source (20-29 here).
        assert float(change[y - r : y + r + 1, x - r : x + r + 1].mean()) < 2.0
        assert float(change[margin].mean()) > 10.0


def test_the_source_forehead_covers_the_band_above_its_brows(astronaut_image: np.ndarray) -> None:
    # A target's brows may be drawn higher than its landmarks: the source's forehead must cover
    # them, or the two pairs of brows show one above the other.
    from livswap.engine.mesh.source import skin_mask

    face = detect_faces(astronaut_image)[0]
    skin = skin_mask(astronaut_image, face)
    idx = face_index()
    brows = face.landmarks[np.concatenate([idx.left_brow, idx.right_brow]), :2]
    top = brows[:, 1].min()
    centre = brows[:, 0].mean()
    for x in (centre - 0.1 * face.ipd, centre, centre + 0.1 * face.ipd):
        column = skin[int(top - 0.1 * face.ipd) : int(top), int(x)]
        assert column.min() > 0.8, (x, column.round(2))


def cheek_colour(image: np.ndarray, face: Face) -> np.ndarray:
    """Mean RGB of small patches on both cheeks (swapped skin in every swap)."""
    cheeks = np.zeros(image.shape[:2], bool)
    for p in (50, 280, 205, 425):
        x, y = face.landmarks[p, :2].astype(int)
        cheeks[y - 4 : y + 5, x - 4 : x + 5] = True
    colour: np.ndarray = image[cheeks].mean(axis=0)
    return colour


def test_colour_transfer_off_keeps_the_source_photos_colours(
    hopper_onto_astronaut: Frame, astronaut_image: np.ndarray, hopper_image: np.ndarray
) -> None:
    plain = swap_image(
        mesh_config(**{"output.label": False, "compose.color_transfer": False}),
        hopper_image,
        astronaut_image,
    )
    target, source = detect_faces(astronaut_image)[0], detect_faces(hopper_image)[0]
    source_colour = cheek_colour(hopper_image, source)
    matched = np.abs(cheek_colour(hopper_onto_astronaut.result, target) - source_colour).sum()
    own = np.abs(cheek_colour(plain.result, target) - source_colour).sum()
    assert own < 0.5 * matched, (own, matched)


def test_brows_that_reach_the_hair_are_not_taken_for_an_occluder(
    astronaut_image: np.ndarray, hopper_image: np.ndarray
) -> None:
    # Occluders are what is not skin-coloured and reaches in from the face's edge. A dark brow
    # drawn out to the temple touches the hair there; kept in front, it showed above the
    # source's brows (two pairs of brows).
    target = astronaut_image.copy()
    face = detect_faces(target)[0]
    idx = face_index()
    paint = (30, 25, 110)
    brows = np.zeros(target.shape[:2], np.uint8)
    for brow, outer in ((idx.left_brow, 127), (idx.right_brow, 356)):
        points = face.landmarks[brow, :2]
        cv2.fillConvexPoly(brows, cv2.convexHull(points.astype(np.int32)), 255)
        end = points[np.argmin(np.abs(points[:, 0] - face.landmarks[outer, 0]))]
        beyond = face.landmarks[outer, :2] + (face.landmarks[outer, :2] - end) * 0.5
        cv2.line(target, tuple(end.astype(int)), tuple(beyond.astype(int)), paint, 6)
    target[brows > 0] = paint
    swapped = swap_image(mesh_config(**{"output.label": False}), hopper_image, target)
    kept = np.abs(swapped.result.astype(int) - paint).sum(axis=2) < 40
    assert kept[brows > 0].mean() < 0.3  # the source's brows, not the painted ones


def test_a_huge_source_photo_is_prepared_around_its_face_at_the_size_it_is_drawn(
    hopper_image: np.ndarray, astronaut_image: np.ndarray
) -> None:
    from livswap.engine.mesh.source import SOURCE_MAX_IPD, prepare_source

    # Grace Hopper at 6x, in the corner of a wide grey scene: 12 megapixels of which the face
    # is a small part, at an eye distance far beyond what any mesh_resolution draws.
    big = cv2.resize(hopper_image, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC)
    scene = np.full((big.shape[0], big.shape[1] * 2, 3), 128, np.uint8)
    scene[:, : big.shape[1]] = big
    prepared = prepare_source(scene)
    assert detect_faces(scene)[0].ipd > SOURCE_MAX_IPD
    assert prepared.face.ipd <= SOURCE_MAX_IPD + 2
    h, w = prepared.image.shape[:2]
    assert h * w < 0.4 * scene.shape[0] * scene.shape[1]  # the face and its surroundings
    # The landmarks were carried into the smaller photo's pixels: its skin lies inside them.
    assert prepared.skin.shape == (h, w)
    oval = np.zeros((h, w), np.uint8)
    cv2.fillPoly(
        oval, [np.round(prepared.face.landmarks[face_index().face_oval, :2]).astype(np.int32)], 1
    )
    assert prepared.skin[oval > 0].mean() > 0.6 and prepared.skin[oval == 0].mean() < 0.02
    # The swap from it is Grace Hopper's swap from her photo at its own size, up to the few
    # pixels that landmarks found in another framing move by (a misplaced face would differ
    # by about as much as the swap changes).
    cfg = load_config(None, {"engine.name": "mesh", "output.label": False})
    from_big = swap_image(cfg, scene, astronaut_image).result
    from_own = swap_image(cfg, hopper_image, astronaut_image).result
    x0, y0, x1, y1 = np.asarray(detect_faces(astronaut_image)[0].box).astype(int)
    face_diff = np.abs(from_big[y0:y1, x0:x1].astype(int) - from_own[y0:y1, x0:x1]).mean()
    swapped = np.abs(from_own[y0:y1, x0:x1].astype(int) - astronaut_image[y0:y1, x0:x1]).mean()
    assert face_diff < 0.5 * swapped, (face_diff, swapped)


@pytest.mark.parametrize("direction", ["hopper onto astronaut", "astronaut onto hopper"])
def test_the_targets_lips_keep_their_place_and_shape(
    direction: str, astronaut_image: np.ndarray, hopper_image: np.ndarray
) -> None:
    """Where the two mouths' expressions differ, the target's lips show: in their own place,
    every point of them (with only their outlines held, the points between moved with the
    reshaping, and a wide-open mouth's lips folded over its teeth in specks: a mean difference
    of 12.6 grey levels here; now about 2, bilinear resampling)."""
    source_image, target_image = (
        (hopper_image, astronaut_image)
        if direction == "hopper onto astronaut"
        else (astronaut_image, hopper_image)
    )
    engine = create_engine(mesh_config(**{"engine.shape_transfer": 1.0}))
    identity = engine.prepare([source_image])
    stream = engine.open_stream(identity)
    assert isinstance(stream, MeshStream)
    face = detect_faces(target_image)[0]
    swapped = stream.swap_face(target_image, face, identity.data.sources[0])
    size = swapped.size
    own = cv2.warpAffine(target_image, swapped.to_crop, (size, size))
    points = cv2.transform(face.landmarks[None, :, :2], swapped.to_crop)[0]
    lips = np.zeros((size, size), np.uint8)
    cv2.fillPoly(lips, [np.round(points[face_index().lips_outer]).astype(np.int32)], 1)
    inner = cv2.erode(lips, np.ones((3, 3), np.uint8))
    change = np.abs(as_shown(swapped, target_image) - own.astype(np.float32)).mean(axis=2)
    assert float(change[inner > 0].mean()) < 5.0


def test_a_fine_source_photo_does_not_shimmer_on_a_face_moving_by_fractions_of_a_pixel(
    hopper_image: np.ndarray, astronaut_image: np.ndarray
) -> None:
    """A webcam face that sits still still moves by a fraction of a pixel from frame to frame.
    Drawn from a photo much finer than the face, with fine skin texture, the swap should move
    with it, not shimmer. A photo sampled 2-4x too fine aliased: the swap changed 1.32x as much
    as the face itself over quarter-pixel steps here (1.14x when sampled at the size drawn)."""
    from livswap.engine.mesh.source import TEXTURE_OVERSAMPLE

    large = cv2.resize(hopper_image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    pores = np.random.default_rng(0).normal(0, 30, large.shape[:2]).astype(np.float32)
    fine = np.asarray(np.clip(large + pores[..., None], 0, 255), np.uint8)
    engine = create_engine(mesh_config())
    identity = engine.prepare([fine])
    source = identity.data.sources[0]
    face = detect_faces(astronaut_image)[0]
    # The photo is drawn from a copy at about the size it is drawn at, never enlarged.
    texture, scale_x, scale_y = source.texture(64.0)
    assert source.face.ipd * scale_x == pytest.approx(TEXTURE_OVERSAMPLE * 64, rel=0.02)
    assert texture.shape[1] == round(source.image.shape[1] * scale_x)
    assert texture.shape[0] == round(source.image.shape[0] * scale_y)
    assert source.texture(1e4)[0] is source.image

    x0, y0, x1, y1 = np.asarray(face.box).astype(int)
    inner = np.s_[
        y0 + (y1 - y0) // 4 : y1 - (y1 - y0) // 4, x0 + (x1 - x0) // 4 : x1 - (x1 - x0) // 4
    ]
    swaps, targets = [], []
    for step in range(5):
        shift = np.array([[1, 0, 0.25 * step], [0, 1, 0.0]])
        target: np.ndarray = np.asarray(
            cv2.warpAffine(
                astronaut_image,
                shift,
                astronaut_image.shape[1::-1],
                flags=cv2.INTER_CUBIC,
                borderMode=cv2.BORDER_REFLECT,
            ),
            np.uint8,
        )
        moved = dataclasses.replace(
            face, landmarks=face.landmarks + np.array([0.25 * step, 0, 0], np.float32)
        )
        stream = engine.open_stream(identity)
        assert isinstance(stream, MeshStream)
        swapped = stream.swap_face(target, moved, source)
        out = target.copy()
        paste_on_cpu(out, swapped, 1.0)
        swaps.append(out[inner].astype(np.float32))
        targets.append(target[inner].astype(np.float32))

    def change(images: list[np.ndarray]) -> float:
        return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(images)]))

    assert change(swaps) < 1.22 * change(targets), (change(swaps), change(targets))


def test_the_targets_own_pixels_show_as_they_are_on_a_still_face(
    hopper_image: np.ndarray, astronaut_image: np.ndarray
) -> None:
    """Where the target shows through the swap (its irises here, with no reshaping), the output
    is the frame itself, on every sub-pixel position of the face. Drawn into the crop and back
    out, they were blurred anew at each position: by 12-14 grey levels a pixel here on average
    (now 0-0.3), and a still webcam face's swap changed a third more from frame to frame than
    the face itself."""
    engine, identity = shape_kept(hopper_image)
    source = identity.data.sources[0]
    face = detect_faces(astronaut_image)[0]
    idx = face_index()
    irises = np.zeros(astronaut_image.shape[:2], np.uint8)
    for iris in (idx.left_iris, idx.right_iris):
        centre = face.landmarks[iris, :2].mean(axis=0)
        radius = 0.5 * float(np.ptp(face.landmarks[iris, 0]))
        cv2.circle(irises, tuple(int(v) for v in np.round(centre)), int(0.3 * radius), 1, -1)
    for step in range(4):
        shift = np.array([[1, 0, 0.25 * step], [0, 1, 0.1 * step]])
        target = np.asarray(
            cv2.warpAffine(astronaut_image, shift, astronaut_image.shape[1::-1]), np.uint8
        )
        moved = dataclasses.replace(
            face, landmarks=face.landmarks + np.array([0.25 * step, 0.1 * step, 0], np.float32)
        )
        stream = engine.open_stream(identity)
        assert isinstance(stream, MeshStream)
        out = target.copy()
        paste_on_cpu(out, stream.swap_face(target, moved, source), 1.0)
        difference = np.abs(out.astype(np.float32) - target.astype(np.float32))[irises > 0]
        assert float(difference.mean()) < 0.5, (step, float(difference.mean()))


def test_a_still_faces_colour_settles_and_a_change_of_light_is_followed(
    hopper_image: np.ndarray, astronaut_image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The colour match is estimated anew from every frame's noisy pixels. On a still face it
    is averaged over more frames, so the swapped face changes less than with a moving face's
    smoothing; a light turned up is still followed within a few frames."""
    import livswap.engine.mesh.engine as mesh_engine

    face = detect_faces(astronaut_image)[0]
    rng = np.random.default_rng(1)
    noisy = [
        np.asarray(
            np.clip(astronaut_image + rng.normal(0, 4, astronaut_image.shape), 0, 255), np.uint8
        )
        for _ in range(8)
    ]

    def swapped(frames: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """The swapped face of each frame (its crop) and where it shows (its alpha)."""
        engine = create_engine(mesh_config())
        identity = engine.prepare([hopper_image])
        stream = engine.open_stream(identity)
        assert isinstance(stream, MeshStream)
        swaps = [stream.swap_face(image, face, identity.data.sources[0]) for image in frames]
        return [np.asarray(s.crop, np.float32) for s in swaps], swaps[-1].alpha > 0.9

    def change(crops: list[np.ndarray], where: np.ndarray) -> float:
        return float(
            np.mean([np.abs(b - a)[where].mean() for a, b in itertools.pairwise(crops[2:])])
        )

    settled = change(*swapped(noisy))
    monkeypatch.setattr(mesh_engine, "STILL_COLOUR_SMOOTHING", 0.0)
    as_moving = change(*swapped(noisy))
    monkeypatch.undo()
    assert settled < 0.6 * as_moving, (settled, as_moving)

    brighter = [np.asarray(np.clip(image * 1.3, 0, 255), np.uint8) for image in noisy[:4]]
    crops, face_area = swapped(noisy[:4] + brighter)
    before, after, settled_at = (float(crops[i][face_area].mean()) for i in (3, 6, 7))
    assert after - before > 0.8 * (settled_at - before), (before, after, settled_at)


def test_a_reshaped_face_shows_the_frames_own_pixels_moved() -> None:
    """The paste takes the frame's own pixels from where the face's reshaping moved them; the
    displacement may be coarser than the crop (here half its resolution)."""
    ramp = np.tile((np.arange(128) * 2).astype(np.uint8)[None, :, None], (128, 1, 3))
    moved = np.zeros((32, 32, 2), np.float32)
    moved[..., 0] = 3.0  # everything shown comes from 3 pixels to the right
    face = SwappedFace(
        track_id=1,
        to_crop=np.array([[1.0, 0, -32], [0, 1.0, -32]]),  # a 64-pixel square at (32, 32)
        alpha=np.zeros((64, 64), np.float32),
        crop=np.zeros((64, 64, 3), np.uint8),
        displacement=moved,
    )
    out = ramp.copy()
    paste_on_cpu(out, face, 1.0)
    inside = np.s_[40:88, 40:88]
    assert np.array_equal(out[inside], ramp[40:88, 43:91])
    assert np.array_equal(out[:, :28], ramp[:, :28])  # outside the square: untouched
    assert np.array_equal(out[:, 100:], ramp[:, 100:])
    half = ramp.copy()
    paste_on_cpu(half, face, 0.5)  # fading: half the displacement
    assert np.abs(half[inside].astype(int) - ramp[inside].astype(int) - 3).max() <= 1
