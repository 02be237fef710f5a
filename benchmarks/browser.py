"""Browser end-to-end benchmark: headless Chromium <-> `livswap serve` over WebRTC.

    python benchmarks/browser.py --camera VIDEO_OR_PHOTO --source PHOTO [--engine mesh]
        [--seconds 20] --json OUT.json [--screenshot OUT.png]

The camera clip (640x480, 30 fps) is Chromium's fake webcam. The page runs in bench mode: it
stamps ``performance.now()`` into a corner of every outgoing frame and reads it back from the
returned video when that frame is displayed, so the latency is measured capture-to-display in
the browser itself (encode, network, server pipeline, decode, jitter buffer, render). Frames
per second are the browser's decoded frames of the returned track.
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

from benchmarks.chromium import chromium, free_port, livswap_server, write_y4m


def camera_frames(path: Path, count: int) -> list[np.ndarray]:
    if path.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".bmp"}:
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise SystemExit(f"camera {path}: not an image")
        from tests.media import moving_frames

        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.uint8)
        return moving_frames(rgb, count, (640, 480))
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(width=640, height=480, format="rgb24"))
            if len(frames) >= count:
                break
    return frames


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--camera", type=Path, required=True, help="video or photo shown by the fake webcam"
    )
    p.add_argument("--source", type=Path, required=True, help="source photo uploaded by the page")
    p.add_argument("--engine", default="mesh")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--screenshot", type=Path)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        camera = write_y4m(Path(tmp) / "camera.y4m", camera_frames(args.camera, 150))
        port = free_port()
        with (
            livswap_server(port),
            chromium(camera, Path(tmp) / "profile") as ws,
            sync_playwright() as pw,
        ):
            browser = pw.chromium.connect_over_cdp(ws)
            page = browser.contexts[0].new_page()
            page.goto(f"http://localhost:{port}/?bench=1")
            page.wait_for_function("document.querySelectorAll('#engine option').length > 0")
            page.select_option("#engine", args.engine)
            page.set_input_files("#photo", str(args.source))
            page.wait_for_function("window.livswap.sourceId !== null", timeout=60_000)
            page.click("#start")
            page.wait_for_function("window.livswap.framesDecoded > 10", timeout=60_000)
            time.sleep(args.warmup)
            page.evaluate("window.livswap.measuredLatencyMs = []")
            fps, server = [], []
            start_frames = page.evaluate("window.livswap.framesDecoded")
            start = time.monotonic()
            while time.monotonic() - start < args.seconds:
                time.sleep(1.0)
                fps.append(page.evaluate("window.livswap.fps"))
                server.append(page.evaluate("window.livswap.serverLatencyMs"))
            elapsed = time.monotonic() - start
            frames = page.evaluate("window.livswap.framesDecoded") - start_frames
            latencies = page.evaluate("window.livswap.measuredLatencyMs")
            stats_line = page.inner_text("#stats")
            dropped = page.evaluate("window.livswap.dropped")
            if args.screenshot:
                page.screenshot(path=str(args.screenshot))
            error = page.evaluate("window.livswap.error")
            browser.close()
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
        "server_latency_ms_median": round(float(np.median([s for s in server if s is not None])), 1)
        if any(s is not None for s in server)
        else None,
        "server_dropped": dropped,
        "stats_line": stats_line,
        "error": error,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
