"""Seconds per ``livswap train`` step: the real trainer (StyleSwap at the spec's width unless
``--narrow``), with an ArcFace in the official format (random weights: the time does not depend
on them) on faces from package-shipped public-domain photos, or on ``--data`` folders.

    python -m benchmarks.train_step --resolution 256 --batch 8 --steps 5
    python -m benchmarks.train_step --resolution 64 --narrow 0.0625 --steps 300 --data DIR \\
        --sheet run.png --curves losses.png   # a short run: its sheet and loss curves
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from livswap.engine.simswap import load_arcface  # noqa: E402
from livswap.models import ModelStore  # noqa: E402
from livswap.train import Trainer, TrainSettings, plot_losses  # noqa: E402


def _package_photos(folder: Path) -> Path:
    from tests.media import astronaut, grace_hopper, moving_frames

    for name, image in (("astronaut", astronaut()), ("hopper", grace_hopper())):
        (folder / name).mkdir(parents=True)
        for i, frame in enumerate(moving_frames(image, 8, (256, 256), amplitude=0.08)):
            cv2.imwrite(str(folder / name / f"{i}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--narrow", type=float)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", type=Path, action="append", help="photo/video folders")
    parser.add_argument("--identity-weight", type=float, default=10.0)
    parser.add_argument("--sheet", type=Path, help="write the final source|target|swap sheet")
    parser.add_argument("--curves", type=Path, help="write the loss curves")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from tests.checkpoints import write_release_arcface

    with tempfile.TemporaryDirectory(prefix="livswap-train-bench-") as tmp:
        root = Path(tmp)
        data = tuple(args.data) if args.data else (_package_photos(root / "data"),)
        store = ModelStore(root / "models")
        store.import_file("arcface-simswap", write_release_arcface(root / "arcface_checkpoint.tar"))
        encoder = store.require("arcface-simswap")
        settings = TrainSettings(
            arch="styleswap",
            data=data,
            name="bench",
            resolution=args.resolution,
            narrow=args.narrow,
            steps=args.steps + 1,
            batch=args.batch,
            weight_identity=args.identity_weight,
        )
        device = torch.device(args.device)
        trainer = Trainer(
            settings, store, load_arcface(store.folder / "cache", encoder), encoder, device
        )
        parameters = sum(p.numel() for p in trainer.generator.parameters()) / 1e6
        print(
            f"styleswap {args.resolution} px (narrow {settings.network().narrow:g}, "
            f"{parameters:.2f} M parameters), batch {args.batch}, on {device}; "
            f"{len(trainer.faces.crops)} faces of {len(trainer.faces.people)} people",
            flush=True,
        )
        trainer.train_step()  # warm-up
        seconds = []
        for _ in range(args.steps):
            losses = trainer.train_step()
            trainer.log(losses)
            seconds.append(losses.seconds)
        report = {
            "resolution": args.resolution,
            "narrow": settings.network().narrow,
            "batch": args.batch,
            "device": str(device),
            "parameters_m": parameters,
            "seconds_per_step": {
                "min": min(seconds),
                "median": statistics.median(seconds),
                "max": max(seconds),
            },
        }
        print(
            f"seconds per step: min {min(seconds):.3f}  median {statistics.median(seconds):.3f}  "
            f"max {max(seconds):.3f} ({args.steps} steps)"
        )
        if args.sheet:
            args.sheet.write_bytes(trainer.sheet().read_bytes())
        if args.curves:
            plot_losses(trainer.log_path, args.curves)
            rows = [json.loads(x) for x in trainer.log_path.read_text().splitlines()]
            first, last = rows[: max(1, len(rows) // 10)], rows[-max(1, len(rows) // 10) :]
            for key in ("reconstruction", "identity", "generator", "discriminator"):
                a = statistics.mean(r[key] for r in first)
                b = statistics.mean(r[key] for r in last)
                print(f"{key:15s} first tenth {a:.4f}  last tenth {b:.4f}")
                report[f"{key}_first_last"] = [a, b]
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
