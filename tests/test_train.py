"""``livswap train`` on the CPU, at a tiny resolution and width, on frames made from the
package-shipped public-domain photos (two people): it overfits them, resumes on the same loss
curve, and the trained file runs through the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from livswap.engine.simswap import load_arcface
from livswap.models import ModelStore
from livswap.train import Trainer, TrainSettings
from tests.checkpoints import write_release_arcface
from tests.media import astronaut, grace_hopper, moving_frames, run_livswap


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two people, six frames each (moving a little), and a model folder with an ArcFace in
    the official format (random weights: identity is weakly told apart)."""
    root = tmp_path_factory.mktemp("train")
    for name, image in (("astronaut", astronaut()), ("hopper", grace_hopper())):
        folder = root / "data" / name
        folder.mkdir(parents=True)
        for i, frame in enumerate(moving_frames(image, 6, (256, 256), amplitude=0.08)):
            cv2.imwrite(str(folder / f"{i}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (root / "data" / "astronaut" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off")
    store = ModelStore(root / "models")
    store.import_file("arcface-simswap", write_release_arcface(root / "arcface_checkpoint.tar"))
    (root / "c.toml").write_text(f'[models]\ndir = "{store.folder}"\n')
    return root


def _trainer(workspace: Path, name: str, steps: int, **settings: float) -> Trainer:
    store = ModelStore(workspace / "models")
    encoder = store.require("arcface-simswap")
    return Trainer(
        TrainSettings(
            arch="styleswap", data=(workspace / "data",), name=name, resolution=32,
            narrow=1 / 32, steps=steps, batch=2, **settings,  # type: ignore[arg-type]
        ),
        store,
        load_arcface(store.folder / "cache", encoder),
        encoder,
        torch.device("cpu"),
    )  # fmt: skip


def _identity_towards_source(trainer: Trainer) -> tuple[float, float]:
    """(cosine of the swap's embedding to the source's, of the target's own to the source's)
    for one person's faces given the other's identity."""
    first, second = trainer._by_person[0][:4], trainer._by_person[1][:4]
    with torch.no_grad():
        swapped = trainer.generator(trainer._images(first), trainer.embeddings[second])
        embedded = trainer._embed(swapped.add(1).div(2))
    source = trainer.embeddings[second]
    return (
        float(F.cosine_similarity(embedded, source).mean()),
        float(F.cosine_similarity(trainer.embeddings[first], source).mean()),
    )


def test_a_short_cpu_run_overfits_two_people_and_runs_through_the_cli(
    workspace: Path, tmp_path: Path
) -> None:
    # The random encoder tells people apart only weakly, so identity weighs more here.
    trainer = _trainer(workspace, "overfit", 100, weight_identity=100.0)
    assert len(trainer.faces.people) == 2 and len(trainer.faces.crops) == 12
    assert any("broken.jpg" in line for line in trainer.faces.skipped)
    before, baseline = _identity_towards_source(trainer)
    reconstruction = [trainer.train_step().reconstruction for _ in range(100)]
    after, _ = _identity_towards_source(trainer)
    assert np.mean(reconstruction[-10:]) < 0.5 * np.mean(reconstruction[:10]), reconstruction
    assert after > before and after > baseline, (before, after, baseline)
    path = trainer.finish()
    assert path == workspace / "models" / "trained" / "overfit.safetensors"
    out = tmp_path / "swap.png"
    photo = workspace / "data" / "hopper" / "0.jpg"
    result = run_livswap(
        "--config", str(workspace / "c.toml"), "--engine", "styleswap", "--model", "overfit",
        "--source", str(workspace / "data" / "astronaut" / "0.jpg"), "--input", str(photo),
        "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    swapped = cv2.imread(str(out))
    assert swapped.shape == cv2.imread(str(photo)).shape


def test_resume_continues_on_the_same_loss_curve(workspace: Path) -> None:
    straight = _trainer(workspace, "straight", 12)
    losses = []
    for _ in range(12):
        losses.append(straight.train_step())
        if straight.step == 6:
            straight.save_checkpoint()
    resumed = _trainer(workspace, "straight", 12)
    resumed.resume()
    assert resumed.step == 6
    again = [resumed.train_step() for _ in range(6)]
    for a, b in zip(losses[6:], again, strict=True):
        assert a.step == b.step
        assert a.generator == pytest.approx(b.generator, rel=1e-4, abs=1e-6)
        assert a.discriminator == pytest.approx(b.discriminator, rel=1e-4, abs=1e-6)


def test_the_command_line_trains_sheets_plots_and_says_how_long_a_step_takes(
    workspace: Path,
) -> None:
    def train(*extra: str) -> subprocess.CompletedProcess[str]:
        return run_livswap(
            "train", "--config", str(workspace / "c.toml"), "--data", str(workspace / "data"),
            "--name", "cli", "--resolution", "32", "--narrow", "0.03125", "--batch", "2",
            "--sheet-every", "2", "--save-every", "2", *extra,
        )  # fmt: skip

    result = train("--steps", "3")
    assert result.returncode == 0, result.stderr
    assert "s per step on cpu" in result.stderr and "skipped" in result.stderr
    assert "Traceback" not in result.stderr
    folder = workspace / "models" / "training" / "cli"
    assert (folder / "sheet-0000002.png").is_file() and (folder / "losses.png").is_file()
    sheet = cv2.imread(str(folder / "sheet-0000002.png"))
    assert sheet.shape == (4 * 32, 3 * 32, 3)  # source | target | swap, four rows
    logged = [json.loads(line) for line in (folder / "losses.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == [1, 2, 3]
    resumed = train("--steps", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    logged = [json.loads(line) for line in (folder / "losses.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == [1, 2, 3, 4]
    plotted = run_livswap("train", "--config", str(workspace / "c.toml"), "--name", "cli", "--plot")
    assert plotted.returncode == 0, plotted.stderr
    nothing = run_livswap(
        "train", "--config", str(workspace / "c.toml"), "--data", str(workspace / "nowhere"),
        "--name", "x",
    )  # fmt: skip
    lines = nothing.stderr.strip().splitlines()
    assert nothing.returncode == 2 and len(lines) == 1 and "does not exist" in lines[0]


def test_a_simswap_style_model_trains_and_runs_as_simswap_224(
    workspace: Path, tmp_path: Path
) -> None:
    cfg = str(workspace / "c.toml")
    trained = run_livswap(
        "train", "--config", cfg, "--arch", "simswap", "--data", str(workspace / "data"),
        "--name", "mine", "--resolution", "32", "--narrow", "0.0625", "--batch", "2",
        "--steps", "2",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "--engine simswap-224 --model mine" in trained.stderr
    photo = str(workspace / "data" / "hopper" / "0.jpg")
    source = str(workspace / "data" / "astronaut" / "0.jpg")

    def run(engine: str) -> subprocess.CompletedProcess[str]:
        return run_livswap(
            "--config", cfg, "--engine", engine, "--model", "mine", "--source", source,
            "--input", photo, "--output", str(tmp_path / "o.png"),
        )  # fmt: skip

    assert run("simswap-224").returncode == 0
    assert cv2.imread(str(tmp_path / "o.png")).shape == cv2.imread(photo).shape
    for engine, says in (
        ("simswap-512", "runs its imported weights"),
        ("styleswap", "is a simswap model"),
    ):
        result = run(engine)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and says in lines[0], result.stderr
