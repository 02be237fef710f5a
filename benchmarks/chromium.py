"""Headless Chromium (Debian's package) with a fake camera, driven over CDP by Playwright.

Used by the browser test and the browser benchmark. Needs ``apt-get install chromium`` and the
``playwright`` Python package (no ``playwright install``: it attaches to this Chromium).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CHROMIUM = os.environ.get("LIVSWAP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def have_chromium() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    """A raw YUV4MPEG2 clip, the format Chromium's fake camera reads (it loops the file)."""
    container = av.open(str(path), mode="w", format="yuv4mpegpipe")
    h, w = frames[0].shape[:2]
    stream = container.add_stream("rawvideo", rate=fps)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"  # type: ignore[union-attr]
    for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, fps)
        container.mux(stream.encode(frame))  # type: ignore[union-attr]
    container.mux(stream.encode(None))  # type: ignore[union-attr]
    container.close()
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[str], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def livswap_server(
    port: int, *extra: str, log: Path | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``livswap serve`` in a subprocess (the real CLI), stopped with SIGTERM afterwards.

    Its log goes to ``log`` (a temporary file when not given): a file never fills up and stalls
    the server the way an unread pipe would.
    """
    with contextlib.ExitStack() as stack:
        if log is None:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "serve.log"
        log_file = stack.enter_context(log.open("w"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "livswap", "serve", "--port", str(port), *extra],
            stderr=log_file,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                        break
                except OSError:
                    if proc.poll() is not None:
                        raise RuntimeError(f"livswap serve exited: {log.read_text()}") from None
                    time.sleep(0.2)
            yield proc
        finally:
            _stop(proc, timeout_s=15)


@contextlib.contextmanager
def chromium(fake_camera: Path, profile: Path) -> Iterator[str]:
    """Start headless Chromium with ``fake_camera`` as its webcam; yields the CDP websocket URL."""
    args = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={fake_camera}",
        "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    ws = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        if match:
            ws = match.group(1)
            break
    if ws is None:
        proc.kill()
        raise RuntimeError("chromium did not start (no DevTools address)")
    # Keep draining stderr so Chromium never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    try:
        yield ws
    finally:
        _stop(proc, timeout_s=10)


# JavaScript run in the page: how different the returned video is from the local camera in the
# face area, and whether the label box (bottom-left) is darkened with bright text.
COMPARE_JS = """
() => {
  const grab = (video) => {
    const c = document.createElement('canvas');
    c.width = 320; c.height = 240;
    const ctx = c.getContext('2d');
    ctx.drawImage(video, 0, 0, 320, 240);
    return ctx.getImageData(0, 0, 320, 240).data;
  };
  const remote = grab(document.getElementById('remote'));
  const local = grab(document.getElementById('local'));
  let diff = 0, n = 0;
  for (let y = 60; y < 180; y++) for (let x = 100; x < 220; x++) {
    const i = (y * 320 + x) * 4;
    for (let k = 0; k < 3; k++) diff += Math.abs(remote[i + k] - local[i + k]);
    n += 3;
  }
  const bright = (img) => {
    let count = 0, total = 0;
    for (let y = 224; y < 238; y++) for (let x = 4; x < 56; x++) {
      const i = (y * 320 + x) * 4;
      total++;
      if (img[i] > 150 && img[i + 1] > 150 && img[i + 2] > 150) count++;
    }
    return count / total;
  };
  return { faceDiff: diff / n, labelBright: bright(remote), cornerBrightLocal: bright(local) };
}
"""
