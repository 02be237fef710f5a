"""Checks that a model file is what it claims to be, without ever executing code from it."""

from __future__ import annotations

import pickletools
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from livswap.errors import ModelError

__all__ = ["check_onnx", "check_pickled_module", "load_state_dict"]

# Globals a whole-module PyTorch pickle of a plain network may reference: torch's own tensor
# rebuild helpers and layer classes, and the model's own classes (data, never called by us).
_ALLOWED_PREFIXES = (
    "torch.",
    "collections.OrderedDict",
    "models.",
    "arcface_models.",
    "__builtin__.set",
    "builtins.set",
)
_ALLOWED_EXACT = {
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.FloatStorage",
    "collections.OrderedDict",
}
_FORBIDDEN = (
    "os.",
    "posix.",
    "nt.",
    "subprocess.",
    "builtins.eval",
    "builtins.exec",
    "__builtin__.eval",
    "builtins.getattr",
    "builtins.__import__",
    "sys.",
    "socket.",
    "shutil.",
    "importlib.",
    "runpy.",
    "pty.",
)


def _pickle_globals(data: bytes) -> list[str]:
    """Every GLOBAL / STACK_GLOBAL a pickle references, read from its opcodes (no execution)."""
    found: list[str] = []
    strings: list[str] = []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(str(arg))
        elif opcode.name == "GLOBAL":
            found.append(str(arg).replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.append(f"{strings[-2]}.{strings[-1]}")
    return found


def check_pickled_module(path: Path, label: str) -> list[str]:
    """Validate a ``torch.save``d whole module (a zip with a pickle) by reading its opcodes.

    Returns the classes it references. Raises :class:`ModelError` if the file is not such an
    archive, or if the pickle references anything that could run code (os, subprocess, eval...).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not pickles:
                raise ModelError(f"{label}: {path.name} has no data.pkl: not a PyTorch checkpoint")
            data = archive.read(pickles[0])
    except zipfile.BadZipFile:
        raise ModelError(
            f"{label}: {path.name} is not a PyTorch checkpoint archive "
            "(truncated or a different format)"
        ) from None
    try:
        referenced = _pickle_globals(data)
    except Exception as exc:
        raise ModelError(f"{label}: {path.name}: the pickle is damaged ({exc})") from None
    for name in referenced:
        if name.startswith(_FORBIDDEN) or not (
            name in _ALLOWED_EXACT or name.startswith(_ALLOWED_PREFIXES)
        ):
            raise ModelError(
                f"{label}: {path.name} refers to {name!r}, which could run code; "
                "refusing to load it"
            )
    return referenced


def load_state_dict(path: Path, label: str) -> Mapping[str, Any]:
    """``torch.load(weights_only=True)``: tensors only, no code from the file ever runs."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # junk makes the unpickler fail any way (IndexError, KeyError...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{label}: {path.name} is not a loadable PyTorch state dict "
            f"(truncated, tampered or a whole pickled module): {first}"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelError(
            f"{label}: {path.name} holds {type(state).__name__}, expected a state dict of tensors"
        )
    return state


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
