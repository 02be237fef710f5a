"""Swap quality: identity transfer, expression/pose fidelity and flicker, with a contact sheet.

    python benchmarks/quality.py --images DIR [--videos V ...] [--engine mesh]
        --json OUT.json [--sheet OUT.png]

``DIR`` holds a folder per person with two or more photos (folders starting with "_" are
skipped). Every ordered pair of different people is swapped (source = person P's first photo,
target = person Q's first photo), through the same stages ``livswap`` runs. Measured with an
independent face-recognition model (dlib's ResNet, the ``eval`` extra), never the engine's own:

- identity retrieval: the swapped face's nearest person, among everyone's OTHER photo, is P;
- mean embedding distance to P's and to Q's other photo (dlib: < 0.6 is "same person");
- landmark error: mean distance between MediaPipe's 478 landmarks on the swap and on the
  target, over the target's inter-pupil distance (pose and expression kept = small);
- for videos: flicker ratio, frame-to-frame change inside the face region, swapped / original.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from livswap.capture import VideoFileSource, read_image
from livswap.config import Config, load_config
from livswap.engine import create_engine
from livswap.frame import Frame, Image
from livswap.pipeline import close_stages
from livswap.runloop import run_async
from livswap.session import build_run, build_stages
from livswap.track import detect_faces
from livswap.track.landmarks import face_index


class Embedder:
    """dlib's 128-d face descriptor (independent of every livswap engine)."""

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            sys.exit(f"quality.py needs the eval extra (pip install -e '.[eval]'): {exc}")
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self.dlib = dlib

    def embed(
        self, image: Image, hint: tuple[float, float, float, float] | None = None
    ) -> np.ndarray | None:
        """Descriptor of the largest face (or of the face in ``hint`` if dlib finds none)."""
        rects = list(self.detector(image, 1))
        if rects:
            rect = max(rects, key=lambda r: r.width() * r.height())
        elif hint is not None:
            x0, y0, x1, y1 = (int(v) for v in hint)
            rect = self.dlib.rectangle(x0, y0, x1, y1)
        else:
            return None
        shape = self.shape(image, rect)
        return np.asarray(self.net.compute_face_descriptor(image, shape, 1), np.float64)


@dataclass
class Person:
    name: str
    photo: Path  # swapped from / onto
    other: Path  # gallery photo for retrieval


