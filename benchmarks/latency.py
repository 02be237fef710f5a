"""End-to-end latency benchmark: a video file replayed as a camera through the real pipeline.

    python benchmarks/latency.py --input VIDEO [--engine NAME] [--size WxH] [--seconds N]
        --json OUT.json [--plot OUT.png]

The file is decoded and paced at its own frame rate (looping if --seconds is longer than the
clip), runs through ``livswap.session.build_run`` exactly as ``livswap`` builds it, and ends in a
sink that copies each frame out (the cost of a virtual camera write). Latency is capture
timestamp to output written. The first --warmup seconds are left out of the figures.
``hand_detection`` gives how many frames the hand model ran on and its time there (the hand
stage's median over all frames is mostly the frames it skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from benchmarks.machine import cpu_shares
from livswap.capture import VideoFileSource
from livswap.config import load_config
from livswap.frame import Frame
from livswap.output import NullSink
from livswap.runloop import run_async
from livswap.session import build_run
from livswap.track.hands import MODEL_TIMING


@dataclass
class Sample:
    captured_s: float
    latency_ms: float
    timings_ms: dict[str, float]


def _pcts(values: list[float], qs: tuple[int, ...]) -> dict[str, float]:
    if not values:
        return {f"p{q}": float("nan") for q in qs}
    arr = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(arr, q)), 3) for q in qs}


async def measure(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {"engine.name": args.engine, "capture.pacing": "realtime"}
    if args.source:
        overrides["engine.source"] = args.source
    cfg = load_config(args.config, overrides)
    source = VideoFileSource(args.input, realtime=True, loop=True, size=args.size)
    samples: list[Sample] = []
    t0 = 0  # when frames start to flow: the warm-up counts from there, not from the set-up

    def on_output(frame: Frame) -> None:
        samples.append(
            Sample((frame.captured_ns - t0) / 1e9, frame.age_ms(), dict(frame.timings_ms))
        )

    proc = psutil.Process()
    rss_start = proc.memory_info().rss / 2**20
    run = build_run(cfg, sinks=[NullSink()], source=source, on_output=on_output)
    cpu_start, machine_start = proc.cpu_times(), psutil.cpu_times()
    wall_start = time.monotonic()
    # Preparing the source photo takes seconds; a warm-up counted from before it would be over
    # before the first frame, and the first frames (models loading) would count.
    t0 = time.monotonic_ns()
    loop = asyncio.get_running_loop()
    loop.call_later(args.seconds + args.warmup, run.pipeline.stop)
    stats = await run.pipeline.run()
    wall = time.monotonic() - wall_start
    cpu_end, machine_end = proc.cpu_times(), psutil.cpu_times()
    cpu = (cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)
    rss_end = proc.memory_info().rss / 2**20

    kept = [s for s in samples if s.captured_s >= args.warmup]
    stages = sorted({k for s in kept for k in s.timings_ms})
    span = (kept[-1].captured_s - kept[0].captured_s) if len(kept) > 1 else float("nan")
    stage_ms = {
        st: _pcts([s.timings_ms[st] for s in kept if st in s.timings_ms], (50, 95)) for st in stages
    }
    # The hand stage looks only every few frames while no hand is near: its median over all
    # frames hides what a look costs (and what the frames it ran on wait for).
    looks = sum(MODEL_TIMING in s.timings_ms for s in kept)
    result: dict[str, object] = {
        "input": str(args.input),
        "engine": args.engine,
        "size": f"{source.info.width}x{source.info.height}",
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "fps_in": round(stats.fps_in, 3),
        "fps_out": round((len(kept) - 1) / span, 3) if len(kept) > 1 else 0.0,
        "frames_in": stats.frames_in,
        "frames_out": stats.frames_out,
        "frames_dropped": stats.frames_dropped,
        "frames_failed": stats.frames_failed,
        "frames_no_face": stats.frames_no_face,
        "dropped_by_slot": stats.dropped_by_slot,
        "latency_ms": _pcts([s.latency_ms for s in kept], (50, 95, 99))
        | {"max": round(max((s.latency_ms for s in kept), default=float("nan")), 3)},
        "stage_ms": stage_ms,
        "hand_detection": {
            "frames": looks,
            "share_of_frames": round(looks / len(kept), 3) if kept else 0.0,
        }
        | stage_ms.get(MODEL_TIMING, _pcts([], (50, 95))),
        "cpu_percent": round(100 * cpu / wall, 1),
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_end": round(rss_end, 1),
        "machine": {"cpus": psutil.cpu_count(), "python": sys.version.split()[0]}
        | cpu_shares(machine_start, machine_end),
    }
    if args.plot:
        plot(samples, args.warmup, stages, result, Path(args.plot))
    return result


def plot(
    samples: list[Sample], warmup: float, stages: list[str], result: dict[str, object], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), height_ratios=[3, 2])
    t = [s.captured_s for s in samples]
    top.plot(t, [s.latency_ms for s in samples], lw=0.8, label="end-to-end")
    bottom_acc = np.zeros(len(samples))
    # Stages that ran at the same time ("swap+hands") are stacked as one: their parts overlap.
    parts = {part for stage in stages if "+" in stage for part in stage.split("+")}
    parts.add(MODEL_TIMING)  # inside the hand stage's time
    for stage in (s for s in stages if s not in parts):
        values = np.array([s.timings_ms.get(stage, 0.0) for s in samples])
        top.fill_between(t, bottom_acc, bottom_acc + values, alpha=0.35, label=stage)
        bottom_acc += values
    top.axvspan(0, warmup, color="grey", alpha=0.15, label="warm-up (excluded)")
    top.set_xlabel("capture time (s)")
    top.set_ylabel("ms")
    lat = result["latency_ms"]
    assert isinstance(lat, dict)
    top.set_title(
        f"{result['engine']} on {Path(str(result['input'])).name} {result['size']}: "
        f"fps in {result['fps_in']}, out {result['fps_out']}, latency p50 "
        f"{lat['p50']} ms, p99 {lat['p99']} ms"
    )
    top.legend(loc="upper right", fontsize=8)
    kept = [s for s in samples if s.captured_s >= warmup]
    data = [[s.timings_ms[st] for s in kept if st in s.timings_ms] for st in stages] + [
        [s.latency_ms for s in kept]
    ]
    bottom.boxplot(data, showfliers=False)
    bottom.set_xticks(range(1, len(data) + 1), [*stages, "end-to-end"])
    bottom.set_ylabel("ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--input", required=True, type=Path, help="video file to replay as a camera")
    p.add_argument("--engine", default="passthrough")
    p.add_argument("--source", action="append", help="source photo (engines that swap need one)")
    p.add_argument(
        "--size",
        type=lambda s: tuple(int(v) for v in s.lower().split("x")),
        help="rescale frames to WxH",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="measured duration (after warm-up)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds left out at the start")
    p.add_argument("--config", help="config.toml to start from")
    p.add_argument("--json", required=True, type=Path, help="where to write the results")
    p.add_argument("--plot", type=Path, help="PNG of latency over time and per stage")
    args = p.parse_args()
    result = run_async(lambda: measure(args))
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "fps_in",
                    "fps_out",
                    "frames_dropped",
                    "latency_ms",
                    "hand_detection",
                    "cpu_percent",
                    "machine",
                )
            }
        )
    )


if __name__ == "__main__":
    main()
