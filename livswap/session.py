"""Assembles a runnable pipeline from a :class:`Config`: source, engine, stages, sinks.

The CLI, the benchmarks and the tests all build runs through :func:`build_run`, so they measure
and exercise the same code the user runs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from livswap.capture import FrameSource, input_kind, open_source, read_image
from livswap.compose import Compositor
from livswap.config import Config
from livswap.engine import ENGINES, Engine, Identity, MixingEngine, create_engine
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
from livswap.pipeline import Pipeline, Stage, close_stages, concurrent_stage, run_stage

__all__ = ["BatchResult", "Run", "build_run", "output_kind", "swap_folder"]

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


def refuse_overwriting_input(source: Path, target: Path) -> None:
    """:class:`OutputError` when writing ``target`` would replace ``source`` (the same file
    through a link, a hard link or another spelling of its path)."""
    same = source.resolve() == target.resolve()
    if not same and source.exists() and target.exists():
        same = os.path.samefile(source, target)
    if same:
        raise OutputError(
            f"output {str(target)!r} is the input file {str(source)!r}: writing it would "
            "destroy the input; choose another output name"
        )


def check_display() -> None:
    """:class:`OutputError` when ``--preview`` has no screen to open its window on."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise OutputError(
            "--preview needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set "
            "(over ssh, use ssh -X, or leave --preview out)"
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
    names = [f"source photo {p!r}" for p in cfg.engine.source]
    if cfg.engine.mix_source:
        if not spec.can_mix or not isinstance(engine, MixingEngine):
            mixers = ", ".join(name for name, other in ENGINES.items() if other.can_mix)
            raise EngineError(
                f"engine {engine.name!r} cannot blend identities (--source-mix): use {mixers}"
            )
        mix_image = read_image(cfg.engine.mix_source, "mix photo")
        return engine.prepare_mix(images, mix_image, cfg.engine.mix_weight, names=names)
    return engine.prepare(images, names=names)


def build_stages(
    cfg: Config, engine: Engine, identity: Identity, *, still: bool = False
) -> list[Stage]:
    """One stream's processing stages between capture and output for this engine.

    The stream's own state (tracker, the engine's stream, the compositor's fades) is made here
    and released by the stages' ``close``. ``still`` is for single images: landmarks are
    detected without tracking and faces appear at full strength instead of fading in.
    """
    stages: list[Stage] = []
    hand_stage: Stage | None = None
    if ENGINES[engine.name].needs_faces:
        from livswap.track import FaceTracker

        tracker = FaceTracker(cfg.track, static=still)

        def track(frame: Frame) -> None:
            tracker.track(frame)
            if not frame.faces:
                frame.notes.add("no_face")

        def track_failed(frame: Frame, exc: BaseException) -> None:
            frame.faces = []
            frame.notes.add("no_face")

        stages.append(Stage("track", track, track_failed, close=tracker.close))
        if cfg.track.hands:
            from livswap.track.hands import HandTracker

            hands = HandTracker(cfg.track.hand_min_confidence, static=still)

            def hands_failed(frame: Frame, exc: BaseException) -> None:
                frame.hands = []

            hand_stage = Stage("hands", hands.track, hands_failed, close=hands.close)

    stream = engine.open_stream(identity)

    def swap_failed(frame: Frame, exc: BaseException) -> None:
        frame.swaps = []
        frame.device_image = None

    swap_stage = Stage("swap", stream.swap, swap_failed, close=stream.close)
    if hand_stage is None:
        stages.append(swap_stage)
    else:
        # Both need only the tracked faces, and compose is the first to use the hands: found
        # while the face is swapped, a hand detection adds nothing to the frame's latency
        # unless it takes longer than the swap.
        stages.append(concurrent_stage([swap_stage, hand_stage], "swap+hands"))
    label = DisclosureLabel(cfg.output.label_text) if cfg.output.label else None
    compositor = Compositor(
        cfg.compose, label=label, fade=not still, device_path=stream.device_path
    )
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
    in_kind = input_kind(cfg.capture.input) if source is None else "custom"
    if kind in ("video", "image"):
        if in_kind in ("video", "image"):
            refuse_overwriting_input(Path(cfg.capture.input), Path(target))
        check_writable(Path(target))
    if cfg.output.preview and sinks is None:
        check_display()
    if kind == "image" and in_kind != "image":
        raise OutputError(
            f"output {target!r} is an image, but input {cfg.capture.input!r} is a "
            f"{in_kind}; write video input to a video file"
        )
    offline = kind in ("video", "image") and in_kind in ("video", "image")
    if sinks is not None or source is not None:
        offline = cfg.capture.pacing == "fast"
    engine = engine or create_engine(cfg)
    # The input first: a missing, damaged or unplugged one is reported at once, not after the
    # source photo has been prepared (seconds for a large photo).
    if source is None:
        source = open_source(cfg.capture, offline=offline)
    try:
        identity = prepare_identity(cfg, engine)
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


@dataclass
class BatchResult:
    written: int
    no_face: int
    skipped: list[str]


def swap_folder(
    cfg: Config,
    input_dir: Path,
    output_dir: Path,
    *,
    on_image: Callable[[Path], None] | None = None,
) -> BatchResult:
    """Swap every image in ``input_dir`` into ``output_dir`` (same names).

    Files that are not images, or cannot be read or written, are skipped and listed; images
    without a face are written unchanged (labelled) and counted.
    """
    from livswap.capture.files import IMAGE_SUFFIXES
    from livswap.errors import InputError

    if not input_dir.is_dir():
        raise OutputError(f"input {str(input_dir)!r} is not a folder")
    is_file_name = output_dir.suffix.lower() in VIDEO_OUTPUT_SUFFIXES | IMAGE_OUTPUT_SUFFIXES
    if (output_dir.exists() and not output_dir.is_dir()) or (
        is_file_name and not output_dir.exists()
    ):
        raise OutputError(
            f"output {str(output_dir)!r} must be a folder when the input is a folder "
            f"({str(input_dir)!r})"
        )
    inside = output_dir.resolve()
    if inside == input_dir.resolve() or input_dir.resolve() in inside.parents:
        raise OutputError(
            f"output folder {str(output_dir)!r} is inside the input folder {str(input_dir)!r}: "
            "its files would be swapped again; choose a folder elsewhere"
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"output folder {str(output_dir)!r} cannot be made: {exc.strerror or exc}"
        ) from None
    engine = create_engine(cfg)
    identity = prepare_identity(cfg, engine)
    stages = build_stages(cfg, engine, identity, still=True)
    result = BatchResult(written=0, no_face=0, skipped=[])
    failures_logged: set[str] = set()
    files = sorted(p for p in input_dir.iterdir() if p.is_file())
    try:
        for seq, path in enumerate(files):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                result.skipped.append(f"{path.name}: not an image")
            else:
                try:
                    image = read_image(path, "input image")
                    frame = Frame(image=image, seq=seq, captured_ns=0, pts=0.0)
                    for stage in stages:
                        run_stage(stage, frame, failures_logged)
                    if "no_face" in frame.notes:
                        result.no_face += 1
                    sink = ImageFileSink(output_dir / path.name)
                    try:
                        sink.send(frame)
                    finally:
                        sink.close("complete" if sink.frames_written else "failed")
                    result.written += 1
                except (InputError, OutputError) as exc:
                    result.skipped.append(str(exc))
            if on_image is not None:
                on_image(path)
    finally:
        close_stages(stages)
    return result