def people_in(folder: Path) -> list[Person]:
    persons = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_")):
        photos = sorted(p for p in d.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        if len(photos) >= 2:
            persons.append(Person(d.name, photos[0], photos[1]))
    return persons


def landmark_error(swapped: Image, target_landmarks: np.ndarray, target_ipd: float) -> float | None:
    faces = detect_faces(swapped, max_faces=1)
    if not faces:
        return None
    return float(
        np.linalg.norm(faces[0].landmarks[:, :2] - target_landmarks[:, :2], axis=1).mean()
        / max(target_ipd, 1.0)
    )


def swap_still(cfg: Config, stages: list[Any], image: Image) -> Frame:
    frame = Frame(image=image, seq=0, captured_ns=time.monotonic_ns(), pts=0.0)
    for stage in stages:
        stage.run(frame)
    return frame


def thumb(
    image: Image, size: int = 160, box: tuple[float, float, float, float] | None = None
) -> Image:
    if box is not None:  # crop around the face so the sheet shows what matters
        x0, y0, x1, y1 = box
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 0.8
        h, w = image.shape[:2]
        xa, ya = int(max(cx - half, 0)), int(max(cy - half, 0))
        xb, yb = int(min(cx + half, w)), int(min(cy + half, h))
        image = image[ya:yb, xa:xb]
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def evaluate_images(args: argparse.Namespace, cfg: Config, embedder: Embedder) -> dict[str, Any]:
    persons = people_in(args.images)
    if len(persons) < 2:
        sys.exit(f"{args.images}: need at least two person folders with two photos each")
    photos = {p.name: read_image(p.photo) for p in persons}
    gallery = {}
    target_faces = {}
    for p in persons:
        other = read_image(p.other)
        emb = embedder.embed(other)
        if emb is None:
            print(f"skip {p.name}: no face in {p.other}", file=sys.stderr)
            continue
        gallery[p.name] = emb
        faces = detect_faces(photos[p.name], max_faces=1)
        if faces:
            target_faces[p.name] = faces[0]
    names = [p.name for p in persons if p.name in gallery and p.name in target_faces]
    gallery_names = list(gallery)
    gallery_matrix = np.stack([gallery[n] for n in gallery_names])
    rows: list[dict[str, Any]] = []
    sheet: list[tuple[Image, Image, Image, str]] = []
    pairs = [(s, t) for s in names for t in names if s != t]
    engine = create_engine(cfg)
    for source_name in tqdm(names, desc="sources", disable=None):
        try:
            identity = engine.prepare([photos[source_name]])
        except Exception as exc:  # a source without a usable face: count every pair as missed
            print(f"source {source_name}: {exc}", file=sys.stderr)
            continue
        stages = build_stages(cfg, engine, identity, still=True)
        for target_name in names:
            if target_name == source_name:
                continue
            start = time.perf_counter()
            frame = swap_still(cfg, stages, photos[target_name])
            swap_ms = (time.perf_counter() - start) * 1e3
            face = target_faces[target_name]
            swapped = frame.result
            emb = embedder.embed(swapped, hint=face.box)
            row: dict[str, Any] = {
                "source": source_name,
                "target": target_name,
                "swap_ms": round(swap_ms, 1),
                "swapped": bool(frame.swaps),
            }
            if emb is not None:
                d = np.linalg.norm(gallery_matrix - emb, axis=1)
                row["nearest"] = gallery_names[int(np.argmin(d))]
                row["dist_source"] = float(d[gallery_names.index(source_name)])
                row["dist_target"] = float(d[gallery_names.index(target_name)])
            row["landmark_error"] = landmark_error(swapped, face.landmarks, face.ipd)
            rows.append(row)
            sheet.append(
                (
                    thumb(photos[source_name], box=detect_box(photos[source_name])),
                    thumb(photos[target_name], box=face.box),
                    thumb(swapped, box=face.box),
                    f"{source_name} -> {target_name}",
                )
            )
        close_stages(stages)
    hits = [r.get("nearest") == r["source"] for r in rows]
    to_target = [r.get("nearest") == r["target"] for r in rows]
    lm = [r["landmark_error"] for r in rows if r["landmark_error"] is not None]
    result = {
        "pairs": len(pairs),
        "swapped": len(rows),
        "identity_retrieval": round(float(np.mean(hits)) if rows else 0.0, 4),
        "still_target": round(float(np.mean(to_target)) if rows else 0.0, 4),
        "chance": round(1 / max(len(gallery_names), 1), 4),
        "mean_dist_source": round(
            float(np.mean([r["dist_source"] for r in rows if "dist_source" in r])), 4
        ),
        "mean_dist_target": round(
            float(np.mean([r["dist_target"] for r in rows if "dist_target" in r])), 4
        ),
        "landmark_error": round(float(np.mean(lm)), 4) if lm else None,
        "landmark_error_p90": round(float(np.percentile(lm, 90)), 4) if lm else None,
        "swap_ms_median": round(float(np.median([r["swap_ms"] for r in rows])), 1)
        if rows
        else None,
        "rows": rows,
    }
    if args.sheet:
        write_sheet(sheet, rows, args.sheet, args.sheet_rows)
    return result


def detect_box(image: Image) -> tuple[float, float, float, float] | None:
    faces = detect_faces(image, max_faces=1)
    return faces[0].box if faces else None


def write_sheet(
    items: list[tuple[Image, Image, Image, str]],
    rows: list[dict[str, Any]],
    path: Path,
    max_rows: int,
) -> None:
    """Source | target | swap triplets, three per row: evenly spread, worst identity last."""
    order = list(range(len(items)))
    if len(order) > max_rows * 3:
        step = len(order) / (max_rows * 3)
        order = [order[int(i * step)] for i in range(max_rows * 3)]
    tiles = []
    for i in order:
        s, t, w, label = items[i]
        triplet = np.hstack([s, t, w])
        row = rows[i]
        ok = row.get("nearest") == row["source"]
        caption = f"{label} {'OK' if ok else 'miss'} d={row.get('dist_source', float('nan')):.2f}"
        bar = np.full((18, triplet.shape[1], 3), 255, np.uint8)
        cv2.putText(
            bar,
            caption[:58],
            (3, 13),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.38,
            (0, 120, 0) if ok else (200, 0, 0),
            1,
            cv2.LINE_AA,
        )
        tiles.append(np.vstack([bar, triplet]))
    while len(tiles) % 3:
        tiles.append(np.full_like(tiles[0], 255))
    grid = np.vstack([np.hstack(tiles[i : i + 3]) for i in range(0, len(tiles), 3)])
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def evaluate_video(
    args: argparse.Namespace, cfg: Config, video: Path, source: Path
) -> dict[str, Any]:
    """Flicker ratio of one video swapped offline through the real pipeline."""
    idx = face_index()
    frames: list[tuple[Image, Image, np.ndarray | None]] = []

    class Collect:
        name = "collect"
        wants_stop = False

        def send(self, frame: Frame) -> None:
            oval = frame.faces[0].landmarks[idx.face_oval, :2] if frame.faces else None
            frames.append((frame.image, frame.result, oval))

        def close(self, outcome: str = "complete") -> None:
            pass

    video_cfg = cfg.replace({"engine.source": [str(source)], "capture.pacing": "fast"})
    run = build_run(
        video_cfg,
        sinks=[Collect()],
        max_frames=args.video_frames,
        source=VideoFileSource(video, realtime=False),
    )
    run_async(run.pipeline.run)
    swap_change, orig_change = 0.0, 0.0
    for (o0, s0, _), (o1, s1, oval) in itertools.pairwise(frames):
        if oval is None:
            continue
        mask = np.zeros(o1.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(oval).astype(np.int32)], 255)
        m = mask > 0
        swap_change += float(np.abs(s1.astype(np.int16) - s0.astype(np.int16))[m].mean())
        orig_change += float(np.abs(o1.astype(np.int16) - o0.astype(np.int16))[m].mean())
    with_face = sum(1 for f in frames if f[2] is not None)
    return {
        "video": video.name,
        "frames": len(frames),
        "frames_with_face": with_face,
        "flicker_ratio": round(swap_change / orig_change, 4) if orig_change else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", type=Path, help="folder with a sub-folder of photos per person")
    p.add_argument(
        "--videos", type=Path, nargs="*", default=[], help="videos for the flicker ratio"
    )
    p.add_argument(
        "--video-source",
        type=Path,
        help="source photo for the videos (default: the first person's photo)",
    )
    p.add_argument("--video-frames", type=int, default=150, help="frames per video")
    p.add_argument("--engine", default="mesh")
    p.add_argument("--config", type=Path, help="config.toml to start from")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--sheet", type=Path, help="contact sheet PNG (source | target | swap)")
    p.add_argument("--sheet-rows", type=int, default=20)
    args = p.parse_args()
    if args.images is None and not args.videos:
        p.error("give --images and/or --videos")
    cfg = load_config(args.config, {"engine.name": args.engine, "output.label": False})
    result: dict[str, Any] = {"engine": args.engine}
    if args.images is not None:
        result["images"] = evaluate_images(args, cfg, Embedder())
    if args.videos:
        source = args.video_source
        if source is None:
            if args.images is None:
                p.error("--videos without --images needs --video-source")
            source = people_in(args.images)[0].photo
        result["videos"] = [evaluate_video(args, cfg, v, source) for v in args.videos]
        ratios = [v["flicker_ratio"] for v in result["videos"] if v["flicker_ratio"] is not None]
        result["flicker_ratio_max"] = max(ratios) if ratios else None
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.get("images", {}).items() if k != "rows"}
    print(
        json.dumps(
            {
                "images": summary,
                "videos": result.get("videos"),
                "flicker_ratio_max": result.get("flicker_ratio_max"),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
