"""`livswap serve`: a real aiortc client peer against the server, and signalling fuzz."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from livswap.config import Config, load_config
from livswap.label import label_box
from livswap.webrtc.server import Server, create_app, enable_loopback_candidates
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


def test_client_peer_gets_swapped_labelled_frames_back(
    hopper_image: np.ndarray, astronaut_jpg: Path
) -> None:
    frames = moving_frames(hopper_image, 60, (480, 560))

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
                        while len(received) < 40:
                            frame = await track.recv()
                            received.append(frame.to_ndarray(format="rgb24"))
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
                await asyncio.wait_for(done.wait(), timeout=60)
                peers_during = len(server.peers)
                await pc.close()
                deadline = time.monotonic() + 10
                while server.peers and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                return {
                    "states": states,
                    "received": received,
                    "peers_during": peers_during,
                    "peers_after": len(server.peers),
                }
        finally:
            await runner.cleanup()

    result = asyncio.run(scenario())
    assert result["states"][:2] == ["connecting", "connected"]
    assert result["states"][-1] == "closed"
    assert result["peers_during"] == 1 and result["peers_after"] == 0
    received = result["received"]
    assert len(received) == 40 and received[-1].shape == (560, 480, 3)
    # The face was swapped: the returned frame differs from every input frame in the face area.
    last = received[-1].astype(int)
    best = min(
        np.abs(last[150:380, 120:360] - f.astype(int)[150:380, 120:360]).mean() for f in frames
    )
    assert best > 8
    x0, y0, x1, y1 = label_box(480, 560)
    box = received[-1][y0:y1, x0:x1].mean(axis=2)
    assert np.percentile(box, 99) > 180 and np.median(box) < 90  # white text on a dark box


@pytest.fixture(scope="module")
def fuzz_server(astronaut_jpg: Path) -> Any:
    cfg = load_config(None, {"serve.max_upload_mb": 0.2})
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
