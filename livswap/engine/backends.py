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
import numpy.typing as npt
import torch
from torch import nn

from livswap.config import EngineConfig
from livswap.errors import EngineError, ModelError

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

    ``runner(target, latent)``: ``target`` is (B, 3, S, S) in [0, 1] and ``latent`` (B, L), one
    identity per item, both on ``spec.device`` in any float dtype; the result is (B, 3, S, S)
    fp32 in [0, 1] on the same device. Compiled backends specialise on B: callers use the fixed
    buckets of :mod:`livswap.engine.batching`, so each bucket is built once, when first seen.
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
        runner = _tensorrt(module, spec, cache_dir / f"{key}-trt{_trt_version()}", example)
    else:
        path = onnx_file or _export_onnx(module, cache_dir / f"{cache_key}-{crop}-b.onnx", crop)
        runner = _onnxruntime(path, spec)
    runner(*example)  # first call: compiles / loads kernels now rather than on the first frame
    runner.build_seconds = time.perf_counter() - started
    log.info("generator ready: %s (%.1f s)", spec.describe(), runner.build_seconds)
    return runner


def onnx_runner(path: Path, spec: RunnerSpec, crop: int, latent_size: int) -> GeneratorRunner:
    """Run a model's own ONNX file (inputs ``target`` and ``source``) with ONNX Runtime, tried
    once on a blank face so that a file which does not fit fails now, in one line."""
    started = time.perf_counter()
    runner = _onnxruntime(path, spec)
    blank = torch.zeros(1, 3, crop, crop, device=spec.device)
    out = runner(blank, torch.zeros(1, latent_size, device=spec.device))
    if tuple(out.shape) != (1, 3, crop, crop):
        raise ModelError(
            f"engine.backend 'onnxruntime': {path.name} gives {tuple(out.shape)} for a "
            f"{crop}x{crop} face; expected (1, 3, {crop}, {crop})"
        )
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
    module: nn.Module, spec: RunnerSpec, stem: Path, example: tuple[torch.Tensor, torch.Tensor]
) -> GeneratorRunner:
    try:
        import torch_tensorrt
    except ImportError:
        raise EngineError(
            "engine.backend 'tensorrt' needs Torch-TensorRT: pip install 'livswap[tensorrt]'"
        ) from None
    model = module.to(spec.device, spec.dtype)
    engines: dict[int, Any] = {}  # one engine per batch bucket, built (or loaded) when first used

    def engine_for(target: torch.Tensor, latent: torch.Tensor) -> Any:
        batch = int(target.shape[0])
        if batch in engines:
            return engines[batch]
        path = stem.with_name(f"{stem.name}-b{batch}.ep")
        if path.exists():
            log.info("loading the TensorRT engine %s", path)
            engines[batch] = torch_tensorrt.load(str(path)).module()
            return engines[batch]
        log.info("building a TensorRT engine for batch %d (minutes, once): %s", batch, path)
        inputs = [target.to(spec.dtype), latent.to(spec.dtype)]
        # Torch-TensorRT >= 2.13 is strongly typed: the graph's own dtypes (fp16 convs, the
        # explicit fp32 norm statistics) decide each layer's precision.
        built = torch_tensorrt.compile(model, ir="dynamo", arg_inputs=inputs, min_block_size=1)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch_tensorrt.save(built, str(partial), arg_inputs=inputs)
        os.replace(partial, path)
        engines[batch] = built
        return built

    engine_for(*example)

    def call(target: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        trt_module = engine_for(target, latent)
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
    # The batch axis stays free, so one graph serves every batch bucket.
    batch = {0: "batch"}
    torch.onnx.export(
        model,
        args,
        str(partial),
        input_names=["target", "source"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"target": batch, "source": batch, "output": batch},
    )
    os.replace(partial, path)
    return path


def _onnxruntime(path: Path, spec: RunnerSpec) -> GeneratorRunner:
    from livswap.engine.onnx import ort_session

    session = ort_session(path, spec.device, "engine.backend 'onnxruntime'")
    inputs = session.inputs()
    names = [i.name for i in inputs]
    target_name, source_name = (
        ("target", "source") if {"target", "source"} <= set(names) else (names[0], names[1])
    )
    # A graph saved with batch 1 fixed (inswapper's own file) runs a batch item by item.
    fixed_batch = next(i.shape[0] for i in inputs if i.name == target_name) == 1

    def run(target: torch.Tensor, latent: torch.Tensor) -> npt.NDArray[np.float32]:
        feeds = {
            target_name: target.float().cpu().numpy(),
            source_name: latent.float().cpu().numpy(),
        }
        return np.asarray(session.run(feeds)[0], np.float32)

    def call(target: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        if fixed_batch and target.shape[0] > 1:
            out = np.concatenate(
                [run(t[None], z[None]) for t, z in zip(target, latent, strict=True)]
            )
        else:
            out = run(target, latent)
        return torch.from_numpy(out).to(spec.device)

    return GeneratorRunner(spec, call)
