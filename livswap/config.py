"""Typed, frozen configuration loaded from TOML.

The schema (names, types, allowed ranges) lives in the dataclasses below; the default *values*
live in exactly one place, the packaged ``default_config.toml`` (the repository's ``config.toml``
is the same file, kept identical by a test). Precedence: command-line flag > ``--config FILE`` >
defaults. Unknown keys and bad values raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from livswap.errors import ConfigError

__all__ = [
    "CaptureConfig",
    "ComposeConfig",
    "Config",
    "EngineConfig",
    "ModelsConfig",
    "OutputConfig",
    "PipelineConfig",
    "ServeConfig",
    "TrackConfig",
    "default_config_text",
    "load_config",
]

Pacing = Literal["auto", "realtime", "fast"]
FaceSelection = Literal["largest", "all", "nearest"]
Device = Literal["auto", "cpu", "cuda"]
LogLevel = Literal["debug", "info", "warning", "error"]
Assign = Literal["same", "by_position"]
Backend = Literal["auto", "eager", "compile", "tensorrt", "onnxruntime"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
BatchBucket = Literal[1, 2, 4, 8, 16, 32]
PasteOn = Literal["auto", "cpu", "device"]


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of a numeric setting, attached with ``Annotated[int, Range(1, 10)]``."""

    min: float
    max: float


@dataclass(frozen=True)
class CaptureConfig:
    input: str
    width: Annotated[int, Range(16, 7680)]
    height: Annotated[int, Range(16, 4320)]
    fps: Annotated[float, Range(1, 240)]
    pacing: Pacing
    loop: bool
    reconnect_max_backoff_s: Annotated[float, Range(0.1, 600)]


@dataclass(frozen=True)
class TrackConfig:
    max_faces: Annotated[int, Range(1, 16)]
    select: FaceSelection
    min_detection_confidence: Annotated[float, Range(0.0, 1.0)]
    min_tracking_confidence: Annotated[float, Range(0.0, 1.0)]
    smoothing_min_cutoff: Annotated[float, Range(0.001, 100)]
    smoothing_beta: Annotated[float, Range(0.0, 100)]
    hands: bool
    hand_min_confidence: Annotated[float, Range(0.0, 1.0)]


@dataclass(frozen=True)
class EngineConfig:
    name: str
    model: str
    source: tuple[str, ...]
    device: Device
    backend: Backend
    precision: Precision
    shape_transfer: Annotated[float, Range(0.0, 1.0)]
    outline_transfer: Annotated[float, Range(0.0, 1.0)]
    mesh_resolution: Annotated[int, Range(128, 1024)]
    keep_target_mouth: bool
    keep_target_eyes: bool
    assign: Assign
    mix_source: str
    mix_weight: Annotated[float, Range(0.0, 1.0)]
    style_mix: tuple[float, ...]
    max_batch: BatchBucket
    batch_wait: Annotated[float, Range(0.0, 1.0)]


@dataclass(frozen=True)
class ComposeConfig:
    temporal_smoothing: Annotated[float, Range(0.0, 0.99)]
    fade_frames: Annotated[int, Range(0, 120)]
    color_transfer: bool
    occlusion_aware: bool
    paste: PasteOn


@dataclass(frozen=True)
class OutputConfig:
    target: str
    virtualcam_backend: str
    virtualcam_device: str
    preview: bool
    label: bool
    label_text: str
    video_crf: Annotated[int, Range(0, 51)]
    video_preset: str


@dataclass(frozen=True)
class ServeConfig:
    host: str
    port: Annotated[int, Range(0, 65535)]
    token: str
    cert: str
    key: str
    max_peers: Annotated[int, Range(1, 64)]
    max_upload_mb: Annotated[float, Range(0.1, 100)]
    accepted_types: tuple[str, ...]
    idle_timeout_s: Annotated[float, Range(5, 86400)]
    connect_timeout_s: Annotated[float, Range(1, 300)]
    offers_per_minute: Annotated[int, Range(1, 100000)]
    uploads_per_minute: Annotated[int, Range(1, 100000)]
    max_sources: Annotated[int, Range(1, 1000)]
    max_sources_mb: Annotated[float, Range(1, 100000)]
    max_upload_megapixels: Annotated[float, Range(0.1, 1000)]
    overlap_stages: bool


