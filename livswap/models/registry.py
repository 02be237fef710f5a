"""The model registry: every downloadable weight file livswap knows, with where to get it, how to
check it, and under which licence it may be used.

Upstream projects publish no checksums for these files, so ``sha256`` is None for all of them
today. A file's hash is pinned in the local manifest the first time it is fetched or imported
and checked from then on (``livswap models verify``), so later tampering or truncation is caught.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from livswap.errors import ModelError

__all__ = ["REGISTRY", "ModelSpec", "get_spec", "model_dir"]

ModelFormat = Literal["torch-state-dict", "pickled-module", "onnx"]

_NONCOMMERCIAL_SIMSWAP = "CC BY-NC 4.0 (SimSwap): academic and non-commercial use only"
_NONCOMMERCIAL_INSIGHTFACE = "InsightFace model licence: non-commercial research use only"


@dataclass(frozen=True)
class ModelSpec:
    """One model file.

    Attributes:
        name: registry name (``livswap models fetch NAME``).
        filename: name of the stored file in the model folder.
        urls: where to download from, tried in order.
        archive_member: for a download that is a zip, the member (path suffix) to extract.
        sha256: the expected hash, when upstream publishes one.
        size_mb: approximate size, for the user (and a sanity bound on downloads).
        format: how the file is loaded.
        input_size: the network's face crop size in pixels.
        preprocessing: what the network expects, in words.
        licence: the terms of the weights (not of livswap's code).
    """

    name: str
    filename: str
    urls: tuple[str, ...]
    format: ModelFormat
    input_size: int
    preprocessing: str
    licence: str
    size_mb: float
    archive_member: str | None = None
    sha256: str | None = None


REGISTRY: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> None:
    if spec.name in REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    REGISTRY[spec.name] = spec


_register(
    ModelSpec(
        name="simswap-224",
        filename="simswap_224_latest_net_G.pth",
        urls=("https://github.com/neuralchen/SimSwap/releases/download/1.0/checkpoints.zip",),
        archive_member="people/latest_net_G.pth",
        format="torch-state-dict",
        input_size=224,
        preprocessing="aligned RGB crop in [0,1]; identity = L2-normalised ArcFace embedding",
        licence=_NONCOMMERCIAL_SIMSWAP,
        size_mb=220,
    )
)
_register(
    ModelSpec(
        name="simswap-512",
        filename="simswap_512_550000_net_G.pth",
        urls=("https://github.com/neuralchen/SimSwap/releases/download/512_beta/512.zip",),
        archive_member="550000_net_G.pth",
        format="torch-state-dict",
        input_size=512,
        preprocessing="FFHQ-aligned RGB crop in [0,1]; identity = L2-normalised ArcFace embedding",
        licence=_NONCOMMERCIAL_SIMSWAP,
        size_mb=220,
    )
)
_register(
    ModelSpec(
        name="arcface-simswap",
        filename="arcface_checkpoint.tar",
        urls=(
            "https://github.com/neuralchen/SimSwap/releases/download/1.0/arcface_checkpoint.tar",
        ),
        format="pickled-module",
        input_size=112,
        preprocessing="aligned RGB crop resized to 112, ImageNet mean/std",
        licence=_NONCOMMERCIAL_SIMSWAP,
        size_mb=210,
    )
)
_register(
    ModelSpec(
        name="inswapper-128",
        filename="inswapper_128.onnx",
        urls=(
            "https://huggingface.co/hacksider/deep-live-cam/resolve/main/inswapper_128.onnx",
            "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/inswapper_128.onnx",
        ),
        format="onnx",
        input_size=128,
        preprocessing=(
            "arcface_128-aligned RGB crop in [0,1]; source latent = normalise(normalise(e) @ emap)"
        ),
        licence=_NONCOMMERCIAL_INSIGHTFACE,
        size_mb=554,
    )
)
_register(
    ModelSpec(
        name="w600k-r50",
        filename="w600k_r50.onnx",
        urls=(
            "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/arcface_w600k_r50.onnx",
        ),
        format="onnx",
        input_size=112,
        preprocessing="arcface_112_v2-aligned RGB crop, (x - 127.5) / 127.5",
        licence=_NONCOMMERCIAL_INSIGHTFACE,
        size_mb=174,
    )
)


def get_spec(name: str) -> ModelSpec:
    spec = REGISTRY.get(name)
    if spec is None:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}")
    return spec


def model_dir(configured: str = "") -> Path:
    """Where model files live: ``[models] dir`` if set, else ``$LIVSWAP_MODEL_DIR``, else the
    platform's user data folder (XDG on Linux, Application Support on macOS, LOCALAPPDATA on
    Windows)."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("LIVSWAP_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "livswap" / "models"
