"""Many streams on one engine: N copies of a real clip through the real swap worker, against the
same N streams as independent one-stream workers.

    python -m benchmarks.streams --engine NAME --streams N --seconds S --input CLIP \
        --source PHOTO --json OUT [--plot OUT.png] [--random-weights] [--backend B] \
        [--precision P] [--no-independent] [--no-unbatched]

Each stream is fed the clip's frames at the clip's own rate, the streams' cameras out of phase
(real cameras are not in step), exactly as ``livswap serve`` feeds browser frames: I420 into the
worker's shared-memory rings, newest frame wins, swapped frames back. Three set-ups, one after
another on the same machine:

- shared: one worker, one engine, every stream's faces batched through one generator;
- unbatched (neural engines): the same, with ``[engine] max_batch = 1``;
- independent: N workers of one stream each (N engines, nothing shared).

Reported (JSON): ``streams``, ``per_stream`` (``fps``, ``latency_ms`` p50/p99 from hand-over to
the worker until the swapped frame is back), ``aggregate_fps`` (swapped frames per second over
all streams: faces per second, one face each), ``batch_sizes`` (generator calls per bucket),
``unbatched_aggregate_fps``, ``independent_aggregate_fps``, and per set-up details, among them
the machine's idle and steal time while it was measured (set-ups run one after another: compare
them only at similar steal). The first ``--warmup`` seconds (engine start, first compiles) are
not counted.

``--random-weights`` runs a neural engine at its full size on random weights, written in the
official file formats to a temporary model folder (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import psutil

from benchmarks.machine import cpu_shares
from livswap.capture import read_image
from livswap.config import Config, load_config
from livswap.engine import ENGINES
from livswap.errors import LivswapError
from livswap.runloop import run_async
from livswap.stats import PipelineStats, percentiles
from livswap.worker import RemoteStream, SwapWorker
from livswap.worker.messages import OpenStream


def read_clip(path: Path, size: tuple[int, int], limit: int) -> tuple[list[av.VideoFrame], float]:
    """Up to ``limit`` frames of the clip, scaled and cropped to ``size``, as I420 video frames
    ready to send, and the clip's frame rate."""
    width, height = size
    frames: list[av.VideoFrame] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 30)
        for decoded in container.decode(stream):
            rgb = decoded.to_ndarray(format="rgb24")
            scale = max(width / rgb.shape[1], height / rgb.shape[0])
            resized = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            y0 = (resized.shape[0] - height) // 2
            x0 = (resized.shape[1] - width) // 2
            crop = np.ascontiguousarray(resized[y0 : y0 + height, x0 : x0 + width])
            # I420 by OpenCV: a PyAV reformat would keep a threaded scaler alive per frame.
            i420 = np.asarray(cv2.cvtColor(crop, cv2.COLOR_RGB2YUV_I420), np.uint8)
            frames.append(av.VideoFrame.from_ndarray(i420, format="yuv420p"))
            if len(frames) >= limit:
                break
    if not frames:
        raise SystemExit(f"benchmarks.streams: {path} has no video frames")
    return frames, fps


@dataclass
class SetupResult:
    name: str
    per_stream: list[dict[str, Any]]
    aggregate_fps: float
    batch_sizes: dict[str, int]
    faces_generated: int
    cpu_percent: float
    rss_mb: float
    machine: dict[str, float]  # the machine's idle and steal while it was measured


def stream_result(stats: PipelineStats, seconds: float) -> dict[str, Any]:
    latency = percentiles(stats.latency_ms, (50, 99))
    return {
        "fps": round(stats.frames_out / seconds, 2),
        "latency_ms": {"p50": round(latency["p50"], 1), "p99": round(latency["p99"], 1)},
        "frames_in": stats.frames_in,
        "frames_out": stats.frames_out,
        "failed": stats.frames_failed,
    }


