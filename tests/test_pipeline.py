"""The pipeline end to end on real files, a real PyAV encoder and pyvirtualcam's own code path."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import pyvirtualcam

from livswap.capture import PatternSource, VideoFileSource
from livswap.config import load_config
from livswap.frame import Frame
from livswap.label import label_box
from livswap.output import NullSink, VideoFileSink, VirtualCameraSink
from livswap.pipeline import Pipeline, Stage, concurrent_stage
from livswap.runloop import run_async
from livswap.session import build_run
from tests.media import probe


class RecordingBackend:
    """A pyvirtualcam backend that keeps what it is sent (registered under 'livswap-recorder')."""

    instances: ClassVar[list[RecordingBackend]] = []

    def __init__(
        self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: Any
    ) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.frames: list[np.ndarray] = []
        self.closed = 0
        RecordingBackend.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        self.frames.append(frame.reshape(self.height, self.width, 3).copy())

    def close(self) -> None:
        self.closed += 1

    def device(self) -> str:
        return "recorder0"

    def native_fourcc(self) -> int | None:
        return None


pyvirtualcam.register_backend("livswap-recorder", RecordingBackend)


def label_drawn(image: np.ndarray, reference: np.ndarray) -> bool:
    """True when the label box is darkened relative to ``reference`` and holds bright text."""
    x0, y0, x1, y1 = label_box(image.shape[1], image.shape[0])
    out = image[y0:y1, x0:x1].astype(np.float32).mean(axis=2)
    ref = reference[y0:y1, x0:x1].astype(np.float32).mean(axis=2)
    darkened = np.median(out) < 0.6 * np.median(ref) + 8
    text = np.percentile(out, 99) > 190 and np.percentile(out - ref, 99) > 60
    return bool(darkened and text)


def test_video_file_to_video_file_keeps_every_frame_audio_and_label(
    hopper_clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.mp4"
    cfg = load_config(
        None,
        {
            "capture.input": str(hopper_clip),
            "output.target": str(out),
            "engine.name": "passthrough",
        },
    )
    run = build_run(cfg)
    assert run.offline
    stats = run_async(run.pipeline.run)
    assert stats.frames_out == stats.frames_in == 60
    assert stats.frames_dropped == 0
    got, original = probe(out), probe(hopper_clip)
    assert got["count"] == 60 and got["size"] == (320, 240)
    assert abs(float(got["duration"]) - float(original["duration"])) < 0.1  # type: ignore[arg-type]
    assert got["audio"] == ["aac"] and int(got["audio_packets"]) >= 90  # type: ignore[call-overload]
    frames = got["frames"]
    assert isinstance(frames, list)
    assert label_drawn(frames[30], original["frames"][30])  # type: ignore[index]
    # Outside the label, passthrough leaves the picture alone (up to encoding noise).
    x0, y0, x1, y1 = label_box(320, 240)
    diff = np.abs(frames[30].astype(int) - original["frames"][30].astype(int))  # type: ignore[index]
    diff[y0:y1, x0:x1] = 0
    assert diff.mean() < 3


def test_audio_that_mp4_cannot_hold_is_reencoded(hopper_image: np.ndarray, tmp_path: Path) -> None:
    from tests.media import moving_frames, write_video

    src = write_video(
        tmp_path / "pcm.mov", moving_frames(hopper_image, 30, (160, 120)), audio="pcm_s16le"
    )
    out = tmp_path / "out.mp4"
    cfg = load_config(
        None, {"capture.input": str(src), "output.target": str(out), "engine.name": "passthrough"}
    )
    run_async(build_run(cfg).pipeline.run)
    got = probe(out)
    assert got["count"] == 30 and got["audio"] == ["aac"] and int(got["audio_packets"]) > 20  # type: ignore[call-overload]


def test_label_can_be_turned_off(hopper_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "nolabel.mp4"
    cfg = load_config(
        None,
        {
            "capture.input": str(hopper_clip),
            "output.target": str(out),
            "output.label": False,
            "engine.name": "passthrough",
        },
    )
    run_async(build_run(cfg).pipeline.run)
    frames, original = probe(out)["frames"], probe(hopper_clip)["frames"]
    assert isinstance(frames, list) and isinstance(original, list)
    assert not label_drawn(frames[30], original[30])


def test_virtual_camera_receives_labelled_frames_through_pyvirtualcam(
    hopper_jpg: Path, hopper_image: np.ndarray
) -> None:
    RecordingBackend.instances.clear()
    cfg = load_config(
        None,
        {
            "capture.input": str(hopper_jpg),
            "capture.fps": 60.0,
            "output.virtualcam_backend": "livswap-recorder",
            "engine.name": "passthrough",
        },
    )
    run = build_run(cfg, max_frames=15)
    assert isinstance(run.sinks[0], VirtualCameraSink)
    stats = run_async(run.pipeline.run)
    cam = RecordingBackend.instances[-1]
    h, w = hopper_image.shape[:2]
    assert (cam.width, cam.height, cam.fps) == (w, h, 60.0)
    assert len(cam.frames) == stats.frames_out >= 10
    assert cam.frames[0].shape == (h, w, 3)
    # JPEG round trip: compare with the decoded file, not the in-memory original.
    from livswap.capture import read_image

    assert label_drawn(cam.frames[-1], read_image(hopper_jpg))
    assert cam.closed == 1  # released exactly once


class _Slow:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, frame: Frame) -> None:
        time.sleep(self.seconds)


def test_slow_stage_drops_stale_frames_and_latency_stays_bounded() -> None:
    # 60 fps camera, a stage that needs 50 ms: a queue would grow by 2 frames per frame;
    # latest-frame-wins keeps latency near one stage time.
    source = PatternSource(160, 120, fps=60)
    sink = NullSink()
    pipeline = Pipeline(
        source, [Stage("slow", _Slow(0.05))], [sink], lossless=False, max_frames=120
    )
    stats = run_async(pipeline.run)
    assert stats.frames_in == 120
    assert stats.frames_dropped > 40
    assert stats.frames_out + stats.frames_dropped == stats.frames_in
    latencies = sorted(stats.latency_ms)
    assert latencies[-1] < 200, latencies[-5:]
    assert latencies[len(latencies) // 2] < 110


def test_a_stage_failure_passes_the_frame_through_and_is_counted(hopper_clip: Path) -> None:
    def sometimes_fails(frame: Frame) -> None:
        if frame.seq % 10 == 3:
            raise RuntimeError("engine hiccup")
        frame.output = frame.image

    def recover(frame: Frame, exc: BaseException) -> None:
        frame.output = frame.image

    source = VideoFileSource(hopper_clip, realtime=False)
    sink = NullSink()
    pipeline = Pipeline(source, [Stage("swap", sometimes_fails, recover)], [sink], lossless=True)
    stats = run_async(pipeline.run)
    assert stats.frames_out == 60 == sink.frames_written
    assert stats.frames_failed == 6


def test_concurrent_stages_run_at_once_and_each_recovers_alone() -> None:
    # Each waits for the other: run one after the other, the barrier would time out.
    both_inside = threading.Barrier(2, timeout=5)
    closed: list[str] = []

    def swap(frame: Frame) -> None:
        both_inside.wait()
        frame.swaps = []
        frame.notes.add("swapped")

    def find_hands(frame: Frame) -> None:
        both_inside.wait()
        raise RuntimeError("hand model hiccup")

    def no_hands(frame: Frame, exc: BaseException) -> None:
        frame.hands = []

    stage = concurrent_stage(
        [
            Stage("swap", swap, close=lambda: closed.append("swap")),
            Stage("hands", find_hands, no_hands, close=lambda: closed.append("hands")),
        ],
        "swap+hands",
    )
    frame = Frame(image=np.zeros((8, 8, 3), np.uint8), seq=0, captured_ns=0, pts=0.0)
    stage.run(frame)
    assert "swapped" in frame.notes and "hands_failed" in frame.notes  # one failed, one did not
    assert {"swap", "hands"} <= frame.timings_ms.keys()
    assert stage.close is not None
    stage.close()
    assert sorted(closed) == ["hands", "swap"]


def test_realtime_file_source_is_paced_at_its_frame_rate(hopper_clip: Path) -> None:
    async def scenario() -> float:
        source = VideoFileSource(hopper_clip, realtime=True)
        start = time.monotonic()
        for _ in range(30):
            await source.recv()
        source.close()
        return time.monotonic() - start

    elapsed = asyncio.run(scenario())
    assert 0.9 < elapsed < 1.4


def test_looping_file_source_keeps_timestamps_increasing(hopper_clip: Path) -> None:
    async def scenario() -> list[float]:
        source = VideoFileSource(hopper_clip, realtime=False, loop=True)
        pts = [(await source.recv()).pts for _ in range(150)]
        source.close()
        return pts

    pts = asyncio.run(scenario())
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert pts[-1] == pytest.approx(149 / 30, abs=0.05)


def test_video_sink_rejects_unwritable_paths(tmp_path: Path) -> None:
    from livswap.capture import SourceInfo
    from livswap.errors import OutputError

    info = SourceInfo(width=64, height=48, fps=30, frame_count=1, live=False)
    with pytest.raises(OutputError, match="does not exist"):
        VideoFileSink(tmp_path / "missing" / "o.mp4", info)
    with pytest.raises(OutputError, match="expected a video file"):
        VideoFileSink(tmp_path / "o.txt", info)
