"""Batched generation: a batch through the generator equals its faces one at a time (every
bucket, a different identity per face), and faces of several streams meet in one call."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from livswap.engine.backends import RunnerSpec, build_runner
from livswap.engine.batching import BUCKETS, BatchedGenerator, bucket_for
from livswap.engine.models.inswapper import InswapperGenerator
from livswap.engine.models.simswap import SimSwapGenerator

CROP = 32  # small crops and few blocks: the same layers, quick on a CPU


def small_network(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "simswap":
        return SimSwapGenerator("224", blocks=2).eval()
    return InswapperGenerator(widths=(8, 16, 32, 64), blocks=2).eval()


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
@pytest.mark.parametrize("network", ["simswap", "inswapper"])
def test_batched_output_equals_one_at_a_time(network: str, backend: str, tmp_path: Path) -> None:
    spec = RunnerSpec(backend, "fp32", torch.device("cpu"))  # type: ignore[arg-type]
    runner = build_runner(
        small_network(network), spec, crop=CROP, cache_dir=tmp_path, cache_key=network
    )
    batcher = BatchedGenerator(runner, device=spec.device, wait_fraction=0.0)
    stream = batcher.open_stream()
    torch.manual_seed(1)
    for count in (*BUCKETS, 3, 5):  # 3 and 5 are padded up to a bucket
        crops = torch.rand(count, 3, CROP, CROP)
        latents = nn.functional.normalize(torch.randn(count, 512), dim=1)  # one per face
        batched = batcher.generate(stream, crops, latents)
        alone = torch.cat([runner(crops[i : i + 1], latents[i : i + 1]) for i in range(count)])
        assert batched.shape == (count, 3, CROP, CROP)
        assert (batched - alone).abs().max().item() < 1e-4, (count, network, backend)
    assert all(size in BUCKETS for size in batcher.stats.calls)
    assert batcher.stats.calls[4] == 2  # the 4 and the padded 3
    batcher.close()


def test_bucket_sizes() -> None:
    assert [bucket_for(n) for n in (1, 2, 3, 5, 8, 9, 31, 32)] == [1, 2, 4, 8, 8, 16, 32, 32]


def test_faces_of_several_streams_meet_in_one_call() -> None:
    """Four streams submitting at the same moment get one generator call of four, each its
    own result; a stream that stops sending is not waited for."""
    calls: list[int] = []

    def generator(crops: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        calls.append(len(crops))
        return crops * latents[:, :1, None, None]  # each face scaled by its own identity

    # A long wait, so only "every active stream is in" can end the gathering early.
    batcher = BatchedGenerator(
        generator, device=torch.device("cpu"), frame_interval_s=5.0, active_window_s=60.0
    )
    streams = [batcher.open_stream() for _ in range(4)]
    results: dict[int, torch.Tensor] = {}
    barrier = threading.Barrier(4)

    def send(stream: int, value: float) -> None:
        crops = torch.ones(1, 3, 4, 4)
        latents = torch.full((1, 8), value)
        barrier.wait()
        results[stream] = batcher.generate(stream, crops, latents)

    # First round: each stream's first submission (no stream is known to be active yet, so
    # they gather until all four are in or the wait ends).
    threads = [threading.Thread(target=send, args=(s, float(s))) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert batcher.stats.faces == 4 and set(calls) <= set(BUCKETS)  # (padded to buckets)
    for stream in streams:
        assert torch.allclose(results[stream], torch.full((1, 3, 4, 4), float(stream)))
    # Second round: all four are active now, so their faces form one batch of four.
    calls.clear()
    barrier = threading.Barrier(4)
    threads = [threading.Thread(target=send, args=(s, 2.0 * s)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert calls == [4], calls
    for stream in streams:
        assert torch.allclose(results[stream], torch.full((1, 3, 4, 4), 2.0 * stream))
    # Streams that closed are not waited for: a lone stream's face goes through at once.
    for stream in streams[1:]:
        batcher.close_stream(stream)
    calls.clear()
    out = batcher.generate(streams[0], torch.ones(1, 3, 4, 4), torch.full((1, 8), 3.0))
    assert calls == [1] and torch.allclose(out, torch.full((1, 3, 4, 4), 3.0))
    batcher.close()


def test_streams_slower_than_the_camera_still_meet() -> None:
    """Streams that wait for each result before sending their next frame (a pipeline behind a
    generator slower than the camera) fall into step: the generator's batches hold both."""
    calls: list[int] = []

    def slow_generator(crops: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        time.sleep(0.1)  # slower than the camera's 33 ms
        calls.append(len(crops))
        return crops

    batcher = BatchedGenerator(slow_generator, device=torch.device("cpu"))
    streams = [batcher.open_stream() for _ in range(2)]

    def pipeline(stream: int) -> None:
        for _ in range(12):
            batcher.generate(stream, torch.ones(1, 3, 4, 4), torch.ones(1, 8))

    threads = [threading.Thread(target=pipeline, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # In step after the first frame or two: all but the first and last calls hold both.
    assert calls.count(2) >= 10 and sum(calls) == 24, calls
    batcher.close()