async def run_setup(
    name: str,
    workers: Sequence[SwapWorker],
    streams_per_worker: int,
    image: np.ndarray,
    engine: str,
    frames: list[av.VideoFrame],
    fps: float,
    args: argparse.Namespace,
) -> SetupResult:
    """Feed every stream of every worker for ``warmup + seconds``; count after the warm-up."""
    remotes: list[RemoteStream] = []
    for w, worker in enumerate(workers):
        await worker.prepare("source", engine, image)
        for s in range(streams_per_worker):
            stream_id = w * streams_per_worker + s
            remote = RemoteStream(
                worker,
                stream_id,
                OpenStream(stream_id, engine, "source", image),
                deliver=lambda video: None,
                label=None,
            )
            await remote.open()
            remotes.append(remote)
    interval, seconds = 1.0 / fps, args.seconds
    count = len(remotes)
    start = time.monotonic()
    measured_from = start + args.warmup
    end = measured_from + seconds
    process = psutil.Process()
    children: list[psutil.Process] = []
    reset = False
    counted_from: list[dict[str, Any]] = []
    tick = 0
    while True:
        now = time.monotonic()
        if not reset and now >= measured_from:
            for remote in remotes:
                remote.stats = PipelineStats()
            children = process.children(recursive=True)
            for child in children:
                child.cpu_percent(None)
            counted_from = [await worker.stats() for worker in workers]
            machine_from = psutil.cpu_times()
            reset = True
        if now >= end:
            machine = cpu_shares(machine_from, psutil.cpu_times())
            break
        # Stream i's camera ticks at (tick + i / count) intervals: out of phase, like cameras.
        for i, remote in enumerate(remotes):
            due = start + (tick + i / count) * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            remote.send(frames[tick % len(frames)])
        tick += 1
    await asyncio.sleep(0.5)  # the last frames come back
    cpu = sum(_cpu(child) for child in children)
    rss = sum(_rss(child) for child in children)
    faces = 0
    batches: dict[str, int] = {}
    for worker, before in zip(workers, counted_from, strict=True):
        after = (await worker.stats()).get(engine, {})
        earlier = before.get(engine, {})
        for size, calls in after.get("batch_sizes", {}).items():
            done = calls - int(earlier.get("batch_sizes", {}).get(size, 0))
            batches[size] = batches.get(size, 0) + done
        faces += int(after.get("faces", 0)) - int(earlier.get("faces", 0))
    per_stream = [stream_result(remote.stats, seconds) for remote in remotes]
    for remote in remotes:
        remote.close()
    total = sum(s["fps"] for s in per_stream)
    print(
        f"{name:12s} {count:3d} streams: {total:7.2f} faces/s in all, per stream "
        f"{np.median([s['fps'] for s in per_stream]):6.2f} fps, latency p50 "
        f"{np.median([s['latency_ms']['p50'] for s in per_stream]):7.1f} ms, batches "
        f"{ {k: v for k, v in batches.items() if v} }, machine steal "
        f"{machine['machine_steal_pct']:.1f}%",
        flush=True,
    )
    return SetupResult(
        name,
        per_stream,
        round(total, 2),
        {k: v for k, v in batches.items() if v},
        faces,
        round(cpu, 1),
        round(rss / 2**20, 1),
        machine,
    )


def _cpu(proc: psutil.Process) -> float:
    try:
        return float(proc.cpu_percent(None))
    except psutil.Error:
        return 0.0


def _rss(proc: psutil.Process) -> float:
    try:
        return float(proc.memory_info().rss)
    except psutil.Error:
        return 0.0


