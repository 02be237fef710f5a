"""Generator backends: the same numbers from eager PyTorch, torch.compile and ONNX Runtime, and
clear errors for choices that cannot run here."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from livswap.config import load_config
from livswap.engine.backends import RunnerSpec, build_runner, resolve_spec
from livswap.engine.models.simswap import SimSwapGenerator
from livswap.errors import EngineError

CPU = torch.device("cpu")
CROP = 64  # the generator is fully convolutional: a small crop keeps compiling quick


@pytest.fixture(scope="module")
def small_generator() -> SimSwapGenerator:
    torch.manual_seed(0)
    return SimSwapGenerator("224", blocks=2).eval()


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    target = torch.rand(1, 3, CROP, CROP)
    latent = torch.nn.functional.normalize(torch.randn(1, 512), dim=1)
    return target, latent


def run(
    module: torch.nn.Module,
    backend: str,
    precision: str,
    inputs: tuple[torch.Tensor, torch.Tensor],
    cache: Path,
) -> torch.Tensor:
    spec = RunnerSpec(backend, precision, CPU)  # type: ignore[arg-type]
    # build_runner takes ownership of the module (moves/casts it): give each backend a copy.
    crop = inputs[0].shape[-1]
    runner = build_runner(copy.deepcopy(module), spec, crop=crop, cache_dir=cache, cache_key="t")
    out = runner(*inputs)
    assert out.dtype == torch.float32 and out.shape == (1, 3, crop, crop)
    return out


def test_backends_agree_on_the_cpu(
    small_generator: SimSwapGenerator, inputs: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    eager = run(small_generator, "eager", "fp32", inputs, tmp_path)
    ort = run(small_generator, "onnxruntime", "fp32", inputs, tmp_path)
    compiled = run(small_generator, "compile", "fp32", inputs, tmp_path)
    assert eager.std().item() > 0.01  # a real, non-constant picture to compare
    assert (ort - eager).abs().max().item() < 1e-4
    assert (compiled - eager).abs().max().item() < 1e-4
    # The exported graph is cached: a second ONNX Runtime build reuses the file.
    exported = list(tmp_path.glob("*.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    run(small_generator, "onnxruntime", "fp32", inputs, tmp_path)
    assert exported[0].stat().st_mtime_ns == stamp


def test_bfloat16_keeps_norm_statistics_faithful(
    small_generator: SimSwapGenerator, inputs: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    small = (inputs[0][..., ::2, ::2].contiguous(), inputs[1])  # bf16 convs are slow on CPUs
    eager = run(small_generator, "eager", "fp32", small, tmp_path)
    half = run(small_generator, "eager", "bf16", small, tmp_path)
    assert (half - eager).abs().mean().item() < 0.01
    # A constant input makes constant channels, whose variance is 0: eps must survive.
    flat = (torch.full_like(small[0], 0.5), small[1])
    assert torch.isfinite(run(small_generator, "eager", "bf16", flat, tmp_path)).all()


def test_resolve_spec_defaults_and_refusals() -> None:
    engine = load_config().engine
    spec = resolve_spec(dataclasses.replace(engine, device="cpu"))
    assert (spec.backend, spec.precision, spec.device.type) == ("eager", "fp32", "cpu")
    spec = resolve_spec(dataclasses.replace(engine, device="cpu"), default_backend="onnxruntime")
    assert spec.backend == "onnxruntime"
    with pytest.raises(EngineError, match="'tensorrt' needs a CUDA device"):
        resolve_spec(dataclasses.replace(engine, device="cpu", backend="tensorrt"))
    with pytest.raises(EngineError, match="precision 'fp16' does not apply"):
        resolve_spec(
            dataclasses.replace(engine, device="cpu", backend="onnxruntime", precision="fp16")
        )
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA device"):
            resolve_spec(dataclasses.replace(engine, device="cuda"))


@pytest.mark.skipif(
    importlib.util.find_spec("torch_tensorrt") is not None, reason="Torch-TensorRT is installed"
)
def test_tensorrt_not_installed_names_the_extra(
    small_generator: SimSwapGenerator, tmp_path: Path
) -> None:
    spec = RunnerSpec("tensorrt", "fp16", CPU)
    with pytest.raises(EngineError, match=r"pip install 'livswap\[tensorrt\]'"):
        build_runner(small_generator, spec, crop=CROP, cache_dir=tmp_path, cache_key="t")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_matches_fp32(
    small_generator: SimSwapGenerator, inputs: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    cuda = torch.device("cuda")
    cuda_inputs = (inputs[0].to(cuda), inputs[1].to(cuda))
    outs = {}
    for precision in ("fp32", "fp16"):
        runner = build_runner(
            copy.deepcopy(small_generator),
            RunnerSpec("eager", precision, cuda),  # type: ignore[arg-type]
            crop=CROP,
            cache_dir=tmp_path,
            cache_key="t",
        )
        outs[precision] = runner(*cuda_inputs)
    assert (outs["fp16"] - outs["fp32"]).abs().mean().item() < 0.01
