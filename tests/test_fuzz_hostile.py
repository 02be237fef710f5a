"""Fuzzing what strangers hand ``livswap serve`` and what a downloaded model file may hold.

Properties, for every example: a client error is a 4xx with a JSON reason (never a 5xx, never a
traceback logged at error level); memory stays under a bound (the peak resident size is reset
before each example and read after it, from /proc); a model loader opens nothing outside the
folder that holds the file (an audit hook watches every ``open``); the server stays healthy.
Examples are bounded so the suite stays fast.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import struct
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
import torch
from aiohttp import web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from livswap.config import load_config
from livswap.errors import ModelError
from livswap.models import ModelStore, get_spec
from livswap.models.safety import check_onnx, load_safetensors
from livswap.webrtc.server import Server, _HttpError, create_app, enable_loopback_candidates
from tests.checkpoints import write_inswapper_onnx
from tests.fuzzing import mutated

HOSTILE = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MEMORY_BOUND = 300 * 2**20  # more than any example should need; a bomb needs gigabytes
TOKEN = "s3cret"


# -- measuring ---------------------------------------------------------------------------------
def _peak_rss_reset() -> bool:
    """Reset this process's peak resident size (Linux ``clear_refs`` 5); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _status_bytes(field: str) -> int:
    """A size from /proc/self/status (``VmHWM``: the peak resident size, ``VmRSS``: now)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class _Peak:
    """``with _Peak() as peak: ...`` then ``peak.grew``: how far the peak rose above the
    resident size at the start (0 where the peak cannot be reset)."""

    def __enter__(self) -> _Peak:
        self.enabled = _peak_rss_reset()
        self.start = _status_bytes("VmRSS")
        self.grew = 0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.grew = _status_bytes("VmHWM") - self.start


class _OpenedPaths:
    """Every path opened while ``watching`` (one audit hook for the whole session: hooks
    cannot be removed)."""

    def __init__(self) -> None:
        self.watching = False
        self.paths: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.watching and event == "open" and isinstance(args[0], str | bytes | Path):
            self.paths.append(str(args[0] if not isinstance(args[0], bytes) else args[0].decode()))

    def outside(self, folder: Path) -> list[str]:
        """Opened paths that are neither in ``folder`` nor Python's own (lazy imports)."""
        allowed: tuple[str, ...] = (
            str(folder.resolve()),
            sys.prefix,
            sys.base_prefix,
            "/proc/",
            "/dev/",
        )
        allowed += tuple(str(Path(p).resolve()) for p in sys.path if p)
        return [p for p in self.paths if not str(Path(p).resolve()).startswith(allowed)]


OPENED = _OpenedPaths()


def _loader_result(load: Callable[[], object], folder: Path) -> str:
    """Run a loader on a hostile file: it may succeed or raise a one-line ModelError naming the
    file; it opens nothing outside ``folder`` and stays under the memory bound."""
    OPENED.paths.clear()
    outcome = "loaded"
    with _Peak() as peak:
        OPENED.watching = True
        try:
            load()
        except ModelError as exc:
            assert "\n" not in str(exc), str(exc)
            outcome = "refused"
        finally:
            OPENED.watching = False
    assert peak.grew < MEMORY_BOUND, f"peak rose by {peak.grew / 2**20:.0f} MB"
    assert not OPENED.outside(folder), OPENED.outside(folder)
    return outcome


# -- mutating files ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def state_dict_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seed") / "sd.pth"
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.zeros(4)}, path)
    return path


