"""`livswap serve`: a real aiortc client peer against the server, and signalling fuzz."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from livswap.config import Config, load_config
from livswap.errors import EngineError
from livswap.label import label_box
from livswap.photos import PhotoDecoder, PhotoRefused
from livswap.webrtc.jitter import MarkerJitterBuffer
from livswap.webrtc.server import Server, create_app, enable_loopback_candidates
from livswap.worker.ring import FrameRing
from tests.hostile import forged_png
from tests.media import moving_frames


class FaceTrack(VideoStreamTrack):
    """A camera showing Grace Hopper moving, at 30 fps."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        super().__init__()
        self.frames = frames
        self.index = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(
            self.frames[self.index % len(self.frames)], format="rgb24"
        )
        frame.pts, frame.time_base = pts, time_base
        self.index += 1
        return frame


async def _serve(cfg: Config, token: str | None = None) -> tuple[web.AppRunner, str, Server]:
    enable_loopback_candidates()
    server = Server(cfg, token=token)
    runner = web.AppRunner(create_app(server))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", server


@pytest.mark.parametrize("kill_worker", [False, True], ids=["steady", "worker-killed"])
def test_client_peer_gets_swapped_labelled_frames_back(
    hopper_image: np.ndarray, astronaut_jpg: Path, kill_worker: bool
) -> None:
    """Frames come back swapped and labelled; if the swap worker dies mid-call, the video goes
    on (unswapped but labelled) and swapping resumes in a new worker."""
    frames = moving_frames(hopper_image, 60, (480, 560))
    wanted = 150 if kill_worker else 40

    async def scenario() -> dict[str, Any]:
        runner, url, server = await _serve(load_config())
        states: list[str] = []
        received: list[np.ndarray] = []
        readers: list[asyncio.Future[None]] = []
        try:
            async with aiohttp.ClientSession() as http:
                form = aiohttp.FormData()
                form.add_field(
                    "file", astronaut_jpg.read_bytes(), filename="me.jpg", content_type="image/jpeg"
                )
                async with http.post(f"{url}/sources", data=form) as r:
                    assert r.status == 200, await r.text()
                    source_id = (await r.json())["id"]
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pc.addTrack(FaceTrack(frames))
                done = asyncio.Event()

                @pc.on("connectionstatechange")
                def _state() -> None:
                    states.append(pc.connectionState)

                @pc.on("track")
                def _track(track: Any) -> None:
                    async def read() -> None:
                        while len(received) < wanted:
                            frame = await track.recv()
                            received.append(frame.to_ndarray(format="rgb24"))
                            if kill_worker and len(received) == 20:
                                pid = server.worker.pid
                                assert pid is not None and pid != os.getpid()
                                os.kill(pid, signal.SIGKILL)
                        done.set()

                    readers.append(asyncio.ensure_future(read()))

                await pc.setLocalDescription(await pc.createOffer())
                async with http.post(
                    f"{url}/offer",
                    json={
                        "sdp": pc.localDescription.sdp,
                        "type": "offer",
                        "source": source_id,
                        "engine": "mesh",
                    },
                ) as r:
                    assert r.status == 200, await r.text()
                    answer = await r.json()
                await pc.setRemoteDescription(RTCSessionDescription(**answer))
                await asyncio.wait_for(done.wait(), timeout=90)
                peers_during = len(server.peers)
                failed = sum(p.remote.stats.frames_failed for p in server.peers.values())
                await pc.close()
                deadline = time.monotonic() + 10
                while server.peers and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                return {
                    "states": states,
                    "received": received,
                    "peers_during": peers_during,
                    "peers_after": len(server.peers),
                    "failed": failed,
                }
        finally:
            await runner.cleanup()

    result = asyncio.run(scenario())
    assert result["states"][:2] == ["connecting", "connected"]
    assert result["states"][-1] == "closed"
    assert result["peers_during"] == 1 and result["peers_after"] == 0
    received = result["received"]
    assert len(received) == wanted and received[-1].shape == (560, 480, 3)
    # Frames passed through while no worker ran are counted, and only then.
    assert (result["failed"] > 0) == kill_worker
    # The face was swapped: the returned frame differs from every input frame in the face area.
    last = received[-1].astype(int)
    best = min(
        np.abs(last[150:380, 120:360] - f.astype(int)[150:380, 120:360]).mean() for f in frames
    )
    assert best > 8
    x0, y0, x1, y1 = label_box(480, 560)
    for frame in received[5:]:  # every frame, also those passed through: labelled
        box = frame[y0:y1, x0:x1].mean(axis=2)
        assert np.percentile(box, 99) > 180 and np.median(box) < 90  # white text, dark box