async def measure(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    image = read_image(args.source, "source photo")
    frames, fps = read_clip(args.input, args.size, limit=10 * 30)
    results: dict[str, SetupResult] = {}
    setups: list[tuple[str, list[Config], int]] = [("shared", [cfg], args.streams)]
    neural = args.engine not in ("mesh", "passthrough")
    if neural and not args.no_unbatched:
        setups.append(("unbatched", [cfg.replace({"engine.max_batch": 1})], args.streams))
    if not args.no_independent:
        setups.append(("independent", [cfg] * args.streams, 1))
    for name, configs, per_worker in setups:
        workers = [SwapWorker(c) for c in configs]
        try:
            for worker in workers:
                worker.start()
            results[name] = await run_setup(
                name,
                workers,
                per_worker,
                image,
                args.engine,
                frames,
                fps,
                args,
            )
        finally:
            for worker in workers:
                worker.close()
    shared = results["shared"]
    report: dict[str, Any] = {
        "engine": args.engine,
        "backend": cfg.engine.backend,
        "precision": cfg.engine.precision,
        "streams": args.streams,
        "seconds": args.seconds,
        "clip": {"path": str(args.input), "fps": fps, "size": list(args.size)},
        "per_stream": shared.per_stream,
        "aggregate_fps": shared.aggregate_fps,
        "batch_sizes": shared.batch_sizes,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": psutil.cpu_count(),
        },
        "setups": {name: vars(result) for name, result in results.items()},
    }
    if "unbatched" in results:
        report["unbatched_aggregate_fps"] = results["unbatched"].aggregate_fps
    if "independent" in results:
        report["independent_aggregate_fps"] = results["independent"].aggregate_fps
        independent = results["independent"].aggregate_fps
        report["shared_vs_independent"] = (
            round(shared.aggregate_fps / independent, 2) if independent else None
        )
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setups = report["setups"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = list(setups)
    left.bar(names, [setups[n]["aggregate_fps"] for n in names], color="tab:blue")
    left.set_ylabel("swapped faces per second, all streams")
    left.set_title(f"{report['engine']}, {report['streams']} streams")
    for name in names:
        latencies = [s["latency_ms"]["p50"] for s in setups[name]["per_stream"]]
        right.plot(range(len(latencies)), latencies, "o-", label=name)
    right.set_xlabel("stream")
    right.set_ylabel("latency p50 (ms)")
    right.legend()
    if report["batch_sizes"]:
        sizes = report["batch_sizes"]
        right.set_title("shared batches: " + ", ".join(f"{k}x{v}" for k, v in sizes.items()))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def random_weight_models(engine: str, folder: Path) -> Path:
    """Full-size random weights in the official formats, installed into a new model folder."""
    from livswap.models import ModelStore
    from tests import checkpoints

    store = ModelStore(folder / "models")
    if engine.startswith("simswap"):
        variant = engine.removeprefix("simswap-")
        writer = (
            checkpoints.write_simswap_224 if variant == "224" else checkpoints.write_simswap_512
        )
        store.import_file(engine, writer(folder / "generator.pth"))
        store.import_file("arcface-simswap", checkpoints.write_release_arcface(folder / "arc.tar"))
    elif engine == "inswapper-128":
        from livswap.engine.models.inswapper import FULL_BLOCKS, FULL_WIDTHS

        swapper = checkpoints.write_inswapper_torch_onnx(
            folder / "inswapper_128.onnx", widths=FULL_WIDTHS, blocks=FULL_BLOCKS
        )
        store.import_file("inswapper-128", swapper)
        store.import_file("w600k-r50", checkpoints.write_w600k_onnx(folder / "w600k_r50.onnx"))
    else:
        raise SystemExit(f"benchmarks.streams: no random weights for engine {engine!r}")
    return store.folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="mesh", choices=list(ENGINES))
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--input", type=Path, required=True, help="a video clip (each stream)")
    parser.add_argument("--source", required=True, help="source photo (every stream)")
    parser.add_argument("--size", default="640x480", help="camera size WxH (default 640x480)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--no-independent", action="store_true")
    parser.add_argument("--no-unbatched", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    width, _, height = args.size.partition("x")
    args.size = (int(width), int(height))
    overrides: dict[str, Any] = {
        "engine.name": args.engine,
        "engine.backend": args.backend,
        "engine.precision": args.precision,
        "engine.device": args.device,
        "output.label": True,
        "pipeline.log_level": "warning",
    }
    temp = tempfile.TemporaryDirectory(prefix="livswap-streams-")
    if args.random_weights:
        overrides["models.dir"] = str(random_weight_models(args.engine, Path(temp.name)))
    try:
        cfg = load_config(None, overrides)
        report = run_async(lambda: measure(args, cfg))
    except LivswapError as exc:
        print(f"benchmarks.streams: {exc}")
        return 2
    finally:
        temp.cleanup()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
