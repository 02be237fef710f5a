"""Neural engine speed: generator-only and full-frame time per engine, backend, precision and
frame size, with the peers' pipeline measured side by side.

    python -m benchmarks.engine [--engines simswap-224,inswapper-128] \
        [--backends eager,compile,tensorrt,onnxruntime] [--precisions fp16] \
        [--sizes 720p,1080p] [--iterations 30] --json engine.json --plot engine.png

Three timings per combination:
- generator: one aligned crop through the network (the device synchronised around it);
- full frame: what the product does per frame, through its own code: an engine stream's swap
  (crop, the batched generator) and the stream's compose (paste-back and fades), on the device
  path (:class:`livswap.cuda.DeviceFramePath`: one upload, crop and paste on the device, one
  download) on a GPU, or OpenCV on the CPU (``[compose] paste`` "auto");
- reference: what other tools do per frame: crop on the CPU with OpenCV, one generator call,
  download, paste-back on the CPU (:func:`livswap.compose.paste_on_cpu`).
The speed-up is reference / full frame, measured in the same process on the same weights.

Weights: each engine's network is built at its real size with random weights (speed does not
depend on their values), so the benchmark runs without any model file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from livswap.compose import Compositor, feather, paste_on_cpu
from livswap.config import Config, load_config
from livswap.cuda import describe_gpus
from livswap.engine.backends import GeneratorRunner, RunnerSpec, build_runner
from livswap.engine.base import Identity
from livswap.engine.models.inswapper import InswapperGenerator
from livswap.engine.models.simswap import SimSwapGenerator
from livswap.engine.neural import Latent, NeuralEngine
from livswap.errors import LivswapError
from livswap.frame import Frame, SwappedFace

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
NETWORKS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "simswap-224": (lambda: SimSwapGenerator("224"), 224),
    "simswap-512": (lambda: SimSwapGenerator("512"), 512),
    "inswapper-128": (lambda: InswapperGenerator(), 128),
}


@dataclass
class Row:
    engine: str
    backend: str
    precision: str
    size: str
    device: str
    generator_ms: float
    full_frame_ms: float
    reference_ms: float
    speedup: float
    build_s: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], object], iterations: int, device: torch.device) -> float:
    fn()  # warm-up outside the timing
    times = []
    for _ in range(iterations):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@dataclass(frozen=True)
class SyntheticFace:
    """Where the benchmark's one face is: its crop transform and paste-back alpha."""

    track_id: int
    to_crop: np.ndarray
    alpha: np.ndarray


