"""benchmarks/engine.py runs the real runner, device path and reference pipeline end to end
(on a small network here; the real sizes are for measuring)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import engine as bench
from livswap.engine.models.simswap import SimSwapGenerator


def test_engine_benchmark_writes_rows_and_a_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = {"small-simswap": (lambda: SimSwapGenerator("224", blocks=1), 64)}
    monkeypatch.setattr(bench, "NETWORKS", small)
    out, chart = tmp_path / "e.json", tmp_path / "e.png"
    args = ["--engines", "small-simswap", "--backends", "eager,onnxruntime", "--sizes", "720p"]
    rc = bench.main([*args, "--iterations", "3", "--json", str(out), "--plot", str(chart)])
    assert rc == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [r["backend"] for r in rows] == ["eager", "onnxruntime"] and not report["skipped"]
    for row in rows:
        assert row["precision"] == "fp32" and row["size"] == "720p"
        assert row["generator_ms"] > 0 and row["full_frame_ms"] > 0 and row["reference_ms"] > 0
        assert row["speedup"] == pytest.approx(row["reference_ms"] / row["full_frame_ms"], 0.02)
    assert chart.stat().st_size > 10_000
