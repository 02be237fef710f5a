"""Domain errors. Each message names the offending thing and quotes the bad value.

Everything derived from :class:`LivswapError` is a user-facing problem (bad input, missing
device, bad config): the CLI prints it as one line and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "CameraError",
    "ConfigError",
    "EngineError",
    "InputError",
    "LivswapError",
    "ModelError",
    "OutputError",
    "StreamEnded",
    "VirtualCameraError",
    "first_line",
]


class LivswapError(Exception):
    """Base of every error livswap reports to the user as a one-line message."""


class ConfigError(LivswapError):
    """A configuration file or flag has an unknown key or a bad value."""


class InputError(LivswapError):
    """A source photo or input file/camera is missing, unreadable or of the wrong kind."""


class CameraError(InputError):
    """A webcam could not be opened."""


class OutputError(LivswapError):
    """An output path cannot be written or a sink failed to open."""


class VirtualCameraError(OutputError):
    """No virtual camera device is available; the message says how to create one."""


class EngineError(LivswapError):
    """A swap engine is unknown, unavailable, or cannot use the given source."""


class ModelError(LivswapError):
    """A model file is unknown, missing, truncated, tampered with, or not in the expected format."""


class StreamEnded(Exception):
    """Raised by ``FrameSource.recv()`` when the source has no more frames."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (third-party errors can span many, which
    would break livswap's one-line errors), or its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
