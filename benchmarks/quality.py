"""Swap quality: identity, expression/pose fidelity, flicker and hands, with a contact sheet.

    python benchmarks/quality.py --images DIR [--video-people V ...] [--videos V ...]
        [--hand-photo PHOTO] [--engine mesh] --json OUT.json [--sheet OUT.png]

``DIR`` holds a folder per person with two or more photos (folders starting with "_" are
skipped). Every ordered pair of different people is swapped (source = person P's first photo,
target = person Q's first photo), through the same stages ``livswap`` runs. With
``--video-people`` each clip is a person instead (an early frame the source, a middle one the
target, a late one the gallery view). Measured with an independent face-recognition model
(dlib's ResNet, the ``eval`` extra), never the engine's own:

- identity retrieval: the swapped face's nearest person, among everyone's gallery view, is P;
- mean embedding distance to P's and to Q's gallery view (dlib: < 0.6 is "same person");
- landmark error: mean distance between MediaPipe's 478 landmarks on the swap and on the
  target, over the target's inter-pupil distance (pose and expression kept = small);
- each figure again per fixed half of the people (A/B by a hash of the name): tune on one,
  read the other; with each source's own hits, and how large a gap between the halves random
  splits of the same people give (a gap few of them reach is over-fitting, not who is where),
  how far each half's source photos are from their own gallery views before any swap and how
  many of them are lit from one side (a half of harder photos retrieves less, whichever half
  was tuned on);
- for videos: flicker ratio, frame-to-frame change inside the face's hull, swapped / original,
  swapped from several source photos (a crisp photo shimmers more than a soft one, so one soft
  photo would hide it): the worst of them per video, and each one's; with ``--still``, again
  on a still version of each video (its middle frame held, swaying by a pixel or two over
  seconds, with fresh sensor noise every frame: a webcam user sitting still, where the
  original barely changes and any shimmer or slide of the swap shows);
- with ``--hand-photo``: how much of a hand swept across each video's face survives the swap;
- with ``--relight``: retrieval again with every source photo (or, ``target-...``, every target)
  re-lit as a camera would have taken it: dim, lit from one side or from above, under a pink or
  a tungsten lamp, or in black and white. Light is not identity: a swap that neutralises the
  source's light and takes the target's retrieves as well as from the photos as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from livswap.capture import VideoFileSource, read_image
from livswap.config import Config, load_config
from livswap.engine import create_engine
from livswap.engine.mesh.source import prepare_source
from livswap.errors import EngineError
from livswap.frame import Frame, Image
from livswap.pipeline import close_stages
from livswap.runloop import run_async
from livswap.session import build_run, build_stages
from livswap.track import detect_faces


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
    """One identity: what is swapped from, what is swapped onto, and a held-back view of them."""

    name: str
    source: Image  # swapped from (the person's first photo, or an early frame of their clip)
    target: Image  # swapped onto (the same first photo, or a middle frame)
    gallery: Image  # for retrieval only (the second photo, or a late frame)


def same_picture(a: Image, b: Image) -> bool:
    """Whether ``b`` is ``a`` at another size or compression (not another photo of the person):
    the same shape, and the same picture to within a few grey levels once both are small."""
    ha, wa = a.shape[:2]
    hb, wb = b.shape[:2]
    if abs(wa / ha - wb / hb) > 0.02 * (wa / ha):
        return False

    def small(image: Image) -> npt.NDArray[np.float32]:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)

    return float(np.abs(small(a) - small(b)).mean()) < 4.0


def people_in(folder: Path) -> list[Person]:
    """A person per sub-folder with two or more photos: the first is swapped, the next one that
    is another picture (not the first at another size) is the gallery view."""
    persons = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_")):
        photos = sorted(p for p in d.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        if len(photos) < 2:
            continue
        first = read_image(photos[0])
        # A copy of the source photo as the gallery view would retrieve any swap from it (and
        # hold every swap onto it to the target): it measures nothing.
        gallery = next(
            (g for g in (read_image(p) for p in photos[1:]) if not same_picture(first, g)), None
        )
        if gallery is None:
            print(
                f"skip {d.name}: its other photos are {photos[0].name} at another size",
                file=sys.stderr,
            )
            continue
        persons.append(Person(d.name, first, first, gallery))
    return persons


CLIP_POINTS = (0.1, 0.5, 0.9)  # where in a clip its source, target and gallery frames are


def people_in_clips(videos: list[Path]) -> list[Person]:
    """Video-identity mode: each clip is one person. An early frame is the source photo, a
    middle one the target and a late one the gallery view (each the nearest frame there with a
    face), so clips count as people without any labelling."""
    persons = []
    for video in videos:
        cap = cv2.VideoCapture(str(video))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        picked: list[Image | None] = []
        for point in CLIP_POINTS:
            frame: Image | None = None
            for offset in (0, 5, -5, 10, -10, 20, -20):
                index = int(np.clip(point * count + offset, 0, max(count - 1, 0)))
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                ok, bgr = cap.read()
                if not ok:
                    continue
                rgb = cast(Image, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                if detect_faces(rgb, max_faces=1):
                    frame = rgb
                    break
            picked.append(frame)
        cap.release()
        source, target, gallery = picked
        if source is None or target is None or gallery is None:
            print(f"skip {video.name}: no face near {CLIP_POINTS} of the clip", file=sys.stderr)
            continue
        persons.append(Person(video.stem, source, target, gallery))
    return persons


def half_of(name: str) -> str:
    """ "A" or "B": a fixed split of people by a hash of their name (nobody picks the halves)."""
    return "AB"[hashlib.sha256(name.encode()).digest()[0] % 2]


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


SAME_PERSON = 0.6  # dlib's documented threshold: descriptors closer than this are one person


def one_person_clips(persons: list[Person], embedder: Embedder) -> list[Person]:
    """The clips whose source and gallery frames dlib takes for the same person (a clip with
    cuts, or one that ends on someone else, is not one identity)."""
    kept = []
    for p in persons:
        a, b = embedder.embed(p.source), embedder.embed(p.gallery)
        if a is None or b is None:
            print(
                f"skip {p.name}: dlib finds no face in its source or gallery frame", file=sys.stderr
            )
            continue
        distance = float(np.linalg.norm(a - b))
        if distance >= SAME_PERSON:
            print(
                f"skip {p.name}: its early and late frames are not one person to dlib "
                f"(distance {distance:.2f} >= {SAME_PERSON}): cuts or another face",
                file=sys.stderr,
            )
            continue
        kept.append(p)
    return kept


SIDE_LIT = 0.5  # the mesh engine's side-light strength (0..1) from which a photo counts as side-lit


def evaluate_people(
    args: argparse.Namespace,
    cfg: Config,
    embedder: Embedder,
    persons: list[Person],
    sheet_path: Path | None,
) -> dict[str, Any]:
    """Every ordered pair of different people swapped, scored against everyone's gallery view."""
    if len(persons) < 2:
        sys.exit("need at least two people (photo folders, or clips in video-identity mode)")
    gallery = {}
    target_faces = {}
    unswapped: dict[str, float] = {}  # how far each source photo itself is from its gallery view
    side_lit: dict[str, bool] = {}  # whether each source photo is clearly lit from one side
    for p in persons:
        emb = embedder.embed(p.gallery)
        if emb is None:
            print(f"skip {p.name}: dlib finds no face in its gallery view", file=sys.stderr)
            continue
        gallery[p.name] = emb
        own = embedder.embed(p.source)
        if own is not None:
            unswapped[p.name] = float(np.linalg.norm(own - emb))
        if args.half in ("both", half_of(p.name)):  # only a photo swapped from is prepared
            # No usable face: every swap from it is counted as missed below.
            with contextlib.suppress(EngineError):
                side_lit[p.name] = prepare_source(p.source).side_light >= SIDE_LIT
        faces = detect_faces(p.target, max_faces=1)
        if faces:
            target_faces[p.name] = faces[0]
    by_name = {p.name: p for p in persons}
    names = [p.name for p in persons if p.name in gallery and p.name in target_faces]
    gallery_names = list(gallery)
    gallery_matrix = np.stack([gallery[n] for n in gallery_names])
    rows: list[dict[str, Any]] = []
    sheet: list[tuple[Image, Image, Image, str]] = []
    sheet_rows: list[dict[str, Any]] = []
    pairs = [(s, t) for s in names for t in names if s != t and args.half in ("both", half_of(s))]
    engine = create_engine(cfg)
    sources = [n for n in names if args.half in ("both", half_of(n))]
    for source_name in tqdm(sources, desc="sources", disable=None):
        try:
            identity = engine.prepare([by_name[source_name].source])
        except Exception as exc:  # a source without a usable face: count every pair as missed
            print(f"source {source_name}: {exc}", file=sys.stderr)
            continue
        stages = build_stages(cfg, engine, identity, still=True)
        source_box = detect_box(by_name[source_name].source)
        for target_name in names:
            if target_name == source_name:
                continue
            target = by_name[target_name].target
            start = time.perf_counter()
            frame = swap_still(cfg, stages, target)
            swap_ms = (time.perf_counter() - start) * 1e3
            face = target_faces[target_name]
            swapped = frame.result
            emb = embedder.embed(swapped, hint=face.box)
            row: dict[str, Any] = {
                "source": source_name,
                "target": target_name,
                "half": half_of(source_name),
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
            if args.sheet_half in ("both", row["half"]):
                sheet.append(
                    (
                        thumb(by_name[source_name].source, box=source_box),
                        thumb(target, box=face.box),
                        thumb(swapped, box=face.box),
                        f"{source_name} -> {target_name}",
                    )
                )
                sheet_rows.append(row)
        close_stages(stages)
    result = {
        "people": len(names),
        "pairs": len(pairs),
        **summary_of(rows, len(gallery_names)),
        "halves": {
            half: {
                "people": sorted({r["source"] for r in rows if r["half"] == half}),
                **summary_of([r for r in rows if r["half"] == half], len(gallery_names)),
                # The half's own difficulty, before any swap: a half whose source photos are
                # further from their gallery views is harder to retrieve, tuned on or not.
                "unswapped_dist_source": mean_of(
                    [d for n, d in unswapped.items() if half_of(n) == half and n in sources]
                ),
                # Lit from one side: the shadow side's relief and the light cannot be told
                # apart, so such a source keeps less of its own shading (a harder source too).
                "side_lit_sources": sum(
                    lit for n, lit in side_lit.items() if half_of(n) == half and n in sources
                ),
            }
            for half in "AB"
        },
        "split": split_check(rows),
        "rows": rows,
    }
    if sheet_path is not None and sheet:
        write_sheet(sheet, sheet_rows, sheet_path, args.sheet_rows)
    return result


SPLIT_PERMUTATIONS = 2000


def split_check(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How far apart the halves' retrieval is, and how far apart it would be by chance.

    Swaps from one source hit or miss together (a hard face is hard onto every target), so the
    halves differ by who happens to be in them as much as by any tuning. Reassigning the same
    sources to halves of the same sizes at random, with nothing tuned on either, gives the gaps
    that chance alone makes: a real gap from over-fitting is one that few of them reach.
    """
    sources = sorted({r["source"] for r in rows})
    hits = np.array(
        [sum(r.get("nearest") == s for r in rows if r["source"] == s) for s in sources], float
    )
    counts = np.array([sum(r["source"] == s for r in rows) for s in sources], float)
    in_a = np.array([half_of(s) == "A" for s in sources])
    per_source = {s: f"{int(h)}/{int(c)}" for s, h, c in zip(sources, hits, counts, strict=True)}
    if in_a.all() or not in_a.any():
        return {"per_source": per_source}

    def gap(mask: npt.NDArray[np.bool_]) -> float:
        a = hits[mask].sum() / counts[mask].sum()
        b = hits[~mask].sum() / counts[~mask].sum()
        return float(a - b)

    observed = gap(in_a)
    rng = np.random.default_rng(0)  # the same figures every run
    chance = np.abs([gap(rng.permutation(in_a)) for _ in range(SPLIT_PERMUTATIONS)])
    return {
        "per_source": per_source,
        "gap_a_minus_b": round(observed, 4),
        "chance_gap_median": round(float(np.median(chance)), 4),
        "chance_gap_p90": round(float(np.percentile(chance, 90)), 4),
        "chance_at_least_this_gap": round(float(np.mean(chance >= abs(observed) - 1e-9)), 4),
    }


def mean_of(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def summary_of(rows: list[dict[str, Any]], gallery_size: int) -> dict[str, Any]:
    """Retrieval, distances and landmark error over ``rows``."""
    if not rows:
        return {"swapped": 0}
    lm = [r["landmark_error"] for r in rows if r["landmark_error"] is not None]
    src = [r["dist_source"] for r in rows if "dist_source" in r]
    tgt = [r["dist_target"] for r in rows if "dist_target" in r]
    return {
        "swapped": len(rows),
        "identity_retrieval": round(
            float(np.mean([r.get("nearest") == r["source"] for r in rows])), 4
        ),
        "still_target": round(float(np.mean([r.get("nearest") == r["target"] for r in rows])), 4),
        "chance": round(1 / max(gallery_size, 1), 4),
        "mean_dist_source": mean_of(src),
        "mean_dist_target": mean_of(tgt),
        "landmark_error": mean_of(lm),
        "landmark_error_p90": round(float(np.percentile(lm, 90)), 4) if lm else None,
        "swap_ms_median": round(float(np.median([r["swap_ms"] for r in rows])), 1),
    }


RELIGHTS = ("dim", "side", "top", "pink", "tungsten", "grey")


def _to_linear(image: Image) -> npt.NDArray[np.float32]:
    x = image.astype(np.float32) / 255
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _to_srgb(linear: npt.NDArray[np.float32]) -> Image:
    y = np.clip(linear, 0.0, 1.0)
    srgb = np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.power(y, 1 / 2.4) - 0.055)
    return np.asarray(np.round(srgb * 255), np.uint8)


def relit(image: Image, kind: str, box: tuple[float, float, float, float]) -> Image:
    """``image`` as a camera would have taken it under another light (linear light), with the
    face in ``box``: "dim" (a fifth of the light, with sensor noise), "side" (falling from
    1.15x at the face's right edge to 0.25x at its left), "top" (1.2x at the forehead to 0.3x at
    the chin), "pink" or "tungsten" (a coloured lamp), "grey" (black and white)."""
    light = _to_linear(image)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    if kind == "dim":
        noise = np.random.default_rng(0).normal(0, 0.004, light.shape).astype(np.float32)
        light = light * np.float32(0.2) + noise
    elif kind == "side":
        across = (np.arange(w, dtype=np.float32) - x0) / max(x1 - x0, 1.0)
        light = light * np.clip(0.25 + 0.9 * across, 0.25, 1.15)[None, :, None]
    elif kind == "top":
        down = (np.arange(h, dtype=np.float32) - y0) / max(y1 - y0, 1.0)
        light = light * np.clip(1.2 - 0.9 * down, 0.3, 1.2)[:, None, None]
    elif kind == "pink":
        light = light * np.array([1.25, 0.7, 1.15], np.float32)
    elif kind == "tungsten":
        light = light * np.array([1.3, 0.95, 0.55], np.float32)
    elif kind == "grey":
        grey = light @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        light = np.repeat(grey[..., None], 3, axis=2)
    else:
        raise ValueError(f"relight {kind!r}: expected one of {', '.join(RELIGHTS)}")
    return _to_srgb(light)


def relit_people(persons: list[Person], relight: str) -> list[Person]:
    """``persons`` with each one's source photo (``relight`` "KIND") or target photo
    ("target-KIND") re-lit by :func:`relit`; the gallery views as they are."""
    on_target = relight.startswith("target-")
    kind = relight.removeprefix("target-")
    out = []
    for person in persons:
        photo = person.target if on_target else person.source
        box = detect_box(photo)
        if box is None:
            out.append(person)
            continue
        changed = relit(photo, kind, box)
        if on_target:
            out.append(Person(person.name, person.source, changed, person.gallery))
        else:
            out.append(Person(person.name, changed, person.target, person.gallery))
    return out


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


@dataclass
class Collected:
    captured: Image
    output: Image
    hull: npt.NDArray[np.bool_] | None  # inside the tracked face's hull


def run_clip(cfg: Config, video: Path, source: Image, max_frames: int) -> list[Collected]:
    """``video`` swapped offline through the real pipeline; every frame in and out."""
    frames: list[Collected] = []

    class Collect:
        name = "collect"
        wants_stop = False

        def send(self, frame: Frame) -> None:
            hull = None
            if frame.faces:
                mask = np.zeros(frame.image.shape[:2], np.uint8)
                points = cv2.convexHull(np.round(frame.faces[0].landmarks[:, :2]).astype(np.int32))
                cv2.fillConvexPoly(mask, points, 255)
                hull = mask > 0
            frames.append(Collected(frame.image, frame.result, hull))

        def close(self, outcome: str = "complete") -> None:
            pass

    with tempfile.TemporaryDirectory() as tmp:
        source_path = Path(tmp) / "source.png"
        cv2.imwrite(str(source_path), cv2.cvtColor(source, cv2.COLOR_RGB2BGR))
        video_cfg = cfg.replace({"engine.source": [str(source_path)], "capture.pacing": "fast"})
        run = build_run(
            video_cfg,
            sinks=[Collect()],
            max_frames=max_frames,
            source=VideoFileSource(video, realtime=False),
        )
        run_async(run.pipeline.run)
    return frames


def evaluate_video(
    args: argparse.Namespace, cfg: Config, video: Path, source: Image
) -> dict[str, Any]:
    """Flicker: the mean frame-to-frame change inside the face hull, swapped over original.

    A still face shows up here: its original barely changes, so any shimmer of the swap is a
    large ratio."""
    frames = run_clip(cfg, video, source, args.video_frames)
    swap_change, orig_change, counted = 0.0, 0.0, 0
    for a, b in itertools.pairwise(frames):
        if b.hull is None:
            continue
        m = b.hull
        swap_change += float(
            np.abs(b.output.astype(np.int16) - a.output.astype(np.int16))[m].mean()
        )
        orig_change += float(
            np.abs(b.captured.astype(np.int16) - a.captured.astype(np.int16))[m].mean()
        )
        counted += 1
    return {
        "video": video.name,
        "frames": len(frames),
        "frames_with_face": sum(1 for f in frames if f.hull is not None),
        "original_change": round(orig_change / counted, 3) if counted else None,
        "swapped_change": round(swap_change / counted, 3) if counted else None,
        "flicker_ratio": round(swap_change / orig_change, 4) if orig_change else None,
    }


def write_h264(
    out: Path, frames: Iterable[Image], size: tuple[int, int], *, fps: int, pix_fmt: str, crf: int
) -> None:
    """``frames`` (RGB, ``size`` = width, height) H.264-encoded to ``out``, one at a time."""
    import av

    container = av.open(str(out), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = pix_fmt
    stream.options = {"crf": str(crf), "preset": "veryfast"}
    for image in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def still_clip(video: Path, out: Path, frames: int) -> Path:
    """A still webcam face made from ``video``: its middle frame held for ``frames`` frames,
    swaying by a fraction of a pixel per frame (1.5 px across over 4 s, 0.8 px up and down over
    3.1 s: breathing, a chair) with fresh sensor noise every frame, H.264-encoded as a camera's
    stream would be. The same clip every run."""
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) // 2)
    ok, bgr = cap.read()
    cap.release()
    if not ok:
        sys.exit(f"{video}: cannot read its middle frame for the still clip")
    held = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    h, w = held.shape[0] // 2 * 2, held.shape[1] // 2 * 2
    rng = np.random.default_rng(0)

    def frames_out() -> Iterator[Image]:
        for i in range(frames):
            t = i / 30
            dx, dy = 1.5 * np.sin(2 * np.pi * t / 4.0), 0.8 * np.sin(2 * np.pi * t / 3.1 + 1.0)
            swayed = cv2.warpAffine(
                held,
                np.array([[1, 0, dx], [0, 1, dy]], np.float32),
                (held.shape[1], held.shape[0]),
                flags=cv2.INTER_CUBIC,
                borderMode=cv2.BORDER_REFLECT,
            )
            # Sensor noise, spatially correlated as demosaicing leaves it: about 2 grey levels.
            noise = cv2.GaussianBlur(rng.normal(0, 3.2, held.shape).astype(np.float32), (0, 0), 0.7)
            yield np.clip(swayed + noise, 0, 255).astype(np.uint8)[:h, :w]

    write_h264(out, frames_out(), (w, h), fps=30, pix_fmt="yuv420p", crf=18)
    return out


def evaluate_video_from(
    args: argparse.Namespace, cfg: Config, video: Path, sources: dict[str, Image]
) -> dict[str, Any]:
    """:func:`evaluate_video` from each of ``sources``: the worst run's figures, with every
    source's flicker ratio (``by_source``)."""
    runs = {name: evaluate_video(args, cfg, video, image) for name, image in sources.items()}
    measured = [name for name, run in runs.items() if run["flicker_ratio"] is not None]
    worst = max(measured, key=lambda n: runs[n]["flicker_ratio"], default=next(iter(runs)))
    return {
        **runs[worst],
        "source": worst,
        "by_source": {name: run["flicker_ratio"] for name, run in runs.items()},
    }


def cut_out_hand(photo: Image) -> tuple[Image, npt.NDArray[np.float32]]:
    """The most confident hand in ``photo``, cut out with GrabCut (independently of livswap's
    own hand silhouettes): its pixels and a soft 0..1 alpha, cropped to it."""
    import mediapipe as mp

    with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=4) as hands:
        result = hands.process(photo)
    if not result.multi_hand_landmarks:
        sys.exit("--hand-photo: MediaPipe Hands finds no hand in it")
    h, w = photo.shape[:2]
    best = max(
        zip(result.multi_hand_landmarks, result.multi_handedness, strict=True),
        key=lambda lh: lh[1].classification[0].score,
    )[0]
    pts = np.array([(p.x * w, p.y * h) for p in best.landmark], np.float32)
    palm = float(np.linalg.norm(pts[5] - pts[17]))
    mask = np.full((h, w), cv2.GC_BGD, np.uint8)
    hull = cv2.convexHull(np.round(pts).astype(np.int32))
    probable = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(probable, hull, 255)
    probable = cast(Image, cv2.dilate(probable, np.ones((int(palm * 0.7) | 1,) * 2, np.uint8)))
    mask[probable > 0] = cv2.GC_PR_FGD
    for chain in ((0, 1, 2, 3), (0, 5, 6, 7), (9, 10, 11), (13, 14, 15), (0, 17, 18, 19)):
        for a, b in itertools.pairwise(chain):
            cv2.line(
                mask,
                tuple(map(int, pts[a])),
                tuple(map(int, pts[b])),
                cv2.GC_FGD,
                max(2, int(palm * 0.08)),
            )
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
    cv2.grabCut(bgr, mask, None, bgd, fgd, 5, cv2.GC_INIT_WITH_MASK)
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg)
    if count > 1:
        fg = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    ys, xs = np.nonzero(fg)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    alpha = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 1.0)[y0:y1, x0:x1]
    return photo[y0:y1, x0:x1].copy(), alpha


