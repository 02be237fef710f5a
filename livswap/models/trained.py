"""Generators trained with ``livswap train``: safetensors files in the model folder's
``trained/`` directory, each with a small metadata record (architecture, resolution, network
configuration, identity encoder, a hash of the training data) and pinned by sha256 in the
manifest like every other model file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livswap.errors import ModelError
from livswap.models.download import sha256_of
from livswap.models.safety import load_safetensors
from livswap.models.store import ModelStore

__all__ = ["TrainedModel", "find_trained", "load_trained", "save_trained", "trained_models"]

ARCHITECTURES = ("styleswap", "simswap")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class TrainedModel:
    name: str
    path: Path
    arch: str
    resolution: int
    network: dict[str, Any]  # the generator's constructor settings
    identity_encoder: str  # the registry name of the encoder it was trained with
    data_sha256: str
    steps: int
    created: str


def _key(name: str) -> str:
    return f"trained/{name}"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ModelError(
            f"model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64), "
            "starting with a letter or digit"
        )
    return name


def save_trained(
    store: ModelStore,
    name: str,
    state: dict[str, Any],
    *,
    arch: str,
    resolution: int,
    network: dict[str, Any],
    identity_encoder: str,
    data_sha256: str,
    steps: int,
    created: str,
) -> Path:
    """Write the generator's weights as ``trained/NAME.safetensors`` (complete or not at all)
    and pin it in the manifest."""
    from safetensors.torch import save_file

    check_name(name)
    if arch not in ARCHITECTURES:
        raise ModelError(f"architecture {arch!r}: expected one of {', '.join(ARCHITECTURES)}")
    folder = store.folder / "trained"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    partial = folder / f".{name}.safetensors.partial"
    metadata = {
        "livswap_arch": arch,
        "resolution": str(resolution),
        "network": json.dumps(network, sort_keys=True),
        "identity_encoder": identity_encoder,
        "data_sha256": data_sha256,
        "steps": str(steps),
        "created": created,
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, path)
    store.record(_key(name), f"trained/{path.name}", path, sha256_of(path), "livswap train")
    return path


def _read(path: Path) -> TrainedModel:
    from safetensors import safe_open

    name = path.name.removesuffix(".safetensors")
    label = f"trained model {name!r}"
    try:
        with safe_open(str(path), framework="pt") as f:  # type: ignore[no-untyped-call]
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ModelError(f"{label}: {path} is not a readable safetensors file: {exc}") from None
    try:
        return TrainedModel(
            name=name,
            path=path,
            arch=meta["livswap_arch"],
            resolution=int(meta["resolution"]),
            network=json.loads(meta["network"]),
            identity_encoder=meta["identity_encoder"],
            data_sha256=meta.get("data_sha256", ""),
            steps=int(meta.get("steps", "0")),
            created=meta.get("created", ""),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(
            f"{label}: {path.name} lacks livswap's metadata ({exc}); not made by livswap train"
        ) from None


def trained_models(store: ModelStore, arch: str | None = None) -> list[TrainedModel]:
    """The trained models in the folder (of ``arch``), oldest first."""
    folder = store.folder / "trained"
    found = []
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            model = _read(path)
        except ModelError:
            continue  # said when it is asked for by name
        if arch is None or model.arch == arch:
            found.append(model)
    return sorted(found, key=lambda m: (m.created, m.name))


def find_trained(store: ModelStore, arch: str, name: str = "") -> TrainedModel:
    """The trained model ``name``, or with no name the only (or newest) one of ``arch``."""
    if name:
        check_name(name)
        path = store.folder / "trained" / f"{name}.safetensors"
        if not path.is_file():
            known = [m.name for m in trained_models(store, arch)]
            raise ModelError(
                f"no trained model {name!r} in {store.folder / 'trained'}; "
                + (f"there are: {', '.join(known)}" if known else _how_to_train(arch))
            )
        model = _read(path)
        if model.arch != arch:
            raise ModelError(f"trained model {name!r} is a {model.arch} model, not {arch}")
        return model
    models = trained_models(store, arch)
    if not models:
        raise ModelError(
            f"no trained {arch} model in {store.folder / 'trained'}: {_how_to_train(arch)}"
        )
    return models[-1]


def load_trained(store: ModelStore, model: TrainedModel) -> tuple[dict[str, Any], str]:
    """Its weights and sha256, after checking the file against the sha256 pinned when it was
    written."""
    pinned = store.pinned(_key(model.name))
    label = f"trained model {model.name!r}"
    if pinned is None:
        raise ModelError(f"{label}: {model.path.name} is not in the manifest; train it again")
    digest = sha256_of(model.path)
    if digest != pinned.get("sha256"):
        raise ModelError(
            f"{label}: {model.path.name} has changed since it was trained (sha256 {digest[:12]}…, "
            f"recorded {str(pinned.get('sha256'))[:12]}…); train it again"
        )
    return load_safetensors(model.path, label), digest


def _how_to_train(arch: str) -> str:
    return f"train one with `livswap train --arch {arch} --data PHOTOS_OR_VIDEOS --name NAME`"
