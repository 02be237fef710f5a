"""``livswap serve``: the browser demo over WebRTC (aiohttp + aiortc)."""

from livswap.webrtc.server import Server, create_app, enable_loopback_candidates

__all__ = ["Server", "create_app", "enable_loopback_candidates"]
