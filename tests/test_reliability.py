"""Nothing lost, nothing crashes: outputs that never destroy an input or a good file, media
that decodes past damage, honest terminal output, and one clear line for every failure."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media import moving_frames, probe, run_livswap, write_video

PASS = ("--engine", "passthrough")  # no source photo needed: the file handling is under test


def decodable_frames(path: Path) -> int:
    """How many frames PyAV itself gets out of ``path``, decoding packet by packet."""
    count = 0
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            try:
                count += len(packet.decode())
            except av.error.FFmpegError:
                continue
    return count


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, hopper_image: np.ndarray) -> Path:
    """3 s, 90 frames, with audio; keyframes every 10 frames (damage stays local)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    frames = moving_frames(hopper_image, 90, (256, 192))
    return write_video(path, frames, gop=10)


def test_output_that_is_the_input_is_refused(clip: Path, tmp_path: Path) -> None:
    original = clip.read_bytes()
    for same in (clip, tmp_path / "link.mp4", tmp_path / "hard.mp4"):
        if same.name == "link.mp4":
            same.symlink_to(clip)
        elif same.name == "hard.mp4":
            os.link(clip, same)
        result = run_livswap(*PASS, "--input", str(clip), "--output", str(same))
        assert result.returncode == 2, result.stderr
        assert "is the input" in result.stderr and "Traceback" not in result.stderr
        assert clip.read_bytes() == original


def test_output_folder_inside_the_input_folder_is_refused(
    hopper_image: np.ndarray, tmp_path: Path
) -> None:
    import cv2

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), cv2.cvtColor(hopper_image, cv2.COLOR_RGB2BGR))
    result = run_livswap(*PASS, "--input", str(photos), "--output", str(photos / "out"))
    assert result.returncode == 2 and "inside the input folder" in result.stderr
    assert sorted(p.name for p in photos.iterdir()) == ["a.png"]
    # A folder input with a video file name as its output: refused, nothing created.
    result = run_livswap(*PASS, "--input", str(photos), "--output", str(tmp_path / "x.mp4"))
    assert result.returncode == 2 and "must be a folder" in result.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_an_interrupted_job_keeps_its_frames_aside_and_the_good_file(
    clip: Path, tmp_path: Path
) -> None:
    """Ctrl-C on a file job: the file under the real name is the earlier good one, the
    frames written so far are kept beside it, finalised, with the audio cut to them."""
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier good result")
    command = ["--realtime", "--input", str(clip), "--output", str(out)]
    process = subprocess.Popen(
        [sys.executable, "-m", "livswap", *PASS, *command],
        stderr=subprocess.PIPE,
        text=True,
    )
    partial = tmp_path / ".out.livswap-partial.mp4"
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline:  # start-up done: writing
        time.sleep(0.1)
    time.sleep(1.0)  # about 30 frames at the clip's own rate
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert out.read_bytes() == b"an earlier good result"
    kept = tmp_path / "out.incomplete.mp4"
    assert kept.exists() and "out.incomplete.mp4" in stderr and "Traceback" not in stderr
    got = probe(kept)
    count = int(got["count"])  # type: ignore[call-overload]
    assert 0 < count < 90
    assert abs(float(got["duration"]) - count / 30) < 0.3, (got["duration"], count)  # type: ignore[arg-type]
    assert not partial.exists()