def occluded_clip(
    video: Path, hand: Image, hand_alpha: npt.NDArray[np.float32], out: Path, max_frames: int
) -> list[npt.NDArray[np.float32]]:
    """``video`` with ``hand`` sweeping across the face and back, written losslessly enough to
    ``out``; returns the hand's alpha in each frame."""
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames: list[Image] = []
    while len(frames) < max_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cast(Image, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    cap.release()
    box = None
    for frame in frames:
        faces = detect_faces(frame, max_faces=1)
        if faces:
            box = faces[0].box
            break
    if box is None:
        sys.exit(f"{video}: no face for the occlusion check")
    x0, y0, x1, y1 = box
    face_w, face_h = x1 - x0, y1 - y0
    scale = 0.9 * face_h / hand.shape[0]
    small = cast(Image, cv2.resize(hand, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    small_alpha = cv2.resize(hand_alpha, (small.shape[1], small.shape[0]))
    hh, hw = small.shape[:2]
    alphas = []

    def frames_out() -> Iterator[Image]:
        for i, frame in enumerate(frames):
            phase = i / max(len(frames) - 1, 1)
            sweep = 1 - abs(2 * phase - 1)  # 0 -> 1 -> 0: across the face and back
            cx = x0 - 0.6 * face_w + sweep * 2.2 * face_w
            cy = (y0 + y1) / 2 + 0.1 * face_h
            left, top = int(cx - hw / 2), int(cy - hh / 2)
            alpha = np.zeros(frame.shape[:2], np.float32)
            composed = frame.copy()
            fx0, fy0 = max(left, 0), max(top, 0)
            fx1, fy1 = min(left + hw, frame.shape[1]), min(top + hh, frame.shape[0])
            if fx1 > fx0 and fy1 > fy0:
                a = small_alpha[fy0 - top : fy1 - top, fx0 - left : fx1 - left]
                patch = small[fy0 - top : fy1 - top, fx0 - left : fx1 - left].astype(np.float32)
                region = composed[fy0:fy1, fx0:fx1].astype(np.float32)
                composed[fy0:fy1, fx0:fx1] = (
                    a[..., None] * patch + (1 - a[..., None]) * region
                ).astype(np.uint8)
                alpha[fy0:fy1, fx0:fx1] = a
            alphas.append(alpha)
            yield composed

    size = (frames[0].shape[1], frames[0].shape[0])
    write_h264(out, frames_out(), size, fps=round(fps), pix_fmt="yuv444p", crf=8)
    return alphas


def evaluate_occlusion(
    args: argparse.Namespace, cfg: Config, video: Path, source: Image, hand: tuple[Image, Any]
) -> dict[str, Any]:
    """How much of a hand sweeping over the face survives the swap (inside the face hull), with
    livswap's hand detection on and off; and how much of the uncovered face is still swapped."""
    result: dict[str, Any] = {"video": video.name}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "occluded.mp4"
        alphas = occluded_clip(video, hand[0], hand[1], clip, args.video_frames)
        for hands_on in (True, False):
            frames = run_clip(cfg.replace({"track.hands": hands_on}), clip, source, len(alphas))
            kept, covered, swapped, bare = 0.0, 0, 0.0, 0
            for frame, alpha in zip(frames, alphas, strict=False):
                if frame.hull is None:
                    continue
                diff = np.abs(frame.output.astype(np.int16) - frame.captured.astype(np.int16)).mean(
                    axis=2
                )
                on_hand = frame.hull & (alpha > 0.9)
                off_hand = frame.hull & (alpha < 0.01)
                kept += float((diff[on_hand] < 12).sum())
                covered += int(on_hand.sum())
                swapped += float((diff[off_hand] >= 12).sum())
                bare += int(off_hand.sum())
            key = "hands_on" if hands_on else "hands_off"
            result[key] = {
                "hand_kept": round(kept / covered, 4) if covered else None,
                "face_swapped": round(swapped / bare, 4) if bare else None,
                "frames": len(frames),
            }
        result["frames_with_hand_on_face"] = int(sum(1 for a in alphas if a.max() > 0.9))
    return result


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", type=Path, help="folder with a sub-folder of photos per person")
    p.add_argument(
        "--video-people",
        type=Path,
        nargs="*",
        default=[],
        help="video-identity mode: each clip is a person (early frame = source, middle = target, "
        "late = gallery)",
    )
    p.add_argument(
        "--videos", type=Path, nargs="*", default=[], help="videos for the flicker ratio"
    )
    p.add_argument(
        "--video-source",
        type=Path,
        nargs="+",
        help="source photo(s) for the videos (default: the photos of the first, middle and last "
        "of the --images people); the flicker ratio is the worst of them, the hand check uses "
        "the first",
    )
    p.add_argument("--video-frames", type=int, default=150, help="frames per video")
    p.add_argument(
        "--still",
        action="store_true",
        help="also measure flicker on a still version of each of --videos (its middle frame "
        "held, swaying slightly, with sensor noise)",
    )
    p.add_argument(
        "--hand-photo",
        type=Path,
        help="a photo with a hand: cut out and swept across each of --videos' faces, scored by "
        "how much of it survives",
    )
    p.add_argument(
        "--half",
        choices=("A", "B", "both"),
        default="both",
        help="swap only from the sources of this half of the split (every person is still a "
        "target and in the gallery): for tuning on one half without running the other",
    )
    p.add_argument(
        "--relight",
        nargs="*",
        default=[],
        choices=[*RELIGHTS, *(f"target-{k}" for k in RELIGHTS)],
        metavar="KIND",
        help="with --images: retrieval again with every source photo re-lit (KIND: "
        f"{', '.join(RELIGHTS)}), or every target (target-KIND)",
    )
    p.add_argument("--engine", default="mesh")
    p.add_argument("--config", type=Path, help="config.toml to start from")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--sheet", type=Path, help="contact sheet PNG (source | target | swap)")
    p.add_argument("--sheet-rows", type=int, default=20)
    p.add_argument(
        "--sheet-half",
        choices=("A", "B", "both"),
        default="both",
        help="draw only the swaps whose source is in this half of the split (look at the half "
        "you tune on; the other half's figures are the held-out check)",
    )
    args = p.parse_args()
    if args.images is None and not args.videos and not args.video_people:
        p.error("give --images, --video-people and/or --videos")
    cfg = load_config(args.config, {"engine.name": args.engine, "output.label": False})
    result: dict[str, Any] = {"engine": args.engine}
    embedder = Embedder() if args.images is not None or args.video_people else None
    persons = people_in(args.images) if args.images is not None else []
    if args.images is not None:
        assert embedder is not None
        result["images"] = evaluate_people(args, cfg, embedder, persons, args.sheet)
        for relight in tqdm(args.relight, desc="relight", disable=None if args.relight else True):
            relit_result = evaluate_people(
                args, cfg, embedder, relit_people(persons, relight), None
            )
            result.setdefault("relit", {})[relight] = {
                k: v for k, v in relit_result.items() if k not in ("rows", "split")
            }
    if args.video_people:
        assert embedder is not None
        clip_sheet = None
        if args.sheet is not None:
            clip_sheet = args.sheet.with_name(args.sheet.stem + "-clips" + args.sheet.suffix)
        clips = one_person_clips(people_in_clips(args.video_people), embedder)
        result["clips"] = evaluate_people(args, cfg, embedder, clips, clip_sheet)
    if args.videos:
        if args.video_source:
            sources = {path.stem: read_image(path) for path in args.video_source}
        elif persons:
            picks = sorted({0, len(persons) // 2, len(persons) - 1})
            sources = {persons[i].name: persons[i].source for i in picks}
        else:
            p.error("--videos without --images needs --video-source")
        result["flicker_sources"] = list(sources)
        result["videos"] = [
            evaluate_video_from(args, cfg, v, sources) for v in tqdm(args.videos, desc="flicker")
        ]
        ratios = [v["flicker_ratio"] for v in result["videos"] if v["flicker_ratio"] is not None]
        result["flicker_ratio_max"] = max(ratios) if ratios else None
        if args.still:
            with tempfile.TemporaryDirectory() as tmp:
                result["still_videos"] = [
                    evaluate_video_from(
                        args,
                        cfg,
                        still_clip(v, Path(tmp) / f"still-{v.stem}.mp4", args.video_frames),
                        sources,
                    )
                    for v in tqdm(args.videos, desc="still")
                ]
            still = [v["flicker_ratio"] for v in result["still_videos"] if v["flicker_ratio"]]
            result["still_flicker_ratio_max"] = max(still) if still else None
        if args.hand_photo is not None:
            hand = cut_out_hand(read_image(args.hand_photo))
            first = next(iter(sources.values()))
            result["occlusion"] = [
                evaluate_occlusion(args, cfg, v, first, hand)
                for v in tqdm(args.videos, desc="occlusion")
            ]
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(brief(result), indent=1))


def brief(result: dict[str, Any]) -> dict[str, Any]:
    """The result without its per-pair rows, for the terminal."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict) and "rows" in value:
            out[key] = {k: v for k, v in value.items() if k != "rows"}
        else:
            out[key] = value
    return out


if __name__ == "__main__":
    main()