@pytest.fixture(scope="module")
def module_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole pickled module as the ArcFace release stores one (small)."""
    path = tmp_path_factory.mktemp("seed") / "m.tar"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)), path)
    return path


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inswapper_onnx(tmp_path_factory.mktemp("seed") / "i.onnx")


@HOSTILE
@given(data=st.data())
def test_mutated_checkpoints_load_or_are_refused_in_one_line(
    data: st.DataObject, state_dict_file: Path, module_file: Path, tmp_path: Path
) -> None:
    """Mutated zips and the pickles inside them, through the gate used at import and load."""
    name = data.draw(st.sampled_from(["simswap-224", "arcface-simswap"]))
    seed = (state_dict_file if name == "simswap-224" else module_file).read_bytes()
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    if data.draw(st.booleans()):  # mutate the pickle inside an otherwise valid archive
        with zipfile.ZipFile(io.BytesIO(seed)) as archive:
            members = {info.filename: archive.read(info) for info in archive.infolist()}
        pkl = next(m for m in members if m.endswith("data.pkl"))
        members[pkl] = data.draw(mutated(members[pkl]))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for member, body in members.items():
                archive.writestr(member, body)
        payload = buffer.getvalue()
    else:
        payload = data.draw(mutated(seed))
    path = folder / get_spec(name).filename
    path.write_bytes(payload)
    _loader_result(lambda: ModelStore.check_loadable(get_spec(name), path), folder)


@HOSTILE
@given(data=st.data())
def test_mutated_onnx_files_load_or_are_refused_in_one_line(
    data: st.DataObject, onnx_file: Path, tmp_path: Path
) -> None:
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / "inswapper_128.onnx"
    path.write_bytes(data.draw(mutated(onnx_file.read_bytes())))
    _loader_result(lambda: check_onnx(path, "model inswapper-128", ("target", "source")), folder)


@settings(HOSTILE, max_examples=40)
@given(location=st.one_of(
    st.sampled_from(["../../../../etc/passwd", "/etc/passwd", "secret.bin", "./x/../../y"]),
    st.text(min_size=1, max_size=40),
))  # fmt: skip
def test_onnx_tensors_stored_anywhere_else_are_refused_unopened(
    location: str, onnx_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import onnx

    folder = tmp_path_factory.mktemp("ext")
    model = onnx.load_from_string(onnx_file.read_bytes())
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    path = folder / "inswapper_128.onnx"
    path.write_bytes(model.SerializeToString())
    loaded = _loader_result(lambda: check_onnx(path, "model inswapper-128"), folder)
    assert loaded == "refused"
    assert not [p for p in OPENED.paths if not p.endswith("inswapper_128.onnx")]


def _safetensors(header: dict[str, Any], body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


@HOSTILE
@given(data=st.data())
def test_safetensors_with_hostile_headers_are_refused_in_one_line(
    data: st.DataObject, tmp_path: Path
) -> None:
    body = np.arange(64, dtype=np.float32).tobytes()
    shape = data.draw(st.lists(st.integers(0, 2**40), min_size=0, max_size=3))
    offsets = data.draw(st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=2))
    header: dict[str, Any] = {
        "w": {
            "dtype": data.draw(st.sampled_from(["F32", "F16", "I64", "BOOL", "X"])),
            "shape": shape,
            "data_offsets": offsets,
        }
    }
    if data.draw(st.booleans()):
        header["__metadata__"] = {"k": data.draw(st.text(max_size=20))}
    payload = _safetensors(header, body)
    if data.draw(st.booleans()):
        payload = data.draw(mutated(payload))
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / "model.safetensors"
    path.write_bytes(payload)
    _loader_result(lambda: load_safetensors(path, "model test"), folder)


# -- the HTTP API ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    limits = {"serve.offers_per_minute": 100_000, "serve.uploads_per_minute": 100_000}
    models = tmp_path_factory.mktemp("no-models")
    overrides = {"serve.max_peers": 64, "serve.connect_timeout_s": 1.0, **limits}
    cfg = load_config(None, {"serve.max_upload_mb": 0.5, "models.dir": str(models), **overrides})
    loop = asyncio.new_event_loop()
    enable_loopback_candidates()
    server = Server(cfg, token=TOKEN)

    async def start() -> tuple[web.AppRunner, str, aiohttp.ClientSession]:
        runner = web.AppRunner(create_app(server))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, f"http://127.0.0.1:{port}", aiohttp.ClientSession()

    runner, url, http = loop.run_until_complete(start())
    yield loop, url, http, server
    loop.run_until_complete(http.close())
    loop.run_until_complete(runner.cleanup())
    loop.close()


class _Seeds(list[bytes]):
    def __repr__(self) -> str:  # failure reports name the seeds, not their bytes
        return f"<{len(self)} seed photos>"


@pytest.fixture(scope="module")
def photo_seeds(hopper_image: np.ndarray) -> list[bytes]:
    small = cv2.cvtColor(cv2.resize(hopper_image, (120, 140)), cv2.COLOR_RGB2BGR)
    exts = (".jpg", ".png", ".webp", ".bmp")
    return _Seeds(cv2.imencode(ext, small)[1].tobytes() for ext in exts)


def _forge_size(data: bytes, width: int, height: int) -> bytes:
    """Overwrite the size fields of a real JPEG, PNG, BMP or WebP header (CRCs left stale)."""
    out = bytearray(data)
    if out.startswith(b"\x89PNG"):
        out[16:24] = struct.pack(">II", width & 0xFFFFFFFF, height & 0xFFFFFFFF)
    elif out.startswith(b"BM"):
        out[18:26] = struct.pack("<ii", width % 2**31, -(height % 2**31))
    elif out.startswith(b"RIFF"):
        out[26:30] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    else:
        at = out.find(b"\xff\xc0")
        if at > 0:
            out[at + 5 : at + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
    return bytes(out)


@st.composite
def photos(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    seed = draw(st.sampled_from(seeds))
    kind = draw(st.sampled_from(["as-is", "mutated", "forged", "random"]))
    if kind == "mutated":
        return draw(mutated(seed))
    if kind == "forged":
        side = st.integers(0, 2**32 - 1) | st.integers(0, 70_000)
        return _forge_size(seed, draw(side), draw(side))
    if kind == "random":
        return draw(st.binary(max_size=3000))
    return seed


@HOSTILE
@given(data=st.data())
def test_any_uploaded_photo_decodes_or_is_refused(
    data: st.DataObject, live_server: Any, photo_seeds: list[bytes]
) -> None:
    """Random, truncated and header-forged photos through the upload check and the bounded
    decoder child: an RGB image, or a 413/415 with a reason; this process's memory does not
    rise with what the photo declares."""
    server: Server = live_server[3]
    photo = data.draw(photos(photo_seeds))
    with _Peak() as peak:
        try:
            _, image = server.decode_source(photo)
        except _HttpError as exc:
            assert exc.status in (413, 415) and "\n" not in str(exc), exc
            event(f"refused {exc.status}")
        else:
            event("decoded")
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert image.shape[0] * image.shape[1] <= 40e6
    assert peak.grew < MEMORY_BOUND, f"peak rose by {peak.grew / 2**20:.0f} MB"


text_or_bytes = st.one_of(st.text(max_size=30), st.binary(max_size=30))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["sdp", "type", "engine", "source", "x"]), children)
    ),
    max_leaves=12,
)


def _real_offer() -> str:
    """An offer as a browser would send it (aiortc's, with one video transceiver)."""
    from aiortc import RTCPeerConnection

    async def make() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return str(sdp)

    return asyncio.run(make())


REAL_OFFER = _real_offer()


@st.composite
def sdps(draw: st.DrawFn) -> str:
    """A real offer with lines dropped, repeated or rewritten, or a made-up one."""
    lines = REAL_OFFER.split("\r\n")
    kind = draw(st.sampled_from(["real", "edited", "cut", "made-up"]))
    if kind == "edited":
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(lines) - 1))
            action = draw(st.sampled_from(["drop", "repeat", "rewrite"]))
            if action == "drop":
                del lines[at]
            elif action == "repeat":
                lines.insert(at, lines[at])
            else:
                head = lines[at].split(":", 1)[0]
                lines[at] = head + ":" + draw(st.text(max_size=30))
            if not lines:
                break
    elif kind == "cut":
        return REAL_OFFER[: draw(st.integers(0, len(REAL_OFFER)))]
    elif kind == "made-up":
        return draw(st.text(max_size=200))
    return "\r\n".join(lines)


