"""Command line: ``livswap [run options]``, ``livswap doctor``.

The CLI only parses arguments, builds a run through :mod:`livswap.session` and reports; all
behaviour lives in the library.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from livswap import __version__
from livswap.config import Config, load_config
from livswap.engine import engine_names
from livswap.errors import ConfigError, LivswapError
from livswap.frame import Frame
from livswap.runloop import run_async
from livswap.stats import PipelineStats

__all__ = ["main"]

log = logging.getLogger("livswap")
T = TypeVar("T")

EXIT_USAGE = 2  # bad input: one line says what
EXIT_DAMAGED = 3  # the job completed, but the input had damaged or missing frames
EXIT_INTERRUPTED = 130  # stopped before the end (Ctrl-C); what was done is kept aside


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        width, height = int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT like 1280x720, got {text!r}"
        ) from None
    if not (16 <= width <= 7680 and 16 <= height <= 4320):
        raise argparse.ArgumentTypeError(
            f"expected a size from 16x16 to 7680x4320 like 1280x720, got {text!r}"
        )
    return width, height


@dataclass(frozen=True)
class Terminal:
    """What stderr was when livswap started, before the native-log filter replaced it with a
    pipe: a terminal gets a progress bar and a status line redrawn in place, anything else
    plain lines."""

    tty: bool
    columns: int = 100

    @staticmethod
    def of_stderr() -> Terminal:
        try:
            if not os.isatty(2):
                return Terminal(False)
            return Terminal(True, os.get_terminal_size(2).columns or 100)
        except (OSError, ValueError):
            return Terminal(False)


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livswap",
        description="Face-swapped camera: webcam (or file) in, swapped face out to a virtual "
        "camera or a file. Subcommands: 'livswap serve' (the browser demo), 'livswap models' "
        "(list, fetch, import and verify model files), 'livswap doctor' (what this machine "
        "has, and how to fix the rest); each has its own --help.",
        epilog="Every output frame carries a visible 'AI-altered' label unless --no-label "
        "is given.",
    )
    p.add_argument("--version", action="version", version=f"livswap {__version__}")
    p.add_argument(
        "--source",
        action="append",
        metavar="PHOTO",
        help="photo of the face to swap in (repeat to average several photos)",
    )
    p.add_argument(
        "--input",
        "-i",
        metavar="IN",
        help="webcam index or /dev/videoN, video file, image file, or 'pattern' (default: 0)",
    )
    p.add_argument(
        "--output",
        "-o",
        metavar="OUT",
        help="'virtualcam' (default), a video file (.mp4/.mkv/.mov) or an image file",
    )
    p.add_argument(
        "--engine", "-e", metavar="NAME", help=f"swap engine: {', '.join(engine_names())}"
    )
    p.add_argument(
        "--source-mix",
        metavar="PHOTO",
        help="neural engines: blend this second identity into the source's",
    )
    p.add_argument(
        "--model",
        metavar="NAME",
        help="a model trained with `livswap train`: styleswap runs the only or newest one by "
        "default, simswap-224 its imported weights unless given one",
    )
    p.add_argument(
        "--mix-weight",
        type=float,
        metavar="W",
        help="share of --source-mix's identity, 0..1 (default 0.5)",
    )
    p.add_argument("--config", "-c", metavar="FILE", help="a config.toml with your settings")
    p.add_argument("--size", type=_size, metavar="WxH", help="requested camera size, e.g. 1280x720")
    p.add_argument("--fps", type=float, help="requested camera frame rate")
    pacing = p.add_mutually_exclusive_group()
    pacing.add_argument(
        "--realtime",
        action="store_const",
        const="realtime",
        dest="pacing",
        help="play a video file input at its own frame rate, like a camera",
    )
    pacing.add_argument(
        "--fast",
        action="store_const",
        const="fast",
        dest="pacing",
        help="process every frame of a video file as fast as possible",
    )
    p.add_argument(
        "--loop", action="store_true", default=None, help="restart a video file input at its end"
    )
    p.add_argument(
        "--preview", action="store_true", default=None, help="also show the output in a window"
    )
    p.add_argument(
        "--virtualcam-device", metavar="DEV", help="virtual camera device, e.g. /dev/video10"
    )
    p.add_argument(
        "--no-label",
        action="store_true",
        help="do NOT draw the visible 'AI-altered' disclosure label (only where viewers "
        "already know the video is altered)",
    )
    p.add_argument(
        "--max-faces", type=int, metavar="N", help="most faces tracked per frame (default 1)"
    )
    p.add_argument(
        "--select",
        choices=["largest", "all", "nearest"],
        help="which tracked faces are swapped (default largest)",
    )
    p.add_argument(
        "--assign",
        choices=["same", "by_position"],
        help="several faces: all get the first --source, or left to right get them in order",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return p


# Flags that set one config key to their value when given.
_FLAG_KEYS = {
    "input": "capture.input",
    "output": "output.target",
    "engine": "engine.name",
    "model": "engine.model",
    "source_mix": "engine.mix_source",
    "mix_weight": "engine.mix_weight",
    "fps": "capture.fps",
    "pacing": "capture.pacing",
    "virtualcam_device": "output.virtualcam_device",
    "max_faces": "track.max_faces",
    "select": "track.select",
    "assign": "engine.assign",
    "log_level": "pipeline.log_level",
}


def config_from_args(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {
        key: getattr(args, flag)
        for flag, key in _FLAG_KEYS.items()
        if getattr(args, flag) is not None
    }
    if args.source:
        overrides["engine.source"] = list(args.source)
    if args.size is not None:
        overrides["capture.width"], overrides["capture.height"] = args.size
    if args.loop:
        overrides["capture.loop"] = True
    if args.preview:
        overrides["output.preview"] = True
    if args.no_label:
        overrides["output.label"] = False
    return load_config(args.config, overrides)


class _StatusLine:
    """The one-line live status (fps, latency, drops), rewritten in place on a terminal."""

    def __init__(self, terminal: Terminal, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.tty = terminal.tty
        self.width = 0

    def show(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()


def _progress(terminal: Terminal, total: int, unit: str) -> Any:
    """A tqdm bar on a terminal (stderr is a pipe by then: the native-log filter's), none
    otherwise."""
    from tqdm import tqdm

    return tqdm(
        total=total, unit=unit, desc="livswap", disable=not terminal.tty, ncols=terminal.columns
    )


async def _run_pipeline(cfg: Config, terminal: Terminal) -> tuple[PipelineStats, str, int]:
    from livswap.capture.files import VideoFileSource
    from livswap.session import build_run

    progress: Any = None

    def on_output(frame: Frame) -> None:
        if progress is not None:
            progress.update(1)

    run = build_run(cfg, on_output=on_output)
    info = run.source.info
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, run.pipeline.stop)
    sinks = ", ".join(
        str(getattr(s, "device", None) or getattr(s, "path", None) or s.name) for s in run.sinks
    )
    log.info(
        "livswap: %s -> %s with engine %s%s",
        info.description,
        sinks,
        run.engine.name,
        "" if cfg.output.label else " (disclosure label OFF)",
    )
    if run.offline and (info.frame_count or 0) > 1:  # after the line above: a bar redraws
        progress = _progress(terminal, info.frame_count or 0, "frame")
    status: asyncio.Task[None] | None = None
    line = _StatusLine(terminal)
    if not run.offline:

        async def report() -> None:
            while True:
                await asyncio.sleep(cfg.pipeline.status_interval_s)
                line.show(run.pipeline.stats.status_line(cfg.pipeline.status_interval_s))

        status = asyncio.create_task(report(), name="status")
    started = time.monotonic()
    try:
        stats = await run.pipeline.run()
    finally:
        if status is not None:
            status.cancel()
            line.end()
        if progress is not None:
            progress.close()
    seconds = time.monotonic() - started
    summary = (
        f"livswap: {stats.frames_out} frames out of {stats.frames_in} in {seconds:.1f} s "
        f"({stats.frames_out / max(seconds, 1e-9):.1f} fps); {stats.faces_swapped} faces "
        f"swapped; dropped {stats.frames_dropped}, failed {stats.frames_failed}, no face "
        f"{stats.frames_no_face}"
    )
    status_code = 0
    source = run.source
    if isinstance(source, VideoFileSource) and run.pipeline.outcome == "complete":
        damage = source.damage_report()
        if damage:
            log.warning("livswap: warning: input %s: %s", source.path.name, damage)
            status_code = EXIT_DAMAGED
    if run.pipeline.outcome == "interrupted":
        status_code = EXIT_INTERRUPTED
    return stats, summary, status_code


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(message)s", stream=sys.stderr, force=True)
    import cv2

    # OpenCV's own WARN lines (e.g. probing a missing camera) duplicate our one-line errors.
    cv2.setLogLevel(5 if level == "debug" else 2)  # OpenCV's levels: 2 = ERROR, 5 = DEBUG


def _main_batch(cfg: Config, terminal: Terminal) -> int:
    from livswap.session import swap_folder

    input_dir, output_dir = Path(cfg.capture.input), Path(cfg.output.target)
    total = sum(1 for p in input_dir.iterdir() if p.is_file())
    with _progress(terminal, total, "image") as bar:
        result = swap_folder(cfg, input_dir, output_dir, on_image=lambda _: bar.update(1))
    for reason in result.skipped:
        log.warning("skipped %s", reason)
    print(
        f"livswap: wrote {result.written} images to {output_dir} ({result.no_face} without a "
        f"face, passed through); skipped {len(result.skipped)}",
        file=sys.stderr,
    )
    return 0


def _main_run(argv: Sequence[str], terminal: Terminal) -> int:
    args = run_parser().parse_args(argv)
    _configure_logging("info")
    cfg = config_from_args(args)
    _configure_logging(cfg.pipeline.log_level)
    if Path(cfg.capture.input).is_dir():
        return _main_batch(cfg, terminal)
    _stats, summary, status_code = run_async(lambda: _run_pipeline(cfg, terminal))
    print(summary, file=sys.stderr)
    return status_code


def _main_doctor(argv: Sequence[str]) -> int:
    from livswap.doctor import run_doctor

    p = argparse.ArgumentParser(
        prog="livswap doctor", description="Show what this machine has and what is missing."
    )
    p.add_argument("--config", "-c", metavar="FILE")
    args = p.parse_args(argv)
    return run_doctor(load_config(args.config), sys.stdout)


def _main_serve(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="livswap serve",
        description="Serve the browser demo: open the printed address, allow the camera, pick a "
        "source photo, and see yourself swapped live.",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument("--cert", help="TLS certificate (PEM); required beyond loopback")
    p.add_argument("--key", help="TLS private key (PEM)")
    p.add_argument(
        "--token",
        help="bearer token every request must carry (default: random when not on loopback)",
    )
    p.add_argument("--engine", "-e", metavar="NAME", help="default engine for the page")
    p.add_argument("--config", "-c", metavar="FILE")
    p.add_argument(
        "--no-label",
        action="store_true",
        help="do NOT draw the 'AI-altered' label on returned video",
    )
    args = p.parse_args(argv)
    overrides: dict[str, Any] = {}
    for key in ("host", "port", "cert", "key", "token"):
        if getattr(args, key) is not None:
            overrides[f"serve.{key}"] = getattr(args, key)
    if args.engine:
        overrides["engine.name"] = args.engine
    if args.no_label:
        overrides["output.label"] = False
    cfg = load_config(args.config, overrides)
    _configure_logging(cfg.pipeline.log_level)
    from aiohttp import web

    from livswap.webrtc.server import (
        LOOPBACK_HOSTS,
        Server,
        check_exposure,
        create_app,
        restrict_ice_candidates,
        ssl_context,
    )

    token = check_exposure(cfg)
    ssl_ctx = ssl_context(cfg)
    restrict_ice_candidates(cfg.serve.host)
    app = create_app(Server(cfg, token=token))
    scheme = "https" if ssl_ctx else "http"
    shown_host = "localhost" if cfg.serve.host in LOOPBACK_HOSTS else cfg.serve.host
    url = f"{scheme}://{shown_host}:{cfg.serve.port}/" + (f"?token={token}" if token else "")

    async def serve() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, cfg.serve.host, cfg.serve.port, ssl_context=ssl_ctx)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"serve: cannot listen on {cfg.serve.host}:{cfg.serve.port}: {exc.strerror}"
            ) from None
        print(f"livswap serve: open {url}", file=sys.stderr, flush=True)  # listening now
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    run_async(serve)
    return 0


def _main_models(argv: Sequence[str]) -> int:
    from livswap.models import REGISTRY, ModelStore, model_dir

    p = argparse.ArgumentParser(
        prog="livswap models", description="List, fetch, import and verify model files."
    )
    p.add_argument("--config", "-c", metavar="FILE")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the known models, whether installed, size and licence")
    fetch = sub.add_parser("fetch", help="download a model (resumes; checks it before use)")
    fetch.add_argument("name", choices=list(REGISTRY))
    imp = sub.add_parser("import", help="take a model file you already have")
    imp.add_argument("name", choices=list(REGISTRY))
    imp.add_argument("path", type=Path)
    ver = sub.add_parser("verify", help="re-hash installed models against what was recorded")
    ver.add_argument("name", nargs="?", choices=list(REGISTRY))
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    _configure_logging(cfg.pipeline.log_level)
    store = ModelStore(model_dir(cfg.models.dir))
    if args.action == "list":
        print(f"model folder: {store.folder}")
        for name, spec in REGISTRY.items():
            st = store.status(name)
            state = (
                "installed"
                if st.present and not st.problem
                else (f"DAMAGED: {st.problem}" if st.present else "not installed")
            )
            print(f"  {name:16} {spec.input_size:4d}px ~{spec.size_mb:.0f} MB  {state}")
            print(f"  {'':16} licence: {spec.licence}")
        from livswap.models.trained import trained_models

        for model in trained_models(store):
            print(
                f"  trained/{model.name:8} {model.resolution:4d}px {model.arch}, "
                f"{model.steps} steps, {model.created} (--engine {model.arch} --model {model.name})"
            )
        return 0
    if args.action == "fetch":
        path = store.fetch(args.name)
        print(f"livswap: {args.name} installed at {path}", file=sys.stderr)
        return 0
    if args.action == "import":
        path = store.import_file(args.name, args.path)
        print(f"livswap: {args.name} imported to {path}", file=sys.stderr)
        return 0
    bad = checked = 0
    for st in store.verify([args.name] if args.name else None):
        if not st.present:
            if args.name:
                print(f"  {st.spec.name}: not installed")
                bad += 1
            continue
        print(f"  {st.spec.name}: {'ok' if st.problem is None else st.problem}")
        bad += st.problem is not None
        checked += 1
    if not checked and not bad:
        print(f"  no models installed in {store.folder} (livswap models list shows them all)")
    return 1 if bad else 0


def _main_train(argv: Sequence[str]) -> int:
    from livswap.engine.backends import resolve_spec
    from livswap.engine.simswap import load_arcface
    from livswap.models import ModelStore, model_dir
    from livswap.train import Trainer, TrainSettings, estimate_text, plot_losses

    p = argparse.ArgumentParser(
        prog="livswap train",
        description="Train your own StyleSwap (or SimSwap-style) generator on folders of face "
        "photos and/or videos (each video is one person; photos are grouped by folder). The "
        "result lands in the model folder: run it with `livswap --engine styleswap --model "
        "NAME` (or --engine simswap-224 --model NAME for --arch simswap).",
    )
    p.add_argument("--arch", choices=["styleswap", "simswap"], default="styleswap")
    p.add_argument(
        "--data", type=Path, action="append", metavar="DIR", help="photos/videos (repeat)"
    )
    p.add_argument("--name", required=True, help="the trained model's name")
    p.add_argument("--resolution", type=int, default=256, help="face crop size (default 256)")
    p.add_argument("--steps", type=int, default=100_000, help="training steps (default 100000)")
    p.add_argument("--batch", type=int, default=8, help="faces per step (default 8)")
    p.add_argument("--accumulate", type=int, default=1, help="batches per optimiser step")
    p.add_argument("--narrow", type=float, help="network width factor (default: the spec's)")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate (default 0.002)")
    p.add_argument("--sheet-every", type=int, default=1000, help="steps between PNG sheets")
    p.add_argument("--save-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from NAME's checkpoint")
    p.add_argument("--plot", action="store_true", help="draw NAME's loss curves and exit")
    p.add_argument(
        "--config", "-c", metavar="FILE", help="a config.toml ([models] dir, [engine] device)"
    )
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    _configure_logging(cfg.pipeline.log_level)
    store = ModelStore(model_dir(cfg.models.dir))
    folder = store.folder / "training" / args.name
    if args.plot:
        out = plot_losses(folder / "losses.jsonl", folder / "losses.png")
        print(f"livswap train: loss curves of {args.name} in {out}", file=sys.stderr)
        return 0
    if not args.data:
        raise ConfigError("train: give the training photos/videos with --data DIR")
    for flag, value in (
        ("--steps", args.steps),
        ("--batch", args.batch),
        ("--accumulate", args.accumulate),
    ):
        if value < 1:
            raise ConfigError(f"train: {flag} {value}: expected 1 or more")
    settings = TrainSettings(
        arch=args.arch,
        data=tuple(args.data),
        name=args.name,
        resolution=args.resolution,
        steps=args.steps,
        batch=args.batch,
        accumulate=args.accumulate,
        narrow=args.narrow,
        lr=args.lr,
        sheet_every=args.sheet_every,
        save_every=args.save_every,
    )
    device = resolve_spec(cfg.engine).device
    encoder_path = store.require("arcface-simswap")
    arcface = load_arcface(store.folder / "cache", encoder_path)
    terminal = Terminal.of_stderr()

    def files_progress(files: list[Path]) -> Any:
        from tqdm import tqdm

        return tqdm(files, desc="livswap: preparing faces", unit="file", disable=not terminal.tty)

    trainer = Trainer(settings, store, arcface, encoder_path, device, progress=files_progress)
    faces = trainer.faces
    print(
        f"livswap train: {args.name}: {settings.arch} {settings.resolution} px, "
        f"{sum(q.numel() for q in trainer.generator.parameters()) / 1e6:.2f} M parameters, on "
        f"{device.type}; {len(faces.crops)} faces of {len(faces.people)} people",
        file=sys.stderr,
    )
    for line in faces.skipped:
        print(f"livswap train: skipped {line}", file=sys.stderr)
    if args.resume:
        trainer.resume()
    from tqdm import tqdm

    bar = tqdm(
        total=settings.steps, initial=trainer.step, desc="livswap: training", unit="step",
        disable=not terminal.tty,
    )  # fmt: skip
    first = trainer.step
    try:
        while trainer.step < settings.steps:
            losses = trainer.train_step()
            trainer.log(losses)
            bar.update(1)
            bar.set_postfix(g=f"{losses.generator:.3f}", d=f"{losses.discriminator:.3f}")
            if trainer.step == min(first + 2, settings.steps):  # the first step warms up
                left = settings.steps - trainer.step
                tqdm.write(
                    f"livswap train: {estimate_text(losses.seconds, left, device)} more",
                    file=sys.stderr,
                )
            if trainer.step % settings.save_every == 0:
                trainer.save_checkpoint()
            if trainer.step % settings.sheet_every == 0:
                trainer.sheet()
    except KeyboardInterrupt:
        bar.close()
        trainer.save_checkpoint()
        print(
            f"livswap train: interrupted at step {trainer.step}; --resume continues from there",
            file=sys.stderr,
        )
        return 130
    bar.close()
    path = trainer.finish()
    sheet = trainer.sheet()
    curves = plot_losses(trainer.log_path, folder / "losses.png")
    print(
        f"livswap train: {args.name} saved as {path} after {trainer.step} steps; sheet "
        f"{sheet}, loss curves {curves}. Run it: livswap --engine "
        f"{'styleswap' if settings.arch == 'styleswap' else 'simswap-224'} --model {args.name} "
        "--source PHOTO",
        file=sys.stderr,
    )
    return 0


SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "models": _main_models,
    "train": _main_train,
    "doctor": _main_doctor,
    "serve": _main_serve,
}


_NATIVE_LOG = re.compile(
    rb"^(?:[IWE]\d{4} [\d:. ]+\d+ \S+:\d+\]|INFO: Created TensorFlow Lite|"
    rb"WARNING: All log messages before absl::InitializeLog)"
)


def _quiet_native_logs() -> None:
    """Drop MediaPipe's and TensorFlow Lite's native log lines from stderr.

    They print INFO/WARNING lines (absl, before any Python code can configure it) on every model
    load, which would bury livswap's one-line messages. Everything else written to stderr, by
    Python or native code, passes through unchanged. Only the CLI does this, never the library.
    """
    if os.environ.get("LIVSWAP_NATIVE_LOGS") or not hasattr(os, "pipe"):
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        return

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe, os.fdopen(original, "wb", 0) as out:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not _NATIVE_LOG.match(line):
                        out.write(line + b"\n")
                # A partial line (a progress bar or status redraw) goes out at once.
                if pending and not _NATIVE_LOG.match(pending) and b"\r" in pending:
                    out.write(pending)
                    pending = b""
            if pending and not _NATIVE_LOG.match(pending):
                out.write(pending)

    saved = os.dup(original)
    thread = threading.Thread(target=pump, name="livswap-stderr", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the pump drains it and stops
        os.close(saved)
        thread.join(timeout=2.0)

    atexit.register(restore)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    terminal = Terminal.of_stderr()  # before the filter below turns stderr into a pipe
    _quiet_native_logs()
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]](argv[1:])
        return _main_run(argv, terminal)
    except (LivswapError, ConfigError) as exc:
        print(f"livswap: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