def synthetic_frame(size: tuple[int, int], crop: int) -> tuple[np.ndarray, SyntheticFace]:
    """A textured frame with one face-sized square placed a little off-centre and tilted."""
    width, height = size
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    frame = cv2.resize(small, size, interpolation=cv2.INTER_LINEAR)
    face = 0.35 * height  # a webcam face: about a third of the frame height
    centre = (width * 0.55, height * 0.45)
    m = np.asarray(cv2.getRotationMatrix2D(centre, 8.0, crop / face), np.float64)
    m[:, 2] += crop / 2 - np.array([width * 0.55, height * 0.45])
    box = np.zeros((crop, crop), np.uint8)
    cv2.ellipse(box, (crop // 2, crop // 2), (crop * 3 // 8, crop * 7 // 16), 0, 0, 360, 255, -1)
    return np.ascontiguousarray(frame), SyntheticFace(0, m, feather(box, crop / 28))


class BenchEngine(NeuralEngine):
    """A neural engine around a random-weight network: the product's streams, batching,
    crop and paste-back, with the benchmark's synthetic face placement."""

    def __init__(self, name: str, runner: GeneratorRunner, crop: int, cfg: Config) -> None:
        self.name = name
        self.generator = runner
        self.device = runner.spec.device
        self.crop = crop
        self._start(cfg)

    def placement(self, face: SyntheticFace) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        return face.to_crop, face.alpha

    def target_regions(self) -> None:
        return None  # a synthetic face has no landmarks to look for glasses by


def measure(
    engine: str,
    backend: str,
    precision: str,
    sizes: list[str],
    device: torch.device,
    iterations: int,
    cache: Path,
) -> list[Row]:
    build, crop = NETWORKS[engine]
    spec = RunnerSpec(backend, precision, device)  # type: ignore[arg-type]
    torch.manual_seed(0)
    runner = build_runner(
        build().eval(), spec, crop=crop, cache_dir=cache, cache_key=f"bench-{engine}"
    )
    latent = torch.nn.functional.normalize(torch.randn(1, 512), dim=1).to(device)
    target = torch.rand(1, 3, crop, crop, device=device)
    generator_ms = _median_ms(lambda: runner(target, latent), iterations, device)
    cfg = load_config(None, {"engine.device": device.type})
    product = BenchEngine(engine, runner, crop, cfg)
    stream = product.open_stream(Identity(engine, "bench", Latent(latent)))
    compositor = Compositor(cfg.compose, None, fade=False, device_path=stream.device_path)
    rows = []
    for size in sizes:
        frame, face = synthetic_frame(SIZES[size], crop)

        def full_frame(frame: np.ndarray = frame, face: SyntheticFace = face) -> None:
            piped = Frame(image=frame, seq=0, captured_ns=0, pts=0.0)
            piped.faces = [face]
            stream.swap(piped)
            compositor.compose(piped)

        full_ms = _median_ms(full_frame, iterations, device)
        reference_ms = _median_ms(
            lambda: _reference(runner, frame, face, latent, crop, device),  # noqa: B023
            iterations,
            device,
        )
        rows.append(
            Row(
                engine,
                backend,
                precision,
                size,
                str(device),
                round(generator_ms, 2),
                round(full_ms, 2),
                round(reference_ms, 2),
                round(reference_ms / full_ms, 2),
                round(runner.build_seconds, 1),
            )
        )
        print(_format(rows[-1]), flush=True)
    stream.close()
    product.batcher.close()
    return rows


def _reference(
    runner: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    frame: np.ndarray,
    face: SyntheticFace,
    latent: torch.Tensor,
    crop: int,
    device: torch.device,
) -> None:
    """The peers' per-frame path: OpenCV crop, one generator call, CPU paste-back."""
    crop_img = cv2.warpAffine(frame, face.to_crop, (crop, crop), flags=cv2.INTER_LINEAR)
    x = torch.from_numpy(crop_img).permute(2, 0, 1)[None].to(device).float() / 255
    y = runner(x, latent)[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    swapped = (y * 255 + 0.5).astype(np.uint8)
    out = frame.copy()
    paste_on_cpu(out, SwappedFace(0, face.to_crop, face.alpha, crop=swapped), 1.0)


def _format(row: Row) -> str:
    return (
        f"{row.engine:14s} {row.backend:11s} {row.precision:5s} {row.size:6s} "
        f"generator {row.generator_ms:8.2f} ms  full frame {row.full_frame_ms:8.2f} ms  "
        f"reference {row.reference_ms:8.2f} ms  x{row.speedup:.2f}"
    )


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.engine}\n{r.backend} {r.precision}\n{r.size}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4.5))
    ax.bar(x - 0.27, [r.generator_ms for r in rows], 0.27, label="generator only")
    ax.bar(x, [r.full_frame_ms for r in rows], 0.27, label="full frame (livswap device path)")
    ax.bar(x + 0.27, [r.reference_ms for r in rows], 0.27, label="reference (CPU crop/paste)")
    for i, r in enumerate(rows):
        ax.annotate(f"x{r.speedup:.1f}", (i + 0.27, r.reference_ms), ha="center", va="bottom")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("ms per frame (lower is better)")
    ax.set_title(f"Swap engine time per frame on {rows[0].device}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="simswap-224,inswapper-128")
    parser.add_argument("--backends", default="eager,compile,onnxruntime")
    parser.add_argument("--precisions", default="auto", help="fp32,fp16,bf16 or auto")
    parser.add_argument("--sizes", default="720p,1080p")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--cache", type=Path, help="folder for compiled engines (default: temp)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    sizes = args.sizes.split(",")
    unknown = [s for s in sizes if s not in SIZES] + [
        e for e in args.engines.split(",") if e not in NETWORKS
    ]
    if unknown:
        parser.error(
            f"unknown size/engine {unknown}; sizes {list(SIZES)}, engines {list(NETWORKS)}"
        )
    cache = args.cache or Path(tempfile.mkdtemp(prefix="livswap-bench-"))
    rows: list[Row] = []
    skipped: list[str] = []
    for engine in args.engines.split(","):
        for backend in args.backends.split(","):
            for precision in args.precisions.split(","):
                if precision == "auto":
                    precision = (
                        "fp32" if device.type == "cpu" or backend == "onnxruntime" else "fp16"
                    )
                if backend == "onnxruntime" and precision != "fp32":
                    continue  # ORT runs the exported fp32 graph
                try:
                    rows += measure(
                        engine, backend, precision, sizes, device, args.iterations, cache
                    )
                except (LivswapError, RuntimeError) as exc:
                    reason = str(exc).strip().splitlines()[0]
                    skipped.append(f"{engine} {backend} {precision}: {reason}")
                    print(f"skipped {engine} {backend} {precision}: {reason}", flush=True)
    gpus = [g.describe() for g in describe_gpus()]
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": torch.get_num_threads(),
            "gpus": gpus,
            "torch": torch.__version__,
        },
        "weights": "random (speed does not depend on values)",
        "rows": [asdict(r) for r in rows],
        "skipped": skipped,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot and rows:
        plot(rows, args.plot)
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
