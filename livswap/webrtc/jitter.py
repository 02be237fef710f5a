"""A video jitter buffer for aiortc's receiver that hands a frame on as soon as it is whole.

aiortc's own buffer learns that a video frame is complete only when the first packet of the next
frame arrives, so every frame from the browser waits one frame interval (33 ms at 30 fps) before
it is decoded. The RTP marker bit flags the last packet of a video frame (RFC 7741 for VP8,
RFC 6184 for H.264; Chromium and aiortc both set it), so a gap-free run of packets from the
oldest one through a marked one is a whole frame at once. When the marked packet is lost, the
base behaviour still completes the frame on the next timestamp.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

__all__ = ["MarkerJitterBuffer", "use_marker_jitter_buffer"]

log = logging.getLogger(__name__)

# aiortc keeps its receiver's buffer in a private attribute; pinned aiortc==1.16.0 names it so.
_RECEIVER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


class MarkerJitterBuffer(JitterBuffer):
    """:class:`aiortc.jitterbuffer.JitterBuffer` that completes frames on the marker bit."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        return self._marked_frame() or super()._remove_frame(sequence_number)

    def _marked_frame(self) -> JitterFrame | None:
        if self._origin is None:
            return None
        packets: list[RtpPacket] = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None or (packets and packet.timestamp != packets[0].timestamp):
                return None  # a gap, or a frame without its marker: the base rule decides
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]
                return JitterFrame(data=data, timestamp=packets[0].timestamp)
        return None


def use_marker_jitter_buffer(receiver: Any) -> bool:
    """Give an aiortc video receiver a :class:`MarkerJitterBuffer` before packets arrive.

    Returns False (and changes nothing) if this aiortc keeps its buffer elsewhere.
    """
    current = getattr(receiver, _RECEIVER_ATTRIBUTE, None)
    if type(current) is not JitterBuffer or not current._is_video:
        log.debug("aiortc receiver has no video jitter buffer where expected; left as it is")
        return False
    setattr(receiver, _RECEIVER_ATTRIBUTE, MarkerJitterBuffer(current.capacity, is_video=True))
    return True
