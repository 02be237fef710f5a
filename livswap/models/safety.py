"""Checks that a model file is what it claims to be, without ever executing code from it."""

from __future__ import annotations

import pickle
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from livswap.errors import ModelError, first_line

__all__ = [
    "InertModule",
    "check_archive",
    "check_onnx",
    "check_pickled_module",
    "load_pickled_module",
    "load_safetensors",
    "load_state_dict",
    "module_state",
    "restricted_pickle_module",
]

# The only globals a whole-module checkpoint may name, found through ``find_class`` (the one
# way a pickle reaches any callable, memo tricks included): torch's tensor rebuilders and
# storages, plain containers, and layer classes, which become inert stand-ins.
_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("collections", "OrderedDict"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("__builtin__", "object"),
    ("builtins", "set"),
    ("__builtin__", "set"),
    ("torch", "Size"),
}
_INERT_MODULES = ("torch.nn.modules.", "models.", "arcface_models.")
_MAX_PICKLE_BYTES = 64 * 2**20  # a network's structure pickles to kilobytes
_MAX_MEMBER_BYTES = 4 * 2**30  # no weights file livswap knows has a member this large


class InertModule:
    """Stands in for any layer class while unpickling: records state, has no behaviour."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def restricted_pickle_module(label: str, filename: str, referenced: list[str]) -> Any:
    """A ``pickle_module`` for ``torch.load`` whose unpickler resolves only :data:`_ALLOWED`
    globals (and turns layer classes into :class:`InertModule` subclasses); every global the
    pickle names is appended to ``referenced``. Anything else is a :class:`ModelError`."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            referenced.append(f"{module}.{name}")
            if (module, name) in _ALLOWED or (module == "torch" and name.endswith("Storage")):
                return super().find_class(module, name)
            if module.startswith(_INERT_MODULES) or module in ("models", "arcface_models"):
                return type(name, (InertModule,), {"__module__": module})
            raise ModelError(
                f"{label}: {filename} refers to '{module}.{name}', which could run code; "
                "refusing to load it"
            )

    class Module:
        pass

    Module.Unpickler = Unpickler  # type: ignore[attr-defined]
    Module.load = pickle.load  # type: ignore[attr-defined]
    Module.__name__ = "livswap_restricted_pickle"
    return Module


def check_archive(path: Path, label: str) -> None:
    """A PyTorch zip archive whose members are what they declare: each is inflated in chunks
    and counted as it comes (a member may lie about its size, and zipfile's CRC check catches
    one whose bytes differ from its record), under a cap per member; the pickle has its own
    small cap. Not a zip (a legacy checkpoint): nothing to check here."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                pickle_member = info.filename.endswith(".pkl")
                cap = _MAX_PICKLE_BYTES if pickle_member else _MAX_MEMBER_BYTES
                if info.file_size > cap:
                    raise ModelError(
                        f"{label}: {path.name}: member {info.filename!r} declares "
                        f"{_size_text(info.file_size)}; refusing it"
                    )
                with archive.open(info) as member:
                    total = 0
                    while chunk := member.read(2**20):
                        total += len(chunk)
                        if total > cap:
                            raise ModelError(
                                f"{label}: {path.name}: {info.filename!r} inflates past "
                                f"{_size_text(cap)}; not a weights file"
                            )
                if total != info.file_size:
                    raise ModelError(
                        f"{label}: {path.name}: member {info.filename!r} declares "
                        f"{info.file_size} bytes but holds {total}; the archive is damaged"
                    )
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        zlib.error,
        ValueError,  # a member name that is not the UTF-8 its flag says
        NotImplementedError,  # a compression method zipfile lacks
        RuntimeError,  # an encrypted member
    ) as exc:
        raise ModelError(f"{label}: {path.name} is a damaged archive: {first_line(exc)}") from None


def _size_text(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size // 2**20} MiB"


def load_pickled_module(path: Path, label: str) -> tuple[Any, list[str]]:
    """A ``torch.save``d whole module through the restricted unpickler: its (inert) root and
    the globals it named. No code from the file runs."""
    import torch

    if not zipfile.is_zipfile(path):
        raise ModelError(
            f"{label}: {path.name} is not a PyTorch checkpoint archive "
            "(truncated or a different format)"
        )
    check_archive(path, label)
    referenced: list[str] = []
    try:
        root = torch.load(
            path,
            map_location="cpu",
            weights_only=False,
            pickle_module=restricted_pickle_module(label, path.name, referenced),
        )
    except ModelError:
        raise
    except Exception as exc:  # any failure of a damaged or hostile file: refused, one line
        raise ModelError(f"{label}: {path.name} could not be read: {first_line(exc)}") from None
    return root, referenced


def check_pickled_module(path: Path, label: str) -> list[str]:
    """Validate a ``torch.save``d whole module by loading it through the restricted unpickler
    (the same gate the conversion uses). Returns the classes it references."""
    _, referenced = load_pickled_module(path, label)
    return sorted(set(referenced))


def module_state(node: Any, prefix: str = "") -> dict[str, Any]:
    """The parameters and buffers of an inert module tree, by their state-dict names."""
    import torch

    out: dict[str, Any] = {}
    state = node.state if isinstance(node, InertModule) else None
    if not isinstance(state, Mapping):
        return out
    for group in ("_parameters", "_buffers"):
        for key, value in (state.get(group) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + key] = value.detach().clone()
    for key, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(module_state(child, f"{prefix}{key}."))
    return out


def load_state_dict(path: Path, label: str) -> Mapping[str, Any]:
    """``torch.load(weights_only=True)``: tensors only, no code from the file ever runs."""
    import torch

    check_archive(path, label)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # junk makes the unpickler fail any way (IndexError, KeyError...)
        raise ModelError(
            f"{label}: {path.name} is not a loadable PyTorch state dict "
            f"(truncated, tampered or a whole pickled module): {first_line(exc)}"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelError(
            f"{label}: {path.name} holds {type(state).__name__}, expected a state dict of tensors"
        )
    return state


def load_safetensors(path: Path, label: str) -> dict[str, Any]:
    """A safetensors file's tensors (the format holds nothing that runs); a damaged header or
    body is a one-line :class:`ModelError` naming the file."""
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path)))
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ModelError(
            f"{label}: {path.name} is not a readable safetensors file: {first_line(exc)}"
        ) from None


def check_onnx(path: Path, label: str, inputs: tuple[str, ...] = ()) -> None:
    """Parse an ONNX file (needs the ``onnx`` extra) and check its input names."""
    try:
        import onnx
    except ImportError:
        with path.open("rb") as f:
            head = f.read(2)
        if not head or head[0] != 0x08:  # protobuf field 1 (ir_version), varint
            raise ModelError(f"{label}: {path.name} is not an ONNX model") from None
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{label}: {path.name} is not a valid ONNX model: {exc}") from None
    _refuse_external_data(model, path, label)
    names = {i.name for i in model.graph.input}
    missing = [n for n in inputs if n not in names]
    if missing:
        raise ModelError(f"{label}: {path.name} lacks inputs {missing}; it has {sorted(names)}")


def _refuse_external_data(model: Any, path: Path, label: str) -> None:
    """The models livswap knows are single files: a tensor stored in another file (which a
    loader would open, wherever its path points: ``../../etc/passwd``, a symlink) is refused."""
    import onnx

    def tensors() -> Any:
        yield from model.graph.initializer
        for node in model.graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors

    for tensor in tensors():
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise ModelError(
                f"{label}: {path.name} keeps tensor {tensor.name!r} in another file ({where!r}); "
                "livswap loads only self-contained model files"
            )
