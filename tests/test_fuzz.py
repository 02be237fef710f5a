"""Fuzzing what a user hands livswap: config files, command lines, photos and videos.

Properties: bad input is a livswap error (which the CLI turns into one line and exit 2) or is
read as far as it is readable; never another exception, which would be a traceback. Examples
are bounded so the suite stays fast; hypothesis shrinks any failure to a small case.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livswap.capture.files import VideoFileSource, read_image
from livswap.cli import config_from_args, run_parser
from livswap.config import default_config_text, load_config
from livswap.errors import ConfigError, InputError, LivswapError, StreamEnded
from livswap.runloop import run_async
from tests.fuzzing import mutated
from tests.media import moving_frames, write_video

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DEFAULTS = tomllib.loads(default_config_text())
KNOWN_KEYS = [(section, key) for section, table in DEFAULTS.items() for key in table]

toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.text(max_size=8), max_size=3),
)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(value, repr(value)).replace(
            "nan", "nan"
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


@st.composite
def config_documents(draw: st.DrawFn) -> str:
    """TOML with known and unknown keys, right and wrong types, in known and unknown tables."""
    lines: list[str] = []
    tables: dict[str, list[tuple[str, Any]]] = {}
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            section, key = draw(st.sampled_from(KNOWN_KEYS))
        else:
            section = draw(st.sampled_from([*DEFAULTS, "camera", "x"]))
            key = draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
        tables.setdefault(section, []).append((key, draw(toml_scalars)))
    for section, entries in tables.items():
        lines.append(f"[{section}]")
        seen = set()
        for key, value in entries:
            if key not in seen:
                seen.add(key)
                lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(document=config_documents())
def test_any_config_file_loads_or_names_the_bad_key(document: str, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(document)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message
        return
    assert cfg.capture.fps > 0


@FUZZ
@given(data=st.binary(max_size=400))
def test_config_file_of_any_bytes(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(data)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert cfg.capture.fps > 0  # what parses, and holds only known keys, is a whole config


FLAGS = [
    "--source", "--input", "--output", "--engine", "--source-mix", "--mix-weight", "--config",
    "--size", "--fps", "--realtime", "--fast", "--loop", "--preview", "--virtualcam-device",
    "--no-label", "--max-faces", "--select", "--assign", "--log-level",
]  # fmt: skip
WORDS = st.one_of(
    st.sampled_from(FLAGS),
    st.sampled_from(["0", "-1", "1e9", "nan", "0x0", "640x480", "mesh", "all", "same", "x.mp4"]),
    st.text(max_size=12),
)


@FUZZ
@given(argv=st.lists(WORDS, max_size=8))
def test_any_command_line_is_a_config_or_a_usage_error(argv: list[str]) -> None:
    """Parsing and the config built from flags: a Config, a ConfigError (one line, exit 2),
    or argparse's own usage error (exit 2)."""
    try:
        config_from_args(run_parser().parse_args(argv))
    except SystemExit as exc:
        assert exc.code in (0, 2)
    except ConfigError as exc:
        assert "\n" not in str(exc)


@pytest.fixture(scope="module")
def photo_bytes(hopper_image: np.ndarray) -> dict[str, bytes]:
    small = cv2.resize(hopper_image, (96, 112))
    out = {}
    for ext in (".jpg", ".png", ".webp", ".bmp"):
        ok, data = cv2.imencode(ext, cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        assert ok
        out[ext] = data.tobytes()
    return out


def damaged(original: bytes) -> st.SearchStrategy[bytes]:
    """Cut, spliced or byte-flipped copies of a real file, or other bytes."""
    return mutated(original, ("cut", "flip", "splice", "random"))


@FUZZ
@given(data=st.data())
def test_any_photo_bytes_read_or_refused_in_one_line(
    data: st.DataObject, photo_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    ext = data.draw(st.sampled_from(sorted(photo_bytes)))
    path = tmp_path / f"photo{ext}"
    path.write_bytes(data.draw(damaged(photo_bytes[ext])))
    try:
        image = read_image(path, "source photo")
    except InputError as exc:
        assert "\n" not in str(exc) and "photo" in str(exc)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@pytest.fixture(scope="module")
def video_bytes(tmp_path_factory: pytest.TempPathFactory, hopper_image: np.ndarray) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "v.mp4"
    write_video(path, moving_frames(hopper_image, 20, (96, 80)), gop=5, index_first=True)
    return path.read_bytes()


def read_all(source: VideoFileSource, limit: int = 60) -> int:
    async def frames() -> int:
        count = 0
        try:
            while count < limit:
                frame = await source.recv()
                assert frame.image.dtype == np.uint8 and frame.image.ndim == 3
                count += 1
        except StreamEnded:
            pass
        finally:
            source.close()
        return count

    return run_async(frames)


@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_any_video_bytes_decode_as_far_as_they_go(
    data: st.DataObject, video_bytes: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(data.draw(damaged(video_bytes)))
    try:
        source = VideoFileSource(path, realtime=False)
    except LivswapError as exc:
        assert "\n" not in str(exc)
        return
    count = read_all(source)
    assert 0 <= count <= 60
    report = source.damage_report()
    assert isinstance(report, str)