def _rtp(seq: int, timestamp: int, marker: bool) -> RtpPacket:
    packet = RtpPacket(sequence_number=seq, timestamp=timestamp, marker=int(marker))
    packet._data = bytes([seq % 256])  # type: ignore[attr-defined]  # as aiortc's receiver sets
    return packet


def test_marker_jitter_buffer_releases_a_frame_with_its_last_packet() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    # Frame 1: three packets, the last one marked, arriving out of order.
    assert buffer.add(_rtp(10, 1000, False))[1] is None
    assert buffer.add(_rtp(12, 1000, True))[1] is None  # 11 is missing: not whole yet
    frame = buffer.add(_rtp(11, 1000, False))[1]
    assert frame is not None and frame.timestamp == 1000 and frame.data == bytes([10, 11, 12])
    # Frame 2 loses its marked packet: released when frame 3 starts, as aiortc's buffer does.
    assert buffer.add(_rtp(13, 4000, False))[1] is None
    frame = buffer.add(_rtp(15, 7000, False))[1]
    assert frame is None  # 14 (frame 2's marked packet) never comes; the gap holds frame 2
    frame = buffer.add(_rtp(14, 4000, False))[1]
    assert frame is not None and frame.timestamp == 4000 and frame.data == bytes([13, 14])
    # aiortc's own buffer would still be holding frame 1 at its marked packet.
    plain = JitterBuffer(capacity=128, is_video=True)
    for seq in (10, 11, 12):
        assert plain.add(_rtp(seq, 1000, seq == 12))[1] is None


def test_frame_ring_round_trip_and_overwritten_slots() -> None:
    ring = FrameRing.create(480, 640, slots=4)
    try:
        reader = FrameRing.attach(ring.name, 480, 640, 4)
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 255, (360, 320), np.uint8) for _ in range(6)]  # 240x320 I420
        for seq in range(2):
            ring.write(seq, images[seq])
        got = reader.read(1, 240, 320)
        assert got is not None and np.array_equal(got, images[1])
        assert reader.read(2, 240, 320) is None  # not written yet
        for seq in range(2, 6):
            ring.write(seq, images[seq])
        assert reader.read(1, 240, 320) is None  # slot 1 now holds frame 5
        got = reader.read(5, 240, 320)
        assert got is not None and np.array_equal(got, images[5])
        reader.close()
    finally:
        ring.close()


@pytest.fixture(scope="module")
def fuzz_server(astronaut_jpg: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    models = tmp_path_factory.mktemp("no-models")
    # Many requests from one address in a minute here: rate limits are tested on their own.
    limits = {"serve.offers_per_minute": 10_000, "serve.uploads_per_minute": 10_000}
    cfg = load_config(None, {"serve.max_upload_mb": 0.2, "models.dir": str(models), **limits})
    loop = asyncio.new_event_loop()
    runner, url, _ = loop.run_until_complete(_serve(cfg, token="s3cret"))
    yield loop, url
    loop.run_until_complete(runner.cleanup())
    loop.close()


def _request(fuzz_server: Any, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    loop, url = fuzz_server

    async def go() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.request(method, url + path, **kwargs) as r:
            try:
                body = await r.json(content_type=None)
            except Exception:
                body = {"text": await r.text()}
            return r.status, body

    return loop.run_until_complete(go())


AUTH = {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}]
)
def test_token_is_required_on_every_request(fuzz_server: Any, headers: dict[str, str]) -> None:
    for method, path in (
        ("GET", "/health"),
        ("GET", "/"),
        ("POST", "/offer"),
        ("POST", "/sources"),
    ):
        status, body = _request(fuzz_server, method, path, headers=headers)
        assert status == 401, (method, path)
        assert "token" in body["error"]
    status, _ = _request(fuzz_server, "GET", "/?token=s3cret")
    assert status == 200
    status, body = _request(fuzz_server, "GET", "/health", headers=AUTH)
    assert status == 200 and "mesh" in body["engines"]
    # Engines this machine cannot run are listed apart, with what brings them.
    assert "simswap-224" not in body["engines"]
    assert "livswap models fetch simswap-224" in body["unavailable"]["simswap-224"]


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        (
            {"data": "{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "not valid JSON",
        ),
        ({"data": "sdp=x", "headers": {"Content-Type": "text/plain"}}, 415, "application/json"),
        ({"json": [1, 2]}, 400, "JSON object"),
        ({"json": {"sdp": 5, "type": "offer"}}, 400, "'sdp'"),
        ({"json": {"sdp": "v=0\r\n", "type": "answer"}}, 400, "'type': 'offer'"),
        (
            {
                "json": {
                    "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n",
                    "type": "offer",
                    "engine": "mesh",
                    "source": "nope",
                }
            },
            422,
            "unknown source",
        ),
        (
            {"json": {"sdp": "v=0\r\nm=video 9 UDP", "type": "offer", "engine": "passthrough"}},
            400,
            "",
        ),
        (
            {"json": {"sdp": "garbage", "type": "offer", "engine": "deepfake"}},
            422,
            "unknown engine",
        ),
    ],
)
def test_malformed_offers_get_a_4xx_with_a_reason(
    fuzz_server: Any, kwargs: dict[str, Any], status: int, fragment: str
) -> None:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    got, body = _request(fuzz_server, "POST", "/offer", headers=headers, **kwargs)
    assert got == status, body
    assert fragment in body["error"]


