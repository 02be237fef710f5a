"""The one place ONNX Runtime sessions are made, for generators and identity encoders alike, on
the device ``[engine] device`` resolved to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from livswap.errors import EngineError, ModelError, first_line

__all__ = ["ort_session"]


def ort_session(path: Path, device: torch.device, label: str) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path`` on ``device`` (CUDA provider on a CUDA
    device, the CPU provider otherwise); one-line errors name ``label`` and the file."""
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
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        raise ModelError(
            f"{label}: {path.name} cannot be loaded by ONNX Runtime: {first_line(exc)}"
        ) from None