def test_a_full_disk_ends_the_job_with_one_line_and_keeps_the_good_file(
    clip: Path, tmp_path: Path
) -> None:
    """The output's file system fills up mid-job (a file size limit stands in for it)."""
    import resource

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, no kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier good result")
    result = subprocess.run(
        [sys.executable, "-m", "livswap", *PASS, "--input", str(clip), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_disk,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len([ln for ln in result.stderr.splitlines() if "error" in ln]) == 1, result.stderr
    assert out.read_bytes() == b"an earlier good result"
    assert not list(tmp_path.glob(".*partial*"))


def damage(
    clip: Path, dest: Path, *, zero_at: float | None = None, cut_at: float | None = None
) -> Path:
    data = bytearray(clip.read_bytes())
    if zero_at is not None:
        start = int(len(data) * zero_at)
        data[start : start + 3000] = bytes(3000)
    if cut_at is not None:
        data = data[: int(len(data) * cut_at)]
    dest.write_bytes(bytes(data))
    return dest


def test_decoding_goes_on_past_a_damaged_packet(clip: Path, tmp_path: Path) -> None:
    broken = damage(clip, tmp_path / "zeroed.mp4", zero_at=0.4)
    expected = decodable_frames(broken)
    out = tmp_path / "out.mp4"
    result = run_livswap(*PASS, "--input", str(broken), "--output", str(out))
    assert result.returncode == 3, result.stderr  # completed, input damaged: said so
    assert "damaged" in result.stderr and "Traceback" not in result.stderr
    got = probe(out)
    assert int(got["count"]) >= expected - 2 and int(got["count"]) > 60, (got["count"], expected)  # type: ignore[call-overload]
    # The audio is cut to the video actually written.
    assert abs(float(got["duration"]) - int(got["count"]) / 30) < 0.3  # type: ignore[arg-type, call-overload]


def test_a_cut_off_file_says_how_much_is_missing(hopper_image: np.ndarray, tmp_path: Path) -> None:
    frames = moving_frames(hopper_image, 90, (256, 192))
    whole = write_video(tmp_path / "whole.mp4", frames, gop=10, index_first=True)
    cut = damage(whole, tmp_path / "cut.mp4", cut_at=0.5)
    out = tmp_path / "out.mp4"
    result = run_livswap(*PASS, "--input", str(cut), "--output", str(out))
    assert result.returncode == 3, result.stderr
    assert "of the 90 frames it declares are missing" in result.stderr
    got = probe(out)
    assert 20 < int(got["count"]) < 90  # type: ignore[call-overload]
    assert abs(float(got["duration"]) - int(got["count"]) / 30) < 0.3  # type: ignore[arg-type, call-overload]


def run_in_terminal(*args: str, timeout: float = 120) -> tuple[int, str]:
    """The CLI with stderr on a pseudo-terminal, as a user's terminal shows it."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "livswap", *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(controller)
    return process.wait(timeout=10), output.decode("utf-8", "replace")


def test_a_terminal_gets_a_progress_bar_redrawn_in_place(clip: Path, tmp_path: Path) -> None:
    code, shown = run_in_terminal(*PASS, "--input", str(clip), "--output", str(tmp_path / "o.mp4"))
    assert code == 0, shown
    assert "100%" in shown and shown.count("\r") >= 2  # redrawn, not a line per update
    assert "I0000" not in shown and "absl::InitializeLog" not in shown  # native logs hidden
    # Not a terminal: no bar at all, plain lines.
    piped = run_livswap(*PASS, "--input", str(clip), "--output", str(tmp_path / "p.mp4"))
    assert piped.returncode == 0 and "\r" not in piped.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("models", "import", "simswap-224", "{junk}"), "simswap-224"),
        (("--input", "{clip}", "--output", "/proc/livswap-out.mp4"), "cannot be written"),
        (("--input", "{clip}", "--output", "{tmp}/o.mp4", "--preview"), "display"),
        (("--input", "{clip}", "--size", "0x0"), "--size"),
    ],
    ids=["junk-model", "proc-output", "preview-no-display", "size-0x0"],
)
def test_failures_are_one_line_and_exit_2(
    args: tuple[str, ...], expected: str, clip: Path, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a model")
    filled = [a.format(junk=junk, clip=clip, tmp=tmp_path) for a in args]
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["LIVSWAP_MODEL_DIR"] = str(tmp_path / "models")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "livswap", *PASS, *filled]
        if filled[0] != "models"
        else [sys.executable, "-m", "livswap", *filled],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("livswap")]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and expected in result.stderr
    assert len([line for line in errors if "error" in line]) == 1, result.stderr
    assert time.monotonic() - started < 60  # refused before any pipeline ran


def test_help_names_every_subcommand_and_the_face_flags() -> None:
    result = run_livswap("--help")
    assert result.returncode == 0
    for word in ("serve", "models", "doctor", "--max-faces", "--select", "--assign"):
        assert word in result.stdout
