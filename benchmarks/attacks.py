"""Replays the hostile inputs of the security issue against a livswap checkout and reports, for
each, the response and the memory peak (the whole process tree: server, swap worker, photo
decoder). Point ``--checkout`` at an older commit (a ``git worktree``) for the "before" figures;
the attacks use only the command line and the HTTP API, which older versions share.

    python -m benchmarks.attacks --json after.json
    git worktree add /tmp/old <commit> && python -m benchmarks.attacks --checkout /tmp/old

Run it on an otherwise idle machine: the unbounded attacks on old code take gigabytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
TOKEN = "s3cret"
sys.path.insert(0, str(REPO))  # the hostile files are the test suite's own (tests/hostile.py)
from tests.hostile import (  # noqa: E402
    MEMO_SYSTEM_PICKLE,
    PREFIXED_MODULE_PICKLE,
    forged_png,
    write_lying_archive,
    write_pickle_bomb,
    write_pickle_zip,
)


@dataclass
class Result:
    attack: str
    response: str
    peak_mb: float
    seconds: float


class TreePeak:
    """Samples the resident size of a process and its children every 50 ms; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.process, *self.process.children(recursive=True)]
                total = 0
                for proc in procs:
                    with suppress(psutil.Error):
                        total += proc.memory_info().rss
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self._stop.wait(0.05)

    def __enter__(self) -> TreePeak:
        self.peak = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _known_keys(checkout: Path) -> set[tuple[str, str]]:
    defaults = tomllib.loads((checkout / "livswap" / "default_config.toml").read_text())
    return {(section, key) for section, table in defaults.items() for key in table}


def _config(checkout: Path, folder: Path, wanted: dict[str, dict[str, Any]]) -> Path:
    """A config file with the settings this checkout knows (older ones refuse unknown keys)."""
    known = _known_keys(checkout)
    lines = []
    for section, table in wanted.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if (section, key) in known:
                lines.append(f"{key} = {json.dumps(value)}")
    path = folder / "attack.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _env(checkout: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(checkout), "PYTHONUNBUFFERED": "1"}


@contextmanager
def serve(checkout: Path, folder: Path, **serve_cfg: Any) -> Iterator[tuple[str, int, Path]]:
    port = _free_port()
    cfg = _config(
        checkout,
        folder,
        {
            "serve": {"port": port, "token": TOKEN, **serve_cfg},
            "models": {"dir": str(folder / "models")},
        },
    )
    log_path = folder / f"serve-{port}.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "livswap", "serve", "--config", str(cfg)],
        env=_env(checkout),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=folder,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        time.sleep(1.0)  # the swap worker starts after the port opens
        yield url, proc.pid, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# -- the attacks ---------------------------------------------------------------------------------
async def _http(url: str, method: str, path: str, **kwargs: Any) -> tuple[int, str]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            async with http.request(method, url + path, **kwargs) as r:
                return r.status, (await r.text())[:160].replace("\n", " ")
        except aiohttp.ClientError as exc:
            return 0, f"connection failed: {type(exc).__name__}"


def _upload(url: str, data: bytes, name: str = "x.png") -> tuple[int, str]:
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="image/png")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    return asyncio.run(_http(url, "POST", "/sources", data=form, headers=auth))


def attack_uploads(checkout: Path, work: Path) -> list[Result]:
    results = []
    for width, height in ((30_000, 30_000), (1_000_000, 1_000), (40_000, 40_000)):
        photo = forged_png(width, height, rows=height)  # every row there: a real decode
        with serve(checkout, work) as (url, pid, _), TreePeak(pid) as peak:
            started = time.monotonic()
            status, text = _upload(url, photo)
            seconds = time.monotonic() - started
            time.sleep(1.0)
            health, _ = asyncio.run(
                _http(url, "GET", "/health", headers={"Authorization": f"Bearer {TOKEN}"})
            )
        results.append(
            Result(
                f"upload: PNG declaring {width}x{height}",
                f"{status} {text} | /health after: {health}",
                peak.peak / 2**20,
                seconds,
            )
        )
    return results


