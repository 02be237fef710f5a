"""``livswap serve``: the browser demo. An aiohttp server with the page, a small HTTP API and
one aiortc peer per browser, each running the same stages as the virtual camera (tracking,
engine, compose, label) in one swap worker process shared by all peers (:mod:`livswap.worker`).

API (also used by the page):
    GET  /health                  -> {"status": "ok", "peers": n, "engines": [ready...],
                                      "unavailable": {name: what it needs}}
    POST /sources  (multipart, image in field "file")  -> {"id": "..."} | 4xx {"error": "..."}
    POST /offer    {"sdp", "type", "source": id, "engine": name}  -> {"sdp", "type"}
With a token configured, every request carries ``Authorization: Bearer TOKEN`` (the page gets it
from its URL: ``/?token=TOKEN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import secrets
import ssl
import statistics
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from livswap.config import Config
from livswap.engine import ENGINES, missing_for
from livswap.errors import ConfigError, EngineError, StreamEnded
from livswap.frame import Image
from livswap.label import DisclosureLabel
from livswap.photos import PhotoDecoder, PhotoLimits, PhotoRefused, check_photo
from livswap.stats import PipelineStats
from livswap.webrtc.jitter import use_marker_jitter_buffer
from livswap.webrtc.tracks import DelayedAudioTrack, SwappedVideoTrack, TrackReader
from livswap.worker.client import RemoteStream, SwapWorker, WorkerUnavailable
from livswap.worker.messages import OpenStream

__all__ = [
    "LOOPBACK_HOSTS",
    "Server",
    "create_app",
    "enable_loopback_candidates",
    "restrict_ice_candidates",
]

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def restrict_ice_candidates(host: str) -> None:
    """Gather ICE candidates only where the server listens: 127.0.0.1 alone when it listens on
    loopback (nothing is bound or offered on the machine's network interfaces), the listening
    address alone when it names one, every interface plus loopback for 0.0.0.0 / ::.

    aioice reads its host addresses through one module function (and skips loopback itself),
    so this replaces that function; a server process has one listening address.
    """
    import aioice.ice

    original = getattr(aioice.ice.get_host_addresses, "_livswap_original", None)
    original = original or aioice.ice.get_host_addresses

    def addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if host in LOOPBACK_HOSTS:
            return ["127.0.0.1"] if use_ipv4 else ["::1"] if use_ipv6 else []
        if host in ("0.0.0.0", "::", ""):
            found = list(original(use_ipv4, use_ipv6))
            return found + (["127.0.0.1"] if use_ipv4 and "127.0.0.1" not in found else [])
        return [host]

    addresses._livswap_original = original  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = addresses


def enable_loopback_candidates() -> None:
    """ICE on loopback only (a browser on the same machine; the tests' peers)."""
    restrict_ice_candidates("127.0.0.1")


@dataclass
class _Peer:
    pc: RTCPeerConnection
    remote: RemoteStream
    id: int
    reader: TrackReader | None = None
    task: asyncio.Task[Any] | None = None
    reporter: asyncio.Task[None] | None = None
    created: float = field(default_factory=time.monotonic)


class Server:
    """State of one ``livswap serve`` process: the swap worker, uploaded sources, live peers.

    The engines live in one :class:`SwapWorker` process shared by every peer; this process keeps
    the network side (aiohttp, aiortc) and the uploaded photos.
    """

    def __init__(self, cfg: Config, *, token: str | None = None) -> None:
        self.cfg = cfg
        self.token = token if token is not None else cfg.serve.token
        self.worker = SwapWorker(cfg)
        self.photos = PhotoDecoder(cfg.serve.max_upload_megapixels)
        self.photo_limits = PhotoLimits(
            max_bytes=int(cfg.serve.max_upload_mb * 2**20),
            max_megapixels=cfg.serve.max_upload_megapixels,
            accepted_types=tuple(cfg.serve.accepted_types),
        )
        self.sources: OrderedDict[str, Image] = OrderedDict()
        self.peers: dict[int, _Peer] = {}
        self._next_peer = 0
        # Per client address and endpoint: when its recent requests came (rate limits).
        self._recent: dict[tuple[str, str], deque[float]] = {}
        self._janitor: asyncio.Task[None] | None = None

    def over_rate_limit(self, client: str, endpoint: str) -> bool:
        """Record a request; True when ``client`` has made more than the endpoint's limit of
        them in the last minute (``[serve] offers_per_minute`` / ``uploads_per_minute``)."""
        limit = (
            self.cfg.serve.offers_per_minute
            if endpoint == "offer"
            else self.cfg.serve.uploads_per_minute
        )
        now = time.monotonic()
        times = self._recent.setdefault((client, endpoint), deque())
        while times and now - times[0] > 60.0:
            times.popleft()
        if len(times) >= limit:
            return True
        times.append(now)
        if len(self._recent) > 10_000:  # many clients: forget the quiet ones
            for key in [k for k, v in self._recent.items() if not v or now - v[-1] > 60.0]:
                del self._recent[key]
        return False

    # -- sources ---------------------------------------------------------------------------------
    def decode_source(self, data: bytes) -> tuple[str, Image]:
        """Check an uploaded photo by its header, then decode it in the bounded decoder
        process: (id, RGB image)."""
        try:
            kind, _, _ = check_photo(data, self.photo_limits)
            image = self.photos.decode(data, kind)
        except PhotoRefused as exc:
            raise _HttpError(413 if exc.reason == "too_large" else 415, str(exc)) from None
        return hashlib.sha256(data).hexdigest()[:16], image

    async def add_source(self, data: bytes) -> str:
        loop = asyncio.get_running_loop()
        source_id, image = await loop.run_in_executor(None, self.decode_source, data)
        # Validate now (a photo without a face is a 422, not a broken call later).
        if ENGINES[self.cfg.engine.name].needs_source:
            await self.worker.prepare(source_id, self.cfg.engine.name, image)
        self.sources[source_id] = image
        self.sources.move_to_end(source_id)
        # Bounded in count and in bytes: many large photos cannot fill the memory.
        budget = self.cfg.serve.max_sources_mb * 2**20
        while len(self.sources) > self.cfg.serve.max_sources or (
            len(self.sources) > 1 and sum(i.nbytes for i in self.sources.values()) > budget
        ):
            self.sources.popitem(last=False)
        return source_id

    # -- peers ----------------------------------------------------------------------------------
    async def answer(
        self, offer: RTCSessionDescription, source_id: str | None, engine_name: str
    ) -> RTCSessionDescription:
        if len(self.peers) >= self.cfg.serve.max_peers:
            raise _HttpError(
                503,
                f"server busy: {len(self.peers)} of {self.cfg.serve.max_peers} "
                "peers connected, try again later",
            )
        if engine_name not in ENGINES:
            raise _HttpError(
                422, f"unknown engine {engine_name!r}; available: {', '.join(ENGINES)}"
            )
        if ENGINES[engine_name].needs_source and not source_id:
            raise _HttpError(400, f"engine {engine_name!r} needs a source: upload a photo first")
        image = self.sources.get(source_id) if source_id else None
        if source_id and image is None:
            raise _HttpError(
                422, f"unknown source {source_id!r}: upload the photo to /sources first"
            )
        peer_id = self._next_peer
        self._next_peer += 1
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        label = DisclosureLabel(self.cfg.output.label_text) if self.cfg.output.label else None
        out_video = SwappedVideoTrack()
        remote = RemoteStream(
            self.worker,
            peer_id,
            OpenStream(peer_id, engine_name, source_id, image),
            out_video.push,
            label,
        )
        peer = _Peer(pc=pc, remote=remote, id=peer_id)
        self.peers[peer_id] = peer

        def latency_ms() -> float:
            samples = list(remote.stats.latency_ms)[-30:]
            return statistics.median(samples) if samples else 0.0

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video" and peer.reader is None:
                for receiver in pc.getReceivers():
                    if receiver.track is track:
                        use_marker_jitter_buffer(receiver)
                pc.addTrack(out_video)  # answers on the browser's own video transceiver
                peer.reader = TrackReader(track)
                peer.task = asyncio.create_task(
                    self._forward(peer.reader, remote), name=f"peer-{peer_id}"
                )
            elif track.kind == "audio":
                pc.addTrack(DelayedAudioTrack(track, latency_ms))

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            async def report() -> None:
                while channel.readyState != "closed" and peer.id in self.peers:
                    if channel.readyState == "open":
                        channel.send(stats_message(remote.stats))
                    await asyncio.sleep(1.0)

            peer.reporter = asyncio.create_task(report(), name=f"peer-{peer_id}-stats")

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("Peer(%d): %s", peer_id, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self.close_peer(peer_id)

        try:
            await remote.open()  # starts the peer's pipeline in the worker; EngineError: 422
            try:
                await pc.setRemoteDescription(offer)
            except Exception as exc:  # aiortc raises all sorts (ValueError, AssertionError...)
                raise _HttpError(400, f"malformed SDP: {exc!r}"[:300]) from None
            if peer.reader is None:
                raise _HttpError(400, "the offer has no video track")
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await self.close_peer(peer_id)
            raise
        return pc.localDescription

    async def close_peer(self, peer_id: int) -> None:
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return
        if peer.reporter is not None:
            peer.reporter.cancel()
        if peer.task is not None:
            peer.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await peer.task
        peer.remote.close()
        await peer.pc.close()
        if peer.remote.stats.frames_in:
            log.info("Peer(%d): closed; %s", peer_id, peer.remote.stats.summary())

    @staticmethod
    async def _forward(reader: TrackReader, remote: RemoteStream) -> None:
        """Every newest browser frame to the worker, until the track ends."""
        try:
            while True:
                remote.send(await reader.recv())
        except StreamEnded:
            pass

    async def close_idle(self) -> None:
        """Close peers whose camera sent nothing for ``idle_timeout_s`` (a vanished browser),
        and offers that did not connect within ``connect_timeout_s`` (a client that left before
        ICE, or one holding slots on purpose), so their slots are free again."""
        now = time.monotonic()
        timeout = self.cfg.serve.idle_timeout_s
        for peer_id, peer in list(self.peers.items()):
            last = peer.reader.last_received if peer.reader else peer.created
            unconnected = peer.pc.connectionState not in ("connected", "closed")
            if unconnected and now - peer.created > self.cfg.serve.connect_timeout_s:
                log.info(
                    "Peer(%d): not connected after %.0f s, closing", peer_id, now - peer.created
                )
                await self.close_peer(peer_id)
            elif now - last > timeout:
                log.info("Peer(%d): idle for %.0f s, closing", peer_id, now - last)
                await self.close_peer(peer_id)

    async def start(self, app: web.Application) -> None:
        async def janitor() -> None:
            while True:
                serve = self.cfg.serve
                await asyncio.sleep(min(5.0, serve.idle_timeout_s / 2, serve.connect_timeout_s / 2))
                await self.close_idle()

        self._janitor = asyncio.create_task(janitor(), name="idle-peers")
        # Start the worker and the photo decoder now (imports take a second or two), so that
        # the first upload need not wait.
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            loop.run_in_executor(None, self.worker.start),
            loop.run_in_executor(None, self.photos.start),
        )

    async def shutdown(self, app: web.Application) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
        await asyncio.gather(*(self.close_peer(p) for p in list(self.peers)))
        await asyncio.get_running_loop().run_in_executor(None, self.worker.close)
        self.photos.close()


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def stats_message(stats: PipelineStats) -> str:
    """What the page's stats line shows, as the JSON the data channel sends each second. A
    second without frames has no latency: null, never NaN (which is not JSON)."""
    fps, latency = stats.recent(1.0)
    return json.dumps(
        {
            "fps": round(fps, 1),
            "server_latency_ms": round(latency, 1) if math.isfinite(latency) else None,
            "dropped": stats.frames_dropped,
            "no_face": stats.frames_no_face,
            "frames": stats.frames_out,
        },
        allow_nan=False,
    )


def create_app(server: Server) -> web.Application:
    """The aiohttp application for ``server`` (also used directly by tests)."""
    max_body = int(server.cfg.serve.max_upload_mb * 2**20) + 64 * 1024

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if server.token:
            # Compared as bytes: a non-ASCII header or query is simply wrong, not a TypeError.
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            query = request.query.get("token", "").encode("utf-8", "surrogateescape")
            token = server.token.encode("utf-8")
            ok = secrets.compare_digest(given, b"Bearer " + token) or (
                request.path == "/" and secrets.compare_digest(query, token)
            )
            if not ok:
                return _error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN'")
        endpoint = {"/offer": "offer", "/sources": "upload"}.get(request.path)
        if (
            endpoint is not None
            and request.method == "POST"
            and server.over_rate_limit(request.remote or "?", endpoint)
        ):
            return _error(429, f"too many {endpoint}s from this address; try again in a minute")
        try:
            return await handler(request)
        except _HttpError as exc:
            return _error(exc.status, str(exc))
        except EngineError as exc:
            return _error(422, str(exc))
        except WorkerUnavailable as exc:  # restarting after a crash: the client may retry
            return _error(503, f"swap worker unavailable, try again shortly: {exc}")
        except web.HTTPRequestEntityTooLarge:
            return _error(
                413, f"upload too large; the limit is {server.cfg.serve.max_upload_mb:g} MB"
            )
        except web.HTTPException as exc:  # the router's 404 and 405: JSON like every other error
            if exc.status < 400:
                raise
            return _error(exc.status, f"{exc.reason}: {request.method} {request.path}")

    async def index(request: web.Request) -> web.Response:
        page = resources.files("livswap.webrtc").joinpath("static/index.html").read_text("utf-8")
        return web.Response(text=page, content_type="text/html")

    async def script(request: web.Request) -> web.Response:
        js = resources.files("livswap.webrtc").joinpath("static/app.js").read_text("utf-8")
        return web.Response(text=js, content_type="application/javascript")

    async def health(request: web.Request) -> web.Response:
        missing = {name: missing_for(spec, server.cfg) for name, spec in ENGINES.items()}
        return web.json_response(
            {
                "status": "ok",
                "peers": len(server.peers),
                "max_peers": server.cfg.serve.max_peers,
                "engines": [name for name, lacks in missing.items() if not lacks],
                "unavailable": {name: "; ".join(lacks) for name, lacks in missing.items() if lacks},
                "default_engine": server.cfg.engine.name,
            }
        )

    async def upload(request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            raise _HttpError(415, "send the photo as multipart/form-data in field 'file'")
        data: bytes | None = None
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if getattr(part, "name", None) == "file":
                    data = await part.read(decode=False)  # type: ignore[union-attr]
                    break
        except (ValueError, AssertionError, UnicodeDecodeError) as exc:  # a body that lies
            raise _HttpError(400, f"malformed multipart body: {exc}") from None
        if not data:
            raise _HttpError(400, "no photo: put the image in form field 'file'")
        source_id = await server.add_source(data)
        return web.json_response({"id": source_id})

    async def offer(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            raise _HttpError(415, "send the offer as application/json")
        try:
            params = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError):  # ValueError: JSONDecodeError
            raise _HttpError(400, "the body is not valid JSON (or nested too deep)") from None
        if not isinstance(params, dict):
            raise _HttpError(400, "expected a JSON object with 'sdp' and 'type'")
        sdp, kind = params.get("sdp"), params.get("type")
        if not isinstance(sdp, str) or kind != "offer":
            raise _HttpError(400, "expected 'sdp' (a string) and 'type': 'offer'")
        engine_name = params.get("engine") or server.cfg.engine.name
        source_id = params.get("source")
        if not isinstance(engine_name, str) or (
            source_id is not None and not isinstance(source_id, str)
        ):
            raise _HttpError(400, "'engine' and 'source' must be strings")
        try:
            answer = await server.answer(
                RTCSessionDescription(sdp=sdp, type=kind), source_id, engine_name
            )
        except (ValueError, AttributeError, TypeError, IndexError) as exc:
            raise _HttpError(400, f"malformed SDP: {exc}") from None
        return web.json_response({"sdp": answer.sdp, "type": answer.type})

    app = web.Application(middlewares=[guard], client_max_size=max_body)
    app.router.add_get("/", index)
    app.router.add_get("/app.js", script)
    app.router.add_get("/health", health)
    app.router.add_post("/sources", upload)
    app.router.add_post("/offer", offer)
    app.on_startup.append(server.start)
    app.on_shutdown.append(server.shutdown)
    return app


def ssl_context(cfg: Config) -> ssl.SSLContext | None:
    if not cfg.serve.cert and not cfg.serve.key:
        return None
    if not (cfg.serve.cert and cfg.serve.key):
        raise ConfigError("serve: give both cert and key for TLS")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cfg.serve.cert, cfg.serve.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"serve: cannot load TLS cert/key: {exc}") from None
    return ctx


def check_exposure(cfg: Config) -> str:
    """The token to require; exposing the server beyond loopback needs a token and TLS."""
    if cfg.serve.host in LOOPBACK_HOSTS:
        return cfg.serve.token
    if not (cfg.serve.cert and cfg.serve.key):
        raise ConfigError(
            f"serve: listening on {cfg.serve.host!r} needs TLS (--cert and --key): "
            "browsers only allow the camera on https or localhost"
        )
    return cfg.serve.token or secrets.token_urlsafe(18)
