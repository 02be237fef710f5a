"""Landmark smoothing: how much jitter the One Euro filter removes, and what it costs in offset.

    python benchmarks/tracking.py --input VIDEO [--config FILE] --json OUT.json

Runs livswap's FaceTracker (MediaPipe FaceMesh, tracking mode, One Euro filter as configured)
over every frame. Jitter is the second difference of each landmark (how far it sits off the
line through its neighbours in time), in pixels; offset is the mean distance between filtered and
raw landmarks (lag plus removed jitter); the mouth's opening error is how far the filtered
mouth's opening (inner lips, of the eye distance) is from the raw one's on average, which is how
late a speaking mouth is followed. Also the tracker's own time per frame.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import av
import numpy as np

from livswap.config import load_config
from livswap.frame import Frame
from livswap.track import FaceTracker
from livswap.track.landmarks import LEFT_IRIS_CENTER, RIGHT_IRIS_CENTER

UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14  # FaceMesh's inner-lip middles


def _jitter(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[1:-1] - (points[:-2] + points[2:]) / 2, axis=2).mean())


def _mouth_opening(points: np.ndarray) -> np.ndarray:
    """Per frame: the gap between the inner lips' middles over the eye distance."""
    ipd = np.linalg.norm(points[:, LEFT_IRIS_CENTER] - points[:, RIGHT_IRIS_CENTER], axis=1)
    gap = np.linalg.norm(points[:, UPPER_INNER_LIP] - points[:, LOWER_INNER_LIP], axis=1)
    return np.asarray(gap / np.maximum(ipd, 1e-6))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--config", type=Path)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    tracker = FaceTracker(load_config(args.config).track)
    raw, smooth, times = [], [], []
    with av.open(str(args.input)) as container:
        stream = container.streams.video[0]
        for i, decoded in enumerate(container.decode(stream)):
            image = decoded.to_ndarray(format="rgb24").astype(np.uint8, copy=False)
            frame = Frame(image=image, seq=i, captured_ns=0, pts=float(decoded.time or 0.0))
            start = time.perf_counter()
            tracker.track(frame)
            times.append((time.perf_counter() - start) * 1e3)
            if frame.faces:
                raw.append(frame.faces[0].raw_landmarks[:, :2])
                smooth.append(frame.faces[0].landmarks[:, :2])
    tracker.close()
    r, s = np.stack(raw), np.stack(smooth)
    result = {
        "input": args.input.name,
        "frames": len(times),
        "frames_with_face": len(raw),
        "jitter_px_raw": round(_jitter(r), 3),
        "jitter_px_filtered": round(_jitter(s), 3),
        "jitter_reduction": round(_jitter(r) / max(_jitter(s), 1e-9), 2),
        "offset_px_mean": round(float(np.linalg.norm(s - r, axis=2).mean()), 3),
        "mouth_opening_error": round(
            float(np.abs(_mouth_opening(s) - _mouth_opening(r)).mean()), 4
        ),
        "track_ms_p50": round(float(np.median(times[10:])), 2),
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
