"""The ``styleswap`` engine on a trained-model file in livswap's format (here a small random
network, since no weights exist anywhere): the CLI runs it on a photo; a missing, unknown or
altered model is one line that says what to do."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from livswap.config import load_config
from livswap.engine import ENGINES, missing_for
from livswap.engine.models.styleswap import StyleSwapConfig, StyleSwapGenerator
from livswap.models import ModelStore
from livswap.models.trained import find_trained, save_trained
from tests.checkpoints import write_release_arcface
from tests.media import face_change, run_livswap

TINY = StyleSwapConfig(size=64, narrow=1 / 32, mask=True, style_dim=64)


def _save(store: ModelStore, name: str, created: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    generator = StyleSwapGenerator(TINY)
    with torch.no_grad():  # untrained alphas are 0: let the target's features through
        for conv in [*generator.convs, generator.conv1]:
            conv.feature_weight.fill_(0.5)  # type: ignore[operator]
    return save_trained(
        store,
        name,
        generator.state_dict(),
        arch="styleswap",
        resolution=TINY.size,
        network=dataclasses.asdict(TINY),
        identity_encoder="arcface-simswap",
        data_sha256="0" * 64,
        steps=0,
        created=created,
    )


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    store = ModelStore(tmp / "models")
    store.import_file("arcface-simswap", write_release_arcface(tmp / "arcface_checkpoint.tar"))
    _save(store, "older", "2026-01-01T00:00:00Z", seed=1)
    _save(store, "tiny", "2026-02-01T00:00:00Z")
    return store.folder


def _run(
    folder: Path, tmp_path: Path, *extra: str, source: Path, photo: Path
) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\ndir = "{folder}"\n')
    return run_livswap(
        "--config", str(cfg), "--engine", "styleswap", "--source", str(source),
        "--input", str(photo), "--output", str(tmp_path / "out.png"), *extra,
    )  # fmt: skip


def test_the_newest_trained_model_runs_through_the_cli(
    trained_folder: Path, astronaut_jpg: Path, hopper_jpg: Path, hopper_image: np.ndarray,
    tmp_path: Path,
) -> None:  # fmt: skip
    import cv2

    store = ModelStore(trained_folder)
    assert find_trained(store, "styleswap").name == "tiny"  # the newest
    assert not missing_for(
        ENGINES["styleswap"], load_config(None, {"models.dir": str(trained_folder)})
    )
    result = _run(trained_folder, tmp_path, source=astronaut_jpg, photo=hopper_jpg)
    assert result.returncode == 0, result.stderr
    out = np.asarray(
        cv2.cvtColor(cv2.imread(str(tmp_path / "out.png")), cv2.COLOR_BGR2RGB), np.uint8
    )
    inside, outside = face_change(out, hopper_image)
    assert inside > 10 and inside > 3 * outside, (inside, outside)
    # By name, the older one: a different network, a different face.
    again = _run(
        trained_folder, tmp_path, "--model", "older", source=astronaut_jpg, photo=hopper_jpg
    )
    assert again.returncode == 0, again.stderr
    other = cv2.cvtColor(cv2.imread(str(tmp_path / "out.png")), cv2.COLOR_BGR2RGB)
    # --source-mix in style space: coarse levels from the source, fine ones from the mix.
    mixed_cfg = tmp_path / "mix.toml"
    mixed_cfg.write_text(
        f'[models]\ndir = "{trained_folder}"\n[engine]\nstyle_mix = [0, 0, 1, 1, 1]\n'
    )
    mixed = run_livswap(
        "--config", str(mixed_cfg), "--engine", "styleswap", "--source", str(astronaut_jpg),
        "--source-mix", str(hopper_jpg), "--input", str(hopper_jpg),
        "--output", str(tmp_path / "mixed.png"),
    )  # fmt: skip
    assert mixed.returncode == 0, mixed.stderr
    mixed_image = cv2.cvtColor(cv2.imread(str(tmp_path / "mixed.png")), cv2.COLOR_BGR2RGB)
    assert np.abs(mixed_image.astype(int) - out.astype(int)).mean() > 0.1
    listed = run_livswap("models", "--config", str(tmp_path / "c.toml"), "list")
    assert "trained/tiny" in listed.stdout and "--model older" in listed.stdout
    assert np.abs(other.astype(int) - out.astype(int)).mean() > 0.5


def test_missing_unknown_and_altered_models_are_one_line(
    trained_folder: Path, astronaut_jpg: Path, hopper_jpg: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-models"
    ModelStore(empty).import_file(
        "arcface-simswap", next(trained_folder.glob("arcface_checkpoint.tar"))
    )
    lacking = missing_for(ENGINES["styleswap"], load_config(None, {"models.dir": str(empty)}))
    assert lacking and "livswap train --arch styleswap" in lacking[0]
    cases = [
        (empty, (), "no trained styleswap model"),
        (trained_folder, ("--model", "nope"), "there are: older, tiny"),
    ]
    for folder, extra, says in cases:
        result = _run(folder, tmp_path, *extra, source=astronaut_jpg, photo=hopper_jpg)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert says in lines[0], lines[0]
    altered = tmp_path / "altered"
    store = ModelStore(altered)
    store.import_file("arcface-simswap", next(trained_folder.glob("arcface_checkpoint.tar")))
    path = _save(store, "tiny", "2026-02-01T00:00:00Z")
    data = bytearray(path.read_bytes())
    data[-8:] = b"\x7f" * 8  # one weight changed
    path.write_bytes(bytes(data))
    result = _run(altered, tmp_path, source=astronaut_jpg, photo=hopper_jpg)
    assert result.returncode == 2, result.stderr
    assert "has changed since it was trained" in result.stderr
