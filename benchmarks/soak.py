"""Long runs: does anything grow or drift? The live pipeline with a video looped as a camera,
and ``livswap serve`` with two browser peers (real aiortc clients), each for a given time.

    python -m benchmarks.soak --input clip.mp4 --source me.jpg [--minutes 10] \
        [--part live|serve|both] [--engine mesh] --json soak.json [--plot soak.png]

Every minute: resident memory (RSS, of the process and, for serve, of the swap worker too),
open file descriptors, threads, frames out and the latency p50/p99 of that minute. Reported: the
per-minute rows, the RSS growth after the first minute (warm-up: models load, caches fill) in
percent, the slope of each series per minute (least squares), and the last minute's p99 over the
second minute's (drift).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from livswap.config import load_config
from livswap.frame import Frame
from livswap.output import NullSink
from livswap.runloop import run_async
from livswap.session import build_run
from livswap.stats import percentiles


class MinuteLog:
    """Samples of one part of the soak, a row per minute."""

    def __init__(
        self,
        name: str,
        processes: Callable[[], list[psutil.Process]],
        pull: Callable[[], list[float]] | None = None,
    ) -> None:
        self.name = name
        self.processes = processes
        self.pull = pull  # latencies recorded elsewhere since the last call
        self.rows: list[dict[str, float]] = []
        self.latencies: list[float] = []
        self.frames = 0
        self.started = time.monotonic()

    def frame(self, latency_ms: float) -> None:
        self.latencies.append(latency_ms)
        self.frames += 1

    def close_minute(self) -> None:
        if self.pull is not None:
            fresh = self.pull()
            self.latencies += fresh
            self.frames += len(fresh)
        rss = fds = threads = 0
        for proc in self.processes():
            try:
                rss += proc.memory_info().rss
                fds += proc.num_fds()
                threads += proc.num_threads()
            except psutil.Error:
                continue
        lat = percentiles(self.latencies, (50, 99))
        row = {
            "minute": len(self.rows) + 1,
            "rss_mb": round(rss / 2**20, 1),
            "fds": fds,
            "threads": threads,
            "frames": self.frames,
            "latency_p50_ms": round(lat["p50"], 1),
            "latency_p99_ms": round(lat["p99"], 1),
        }
        self.rows.append(row)
        print(f"{self.name:5s} " + "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        self.latencies, self.frames = [], 0

    def report(self) -> dict[str, Any]:
        rows = self.rows
        out: dict[str, Any] = {"rows": rows}
        if len(rows) >= 2:
            first, last = rows[0], rows[-1]
            out["rss_growth_after_first_minute_pct"] = round(
                100 * (last["rss_mb"] - first["rss_mb"]) / max(first["rss_mb"], 1e-9), 2
            )
            minutes = np.array([r["minute"] for r in rows], np.float64)
            for key in ("rss_mb", "fds", "threads", "latency_p50_ms", "latency_p99_ms"):
                values = np.array([r[key] for r in rows], np.float64)
                out[f"{key}_slope_per_min"] = round(float(np.polyfit(minutes, values, 1)[0]), 3)
            second = rows[1]["latency_p99_ms"]
            out["last_p99_over_second_p99"] = round(last["latency_p99_ms"] / max(second, 1e-9), 3)
        return out


async def minutes_of(log: MinuteLog, minutes: float, stop: Callable[[], None]) -> None:
    end = time.monotonic() + minutes * 60
    while time.monotonic() < end:
        await asyncio.sleep(min(60.0, end - time.monotonic()))
        log.close_minute()
    stop()


async def soak_live(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(
        None,
        {
            "engine.name": args.engine,
            "engine.source": [args.source],
            "capture.input": str(args.input),
            "capture.pacing": "realtime",
            "capture.loop": True,
            "pipeline.log_level": "warning",
        },
    )
    log = MinuteLog("live", lambda: [psutil.Process()])

    def on_output(frame: Frame) -> None:
        log.frame(frame.age_ms())

    run = build_run(cfg, sinks=[NullSink()], on_output=on_output)
    timer = asyncio.create_task(minutes_of(log, args.minutes, run.pipeline.stop))
    stats = await run.pipeline.run()
    timer.cancel()
    return {**log.report(), "frames_in": stats.frames_in, "frames_out": stats.frames_out}


async def soak_serve(args: argparse.Namespace) -> dict[str, Any]:
    """``livswap serve`` in this process, two aiortc peers sending the clip."""
    import aiohttp
    import av
    from aiohttp import web
    from aiortc import (
        RTCConfiguration,
        RTCPeerConnection,
        RTCSessionDescription,
        VideoStreamTrack,
    )

    from benchmarks.streams import read_clip

    frames = [f.to_ndarray(format="rgb24") for f in read_clip(args.input, (640, 480), 300)[0]]

    class LoopedCamera(VideoStreamTrack):
        """The clip's frames over and over at 30 fps, as a browser's camera sends them
        (aiortc's MediaPlayer stops sending after its first loop)."""

        def __init__(self) -> None:
            super().__init__()
            self.index = 0

        async def recv(self) -> av.VideoFrame:
            pts, time_base = await self.next_timestamp()
            out = av.VideoFrame.from_ndarray(frames[self.index % len(frames)], format="rgb24")
            self.index += 1
            out.pts, out.time_base = pts, time_base
            return out

    from livswap.webrtc.server import Server, create_app, enable_loopback_candidates

    cfg = load_config(None, {"engine.name": args.engine, "pipeline.log_level": "warning"})
    enable_loopback_candidates()
    server = Server(cfg)
    runner = web.AppRunner(create_app(server))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"

    def processes() -> list[psutil.Process]:
        me = psutil.Process()
        return [me, *me.children(recursive=True)]

    seen: dict[int, int] = {}

    def pull() -> list[float]:
        """Latencies the server recorded per peer (browser frame in to swapped frame out)."""
        fresh: list[float] = []
        for peer_id, peer in server.peers.items():
            values = list(peer.remote.stats.latency_ms)
            total = peer.remote.stats.frames_out
            new = total - seen.get(peer_id, 0)
            seen[peer_id] = total
            fresh += values[-new:] if new > 0 else []
        return fresh

    log = MinuteLog("serve", processes, pull)
    peers: list[RTCPeerConnection] = []
    readers: list[asyncio.Task[None]] = []
    done = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as http:
            form = aiohttp.FormData()
            form.add_field("file", Path(args.source).read_bytes(), filename="me.jpg")
            async with http.post(f"{url}/sources", data=form) as r:
                source_id = (await r.json())["id"]
            for _ in range(2):
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pc.addTrack(LoopedCamera())

                @pc.on("track")
                def _track(track: Any) -> None:
                    async def read() -> None:  # a browser showing the swapped video
                        while not done.is_set():
                            frame: av.VideoFrame = await track.recv()
                            del frame

                    readers.append(asyncio.create_task(read()))

                await pc.setLocalDescription(await pc.createOffer())
                offer = {"sdp": pc.localDescription.sdp, "type": "offer", "source": source_id}
                async with http.post(f"{url}/offer", json={**offer, "engine": args.engine}) as r:
                    await pc.setRemoteDescription(RTCSessionDescription(**await r.json()))
                peers.append(pc)
            await minutes_of(log, args.minutes, done.set)
            # The server's own per-peer latency (browser frame in to swapped frame out).
            latencies = [
                float(np.median(list(p.remote.stats.latency_ms)))
                for p in server.peers.values()
                if p.remote.stats.latency_ms
            ]
    finally:
        for task in readers:
            task.cancel()
        for pc in peers:
            await pc.close()
        await runner.cleanup()
    return {**log.report(), "server_median_latency_ms": latencies}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("live", "serve") if p in report and report[p]["rows"]]
    fig, axes = plt.subplots(len(parts), 3, figsize=(13, 3.4 * len(parts)), squeeze=False)
    for row, part in zip(axes, parts, strict=True):
        rows = report[part]["rows"]
        minutes = [r["minute"] for r in rows]
        row[0].plot(minutes, [r["rss_mb"] for r in rows], "o-")
        row[0].set_ylabel("RSS (MB)")
        row[1].plot(minutes, [r["fds"] for r in rows], "o-", label="open fds")
        row[1].plot(minutes, [r["threads"] for r in rows], "s-", label="threads")
        row[1].legend()
        row[2].plot(minutes, [r["latency_p50_ms"] for r in rows], "o-", label="p50")
        row[2].plot(minutes, [r["latency_p99_ms"] for r in rows], "s-", label="p99")
        row[2].set_ylabel("latency (ms)")
        row[2].legend()
        for ax in row:
            ax.set_xlabel("minute")
            ax.set_title(part)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="a video clip, looped")
    parser.add_argument("--source", required=True, help="source photo")
    parser.add_argument("--engine", default="mesh")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--part", choices=["live", "serve", "both"], default="both")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"minutes": args.minutes, "engine": args.engine}
    if args.part in ("live", "both"):
        report["live"] = run_async(lambda: soak_live(args))
    if args.part in ("serve", "both"):
        report["serve"] = run_async(lambda: soak_serve(args))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