@st.composite
def offers(draw: st.DrawFn) -> dict[str, Any]:
    """Offer-shaped JSON: an SDP that is real, edited, cut or made up, with engines and
    sources."""
    sdp = draw(sdps())
    usual = draw(st.integers(0, 9)) < 7  # mostly what a page sends, so the answer path runs
    return {
        "sdp": sdp,
        "type": "offer" if usual else draw(st.sampled_from(["answer", "", "offer "])),
        "engine": "passthrough"
        if usual
        else draw(st.sampled_from(["mesh", "simswap-224", "x"]) | st.none()),
        "source": None if usual else draw(st.text(max_size=16)),
    }


PATHS = ["/", "/health", "/offer", "/sources", "/app.js", "/x", "/offer/"]


@st.composite
def requests(draw: st.DrawFn, seeds: list[bytes]) -> dict[str, Any]:
    """A request as a stranger might send it: any method, path, token, headers and body."""
    # Most requests go to the two POST endpoints with the right token, so that what is behind
    # the token is what gets fuzzed; the rest go anywhere, with any token.
    if draw(st.integers(0, 9)) < 7:
        method, path = draw(st.sampled_from([("POST", "/offer"), ("POST", "/sources")]))
    else:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS"]))
        path = draw(
            st.sampled_from(PATHS) | st.from_regex(r"/[A-Za-z0-9%._~-]{0,20}", fullmatch=True)
        )
    auth = f"Bearer {TOKEN}"
    if draw(st.integers(0, 9)) >= 8:
        auth = draw(
            st.sampled_from(["", "Bearer", f"Bearer {TOKEN}x", TOKEN])
            | st.text(max_size=30).map(lambda t: "Bearer " + t)
        )
    headers = {"Authorization": auth} if auth else {}
    content_type = "application/json" if path == "/offer" else ""
    if path != "/offer" or draw(st.integers(0, 9)) >= 8:
        content_type = draw(
        st.sampled_from(
            ["application/json", "multipart/form-data; boundary=x", "multipart/form-data",
             "text/plain", "image/png", "application/json; charset=latin-1", ""]
        ) | st.text(max_size=30)
        )  # fmt: skip
    if content_type:
        headers["Content-Type"] = content_type
    body_kind = draw(
        st.sampled_from(
            {
                "/offer": ["json"] * 3 + ["bytes", "multipart"],
                "/sources": ["multipart"] * 3 + ["bytes"],
            }.get(path, ["none", "bytes", "json", "multipart"])
        )
    )
    request: dict[str, Any] = {
        "method": method,
        "path": path,
        "headers": headers,
        "params": {"token": draw(st.text(max_size=12))} if draw(st.booleans()) else None,
    }
    if body_kind == "bytes":
        request["data"] = draw(st.binary(max_size=2000))
    elif body_kind == "json":
        value = draw(offers()) if draw(st.integers(0, 9)) < 7 else draw(json_values)
        request["data"] = json.dumps(value).encode()
    elif body_kind == "multipart":
        form = aiohttp.FormData()
        for _ in range(draw(st.integers(0, 3))):
            form.add_field(
                draw(
                    st.sampled_from(["file", "photo", ""])
                    | st.from_regex(r"[a-z0-9_.-]{0,8}", fullmatch=True)
                ),
                draw(photos(seeds)),
                filename=draw(st.from_regex(r"[A-Za-z0-9_. -]{1,12}", fullmatch=True)),
                content_type=draw(st.sampled_from(["image/jpeg", "image/png", "text/plain"])),
            )
        request["data"] = form
        request["headers"].pop("Content-Type", None)
    return request


