"""Training data from a user's folders of face photos and videos: every face found by livswap's
own tracker, FFHQ-aligned at the training resolution, with its identity embedding; cached, so a
second run (or a resumed one) starts at once.

Identities: each video file is one person; photos are grouped by the folder they are in.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from livswap.capture.files import IMAGE_SUFFIXES, read_image
from livswap.errors import InputError, LivswapError
from livswap.frame import Image

__all__ = ["VIDEO_SUFFIXES", "FaceSet", "prepare_faces"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v"})
_FRAMES_PER_VIDEO = 48


@dataclass(frozen=True)
class FaceSet:
    """Aligned face crops (N, S, S, 3) uint8 RGB, their identity embeddings (N, 512), which
    person each is (N,) and the people's names; what was skipped, and why."""

    crops: npt.NDArray[np.uint8]
    embeddings: npt.NDArray[np.float32]
    person: npt.NDArray[np.int64]
    people: tuple[str, ...]
    skipped: tuple[str, ...]

    @property
    def sha256(self) -> str:
        """A hash of the training data itself (recorded in the trained model)."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.crops).tobytes())
        digest.update(np.ascontiguousarray(self.person).tobytes())
        return digest.hexdigest()


def _files(folders: list[Path]) -> list[Path]:
    found = []
    for folder in folders:
        if not folder.exists():
            raise InputError(f"training data {str(folder)!r} does not exist")
        paths = (
            [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
        )
        found += [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
    if not found:
        raise InputError(
            f"no photos or videos in {', '.join(repr(str(f)) for f in folders)} "
            f"(looked for {', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})"
        )
    return found


def _video_frames(path: Path, count: int) -> Iterator[Image]:
    """About ``count`` frames spread over the video, decoded as far as it is decodable."""
    try:
        container = av.open(str(path), metadata_errors="replace")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"{path.name} is not a readable video: {exc}") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        total = stream.frames or 300
        every = max(1, total // count)
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % every == 0:
                    yield np.asarray(frame.to_ndarray(format="rgb24"), np.uint8)
        except (av.error.FFmpegError, ValueError):
            log.warning("%s: damaged after some frames; using those", path.name)


def prepare_faces(
    folders: list[Path],
    size: int,
    *,
    align: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float64]],
    embed: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]],
    cache: Path,
    encoder_key: str,
    progress: Callable[[list[Path]], Iterator[Path]] = iter,
) -> FaceSet:
    """Find, align and embed the faces of every photo and video under ``folders``; bad files
    are reported and skipped. ``embed`` maps crops (N, S, S, 3) to embeddings (N, 512)."""
    import cv2

    from livswap.track import StillFaceDetector

    files = _files(folders)
    key = hashlib.sha256()
    for path in files:
        stat = path.stat()
        key.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    key.update(f"{size}|{encoder_key}".encode())
    cached = cache / f"train-faces-{key.hexdigest()[:20]}.npz"
    if cached.is_file():
        with np.load(cached) as saved:
            return FaceSet(
                saved["crops"],
                saved["embeddings"],
                saved["person"],
                tuple(str(p) for p in saved["people"]),
                tuple(str(s) for s in saved["skipped"]),
            )
    crops: list[npt.NDArray[np.uint8]] = []
    person: list[int] = []
    people: list[str] = []
    skipped: list[str] = []
    with StillFaceDetector(max_faces=1) as detect:
        for path in progress(files):
            who = str(path) if path.suffix.lower() in VIDEO_SUFFIXES else str(path.parent)
            try:
                images = (
                    list(_video_frames(path, _FRAMES_PER_VIDEO))
                    if path.suffix.lower() in VIDEO_SUFFIXES
                    else [read_image(path, "training photo")]
                )
            except LivswapError as exc:
                skipped.append(f"{path}: {exc}")
                continue
            found = 0
            for image in images:
                faces = detect(image)
                if not faces:
                    continue
                crop = cv2.warpAffine(
                    image, align(faces[0].keypoints), (size, size), flags=cv2.INTER_AREA
                )
                if who not in people:
                    people.append(who)
                crops.append(np.asarray(crop, np.uint8))
                person.append(people.index(who))
                found += 1
            if not found:
                skipped.append(f"{path}: no face found")
    if not crops:
        raise InputError(f"no faces found in the training data ({len(skipped)} files skipped)")
    stacked = np.stack(crops)
    embeddings = np.concatenate(
        [embed(stacked[i : i + 32]) for i in range(0, len(stacked), 32)]
    ).astype(np.float32)
    found_faces = FaceSet(
        stacked, embeddings, np.asarray(person, np.int64), tuple(people), tuple(skipped)
    )
    cache.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.name + ".partial.npz")
    np.savez(
        partial,
        crops=found_faces.crops,
        embeddings=found_faces.embeddings,
        person=found_faces.person,
        people=np.asarray(found_faces.people),
        skipped=np.asarray(found_faces.skipped, dtype=str),
    )
    partial.replace(cached)
    return found_faces
