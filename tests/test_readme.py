"""The README's two commands stay true: CI runs exactly the README's test command."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_command(heading: str) -> str:
    lines = (REPO / "README.md").read_text("utf-8").splitlines()
    return lines[lines.index(heading) + 1]


def test_ci_runs_the_readme_test_command() -> None:
    command = _readme_command("# set up and run the tests")
    assert command.endswith("&& pytest")
    assert command in (REPO / ".ci" / "run").read_text("utf-8").splitlines()


def test_readme_starts_with_the_two_commands() -> None:
    head = (REPO / "README.md").read_text("utf-8").splitlines()[:12]
    assert "# set up and run livswap on the built-in default (webcam -> virtual camera)" in head
    assert "# set up and run the tests" in head
    assert _readme_command(
        "# set up and run livswap on the built-in default (webcam -> virtual camera)"
    ).endswith("livswap --source me.jpg")


def _documented_commands() -> list[str]:
    """Every command line in the README's bash blocks (continuations joined)."""
    commands, in_block, pending = [], False, ""
    for line in (REPO / "README.md").read_text("utf-8").splitlines():
        if line.startswith("```"):
            in_block = line.strip() == "```bash"
            continue
        if not in_block or line.lstrip().startswith("#"):
            continue
        text = pending + line.split("  #")[0].strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if text.startswith(("livswap ", "python -m benchmarks.")):
            commands.append(text)
    return commands


def _why_not_here(command: str) -> str | None:
    """Why a documented command cannot run on this machine (None: it runs)."""
    words = command.split()
    if words[1] == "serve" or (words[1] == "models" and words[2] not in ("list", "verify")):
        return "runs until stopped, or needs the network or a file of the user's"
    if words[1] == "train" or "styleswap" in words:
        return "trains for hours on the user's data, or runs what that trained"
    if words[0] == "livswap" and words[1] not in ("doctor", "models"):
        if "--input" not in words or words[words.index("--input") + 1].isdigit():
            return "needs a webcam"
        if "--preview" in words:
            return "needs a display"
        if "--output" not in words:
            return "needs a virtual camera device"
    if command.startswith("python -m benchmarks.") and "latency" not in command:
        return "a benchmark of minutes, or one needing dlib, Chromium or a GPU"
    return None


def test_the_documented_commands_work_as_written(
    tmp_path: Path, astronaut_jpg: Path, hopper_jpg: Path, hopper_clip: Path
) -> None:
    import shlex
    import shutil
    import subprocess
    import sys

    for name in ("me.jpg", "a.jpg", "photo.jpg"):
        shutil.copy(astronaut_jpg, tmp_path / name)
    shutil.copy(hopper_jpg, tmp_path / "b.jpg")
    shutil.copy(hopper_clip, tmp_path / "clip.mp4")
    (tmp_path / "photos").mkdir()
    shutil.copy(hopper_jpg, tmp_path / "photos" / "hopper.jpg")
    env = {**os.environ, "LIVSWAP_MODEL_DIR": str(tmp_path / "models")}
    env["PYTHONPATH"] = str(REPO)
    ran = []
    for command in _documented_commands():
        if _why_not_here(command) is not None:
            continue
        words = shlex.split(command)
        argv = (
            [sys.executable, "-m", "livswap", *words[1:]]
            if words[0] == "livswap"
            else [
                sys.executable,
                *words[1:],
            ]
        )
        result = subprocess.run(
            argv, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=180
        )
        assert result.returncode == 0, (command, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, command
        ran.append(command)
    assert len(ran) >= 6, ran  # the file jobs, doctor, models list/verify, the latency benchmark
    assert (tmp_path / "out.mp4").exists() and (tmp_path / "out.png").exists()
    assert (tmp_path / "swapped" / "hopper.jpg").exists()
    # The latency benchmark tells the hand model's cost apart from the hand stage's average:
    # while there is no hand it looks at about every fourth frame (Hopper's clip has none).
    latency = json.loads((tmp_path / "lat.json").read_text())
    looks = latency["hand_detection"]
    assert 0.1 < looks["share_of_frames"] < 0.5 and looks["p50"] > 0, looks
