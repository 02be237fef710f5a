"""The local model folder: fetch, import, verify and list model files.

A manifest (``manifest.json`` in the folder) pins each file's sha256 and size when it is
fetched or imported; ``verify`` re-hashes the files against it, so a truncated, replaced or
tampered file is reported by name.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from livswap.errors import ModelError
from livswap.models.download import download, sha256_of
from livswap.models.registry import REGISTRY, ModelSpec, get_spec
from livswap.models.safety import check_onnx, check_pickled_module, load_state_dict

__all__ = ["ModelStatus", "ModelStore"]

log = logging.getLogger(__name__)

_ONNX_INPUTS = {"inswapper-128": ("target", "source")}
_SIMSWAP_VARIANT = {"simswap-224": "224", "simswap-512": "512"}


@dataclass(frozen=True)
class ModelStatus:
    spec: ModelSpec
    path: Path
    present: bool
    problem: str | None = None


class ModelStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    def pinned(self, key: str) -> dict[str, object] | None:
        """What the manifest recorded for ``key`` (a registry name, or ``trained/NAME``)."""
        return self._manifest().get(key)

    def _manifest(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.manifest_path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"model manifest {self.manifest_path} is unreadable: {exc}") from None
        return data if isinstance(data, dict) else {}

    def _pin(self, spec: ModelSpec, path: Path, digest: str, origin: str) -> None:
        self.record(spec.name, spec.filename, path, digest, origin)

    def record(self, key: str, filename: str, path: Path, digest: str, origin: str) -> None:
        """Pin a file of the folder in the manifest: its sha256, size, where it came from."""
        manifest = self._manifest()
        manifest[key] = {
            "file": filename,
            "sha256": digest,
            "size": path.stat().st_size,
            "source": origin,
            "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        tmp.replace(self.manifest_path)

    def path(self, name: str) -> Path:
        return self.folder / get_spec(name).filename

    # -- checks -----------------------------------------------------------------------------
    @staticmethod
    def check_loadable(spec: ModelSpec, path: Path) -> None:
        """Open ``path`` as ``spec``'s format and check its structure; never runs its code."""
        label = f"model {spec.name}"
        if not path.is_file():
            raise ModelError(f"{label}: {path} does not exist")
        if path.stat().st_size == 0:
            raise ModelError(f"{label}: {path} is empty")
        if spec.format == "torch-state-dict":
            from livswap.engine.models.simswap import load_simswap

            state = load_state_dict(path, label)
            load_simswap(state, label, expect=_SIMSWAP_VARIANT.get(spec.name))  # type: ignore[arg-type]
        elif spec.format == "pickled-module":
            check_pickled_module(path, label)
        else:
            check_onnx(path, label, _ONNX_INPUTS.get(spec.name, ()))

    # -- operations -------------------------------------------------------------------------
    def fetch(self, name: str, urls: tuple[str, ...] | None = None) -> Path:
        spec = get_spec(name)
        dest = self.folder / spec.filename
        log.warning("%s: licence: %s", spec.name, spec.licence)
        digest = download(
            urls or spec.urls,
            dest,
            sha256=spec.sha256,
            archive_member=spec.archive_member,
            max_bytes=int(spec.size_mb * 3 * 2**20),
            label=spec.name,
        )
        try:
            self.check_loadable(spec, dest)
        except ModelError:
            dest.unlink(missing_ok=True)
            raise
        self._pin(spec, dest, digest, (urls or spec.urls)[0])
        return dest

    def import_file(self, name: str, source: Path) -> Path:
        """Check ``source`` loads as model ``name`` and copy it into the model folder."""
        spec = get_spec(name)
        self.check_loadable(spec, source)
        digest = sha256_of(source)
        if spec.sha256 is not None and digest != spec.sha256:
            raise ModelError(f"model {name}: {source} has sha256 {digest}, expected {spec.sha256}")
        self.folder.mkdir(parents=True, exist_ok=True)
        dest = self.folder / spec.filename
        staged = dest.with_name(dest.name + ".import")
        shutil.copyfile(source, staged)
        staged.replace(dest)
        self._pin(spec, dest, digest, str(source))
        return dest

    def status(self, name: str, *, deep: bool = False) -> ModelStatus:
        """Present and intact? ``deep`` re-hashes the file against the manifest."""
        spec = get_spec(name)
        path = self.folder / spec.filename
        if not path.exists():
            return ModelStatus(spec, path, present=False)
        pinned = self._manifest().get(name)
        if pinned is None:
            return ModelStatus(spec, path, True, "not in the manifest: run `livswap models import`")
        if path.stat().st_size != pinned.get("size"):
            return ModelStatus(
                spec,
                path,
                True,
                f"size {path.stat().st_size} bytes, expected "
                f"{pinned.get('size')} (truncated or replaced)",
            )
        if deep:
            digest = sha256_of(path)
            expected = spec.sha256 or pinned.get("sha256")
            if digest != expected:
                return ModelStatus(
                    spec,
                    path,
                    True,
                    f"sha256 {digest[:16]}..., expected {str(expected)[:16]}... (modified)",
                )
        return ModelStatus(spec, path, True)

    def verify(self, names: list[str] | None = None) -> list[ModelStatus]:
        return [self.status(n, deep=True) for n in (names or list(REGISTRY))]

    def require(self, name: str) -> Path:
        """The path of an intact model file, or a ModelError saying exactly how to get it."""
        st = self.status(name)
        if not st.present:
            raise ModelError(
                f"model {name} is not installed: run `livswap models fetch {name}`, or "
                f"`livswap models import {name} PATH` with a {st.spec.filename} you have "
                f"({st.spec.licence})"
            )
        if st.problem:
            raise ModelError(f"model {name} at {st.path}: {st.problem}")
        return st.path
