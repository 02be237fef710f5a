"""``livswap doctor``: what this machine has for livswap, and how to fix what is missing."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import TextIO

from livswap.capture import list_cameras
from livswap.config import Config
from livswap.engine import ENGINES, missing_for

__all__ = ["run_doctor"]

_PACKAGES = (
    "torch",
    "numpy",
    "opencv-contrib-python",
    "mediapipe",
    "av",
    "aiortc",
    "pyvirtualcam",
    "uvloop",
    "onnxruntime",
    "cuda-python",
    "torch-tensorrt",
)
_OPTIONAL = {
    "onnxruntime": "pip install 'livswap[onnx]'",
    "cuda-python": "pip install 'livswap[gpu]'",
    "torch-tensorrt": "pip install 'livswap[tensorrt]' (CUDA machines only)",
    "uvloop": "pip install uvloop (not available on Windows; asyncio is used instead)",
}


def _check_virtual_camera(cfg: Config) -> tuple[bool, str]:
    import pyvirtualcam

    from livswap.output.virtualcam import virtual_camera_help

    try:
        with pyvirtualcam.Camera(
            width=640,
            height=480,
            fps=30,
            backend=None
            if cfg.output.virtualcam_backend == "auto"
            else cfg.output.virtualcam_backend,
            device=cfg.output.virtualcam_device or None,
        ) as cam:
            return True, f"{cam.device} ({cam.backend})"
    except (RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        return False, f"{reason}\n      fix: {virtual_camera_help()}"


def _check_gpu() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    from livswap.cuda.device import describe_gpus

    gpus = describe_gpus()
    if not gpus:
        return False, "no CUDA device (the built-in 'mesh' engine runs on the CPU)"
    detail = "; ".join(gpu.describe() for gpu in gpus)
    if not torch.cuda.is_available():
        return False, f"{detail}; but this torch build has no CUDA (install a CUDA torch wheel)"
    return True, f"{detail}; torch CUDA {torch.version.cuda}"


def run_doctor(cfg: Config, out: TextIO) -> int:
    def line(ok: bool, what: str, detail: str) -> None:
        out.write(f"  [{'ok' if ok else '--'}] {what}: {detail}\n")

    out.write(
        f"livswap doctor (Python {platform.python_version()}, {sys.platform}, "
        f"{platform.machine()})\n\npackages\n"
    )
    for name in _PACKAGES:
        try:
            line(True, name, importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            line(False, name, f"not installed; {_OPTIONAL.get(name, 'pip install -e .')}")
    out.write("\ncameras\n")
    cameras = list_cameras()
    if cameras:
        for cam in cameras:
            line(True, "camera", cam)
    else:
        line(False, "camera", "none found; plug in a webcam, or use --input VIDEO|IMAGE|pattern")
    out.write("\nvirtual camera\n")
    ok, detail = _check_virtual_camera(cfg)
    line(ok, "virtual camera", detail)
    out.write("\nGPU\n")
    ok, detail = _check_gpu()
    line(ok, "GPU", detail)
    out.write("\nengines\n")
    for spec in ENGINES.values():
        default = " (default)" if spec.name == cfg.engine.name else ""
        missing = missing_for(spec, cfg)
        detail = spec.summary if not missing else "not ready, needs " + "; ".join(missing)
        line(not missing, spec.name + default, detail)
    out.write("\nmodel files\n")
    from livswap.models import REGISTRY, ModelStore, model_dir

    store = ModelStore(model_dir(cfg.models.dir))
    line(True, "folder", str(store.folder))
    for name in REGISTRY:
        st = store.status(name)
        if st.present and st.problem is None:
            line(True, name, "installed")
        elif st.present:
            line(False, name, f"{st.problem}; fix: livswap models fetch {name}")
        else:
            line(
                False,
                name,
                f"not installed (optional; the built-in 'mesh' engine needs none); "
                f"get it with: livswap models fetch {name}",
            )
    return 0
