"""The inswapper-128 engine end to end, on ONNX files with inswapper's exact I/O contract."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from livswap.engine.inswapper import arcface_transform
from livswap.errors import ModelError
from livswap.models import ModelStore
from livswap.track import detect_faces
from tests.checkpoints import write_inswapper_onnx, write_inswapper_torch_onnx, write_w600k_onnx
from tests.media import face_change, moving_frames, probe, run_livswap, write_video


def test_arcface_alignment_puts_the_eyes_on_the_template(hopper_image: np.ndarray) -> None:
    face = detect_faces(hopper_image)[0]
    for size, left_x in ((112, 38.29), (128, 46.29)):
        m = arcface_transform(face.keypoints, size)
        eye = face.keypoints[0].astype(float) @ m[:, :2].T + m[:, 2]
        assert abs(eye[0] - left_x) < 4 and abs(eye[1] - 51.7) < 4


def test_import_checks_the_io_contract(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "m")
    encoder = write_w600k_onnx(tmp_path / "w600k_r50.onnx")
    with pytest.raises(ModelError, match=r"lacks inputs \['target', 'source'\]"):
        store.import_file("inswapper-128", encoder)
    garbage = tmp_path / "inswapper_128.onnx"
    garbage.write_bytes(b"\x08\x01" + b"\xff" * 100)
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        store.import_file("inswapper-128", garbage)


@pytest.mark.parametrize(
    ("swapper_fails", "embedding", "says"),
    [
        (True, 512, "inswapper_128.onnx failed when run"),
        (False, 256, r"w600k_r50.onnx gives \(1, 256\) where \(1, 512\) was expected"),
    ],
    ids=["generator-fails-when-run", "encoder-of-the-wrong-width"],
)
def test_files_that_import_but_do_not_run_are_one_line_at_start(
    swapper_fails: bool,
    embedding: int,
    says: str,
    astronaut_jpg: Path,
    tmp_path: Path,
) -> None:
    """Valid ONNX with the right input names, but a graph that fails in ONNX Runtime or gives
    the wrong shape: before, a traceback at the first face; now one line at start-up."""
    store = ModelStore(tmp_path / "models")
    swapper = write_inswapper_onnx(tmp_path / "inswapper_128.onnx", fails_when_run=swapper_fails)
    store.import_file("inswapper-128", swapper)
    store.import_file(
        "w600k-r50", write_w600k_onnx(tmp_path / "w600k_r50.onnx", embedding=embedding)
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\ndir = "{store.folder}"\n')
    result = run_livswap(
        "--config", str(cfg), "--engine", "inswapper-128", "--source", str(astronaut_jpg),
        "--input", str(astronaut_jpg), "--output", str(tmp_path / "o.png"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(says, lines[0]), result.stderr
    assert "Traceback" not in result.stderr


def test_engine_runs_end_to_end(
    astronaut_jpg: Path, hopper_image: np.ndarray, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    store.import_file("inswapper-128", write_inswapper_onnx(tmp_path / "inswapper_128.onnx"))
    store.import_file("w600k-r50", write_w600k_onnx(tmp_path / "w600k_r50.onnx"))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\ndir = "{store.folder}"\n')
    clip = write_video(tmp_path / "c.mp4", moving_frames(hopper_image, 6, (320, 384)))
    out = tmp_path / "swap.mp4"
    result = run_livswap(
        "--config",
        str(cfg),
        "--engine",
        "inswapper-128",
        "--source",
        str(astronaut_jpg),
        "--input",
        str(clip),
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    got, before = probe(out), probe(clip)
    assert got["count"] == 6
    frames, originals = got["frames"], before["frames"]
    assert isinstance(frames, list) and isinstance(originals, list)
    inside, outside = face_change(frames[3], originals[3])
    assert inside > 30 and inside > 3 * outside, (inside, outside)
    assert list((store.folder / "cache").glob("id-w600k-*.npy"))


def test_source_mix_blends_two_identities(
    astronaut_image: np.ndarray, hopper_image: np.ndarray, tmp_path: Path
) -> None:
    from livswap.config import load_config
    from livswap.engine.inswapper import InswapperEngine

    store = ModelStore(tmp_path / "models")
    store.import_file("inswapper-128", write_inswapper_onnx(tmp_path / "inswapper_128.onnx"))
    store.import_file("w600k-r50", write_w600k_onnx(tmp_path / "w600k_r50.onnx"))
    engine = InswapperEngine(load_config(None, {"models.dir": str(store.folder)}))
    a = engine.prepare([astronaut_image]).data.vector[0].numpy()
    b = engine.prepare([hopper_image]).data.vector[0].numpy()
    none = engine.prepare_mix([astronaut_image], hopper_image, 0.0).data.vector[0].numpy()
    only = engine.prepare_mix([astronaut_image], hopper_image, 1.0).data.vector[0].numpy()
    half = engine.prepare_mix([astronaut_image], hopper_image, 0.5).data.vector[0].numpy()
    assert np.allclose(none, a, atol=1e-5) and np.allclose(only, b, atol=1e-5)
    assert float(half @ a) > float(b @ a) and float(half @ b) > float(a @ b)  # in between


def test_mesh_engine_refuses_to_mix(astronaut_jpg: Path, hopper_jpg: Path, tmp_path: Path) -> None:
    result = run_livswap(
        "--source",
        str(astronaut_jpg),
        "--source-mix",
        str(hopper_jpg),
        "--input",
        str(hopper_jpg),
        "--output",
        str(tmp_path / "o.png"),
    )
    assert result.returncode == 2 and "cannot blend identities" in result.stderr


def test_rebuilt_pytorch_network_swaps_like_onnx_runtime(
    astronaut_image: np.ndarray, hopper_image: np.ndarray, tmp_path: Path
) -> None:
    """backend "eager" runs the network rebuilt from the file's weights; "auto" the file itself
    in ONNX Runtime: the pasted patches agree."""
    from livswap.config import load_config
    from livswap.engine.inswapper import InswapperEngine
    from livswap.frame import Frame
    from livswap.track import detect_faces

    store = ModelStore(tmp_path / "models")
    swapper = write_inswapper_torch_onnx(tmp_path / "inswapper_128.onnx", seed=4)
    store.import_file("inswapper-128", swapper)
    store.import_file("w600k-r50", write_w600k_onnx(tmp_path / "w600k_r50.onnx"))
    faces = detect_faces(hopper_image)
    patches = {}
    for backend in ("auto", "eager"):
        cfg = load_config(
            None,
            {"models.dir": str(store.folder), "engine.backend": backend, "engine.device": "cpu"},
        )
        engine = InswapperEngine(cfg)
        assert engine.spec.backend == ("onnxruntime" if backend == "auto" else "eager")
        frame = Frame(image=hopper_image, seq=0, captured_ns=0, pts=0.0)
        frame.faces = list(faces)
        engine.open_stream(engine.prepare([astronaut_image])).swap(frame)
        patches[backend] = np.asarray(frame.swaps[0].resolve().numpy() * 255).round().astype(int)
    assert patches["auto"].std() > 1  # a picture, not a constant
    assert np.abs(patches["auto"] - patches["eager"]).max() <= 1
