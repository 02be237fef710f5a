"""A real browser: headless Chromium opens the page served by `livswap serve`, with a fake camera
rendered from a public-domain photo, uploads a source photo and gets swapped video back."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from benchmarks.chromium import (
    COMPARE_JS,
    chromium,
    free_port,
    have_chromium,
    livswap_server,
    write_y4m,
)
from tests.media import moving_frames

pytestmark = pytest.mark.skipif(
    not have_chromium() and not os.environ.get("LIVSWAP_REQUIRE_BROWSER"),
    reason="needs Debian's chromium (apt-get install chromium) and the playwright package",
)


def test_browser_page_swaps_the_camera(
    hopper_image: np.ndarray, astronaut_jpg: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    camera = write_y4m(tmp_path / "face.y4m", moving_frames(hopper_image, 60, (640, 480)))
    port = free_port()
    with (
        livswap_server(port),
        chromium(camera, tmp_path / "profile") as ws,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.connect_over_cdp(ws)
        page = browser.contexts[0].new_page()
        page.goto(f"http://localhost:{port}/")
        page.wait_for_function("document.querySelectorAll('#engine option').length > 0")
        page.set_input_files("#photo", str(astronaut_jpg))
        page.wait_for_function("window.livswap.sourceId !== null", timeout=30_000)
        page.click("#start")
        page.wait_for_function("window.livswap.framesDecoded > 45", timeout=60_000)
        assert page.evaluate("window.livswap.error") is None
        seen = page.evaluate(COMPARE_JS)
        assert seen["faceDiff"] > 6, seen  # the face in the returned video is not the camera's
        # The AI-altered label: bright text in a corner the camera shows dark.
        assert seen["labelBright"] > seen["cornerBrightLocal"] + 0.03, seen
        time.sleep(1.5)  # let the stats line fill in
        stats = page.inner_text("#stats")
        assert "fps" in stats and "latency" in stats
        page.screenshot(path=str(tmp_path / "browser.png"))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as r:
            assert json.load(r)["peers"] == 1
        page.click("#stop")
        deadline = time.monotonic() + 15
        peers = 1
        while time.monotonic() < deadline and peers:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as r:
                peers = json.load(r)["peers"]
            time.sleep(0.3)
        assert peers == 0  # the server freed the peer
        browser.close()
    assert (tmp_path / "browser.png").stat().st_size > 10_000
