"""The one place ONNX Runtime sessions are made, for generators and identity encoders alike, on
the device ``[engine] device`` resolved to."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from livswap.errors import EngineError, ModelError, first_line

__all__ = ["OrtSession", "ort_session"]


class OrtSession:
    """An ONNX Runtime session whose failures, at load or at any later call, are one-line
    :class:`ModelError`s naming the file (a crafted graph can be valid ONNX and still fail when
    run: a reshape to the wrong size, a node the provider lacks)."""

    def __init__(self, session: Any, path: Path, label: str) -> None:
        self._session = session
        self.path = path
        self.label = label

    def inputs(self) -> list[Any]:
        """The graph's inputs (``name``, ``shape``: ints or symbolic names)."""
        return list(self._session.get_inputs())

    def run(self, feeds: dict[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        try:
            outputs = self._session.run(None, feeds)
        except Exception as exc:
            raise ModelError(
                f"{self.label}: {self.path.name} failed when run: {_ort_reason(exc)}"
            ) from None
        return [np.asarray(o) for o in outputs]

    def expect_output(self, feeds: dict[str, npt.NDArray[Any]], shape: tuple[int, ...]) -> None:
        """Run once on ``feeds`` and check the first output's shape: a file that does not do
        what its name says fails at start-up, not at the first face."""
        got = self.run(feeds)
        if not got or tuple(got[0].shape) != shape:
            found = tuple(got[0].shape) if got else "nothing"
            raise ModelError(
                f"{self.label}: {self.path.name} gives {found} where {shape} was expected; "
                "not the model it is named as"
            )


def ort_session(path: Path, device: torch.device, label: str) -> OrtSession:
    """An ONNX Runtime session for ``path`` on ``device`` (CUDA provider on a CUDA device, the
    CPU provider otherwise); one-line errors name ``label`` and the file."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise EngineError(f"{label} needs ONNX Runtime: pip install 'livswap[onnx]'") from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineError(
                f"{label} on CUDA needs onnxruntime-gpu (pip install onnxruntime-gpu); "
                "or set engine.device = 'cpu'"
            )
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 4  # its errors reach the user once, as ModelErrors
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        raise ModelError(
            f"{label}: {path.name} cannot be loaded by ONNX Runtime: {_ort_reason(exc)}"
        ) from None
    return OrtSession(session, path, label)


def _ort_reason(exc: BaseException) -> str:
    """ONNX Runtime's message without its status prefix and source locations, kept short."""
    text = first_line(exc)
    for noise in ("[ONNXRuntimeError] : ", "FAIL : ", "INVALID_ARGUMENT : ", "INVALID_GRAPH : "):
        text = text.replace(noise, "")
    text = re.sub(r"\S*onnxruntime_src\S*\s(\S*::\S*\([^)]*\)\s*)?", "", text)
    text = re.sub(r"^\d+ : ", "", text)
    return text if len(text) <= 240 else text[:239] + "…"