@HOSTILE
@given(data=st.data())
def test_any_request_gets_a_4xx_with_a_json_reason_or_an_answer(
    data: st.DataObject,
    live_server: Any,
    photo_seeds: list[bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop, url, http, _ = live_server
    request = data.draw(requests(photo_seeds))

    async def send() -> tuple[int, bytes, str]:
        async with http.request(
            request["method"],
            url + request["path"],
            headers=request["headers"],
            params=request["params"],
            data=request.get("data"),
        ) as response:
            return response.status, await response.read(), response.content_type

    caplog.clear()
    with caplog.at_level(logging.ERROR), _Peak() as peak:
        try:
            status, body, content_type = loop.run_until_complete(send())
        except (ValueError, UnicodeEncodeError, aiohttp.InvalidURL):
            return  # the client library refuses to send it (a header it cannot encode)
    where = request["path"] if request["path"] in PATHS else "(other)"
    event(f"{request['method']} {where}: {status}")
    busy = status == 503 and b"server busy" in body  # all peer slots taken: not a client error
    assert status < 500 or busy, (status, body[:200])
    if status >= 400:
        assert content_type == "application/json", (status, body[:200])
        assert isinstance(json.loads(body)["error"], str)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert peak.grew < MEMORY_BOUND


def test_the_server_is_healthy_after_the_fuzzing(live_server: Any) -> None:
    """Every peer slot the fuzzed offers took comes back (none of them ever connects), and the
    server answers as before."""
    loop, url, http, server = live_server

    async def health() -> tuple[int, dict[str, Any]]:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(url + "/health", headers=auth) as response:
            return response.status, await response.json()

    async def settle() -> tuple[int, dict[str, Any]]:
        for _ in range(150):
            status, body = await health()
            if body.get("peers") == 0:
                break
            await asyncio.sleep(0.1)
        return status, body

    status, body = loop.run_until_complete(settle())
    assert status == 200 and body["status"] == "ok" and body["peers"] == 0, body
    assert server.worker.running