def test_bad_uploads_are_refused(fuzz_server: Any, hopper_jpg: Path, tmp_path: Path) -> None:
    def upload(
        data: bytes, name: str = "x.jpg", ctype: str = "image/jpeg"
    ) -> tuple[int, dict[str, Any]]:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name, content_type=ctype)
        return _request(fuzz_server, "POST", "/sources", headers=AUTH, data=form)

    status, body = upload(b"GIF89a" + b"\x00" * 100)
    assert status == 415 and "accepted image" in body["error"]
    status, body = upload(b"\xff\xd8\xff" + b"\x00" * 1000)  # a JPEG header, then nothing
    assert status == 415 and "could not be decoded" in body["error"]
    status, body = upload(b"\xff\xd8\xff" + b"\x00" * 400_000)  # over the 0.2 MB limit
    assert status == 413 and "limit" in body["error"]
    import cv2

    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((120, 120, 3), 128, np.uint8))
    status, body = upload(blank.read_bytes(), "wall.png", "image/png")
    assert status == 422 and "no face" in body["error"]
    status, body = _request(fuzz_server, "POST", "/sources", headers=AUTH, data=b"raw")
    assert status == 415 and "multipart" in body["error"]
    small = hopper_jpg.read_bytes()
    if len(small) < 0.2 * 2**20:
        status, body = upload(small)
        assert status == 200 and len(body["id"]) == 16


def test_server_refuses_to_listen_beyond_loopback_without_tls() -> None:
    from livswap.errors import ConfigError
    from livswap.webrtc.server import check_exposure

    with pytest.raises(ConfigError, match="needs TLS"):
        check_exposure(load_config(None, {"serve.host": "0.0.0.0"}))
    assert check_exposure(load_config()) == ""  # loopback: no token needed


class _BrokenStream:
    device_path = None

    def swap(self, frame: Any) -> None:
        raise EngineError("the GPU is gone")

    def close(self) -> None:
        pass


class _BrokenEngine:
    """An engine whose every swap fails for good (a lost GPU, say)."""

    name = "passthrough"

    def prepare(self, sources: Any, names: Any = None) -> Any:
        from livswap.engine import Identity

        return Identity(engine=self.name, key="", data=None)

    def open_stream(self, identity: Any) -> _BrokenStream:
        return _BrokenStream()


def test_worker_reports_a_peer_whose_pipeline_stopped(hopper_image: np.ndarray) -> None:
    """A peer whose engine fails for good is reported to the server (which then passes its
    video through, labelled) instead of going silent."""
    import multiprocessing
    import threading

    from livswap.worker.child import _Worker
    from livswap.worker.messages import FrameIn, OpenStream, StreamFailed
    from livswap.worker.ring import rgb_to_i420

    server_end, worker_end = multiprocessing.Pipe()
    worker = _Worker(load_config(), worker_end)
    worker.engines["passthrough"] = _BrokenEngine()
    ring_in, ring_out = FrameRing.create(480, 640), FrameRing.create(480, 640)
    image = np.ascontiguousarray(hopper_image[:480, :640])
    replies: list[Any] = []

    def server() -> None:
        server_end.send((1, OpenStream(7, "passthrough", None, None)))
        replies.append(server_end.recv())
        ring_in.write(0, rgb_to_i420(image))
        h, w = image.shape[:2]
        server_end.send((None, FrameIn(7, 0, ring_in.name, ring_out.name, 480, 640, h, w, 0.0, 0)))
        if server_end.poll(30):
            replies.append(server_end.recv())
        server_end.send(None)

    thread = threading.Thread(target=server)
    thread.start()
    try:
        asyncio.run(worker.run())
    finally:
        thread.join()
        ring_in.close()
        ring_out.close()
    assert replies[0] == (1, None, None)
    assert replies[1] == (None, StreamFailed(7, "the GPU is gone"))


