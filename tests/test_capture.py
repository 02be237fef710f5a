from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from livswap.capture import CameraSource, ImageSource, PatternSource, read_image
from livswap.errors import InputError, StreamEnded


def test_camera_that_disappears_is_reopened_while_frames_keep_coming(
    hopper_clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenCV opens a file path like a device: when the 'camera' runs dry the source must keep
    producing 'camera lost' frames at its rate, log it, and pick the device up again."""
    device = tmp_path / "cam.mp4"
    shutil.copy(hopper_clip, device)

    async def scenario() -> tuple[list[str], CameraSource]:
        cam = CameraSource(str(device), width=320, height=240, fps=30, max_backoff_s=0.2)
        kinds: list[str] = []
        for _ in range(60 + 15):  # the 60 real frames, then lost frames
            frame = await cam.recv()
            kinds.append("lost" if "camera_lost" in frame.notes else "live")
        for _ in range(40):  # reconnects (the file is there) and plays again
            frame = await cam.recv()
            kinds.append("lost" if "camera_lost" in frame.notes else "live")
        cam.close()
        return kinds, cam

    with caplog.at_level(logging.WARNING):
        kinds, cam = asyncio.run(scenario())
    assert kinds[:55] == ["live"] * 55
    assert "lost" in kinds
    assert kinds[-1] == "live"
    assert cam.reconnects >= 1
    assert "camera lost" in caplog.text and "camera is back" in caplog.text


def test_still_image_is_one_frame_offline_and_repeats_live(astronaut_jpg: Path) -> None:
    async def scenario() -> None:
        once = ImageSource(astronaut_jpg, repeat=False)
        await once.recv()
        with pytest.raises(StreamEnded):
            await once.recv()
        live = ImageSource(astronaut_jpg, repeat=True, fps=100)
        frames = [await live.recv() for _ in range(5)]
        assert [f.seq for f in frames] == [0, 1, 2, 3, 4]

    asyncio.run(scenario())


def test_pattern_moves() -> None:
    pattern = PatternSource(320, 240, fps=30)
    assert not np.array_equal(pattern.render(0), pattern.render(15))


def test_damaged_and_huge_photos_are_named_for_what_they_are(
    hopper_jpg: Path, tmp_path: Path
) -> None:
    """A cut-off JPEG is "damaged", not "not an image"; a PNG declaring 30000x30000 pixels is
    refused by its header, before OpenCV would allocate 2.7 GB for it."""
    import psutil

    from tests.hostile import forged_png

    cut = tmp_path / "cut.jpg"
    cut.write_bytes(hopper_jpg.read_bytes()[:300])
    with pytest.raises(InputError, match=r"cut\.jpg' is a damaged JPEG file"):
        read_image(cut, "source photo")
    huge = tmp_path / "huge.png"
    huge.write_bytes(forged_png(30_000, 30_000))
    before = psutil.Process().memory_info().rss
    with pytest.raises(InputError, match=r"declares 30000x30000 pixels \(900 MP\).*scale it down"):
        read_image(huge, "source photo")
    assert psutil.Process().memory_info().rss - before < 50 * 2**20


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"'.*folder' is a directory"):
        (tmp_path / "folder").mkdir()
        read_image(tmp_path / "folder")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.png' is not an image"):
        read_image(empty)