def attack_many_photos(checkout: Path, work: Path, photos: int = 51) -> Result:
    """Many large photos with a face: what the kept sources hold."""
    import cv2
    from skimage import data as skdata

    face = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    big = cv2.resize(face, (4000, 4000))
    blobs = []
    for i in range(photos):  # distinct photos (the id is their hash)
        big[:64, :64] = ((5 * i) % 256, (37 * i) % 256, 128)  # a block JPEG keeps
        blobs.append(cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    statuses: dict[int, int] = {}
    with serve(checkout, work, uploads_per_minute=1000, max_upload_mb=20.0) as (url, pid, _):
        started = time.monotonic()
        for blob in blobs:
            status, _ = _upload(url, blob, "big.jpg")
            statuses[status] = statuses.get(status, 0) + 1
        seconds = time.monotonic() - started
        time.sleep(1.0)
        server = psutil.Process(pid)
        held = sum(p.memory_info().rss for p in [server, *server.children(recursive=True)])
    return Result(
        f"{photos} uploads of 4000x4000 photos",
        f"statuses {statuses}; the server's processes hold {held / 2**20:.0f} MB after",
        held / 2**20,
        seconds,
    )


def _browser_offer() -> dict[str, Any]:
    """An offer as the page sends it (aiortc's, one video transceiver), for the passthrough
    engine."""
    from aiortc import RTCPeerConnection

    async def offer_sdp() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = str(pc.localDescription.sdp)
        await pc.close()
        return sdp

    return {"sdp": asyncio.run(offer_sdp()), "type": "offer", "engine": "passthrough"}


def attack_vanishing_offers(checkout: Path, work: Path) -> Result:
    """``max_peers`` offers whose clients vanish before ICE: how long until a real user's
    offer is accepted again."""
    body = _browser_offer()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serve(checkout, work, max_peers=2, offers_per_minute=1000) as (url, _, _):
        taken = [
            asyncio.run(_http(url, "POST", "/offer", json=body, headers=auth))[0] for _ in range(2)
        ]
        started = time.monotonic()
        status = 0
        while time.monotonic() - started < 120:
            status, _ = asyncio.run(_http(url, "POST", "/offer", json=body, headers=auth))
            if status == 200:
                break
            time.sleep(1.0)
        seconds = time.monotonic() - started
    return Result(
        "2 offers on 2 slots from clients that vanish",
        f"first two: {taken}; a real user got {status} after {seconds:.0f} s",
        0.0,
        seconds,
    )


def attack_ice_exposure(checkout: Path, work: Path) -> Result:
    body = _browser_offer()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serve(checkout, work) as (url, _, _):
        import aiohttp

        async def answer() -> str:
            async with (
                aiohttp.ClientSession() as http,
                http.post(url + "/offer", json=body, headers=auth) as r,
            ):
                return str((await r.json()).get("sdp", "")) if r.status == 200 else ""

        sdp = asyncio.run(answer())
    addresses = sorted(
        {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}
    )
    return Result(
        "ICE candidates offered by a server on 127.0.0.1",
        f"candidate addresses: {addresses}",
        0.0,
        0.0,
    )


WRONG_BOUNDARY = b'--other\r\nContent-Disposition: form-data; name="file"\r\n\r\nx\r\n--other--\r\n'


def attack_malformed_requests(checkout: Path, work: Path) -> list[Result]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    cases: list[tuple[str, Callable[[str], tuple[int, str]]]] = [
        (
            "JSON nested 100,000 deep",
            lambda url: asyncio.run(
                _http(url, "POST", "/offer", data=deep,
                      headers={**auth, "Content-Type": "application/json"})
            ),
        ),
        (
            "multipart body with the wrong boundary",
            lambda url: asyncio.run(
                _http(url, "POST", "/sources",
                      data=WRONG_BOUNDARY,
                      headers={**auth, "Content-Type": "multipart/form-data; boundary=expected"})
            ),
        ),
        (
            "non-ASCII Authorization header",
            lambda url: asyncio.run(
                _http(url, "GET", "/health", headers={"Authorization": "Bearer s3crét"})
            ),
        ),
        ("?token=%C3%A9", lambda url: asyncio.run(_http(url, "GET", "/?token=%C3%A9"))),
    ]  # fmt: skip
    results = []
    with serve(checkout, work) as (url, pid, log_path):
        for name, send in cases:
            with TreePeak(pid) as peak:
                started = time.monotonic()
                status, text = send(url)
            results.append(
                Result(name, f"{status} {text}", peak.peak / 2**20, time.monotonic() - started)
            )
    log = log_path.read_text(errors="replace")
    results.append(
        Result("tracebacks in the server log after these", str(log.count("Traceback")), 0.0, 0.0)
    )
    return results


def _cli(checkout: Path, work: Path, *args: str) -> tuple[str, float, float]:
    """Runs ``python -m livswap ARGS``; (first error line and line count, peak MB, seconds)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "livswap", *args],
        env=_env(checkout),
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with TreePeak(proc.pid) as peak:
        out, err = proc.communicate(timeout=600)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    last = lines[-1][:150] if lines else out.strip().splitlines()[-1][:150] if out.strip() else ""
    summary = f"exit {proc.returncode}, {len(lines)} stderr lines: {last}"
    return summary, peak.peak / 2**20, time.monotonic() - started


def attack_model_files(checkout: Path, work: Path) -> list[Result]:
    import onnx

    from tests.checkpoints import write_inswapper_onnx, write_release_arcface

    results = []
    models = work / "models"

    def imported(name: str, file: Path, label: str) -> None:
        (work / "EVIL_RAN").unlink(missing_ok=True)
        cfg = str(_config(checkout, work, {"models": {"dir": str(models)}}))
        summary, peak, seconds = _cli(
            checkout, work, "models", "--config", cfg, "import", name, str(file)
        )
        manifest = models / "manifest.json"
        pinned = json.loads(manifest.read_text()) if manifest.exists() else {}
        installed = "recorded as installed" if name in pinned else "not installed"
        ran = "code RAN" if (work / "EVIL_RAN").exists() else "no code ran"
        results.append(Result(label, f"{summary} | {installed}; {ran}", peak, seconds))
        for spec_file in models.glob("*"):
            if spec_file.is_file() and spec_file.name != "manifest.json":
                spec_file.unlink()
        (models / "manifest.json").unlink(missing_ok=True)

    imported(
        "arcface-simswap",
        write_pickle_zip(work / "memo.tar", MEMO_SYSTEM_PICKLE),
        "pickle: os.system from the memo",
    )
    imported(
        "arcface-simswap",
        write_pickle_zip(work / "prefix.tar", PREFIXED_MODULE_PICKLE),
        "pickle: module 'torch.serialization os'",
    )
    imported(
        "simswap-224",
        write_pickle_bomb(work / "bomb.pth", 3 * 1024),
        "3 GiB-inflating data.pkl (a few MB on disk)",
    )

    liar = write_lying_archive(write_release_arcface(work / "honest.tar"), work / "liar.tar")
    imported("arcface-simswap", liar, "zip member that lies about its size")

    (work / "secret.bin").write_bytes(b"\x00" * 4096)
    for location in ("../../../../etc/passwd", "/etc/passwd", "secret.bin"):
        model = onnx.load(str(write_inswapper_onnx(work / "base.onnx")))
        tensor = model.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", location
        path = work / "inswapper_128.onnx"
        onnx.save(model, str(path))
        imported("inswapper-128", path, f"ONNX tensor stored at {location!r}")

    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, default=REPO, help="livswap source tree to attack")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--only", choices=["uploads", "photos", "offers", "ice", "requests", "models"], nargs="*"
    )
    args = parser.parse_args(argv)
    chosen = set(args.only or ["uploads", "photos", "offers", "ice", "requests", "models"])
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="livswap-attacks-") as tmp:
        work = Path(tmp)
        (work / "models").mkdir()
        steps: list[tuple[str, Callable[[], list[Result]]]] = [
            ("uploads", lambda: attack_uploads(args.checkout, work)),
            ("photos", lambda: [attack_many_photos(args.checkout, work)]),
            ("offers", lambda: [attack_vanishing_offers(args.checkout, work)]),
            ("ice", lambda: [attack_ice_exposure(args.checkout, work)]),
            ("requests", lambda: attack_malformed_requests(args.checkout, work)),
            ("models", lambda: attack_model_files(args.checkout, work)),
        ]
        for name, step in steps:
            if name not in chosen:
                continue
            for result in step():
                results.append(result)
                print(
                    f"{result.attack:48s} peak {result.peak_mb:7.0f} MB  {result.seconds:6.1f} s  "
                    f"{result.response}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
