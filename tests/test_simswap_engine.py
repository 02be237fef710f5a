"""The simswap-224 engine end to end on imported weights in the official formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from livswap.engine.models.arcface import ArcFace, convert_pickled_arcface
from livswap.engine.simswap import align_224, align_ffhq_512
from livswap.models import ModelStore
from livswap.track import detect_faces
from tests.checkpoints import write_release_arcface, write_simswap_512
from tests.media import face_change, moving_frames, probe, run_livswap, write_video


def test_release_arcface_converts_without_running_its_code(tmp_path: Path) -> None:
    path = write_release_arcface(tmp_path / "arcface_checkpoint.tar", seed=3)
    state = convert_pickled_arcface(path)
    assert len(state) == 796
    torch.manual_seed(3)
    reference = ArcFace().eval()  # the same seed builds the same weights
    model = ArcFace().eval()
    model.load_state_dict(state)
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_alignment_maps_keypoints_onto_a_template(hopper_image: np.ndarray) -> None:
    face = detect_faces(hopper_image)[0]
    m = align_224(face.keypoints)
    mapped = face.keypoints.astype(float) @ m[:, :2].T + m[:, 2]
    left_eye, right_eye = mapped[0], mapped[1]
    assert 60 < left_eye[0] < 110 and 114 < right_eye[0] < 160  # eyes where the templates put them
    assert abs(left_eye[1] - right_eye[1]) < 6


def test_engine_runs_end_to_end_on_imported_weights(
    model_folder: Path, astronaut_jpg: Path, hopper_image: np.ndarray, tmp_path: Path
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\ndir = "{model_folder}"\n')
    clip = write_video(tmp_path / "c.mp4", moving_frames(hopper_image, 4, (320, 384)))
    out = tmp_path / "swap.mp4"
    result = run_livswap(
        "--config",
        str(cfg),
        "--engine",
        "simswap-224",
        "--source",
        str(astronaut_jpg),
        "--input",
        str(clip),
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    got, original = probe(out), probe(clip)
    assert got["count"] == 4 and got["audio"] == ["aac"]
    frames, before = got["frames"], original["frames"]
    assert isinstance(frames, list) and isinstance(before, list)
    # Random weights make a nonsense face, but it is pasted where the face is, and only there.
    inside, outside = face_change(frames[2], before[2])
    assert inside > 30 and inside > 3 * outside, (inside, outside)  # outside: re-encoding noise
    # The identity is cached: a second run finds it on disk. The pickled ArcFace release was
    # converted once to safetensors.
    assert list((model_folder / "cache").glob("id-*.npy"))
    assert list((model_folder / "cache").glob("arcface-simswap-*.safetensors"))


def test_simswap_512_swaps_a_photo(
    model_folder: Path,
    astronaut_jpg: Path,
    hopper_jpg: Path,
    hopper_image: np.ndarray,
    tmp_path: Path,
) -> None:
    store = ModelStore(model_folder)
    store.import_file("simswap-512", write_simswap_512(tmp_path / "550000_net_G.pth"))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\ndir = "{model_folder}"\n')
    out = tmp_path / "swap.png"
    result = run_livswap(
        "--config",
        str(cfg),
        "--engine",
        "simswap-512",
        "--source",
        str(astronaut_jpg),
        "--input",
        str(hopper_jpg),
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    import cv2

    swapped = np.asarray(cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB), np.uint8)
    inside, outside = face_change(swapped, hopper_image)
    assert inside > 30 and inside > 3 * outside, (inside, outside)
    # The 512 model's identity comes from its own FFHQ alignment: cached under its own key.
    assert list((model_folder / "cache").glob("id-arcface-*-512-*.npy"))


def test_ffhq_alignment_maps_keypoints_onto_its_template(hopper_image: np.ndarray) -> None:
    face = detect_faces(hopper_image)[0]
    m = align_ffhq_512(face.keypoints)
    mapped = face.keypoints.astype(float) @ m[:, :2].T + m[:, 2]
    assert abs(mapped[0][0] - 193) < 12 and abs(mapped[1][0] - 319) < 12
    assert abs(mapped[2][1] - 314) < 15  # nose tip


def test_engine_without_weights_says_how_to_get_them(astronaut_jpg: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\ndir = "{tmp_path / "empty"}"\n')
    result = run_livswap(
        "--config",
        str(cfg),
        "--engine",
        "simswap-224",
        "--source",
        str(astronaut_jpg),
        "--input",
        str(astronaut_jpg),
        "--output",
        str(tmp_path / "o.png"),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "livswap models fetch simswap-224" in result.stderr
    assert "livswap models import simswap-224 PATH" in result.stderr


@pytest.mark.parametrize(
    "damage",
    [b"\xff" * 8 + b"{}", b"\x02\x00\x00\x00\x00\x00\x00\x00{}"],
    ids=["header-length-beyond-the-file", "no-tensors"],
)
def test_a_damaged_converted_arcface_is_one_line(
    model_folder: Path, astronaut_jpg: Path, tmp_path: Path, damage: bytes
) -> None:
    """Before: a .safetensors file with a corrupt header length gave a 28-line traceback."""
    from livswap.models.download import sha256_of

    cache = model_folder / "cache"
    arcface = ModelStore(model_folder).require("arcface-simswap")
    converted = cache / f"arcface-simswap-{sha256_of(arcface)[:16]}.safetensors"
    converted.parent.mkdir(parents=True, exist_ok=True)
    good = converted.read_bytes() if converted.exists() else None
    converted.write_bytes(damage)
    try:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[models]\ndir = "{model_folder}"\n')
        result = run_livswap(
            "--config", str(cfg), "--engine", "simswap-224", "--source", str(astronaut_jpg),
            "--input", str(astronaut_jpg), "--output", str(tmp_path / "o.png"),
        )  # fmt: skip
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "converted copy" in result.stderr and "delete it" in result.stderr
    finally:
        if good is not None:
            converted.write_bytes(good)
        else:
            converted.unlink()
