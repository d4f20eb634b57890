"""Encoded frames out of aiortc's RTP receiver, before its decoder: the one place that reaches inside aiortc.

Written against aiortc 1.16.0 (rtcrtpreceiver.py, jitterbuffer.py, codecs/h264.py). aiortc's receiver
depayloads each RTP packet (H.264: FU-A/STAP-A to Annex B NAL units), reassembles whole frames in its
jitter buffer (NACKs and PLIs on loss included), maps their RTP timestamps with its TimestampMapper
and puts `(codec, JitterFrame)` on a queue that a decoder thread reads. aiortc has no public hook for
the encoded frames, so three attributes of a receiver are replaced before `receive()` starts it:

- the decoder queue becomes a `_FrameTap` whose `put` hands each frame to us, on the event loop, and
  never queues it: the decoder thread idles on an empty queue until `stop()` puts its None, which
  the tap does queue (so the thread still ends). Nothing is decoded.
- the TimestampMapper becomes an identity: we want the sender's RTP timestamps (to pair them with its
  RTCP sender reports); aiortc's mapper also takes any step back for a wrap.
- `_handle_rtcp_packet` is wrapped (on the instance) to see sender reports, then does what it did.

`request_keyframe` sends a PLI (RFC 4585 6.3.1) through the receiver's own RTCP path.

If a later aiortc renames these, `tap_receiver` raises (checked before anything is replaced), the
WHIP request fails with 500 and the tests say where: update this module against the new version.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.rtp import RtcpSrPacket

AIORTC_VERSION = "1.16"

FrameCallback = Callable[[str, int, bytes], None]
"""(codec name as aiortc spells it, e.g. "H264" or "opus"; RTP timestamp; depayloaded frame data)."""
ReportCallback = Callable[[int, int], None]
"""(RTP timestamp, NTP timestamp) of a sender report."""

_QUEUE = "_RTCRtpReceiver__decoder_queue"
_MAPPER = "_RTCRtpReceiver__timestamp_mapper"
_STARTED = "_RTCRtpReceiver__started"


class _FrameTap(queue.Queue):
    """Stands in for the receiver's decoder queue: frames go to `on_frame`, only the stop marker is queued."""

    def __init__(self, on_frame: FrameCallback) -> None:
        super().__init__()
        self.on_frame = on_frame

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None)  # stop(): the idle decoder thread ends
            return
        codec, frame = item
        self.on_frame(codec.name, frame.timestamp, frame.data)


class _RtpTimestamps:
    """Stands in for aiortc's TimestampMapper: the sender's RTP timestamps, untouched."""

    def map(self, timestamp: int) -> int:
        return timestamp


def tap_receiver(receiver: RTCRtpReceiver, on_frame: FrameCallback, on_report: ReportCallback) -> None:
    """Take `receiver`'s encoded frames and sender reports. Call before the connection starts it
    (right after setRemoteDescription)."""
    for name in (_QUEUE, _MAPPER, _STARTED):
        if not hasattr(receiver, name):
            raise RuntimeError(f"aiortc's RTCRtpReceiver has no {name}; mediaserver/webrtc/ingest_rtp.py was "
                               f"written against aiortc {AIORTC_VERSION} and needs updating")
    if getattr(receiver, _STARTED):
        raise RuntimeError("the RTP receiver started before its frames were tapped")
    setattr(receiver, _QUEUE, _FrameTap(on_frame))
    setattr(receiver, _MAPPER, _RtpTimestamps())
    handle_rtcp = receiver._handle_rtcp_packet

    async def handle_rtcp_packet(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            on_report(packet.sender_info.rtp_timestamp, packet.sender_info.ntp_timestamp)
        await handle_rtcp(packet)

    receiver._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]


async def request_keyframe(receiver: RTCRtpReceiver) -> bool:
    """Send a PLI for each source the receiver heard from lately; False when it heard none yet."""
    sources = receiver.getSynchronizationSources()
    for source in sources:
        await receiver._send_rtcp_pli(source.source)
    return bool(sources)
