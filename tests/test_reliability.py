"""Nothing lost, nothing crashes: outputs that never destroy an input or a good file, media
that decodes past damage, honest terminal output, and one clear line for every failure."""

from __future__ import annotations

import os
import pty
import re
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


def run_in_terminal(
    *args: str, timeout: float = 120, stop_after: float | None = None
) -> tuple[int, str]:
    """The CLI with stderr on a pseudo-terminal, as a user's terminal shows it; a live run
    gets Ctrl-C ``stop_after`` seconds after its first status line."""
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
    interrupt_at: float | None = None
    while time.monotonic() < deadline:
        if stop_after is not None and interrupt_at is None and b" fps" in output:
            interrupt_at = time.monotonic() + stop_after
        if interrupt_at is not None and time.monotonic() > interrupt_at:
            process.send_signal(signal.SIGINT)
            interrupt_at = float("inf")
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
    # A live run's status line is redrawn in place too.
    code, shown = run_in_terminal(
        *PASS, "--input", "pattern", "--size", "320x240", "--output", str(tmp_path / "live.mp4"),
        stop_after=4.0,
    )  # fmt: skip
    assert code == 0, shown
    assert len(re.findall(r"\r\s*[\d.]+ fps", shown)) >= 2, shown
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
        (("--input", "{tmp}", "--output", "/proc/livswap-out/"), "cannot be made"),
    ],
    ids=["junk-model", "proc-output", "preview-no-display", "size-0x0", "proc-folder"],
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


def test_a_camera_that_cannot_be_opened_says_how_to_try_without_one(tmp_path: Path) -> None:
    result = run_livswap(*PASS, "--input", "57", "--output", str(tmp_path / "o.mp4"))
    assert result.returncode == 2
    assert "--input VIDEO.mp4" in result.stderr and "--input pattern" in result.stderr


def test_a_folder_of_photos_takes_every_format_a_photo_may_be(
    hopper_image: np.ndarray, tmp_path: Path
) -> None:
    import cv2

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    bgr = cv2.cvtColor(hopper_image, cv2.COLOR_RGB2BGR)
    for name in ("a.png", "b.ppm", "c.jpg"):
        cv2.imwrite(str(photos / name), bgr)
    (photos / "notes.txt").write_text("not a photo")
    result = run_livswap(*PASS, "--input", str(photos), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.ppm", "c.jpg"]
    assert "skipped 1" in result.stderr and not list(out.glob(".*partial*"))


def test_serve_on_a_busy_port_prints_no_address_and_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_livswap("serve", "--port", str(port), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "cannot listen" in result.stderr and "open http" not in result.stderr


def test_models_say_something_when_all_is_well_and_errors_once(tmp_path: Path) -> None:
    env = {**os.environ, "LIVSWAP_MODEL_DIR": str(tmp_path / "models")}
    verify = subprocess.run(
        [sys.executable, "-m", "livswap", "models", "verify"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert verify.returncode == 0 and "no models installed" in verify.stdout
    # A download that fails is reported once (by the error), not also as a warning first.
    import logging

    from livswap.errors import ModelError
    from livswap.models.download import download

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logging.getLogger("livswap").addHandler(handler)
    try:
        with pytest.raises(ModelError, match="cannot reach"):
            download(("http://127.0.0.1:9/none.bin",), tmp_path / "m.bin", label="m")
    finally:
        logging.getLogger("livswap").removeHandler(handler)
    assert [r for r in records if r.levelno >= logging.WARNING] == []


def test_doctor_says_which_engines_are_ready_and_how_to_ready_the_rest(tmp_path: Path) -> None:
    env = {**os.environ, "LIVSWAP_MODEL_DIR": str(tmp_path / "models")}
    result = subprocess.run(
        [sys.executable, "-m", "livswap", "doctor"], capture_output=True, text=True, env=env
    )
    section = result.stdout.split("\nengines\n")[1].split("\nmodel files\n")[0]
    lines = {line.split(":")[0].strip(): line for line in section.splitlines()}
    assert lines["[ok] mesh (default)"]
    assert "livswap models fetch simswap-224" in lines["[--] simswap-224"]
    assert "livswap models fetch w600k-r50" in lines["[--] inswapper-128"]


def test_the_summary_counts_swapped_faces_and_a_deleted_source_is_no_problem(
    hopper_image: np.ndarray, astronaut_jpg: Path, tmp_path: Path
) -> None:
    """The source photo is read once, at the start: deleting or replacing it while the job
    runs changes nothing."""
    import shutil

    source = tmp_path / "me.jpg"
    shutil.copy(astronaut_jpg, source)
    clip = write_video(tmp_path / "c.mp4", moving_frames(hopper_image, 45, (256, 300)), audio=None)
    out = tmp_path / "o.mp4"
    command = ["--source", str(source), "--realtime", "--input", str(clip), "--output", str(out)]
    process = subprocess.Popen(
        [sys.executable, "-m", "livswap", *command],
        stderr=subprocess.PIPE,
        text=True,
    )
    partial = tmp_path / ".o.livswap-partial.mp4"
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    source.unlink()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "45 frames out of 45" in stderr and "45 faces swapped" in stderr
    assert int(probe(out)["count"]) == 45  # type: ignore[call-overload]


def test_a_sink_that_blocks_costs_frames_not_the_run() -> None:
    """A virtual camera or disk that stalls for a second: the live run drops (and counts) the
    frames it could not write, and carries on."""
    from livswap.capture import PatternSource
    from livswap.frame import Frame
    from livswap.output import NullSink
    from livswap.pipeline import Pipeline
    from livswap.runloop import run_async

    class Stalling(NullSink):
        def send(self, frame: Frame) -> None:
            if frame.seq == 10:
                time.sleep(1.0)
            super().send(frame)

    sink = Stalling()
    source = PatternSource(160, 120, fps=60)
    pipeline = Pipeline(source, [], [sink], lossless=False, max_frames=150)
    stats = run_async(pipeline.run)
    assert stats.frames_in == 150 and sink.frames_written == stats.frames_out
    assert stats.frames_dropped >= 40  # the second's frames, dropped and counted
    assert stats.frames_out + stats.frames_dropped == 150
    assert sorted(stats.latency_ms)[len(stats.latency_ms) // 2] < 50  # latency recovers
