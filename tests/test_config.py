from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from livswap.config import default_config_text, load_config
from livswap.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repository_config_is_the_packaged_default() -> None:
    assert (REPO / "config.toml").read_text("utf-8") == default_config_text()


def test_every_default_setting_has_a_comment() -> None:
    for line in default_config_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"setting without a one-line comment: {line!r}"


def test_defaults_load_into_frozen_typed_objects() -> None:
    cfg = load_config()
    assert cfg.capture.input == "0" and isinstance(cfg.capture.fps, float)
    assert cfg.output.label is True  # disclosure is on unless turned off on purpose
    with pytest.raises(AttributeError):
        cfg.capture.fps = 1.0  # type: ignore[misc]


def test_file_overrides_defaults_and_flags_override_file(tmp_path: Path) -> None:
    path = tmp_path / "my.toml"
    path.write_text('[capture]\nfps = 25\ninput = "clip.mp4"\n[output]\nlabel = false\n')
    cfg = load_config(path, {"capture.fps": 15.0})
    assert cfg.capture.fps == 15.0
    assert cfg.capture.input == "clip.mp4"
    assert cfg.output.label is False
    assert cfg.capture.width == tomllib.loads(default_config_text())["capture"]["width"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[capture]\nfsp = 30\n", "unknown key 'capture.fsp'"),
        ("[camera]\nfps = 30\n", "unknown key 'camera'"),
        ("[capture]\nfps = 'fast'\n", "capture.fps must be a number, got 'fast'"),
        ("[capture]\nfps = 0\n", "capture.fps must be between 1 and 240, got 0.0"),
        ("[capture]\npacing = 'slow'\n", "capture.pacing must be one of"),
        ("[output]\nlabel = 'no'\n", "output.label must be true or false, got 'no'"),
        ("[capture]\nwidth = 12.5\n", "capture.width must be an integer, got 12.5"),
        ("[engine]\nsource = 'me.jpg'\n", "engine.source must be a list of strings"),
        ("capture = 3\n", "'capture' must be a table"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


def test_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[capture\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'capture\.nope'"):
        load_config(None, {"capture.nope": 1})