def test_hostile_requests_get_a_clean_4xx(fuzz_server: Any) -> None:
    """Attacks that used to give a 500 with a traceback: JSON nested 100,000 deep, a multipart
    body whose boundary is not the declared one, a non-ASCII token in the header or the query."""
    deep = "[" * 100_000 + "]" * 100_000
    status, body = _request(
        fuzz_server,
        "POST",
        "/offer",
        data=deep,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert status == 400 and "not valid JSON" in body["error"]
    wrong = b"--other\r\nContent-Disposition: form-data; name=file\r\n\r\nxx\r\n--other--\r\n"
    status, body = _request(
        fuzz_server,
        "POST",
        "/sources",
        data=wrong,
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=declared"},
    )
    assert 400 <= status < 500, body
    for headers, path in (
        ({"Authorization": "Bearer s3cr\u00e9t".encode().decode("latin-1")}, "/health"),
        ({}, "/?token=%C3%A9"),
    ):
        status, body = _request(fuzz_server, "GET", path, headers=headers)
        assert status == 401 and "token" in body["error"], (headers, path, body)


def test_the_stats_channel_sends_json_even_without_frames() -> None:
    """A second without frames has no latency: the channel says null, never NaN (which the
    page's JSON.parse rejects)."""
    import json

    from livswap.stats import PipelineStats
    from livswap.webrtc.server import stats_message

    message = json.loads(stats_message(PipelineStats()))
    assert message["server_latency_ms"] is None and message["frames"] == 0


def test_offers_that_never_connect_give_their_slot_back() -> None:
    """As many offers as there are slots, from clients that vanish before ICE: the slots come
    free after connect_timeout_s instead of holding every real user off with 503s."""
    cfg = load_config(None, {"serve.max_peers": 2, "serve.connect_timeout_s": 1.0})

    async def scenario() -> tuple[list[int], int, int]:
        runner, url, server = await _serve(cfg)
        statuses = []
        try:
            async with aiohttp.ClientSession() as http:

                async def offer() -> int:
                    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                    pc.addTransceiver("video", direction="sendrecv")
                    await pc.setLocalDescription(await pc.createOffer())
                    body = {"sdp": pc.localDescription.sdp, "type": "offer"}
                    async with http.post(
                        f"{url}/offer", json={**body, "engine": "passthrough"}
                    ) as r:
                        status = r.status
                    await pc.close()  # gone before ICE: the server's side never connects
                    return status

                statuses = [await offer() for _ in range(3)]
                held = len(server.peers)
                deadline = time.monotonic() + 15
                while server.peers and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                return statuses, held, len(server.peers)
        finally:
            await runner.cleanup()

    statuses, held, left = asyncio.run(scenario())
    assert statuses == [200, 200, 503] and held == 2  # full: the third is refused
    assert left == 0  # then freed, without any client connecting


@pytest.mark.parametrize(
    ("width", "height", "status", "fragment"),
    [
        (30_000, 30_000, 413, "30000x30000"),
        (1_000_000, 1_000, 413, "MP"),
        (40_000, 40_000, 413, "limit is 40 MP"),
        (40_000, 100, 415, "not a photo's shape"),
    ],
)
def test_photos_declaring_huge_sizes_are_refused_before_decoding(
    fuzz_server: Any, width: int, height: int, status: int, fragment: str
) -> None:
    """Before: a 107 KB PNG declaring 30000x30000 took 10 GB for 36 s and crashed the worker."""
    import psutil

    data = forged_png(width, height)
    form = aiohttp.FormData()
    form.add_field("file", data, filename="x.png", content_type="image/png")
    before = psutil.Process().memory_info().rss
    started = time.monotonic()
    got, body = _request(fuzz_server, "POST", "/sources", data=form, headers=AUTH)
    assert got == status and fragment in body["error"], body
    assert time.monotonic() - started < 5
    assert psutil.Process().memory_info().rss - before < 100 * 2**20


def test_decoding_runs_in_a_child_under_a_memory_bound() -> None:
    """A photo that needs more memory than the decoder child may have is refused, costs the
    child only (replaced for the next photo), and never this process's memory."""
    import cv2
    import psutil

    big = np.zeros((8_000, 8_000, 3), np.uint8)  # 192 MB decoded, ~0.2 MB as a PNG
    big[::97] = 255
    png = cv2.imencode(".png", big)[1].tobytes()
    del big
    small = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
    decoder = PhotoDecoder(max_megapixels=0.1)  # a bound of ~129 MB
    try:
        assert decoder.decode(small, "jpeg").shape == (48, 64, 3)
        child = decoder._child.pid
        assert child != os.getpid()
        before = psutil.Process().memory_info().rss
        with pytest.raises(PhotoRefused, match="could not be decoded"):
            decoder.decode(png, "png")
        assert psutil.Process().memory_info().rss - before < 50 * 2**20
        assert decoder.decode(small, "jpeg").shape == (48, 64, 3)  # works on
        # The same photo fits a decoder sized for 64 MP: the bound, not the file, refused it.
        roomy = PhotoDecoder(max_megapixels=64)
        try:
            assert roomy.decode(png, "png").shape == (8_000, 8_000, 3)
        finally:
            roomy.close()
    finally:
        decoder.close()


def test_a_decoder_that_dies_takes_nothing_else_down(hopper_jpg: Path) -> None:
    """The decoder child killed mid-service: the next upload gets a fresh one; the server and
    its swap worker carry on."""
    cfg = load_config(None, {})  # the built-in engine: each photo is checked for a face
    photo = hopper_jpg.read_bytes()

    async def scenario() -> list[int]:
        runner, url, server = await _serve(cfg)
        statuses = []
        try:
            async with aiohttp.ClientSession() as http:
                for kill in (False, True, False):
                    if kill:
                        os.kill(server.photos._child.pid, signal.SIGKILL)
                        server.photos._child.join(5)
                    form = aiohttp.FormData()
                    form.add_field("file", photo, filename="h.jpg", content_type="image/jpeg")
                    async with http.post(url + "/sources", data=form) as r:
                        statuses.append(r.status)
                async with http.get(url + "/health") as r:
                    statuses.append(r.status)
            assert server.worker.running
        finally:
            await runner.cleanup()
        return statuses

    assert asyncio.run(scenario()) == [200, 200, 200, 200]


def test_a_client_over_its_rate_gets_429_and_others_do_not(hopper_jpg: Path) -> None:
    cfg = load_config(None, {"serve.uploads_per_minute": 2, "serve.offers_per_minute": 1})
    server = Server(cfg)
    assert not server.over_rate_limit("10.0.0.1", "upload")
    assert not server.over_rate_limit("10.0.0.1", "upload")
    assert server.over_rate_limit("10.0.0.1", "upload")  # the third in a minute
    assert not server.over_rate_limit("10.0.0.2", "upload")  # another client is not affected
    assert not server.over_rate_limit("10.0.0.1", "offer")  # nor another endpoint

    async def scenario() -> list[int]:
        runner, url, _ = await _serve(cfg)
        statuses = []
        try:
            async with aiohttp.ClientSession() as http:
                for _ in range(3):
                    form = aiohttp.FormData()
                    form.add_field("file", b"not a photo", filename="x.jpg")
                    async with http.post(f"{url}/sources", data=form) as r:
                        statuses.append(r.status)
        finally:
            await runner.cleanup()
        return statuses

    assert asyncio.run(scenario()) == [415, 415, 429]


def test_the_workers_identities_are_bounded_in_bytes(hopper_image: np.ndarray) -> None:
    """Before: 51 uploads of 4000x4000 photos held 6.5 GB in the swap worker's identities (the
    count bound of 64 never came into play). Now they share ``max_sources_mb`` as well."""
    from livswap.worker.child import _Worker, held_bytes

    cfg = load_config(None, {"serve.max_sources_mb": 8})
    worker = _Worker(cfg, conn=None)  # type: ignore[arg-type]
    big = np.ascontiguousarray(np.tile(hopper_image, (3, 3, 1)))
    one = held_bytes(worker.identity("mesh", "a", big))
    assert one > 2 * 2**20  # what the bound is made of: textures the size of the photo
    for name in ("b", "c", "d"):
        worker.identity("mesh", name, big)
    held = sum(held_bytes(i) for i in worker.identities.values())
    assert list(k[0] for k in worker.identities) == ["d"] or held <= 8 * 2**20
    assert ("d", "mesh") in worker.identities and ("a", "mesh") not in worker.identities
