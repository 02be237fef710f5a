"""Assembles a runnable pipeline from a :class:`Config`: source, engine, stages, sinks.

The CLI, the benchmarks and the tests all build runs through :func:`build_run`, so they measure
and exercise the same code the user runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from livswap.capture import FrameSource, input_kind, open_source, read_image
from livswap.compose import Compositor
from livswap.config import Config
from livswap.engine import ENGINES, Engine, Identity, create_engine
from livswap.errors import EngineError, OutputError
from livswap.frame import Frame
from livswap.label import DisclosureLabel
from livswap.output import (
    IMAGE_OUTPUT_SUFFIXES,
    VIDEO_OUTPUT_SUFFIXES,
    ImageFileSink,
    PreviewSink,
    Sink,
    VideoFileSink,
    VirtualCameraSink,
    check_writable,
)
from livswap.pipeline import Pipeline, Stage

__all__ = ["Run", "build_run", "output_kind"]

log = logging.getLogger(__name__)


def output_kind(target: str) -> str:
    """``"virtualcam"``, ``"video"`` or ``"image"`` for an output target; OutputError otherwise."""
    if target == "virtualcam":
        return "virtualcam"
    suffix = Path(target).suffix.lower()
    if suffix in VIDEO_OUTPUT_SUFFIXES:
        return "video"
    if suffix in IMAGE_OUTPUT_SUFFIXES:
        return "image"
    raise OutputError(
        f"output {target!r}: expected 'virtualcam', a video file "
        f"({', '.join(sorted(VIDEO_OUTPUT_SUFFIXES))}) or an image file "
        f"({', '.join(sorted(IMAGE_OUTPUT_SUFFIXES))})"
    )


@dataclass
class Run:
    """A ready pipeline plus the objects behind it (kept for status and reporting)."""

    pipeline: Pipeline
    source: FrameSource
    engine: Engine
    identity: Identity
    sinks: list[Sink]
    offline: bool


def prepare_identity(cfg: Config, engine: Engine) -> Identity:
    """Load and validate the source photos and let the engine prepare its identity."""
    spec = ENGINES[engine.name]
    if spec.needs_source and not cfg.engine.source:
        raise EngineError(f"engine {engine.name!r} needs a source photo: pass --source PHOTO")
    images = [read_image(p, "source photo") for p in cfg.engine.source]
    return engine.prepare(images)


def build_stages(
    cfg: Config, engine: Engine, identity: Identity, *, still: bool = False
) -> list[Stage]:
    """The processing stages between capture and output for this engine.

    ``still`` is for single images: landmarks are detected without tracking and faces appear
    at full strength instead of fading in.
    """
    stages: list[Stage] = []
    if engine.needs_faces:
        from livswap.track import FaceTracker

        tracker = FaceTracker(cfg.track, static=still)

        def track(frame: Frame) -> None:
            tracker.track(frame)
            if not frame.faces:
                frame.notes.add("no_face")

        def track_failed(frame: Frame, exc: BaseException) -> None:
            frame.faces = []
            frame.notes.add("no_face")

        stages.append(Stage("track", track, track_failed))

    def swap(frame: Frame) -> None:
        engine.swap(frame, identity)

    def swap_failed(frame: Frame, exc: BaseException) -> None:
        frame.patches = []

    stages.append(Stage("swap", swap, swap_failed))
    label = DisclosureLabel(cfg.output.label_text) if cfg.output.label else None
    compositor = Compositor(cfg.compose, label=label, fade=not still)
    stages.append(Stage("compose", compositor.compose, compositor.recover))
    return stages


def build_run(
    cfg: Config,
    *,
    sinks: Sequence[Sink] | None = None,
    max_frames: int | None = None,
    on_output: Callable[[Frame], None] | None = None,
    engine: Engine | None = None,
    source: FrameSource | None = None,
) -> Run:
    """Build the whole run ``cfg`` describes.

    ``sinks`` and ``source`` replace the configured output and input (benchmarks and tests use
    them to measure exactly this pipeline with a discarding sink or a prepared source).
    """
    target = cfg.output.target
    kind = output_kind(target) if sinks is None else "custom"
    if kind in ("video", "image"):
        check_writable(Path(target))
    in_kind = input_kind(cfg.capture.input) if source is None else "custom"
    if kind == "image" and in_kind != "image":
        raise OutputError(
            f"output {target!r} is an image, but input {cfg.capture.input!r} is a "
            f"{in_kind}; write video input to a video file"
        )
    offline = kind in ("video", "image") and in_kind in ("video", "image")
    if sinks is not None or source is not None:
        offline = cfg.capture.pacing == "fast"
    engine = engine or create_engine(cfg)
    identity = prepare_identity(cfg, engine)
    if source is None:
        source = open_source(cfg.capture, offline=offline)
    try:
        if sinks is None:
            built: list[Sink] = []
            if kind == "virtualcam":
                built.append(
                    VirtualCameraSink(
                        source.info,
                        backend=cfg.output.virtualcam_backend,
                        device=cfg.output.virtualcam_device,
                    )
                )
            elif kind == "video":
                built.append(
                    VideoFileSink(
                        target,
                        source.info,
                        crf=cfg.output.video_crf,
                        preset=cfg.output.video_preset,
                        audio_from=source.info.path if in_kind == "video" else None,
                    )
                )
            else:
                built.append(ImageFileSink(target))
            if cfg.output.preview:
                built.append(PreviewSink())
            sinks = built
    except BaseException:
        source.close()
        raise
    stages = build_stages(cfg, engine, identity, still=in_kind == "image")
    pipeline = Pipeline(
        source, stages, sinks, lossless=offline, max_frames=max_frames, on_output=on_output
    )
    return Run(
        pipeline=pipeline,
        source=source,
        engine=engine,
        identity=identity,
        sinks=list(sinks),
        offline=offline,
    )