@dataclass(frozen=True)
class ModelsConfig:
    dir: str


@dataclass(frozen=True)
class PipelineConfig:
    status_interval_s: Annotated[float, Range(0.1, 60)]
    log_level: LogLevel


@dataclass(frozen=True)
class Config:
    capture: CaptureConfig
    track: TrackConfig
    engine: EngineConfig
    compose: ComposeConfig
    output: OutputConfig
    serve: ServeConfig
    models: ModelsConfig
    pipeline: PipelineConfig

    def replace(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with dotted-key overrides applied (``{"engine.name": "mesh"}``)."""
        tree = dataclasses.asdict(self)
        _apply_overrides(tree, overrides, "override")
        built: Config = _build(Config, tree, "override")
        return built


def default_config_text() -> str:
    """The packaged defaults, byte for byte what the repository's ``config.toml`` holds."""
    return resources.files("livswap").joinpath("default_config.toml").read_text("utf-8")


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Load the defaults, then ``path`` (if given), then dotted-key ``overrides``."""
    tree = tomllib.loads(default_config_text())
    if path is not None:
        user = _read_toml(Path(path))
        _merge(tree, user, str(path), prefix="")
    if overrides:
        _apply_overrides(tree, overrides, "command line")
    built: Config = _build(Config, tree, str(path) if path else "defaults")
    return built


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def _merge(base: dict[str, Any], update: Mapping[str, Any], origin: str, prefix: str) -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"{origin}: unknown key {dotted!r} (known here: {known})")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{origin}: {dotted!r} must be a table, got {value!r}")
            _merge(base[key], value, origin, prefix=f"{dotted}.")
        else:
            base[key] = value


def _apply_overrides(tree: dict[str, Any], overrides: Mapping[str, Any], origin: str) -> None:
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node: Any = tree
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{origin}: unknown key {dotted!r}")
            node = node[part]
        if not isinstance(node, dict) or leaf not in node or isinstance(node[leaf], dict):
            raise ConfigError(f"{origin}: unknown key {dotted!r}")
        node[leaf] = value


def _build(cls: type[Any], table: Mapping[str, Any], origin: str, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in names:
            raise ConfigError(f"{origin}: unknown key {prefix + key!r}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        dotted = prefix + f.name
        if f.name not in table:
            raise ConfigError(f"{origin}: missing key {dotted!r}")
        hint = hints[f.name]
        raw = table[f.name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{origin}: {dotted!r} must be a table, got {raw!r}")
            values[f.name] = _build(hint, raw, origin, prefix=f"{dotted}.")  # type: ignore[arg-type]
        else:
            bounds = None
            if typing.get_origin(hint) is Annotated:
                hint, *extras = typing.get_args(hint)
                bounds = next((e for e in extras if isinstance(e, Range)), None)
            values[f.name] = _coerce(raw, hint, dotted, origin, bounds)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str, origin: str, bounds: Range | None) -> Any:
    origin_type = typing.get_origin(hint)
    if origin_type is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{origin}: {key} must be one of {list(choices)}, got {value!r}")
        return value
    if origin_type is tuple:
        item = typing.get_args(hint)[0]
        if item is float:
            numbers = isinstance(value, list | tuple) and all(
                isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v <= 1.0
                for v in value
            )
            if not numbers:
                raise ConfigError(
                    f"{origin}: {key} must be a list of numbers from 0 to 1, got {value!r}"
                )
            return tuple(float(v) for v in value)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{origin}: {key} must be a list of strings, got {value!r}")
        return tuple(value)
    if origin_type in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type for {key}: {hint}")  # schema bug, not user error
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{origin}: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{origin}: {key} must be an integer, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{origin}: {key} must be a number, got {value!r}")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: {key} must be a string, got {value!r}")
        return value
    else:
        raise TypeError(f"unsupported config type for {key}: {hint}")
    if bounds is not None and not bounds.min <= value <= bounds.max:
        raise ConfigError(
            f"{origin}: {key} must be between {bounds.min:g} and {bounds.max:g}, got {value!r}"
        )
    return value
