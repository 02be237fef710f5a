"""How a swap generator runs: eager PyTorch, ``torch.compile``, Torch-TensorRT or ONNX Runtime,
at fp32, fp16 or bf16, on the CPU or a CUDA device.

Every backend is wrapped in one :class:`GeneratorRunner` with the same call contract, so the
engines, the GPU frame path and ``benchmarks/engine.py`` never branch on the backend. Compiled
artefacts (TensorRT engines, exported ONNX graphs, Inductor's kernel cache) are kept under the
model store's cache folder, keyed by the weights' hash and everything that changes the build.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from livswap.config import EngineConfig
from livswap.errors import EngineError

__all__ = [
    "BackendName",
    "GeneratorRunner",
    "PrecisionName",
    "RunnerSpec",
    "build_runner",
    "onnx_runner",
    "resolve_spec",
]

log = logging.getLogger(__name__)

BackendName = Literal["eager", "compile", "tensorrt", "onnxruntime"]
PrecisionName = Literal["fp32", "fp16", "bf16"]
DTYPES: dict[PrecisionName, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


@dataclass(frozen=True)
class RunnerSpec:
    """A resolved backend choice: nothing left on "auto"."""

    backend: BackendName
    precision: PrecisionName
    device: torch.device

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    def describe(self) -> str:
        return f"{self.backend} {self.precision} on {self.device}"


def resolve_spec(cfg: EngineConfig, *, default_backend: BackendName = "eager") -> RunnerSpec:
    """Turn ``[engine] device/backend/precision`` into a concrete, checked choice.

    "auto" device is CUDA when present; "auto" precision is fp16 on CUDA (the norm statistics
    stay fp32 inside the networks) and fp32 on the CPU; "auto" backend is the engine's default.
    """
    has_cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not has_cuda:
        raise EngineError("engine.device is 'cuda' but no CUDA device is available")
    device = torch.device("cuda" if cfg.device != "cpu" and has_cuda else "cpu")
    backend: BackendName = default_backend if cfg.backend == "auto" else cfg.backend
    precision: PrecisionName
    if cfg.precision == "auto":
        precision = "fp16" if device.type == "cuda" and backend != "onnxruntime" else "fp32"
    else:
        precision = cfg.precision
    if backend == "tensorrt" and device.type != "cuda":
        raise EngineError("engine.backend 'tensorrt' needs a CUDA device; this run is on the CPU")
    if backend == "onnxruntime" and precision != "fp32":
        raise EngineError(
            f"engine.precision {precision!r} does not apply to backend 'onnxruntime', which runs "
            "the model file's own precision; use precision = 'fp32' or 'auto'"
        )
    if device.type == "cpu" and precision == "fp16":
        log.warning("fp16 on the CPU is slow; bf16 or fp32 are the CPU precisions")
    return RunnerSpec(backend, precision, device)


class GeneratorRunner:
    """Calls a generator the same way whatever the backend.

    ``runner(target, latent)``: ``target`` is (1, 3, S, S) in [0, 1] and ``latent`` (1, L), both
    on ``spec.device`` in any float dtype; the result is (1, 3, S, S) fp32 in [0, 1] on the same
    device. Shapes are fixed at build time (compiled backends specialise on them), so faces go
    through one at a time.
    """

    def __init__(
        self, spec: RunnerSpec, call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> None:
        self.spec = spec
        self._call = call
        self.build_seconds = 0.0

    def __call__(self, target: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._call(target, latent)


def build_runner(
    module: nn.Module,
    spec: RunnerSpec,
    *,
    crop: int,
    cache_dir: Path,
    cache_key: str,
    latent_size: int = 512,
    onnx_file: Path | None = None,
) -> GeneratorRunner:
    """Build ``module`` (an fp32 generator in eval mode) for ``spec``.

    ``cache_key`` names the weights (e.g. ``simswap-224-<sha16>``); compiled artefacts are cached
    under ``cache_dir`` with it. ``onnx_file`` is the model's own ONNX file, used as is by the
    ONNX Runtime backend instead of exporting ``module``.
    """
    started = time.perf_counter()
    module = module.eval()
    example = (
        torch.rand(1, 3, crop, crop, device=spec.device, dtype=spec.dtype),
        torch.nn.functional.normalize(torch.randn(1, latent_size), dim=1).to(
            spec.device, spec.dtype
        ),
    )
    key = f"{cache_key}-{crop}-{spec.precision}-{spec.device.type}"
    if spec.backend == "eager":
        runner = _eager(module, spec)
    elif spec.backend == "compile":
        runner = _compiled(module, spec, cache_dir, example)
    elif spec.backend == "tensorrt":
        runner = _tensorrt(module, spec, cache_dir / f"{key}-trt{_trt_version()}.ep", example)
    else:
        path = onnx_file or _export_onnx(module, cache_dir / f"{cache_key}-{crop}.onnx", crop)
        runner = _onnxruntime(path, spec)
    runner(*example)  # first call: compiles / loads kernels now rather than on the first frame
    runner.build_seconds = time.perf_counter() - started
    log.info("generator ready: %s (%.1f s)", spec.describe(), runner.build_seconds)
    return runner


def onnx_runner(path: Path, spec: RunnerSpec) -> GeneratorRunner:
    """Run a model's own ONNX file (inputs ``target`` and ``source``) with ONNX Runtime."""
    started = time.perf_counter()
    runner = _onnxruntime(path, spec)
    runner.build_seconds = time.perf_counter() - started
    return runner


