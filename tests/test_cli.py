"""The real CLI in a subprocess: bad input gets one line and exit 2; signals stop cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from livswap.capture import list_cameras
from tests.media import probe


def livswap(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI; runs without a source photo use the passthrough engine (mesh needs one)."""
    if args and args[0] != "doctor" and "--engine" not in args and "--source" not in args:
        args = ("--engine", "passthrough", *args)
    return subprocess.run(
        [sys.executable, "-m", "livswap", *args], capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("livswap: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_source_photo(hopper_clip: Path, tmp_path: Path) -> None:
    result = livswap(
        "--source",
        str(tmp_path / "nobody.jpg"),
        "--input",
        str(hopper_clip),
        "--output",
        str(tmp_path / "o.mp4"),
    )
    assert_one_line_error(result, "source photo", "nobody.jpg", "does not exist")


def test_source_that_is_not_an_image(hopper_clip: Path, tmp_path: Path) -> None:
    fake = tmp_path / "me.jpg"
    fake.write_text("not really a jpeg")
    result = livswap(
        "--source", str(fake), "--input", str(hopper_clip), "--output", str(tmp_path / "o.mp4")
    )
    assert_one_line_error(result, "me.jpg", "is not an image")


def test_a_cut_off_png_source_is_one_line_without_libpng_noise(
    hopper_clip: Path, hopper_image: np.ndarray, tmp_path: Path
) -> None:
    """libpng prints "Not enough image data" straight to the terminal for a cut PNG; livswap's
    own line is the only one a user sees."""
    import cv2

    whole = cv2.imencode(".png", hopper_image)[1].tobytes()
    cut = tmp_path / "me.png"
    cut.write_bytes(whole[: len(whole) // 2])
    result = livswap(
        "--source", str(cut), "--input", str(hopper_clip), "--output", str(tmp_path / "o.mp4")
    )
    assert_one_line_error(result, "me.png", "is a damaged PNG file")


def test_input_that_is_not_a_video(tmp_path: Path) -> None:
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(b"\x00" * 1000)
    result = livswap("--input", str(fake), "--output", str(tmp_path / "o.mp4"))
    assert_one_line_error(result, "clip.mp4", "is not a video")


def test_missing_input(tmp_path: Path) -> None:
    result = livswap("--input", str(tmp_path / "nothing.mp4"), "--output", str(tmp_path / "o.mp4"))
    assert_one_line_error(result, "nothing.mp4", "does not exist")


def test_camera_that_does_not_exist_lists_the_ones_that_do(tmp_path: Path) -> None:
    result = livswap("--input", "57", "--output", str(tmp_path / "o.mp4"))
    assert_one_line_error(result, "camera 57", "available cameras:")
    if not list_cameras():
        assert "none found" in result.stderr


def test_output_path_that_cannot_be_written(hopper_clip: Path, tmp_path: Path) -> None:
    result = livswap(
        "--input", str(hopper_clip), "--output", str(tmp_path / "no" / "dir" / "o.mp4")
    )
    assert_one_line_error(result, "o.mp4", "cannot be written", "does not exist")
    result = livswap("--input", str(hopper_clip), "--output", str(tmp_path / "o.avi-ish"))
    assert_one_line_error(result, "expected 'virtualcam', a video file")


def test_unknown_engine_and_bad_config(hopper_clip: Path, tmp_path: Path) -> None:
    result = livswap(
        "--engine", "deepfake9000", "--input", str(hopper_clip), "--output", str(tmp_path / "o.mp4")
    )
    assert_one_line_error(result, "unknown engine 'deepfake9000'", "available: ")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[capture]\nframerate = 30\n")
    assert_one_line_error(livswap("--config", str(cfg)), "unknown key 'capture.framerate'")


@pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or any(Path("/sys/devices/virtual/video4linux").glob("video*")),
    reason="needs a Linux machine "
    "without a v4l2loopback device, to check the message that explains how to make one",
)
def test_no_virtual_camera_explains_how_to_create_one() -> None:
    result = livswap("--input", "pattern")
    assert_one_line_error(result, "no virtual camera available", "modprobe v4l2loopback")


def test_image_in_image_out(astronaut_jpg: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    result = livswap("--input", str(astronaut_jpg), "--output", str(out))
    assert result.returncode == 0, result.stderr
    from livswap.capture import read_image

    assert read_image(out).shape == (512, 512, 3)


def test_video_in_video_out_via_cli(hopper_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    result = livswap("--input", str(hopper_clip), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "60 frames out of 60" in result.stderr
    assert probe(out)["count"] == 60


def test_sigterm_stops_a_live_run_and_finalises_the_file(tmp_path: Path) -> None:
    out = tmp_path / "live.mp4"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "livswap",
            "--engine",
            "passthrough",
            "--input",
            "pattern",
            "--size",
            "320x240",
            "--output",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    for line in proc.stderr:  # wait for the first status line: frames are flowing
        if "fps" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "frames out of" in err
    assert int(probe(out)["count"]) >= 10  # type: ignore[call-overload]


def test_doctor_reports_what_is_there_and_what_is_missing() -> None:
    result = livswap("doctor")
    assert result.returncode == 0, result.stderr
    for section in ("packages", "cameras", "virtual camera", "GPU", "engines", "model files"):
        assert section in result.stdout
    assert "mediapipe: 0.10.21" in result.stdout


def test_source_photo_without_a_face(tmp_path: Path, astronaut_jpg: Path) -> None:
    import cv2
    import numpy as np

    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    result = livswap(
        "--source", str(blank), "--input", str(astronaut_jpg), "--output", str(tmp_path / "o.png")
    )
    # MediaPipe loads here: its native log lines must not reach the user either.
    assert_one_line_error(result, "wall.png", "no face found")


def test_a_bad_input_is_reported_before_the_source_photo_is_prepared(tmp_path: Path) -> None:
    import cv2

    # A photo without a face would fail in preparation (after MediaPipe has loaded and run):
    # the input's error comes first, so a mistyped input costs no wait.
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    damaged = tmp_path / "clip.mp4"
    damaged.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    result = livswap(
        "--source", str(blank), "--input", str(damaged), "--output", str(tmp_path / "o.mp4")
    )
    assert_one_line_error(result, "clip.mp4", "not a video")
