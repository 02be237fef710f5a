"""Browser end-to-end benchmark: headless Chromium <-> `livswap serve` over WebRTC.

    python benchmarks/browser.py --camera VIDEO_OR_PHOTO --source PHOTO [--engine mesh]
        [--seconds 20] --json OUT.json [--screenshot OUT.png]

The camera clip (640x480, 30 fps) is Chromium's fake webcam, with each frame's index written
into its top-left corner. In bench mode the page notes when each index is displayed in the local
preview and when the same index is displayed in the returned video: that difference is the
latency through encode, network, the server pipeline, decode, jitter buffer and render (it leaves
out the camera-to-local-preview time, about one frame). Frames per second are the browser's
decoded frames of the returned track.

Everything runs on this machine, so the report also says how many cores each part used over the
measured window (the server's network process, its swap worker, the browser, the Playwright
driver) and how much CPU the hypervisor took away ("steal"): on a shared virtual machine a busy
neighbour shows up there, and the figures of such a run are not comparable with a quiet one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import psutil

from benchmarks.chromium import chromium, free_port, livswap_server, write_y4m
from benchmarks.machine import cpu_shares


def camera_frames(path: Path, count: int) -> list[np.ndarray]:
    if path.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".bmp"}:
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise SystemExit(f"camera {path}: not an image")
        from tests.media import moving_frames

        photo = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.uint8)
        return moving_frames(photo, count, (640, 480))
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            # A webcam's 640x480 is 4:3: crop the middle rather than squash a wider clip.
            rgb = frame.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            crop_w = min(w, h * 4 // 3)
            x0 = (w - crop_w) // 2
            rgb = np.ascontiguousarray(rgb[:, x0 : x0 + crop_w])
            frames.append(cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_AREA))
            if len(frames) >= count:
                break
    return frames


STAMP_BITS, STAMP_BLOCK = 10, 16  # must match app.js


def stamp_indices(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Write each frame's index into its top-left corner as black/white blocks (see app.js)."""
    stamped = []
    for index, frame in enumerate(frames):
        frame = frame.copy()
        for bit in range(STAMP_BITS):
            value = 255 if (index >> bit) & 1 else 0
            frame[:STAMP_BLOCK, bit * STAMP_BLOCK : (bit + 1) * STAMP_BLOCK] = value
        stamped.append(frame)
    return stamped


class CpuMeter:
    """Cores used per part of the benchmark, and the machine's steal, between start and stop."""

    def __init__(self, server_pid: int) -> None:
        self.server = psutil.Process(server_pid)
        self.me = psutil.Process()

    def _groups(self) -> dict[str, list[psutil.Process]]:
        workers = self.server.children(recursive=True)
        ours = {self.server.pid, *(p.pid for p in workers)}
        others = [p for p in self.me.children(recursive=True) if p.pid not in ours]
        browser = [p for p in others if "chrom" in p.name().lower()]
        return {
            "server": [self.server],
            "swap_worker": workers,
            "browser": browser,
            "harness": [self.me, *(p for p in others if p not in browser)],
        }

    def _sample(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for group, procs in self._groups().items():
            total = 0.0
            for proc in procs:
                try:
                    times = proc.cpu_times()
                    total += times.user + times.system
                except psutil.Error:  # gone meanwhile
                    pass
            totals[group] = total
        return totals

    def start(self) -> None:
        self._t0, self._cpu0, self._machine0 = time.monotonic(), self._sample(), psutil.cpu_times()

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._t0
        cpu, machine = self._sample(), psutil.cpu_times()
        cores = {f"{k}_cores": round((cpu[k] - self._cpu0.get(k, 0.0)) / elapsed, 3) for k in cpu}
        return cores | cpu_shares(self._machine0, machine)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--camera", type=Path, required=True, help="video or photo shown by the fake webcam"
    )
    p.add_argument("--source", type=Path, required=True, help="source photo uploaded by the page")
    p.add_argument("--engine", default="mesh")
    p.add_argument("--config", type=Path, help="config.toml for `livswap serve`")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--screenshot", type=Path)
    p.add_argument(
        "--no-stamp",
        action="store_true",
        help="plain page (no timestamp stamping): fps only, latency estimated",
    )
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        camera = write_y4m(Path(tmp) / "camera.y4m", stamp_indices(camera_frames(args.camera, 150)))
        port = free_port()
        with (
            livswap_server(port, log=Path(tmp) / "serve.log") as server,
            chromium(camera, Path(tmp) / "profile") as ws,
            sync_playwright() as pw,
        ):
            browser = pw.chromium.connect_over_cdp(ws)
            page = browser.contexts[0].new_page()
            page.goto(f"http://localhost:{port}/" + ("" if args.no_stamp else "?bench=1"))
            page.wait_for_function("document.querySelectorAll('#engine option').length > 0")
            page.select_option("#engine", args.engine)
            page.set_input_files("#photo", str(args.source))
            page.wait_for_function("window.livswap.sourceId !== null", timeout=60_000)
            page.click("#start")
            page.wait_for_function("window.livswap.framesDecoded > 10", timeout=60_000)
            time.sleep(args.warmup)
            page.evaluate("window.livswap.measuredLatencyMs = []")
            fps, server_ms = [], []
            meter = CpuMeter(server.pid)
            meter.start()
            start_frames = page.evaluate("window.livswap.framesDecoded")
            start = time.monotonic()
            while time.monotonic() - start < args.seconds:
                time.sleep(1.0)
                fps.append(page.evaluate("window.livswap.fps"))
                server_ms.append(page.evaluate("window.livswap.serverLatencyMs"))
            elapsed = time.monotonic() - start
            cpu = meter.stop()
            frames = page.evaluate("window.livswap.framesDecoded") - start_frames
            latencies = page.evaluate("window.livswap.measuredLatencyMs")
            stats_line = page.inner_text("#stats")
            dropped = page.evaluate("window.livswap.dropped")
            if args.screenshot:
                page.screenshot(path=str(args.screenshot))
            error = page.evaluate("window.livswap.error")
            browser.close()
        server_log = (Path(tmp) / "serve.log").read_text()
        peer_lines = [line for line in server_log.splitlines() if "closed;" in line]
    lat = np.asarray(latencies, float)
    result = {
        "engine": args.engine,
        "camera": args.camera.name,
        "size": "640x480",
        "seconds": round(elapsed, 1),
        "fps_returned": round(frames / elapsed, 2),
        "fps_samples_median": round(float(np.median(fps)), 2) if fps else None,
        "latency_ms_measured": {
            f"p{q}": round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99)
        }
        if lat.size
        else None,
        "latency_samples": int(lat.size),
        "server_latency_ms_median": round(
            float(np.median([s for s in server_ms if s is not None])), 1
        )
        if any(s is not None for s in server_ms)
        else None,
        "server_dropped": dropped,
        "stats_line": stats_line,
        "cpu": cpu,
        "server_peer_summary": peer_lines[-1] if peer_lines else None,
        "machine_cpus": psutil.cpu_count(),
        "error": error,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