def _eager(module: nn.Module, spec: RunnerSpec) -> GeneratorRunner:
    model = module.to(spec.device, spec.dtype)

    def call(target: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = model(target.to(spec.dtype), latent.to(spec.dtype))
        return out.float()

    return GeneratorRunner(spec, call)


def _compiled(
    module: nn.Module,
    spec: RunnerSpec,
    cache_dir: Path,
    example: tuple[torch.Tensor, torch.Tensor],
) -> GeneratorRunner:
    # Inductor reads its cache folder from the environment when it first needs it; pointing it
    # into the model store makes compiled kernels survive restarts next to the weights.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir / "inductor"))
    model = module.to(spec.device, spec.dtype)
    # On CUDA: autotuned Triton kernels and CUDA graphs; shapes are fixed per face crop.
    mode = "max-autotune" if spec.device.type == "cuda" else None
    compiled: Any = torch.compile(model, mode=mode, fullgraph=True, dynamic=False)
    log.info("compiling the generator (the first time takes minutes; cached afterwards)")

    def call(target: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = compiled(target.to(spec.dtype), latent.to(spec.dtype))
        # CUDA-graph replays reuse their output buffer: copy out before the next call.
        return out.float().clone() if spec.device.type == "cuda" else out.float()

    return GeneratorRunner(spec, call)


def _trt_version() -> str:
    try:
        import torch_tensorrt
    except ImportError:
        return ""
    return str(getattr(torch_tensorrt, "__version__", ""))


def _tensorrt(
    module: nn.Module, spec: RunnerSpec, path: Path, example: tuple[torch.Tensor, torch.Tensor]
) -> GeneratorRunner:
    try:
        import torch_tensorrt
    except ImportError:
        raise EngineError(
            "engine.backend 'tensorrt' needs Torch-TensorRT: pip install 'livswap[tensorrt]'"
        ) from None
    if path.exists():
        log.info("loading the TensorRT engine %s", path)
        trt_module: Any = torch_tensorrt.load(str(path)).module()
    else:
        log.info("building a TensorRT engine (minutes, once); it is saved as %s", path)
        model = module.to(spec.device, spec.dtype)
        # Torch-TensorRT >= 2.13 is strongly typed: the graph's own dtypes (fp16 convs, the
        # explicit fp32 norm statistics) decide each layer's precision.
        trt_module = torch_tensorrt.compile(
            model, ir="dynamo", arg_inputs=list(example), min_block_size=1
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch_tensorrt.save(trt_module, str(partial), arg_inputs=list(example))
        os.replace(partial, path)

    def call(target: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = trt_module(target.to(spec.dtype), latent.to(spec.dtype))
        return out.float()

    return GeneratorRunner(spec, call)


def _export_onnx(module: nn.Module, path: Path, crop: int) -> Path:
    """Export an fp32 copy of ``module`` once; inputs ``target`` and ``source`` as inswapper's."""
    if path.exists():
        return path
    log.info("exporting the generator to ONNX (once): %s", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = module.to("cpu", torch.float32)
    args = (torch.rand(1, 3, crop, crop), torch.nn.functional.normalize(torch.randn(1, 512)))
    partial = path.with_name(path.name + ".partial")
    # The TorchScript exporter: the dynamo one needs onnxscript, which livswap does not require.
    torch.onnx.export(
        model,
        args,
        str(partial),
        input_names=["target", "source"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
    )
    os.replace(partial, path)
    return path


def _onnxruntime(path: Path, spec: RunnerSpec) -> GeneratorRunner:
    try:
        import onnxruntime as ort
    except ImportError:
        raise EngineError(
            "engine.backend 'onnxruntime' needs ONNX Runtime: pip install 'livswap[onnx]'"
        ) from None
    providers = ["CPUExecutionProvider"]
    if spec.device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineError(
                "engine.backend 'onnxruntime' on CUDA needs onnxruntime-gpu "
                "(pip install onnxruntime-gpu); or set engine.device = 'cpu'"
            )
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=providers)
    names = [i.name for i in session.get_inputs()]
    target_name, source_name = (
        ("target", "source") if {"target", "source"} <= set(names) else (names[0], names[1])
    )

    def call(target: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        feeds = {
            target_name: target.float().cpu().numpy(),
            source_name: latent.float().cpu().numpy(),
        }
        out = np.asarray(session.run(None, feeds)[0], np.float32)
        return torch.from_numpy(out).to(spec.device)

    return GeneratorRunner(spec, call)
