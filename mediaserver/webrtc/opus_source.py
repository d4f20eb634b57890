"""The Opus packets a WHIP publisher sends, handed as they are to the WebRTC viewers of its stream. Pure.

A WHIP stream's hub audio is AAC (ingest_audio.py: every output can carry it); without this, its WebRTC
viewers would get that AAC transcoded back to Opus (opus_feed.py): two lossy conversions and a worker
process for nothing. The publisher's `OpusSource` (`WhipPublisher.opus_source`, found through the hub
stream's publisher by `opus_source_of`) gives the stream's feed (feeds.py) each packet, made into one
shared `RtpFrame`, on the hub's timeline, the same one the hub stamps the video with:

    hub ms = the session clock's ms (ingest_clock.py, A/V synced by the sender reports)
             + the hub's offset for this session (learnt from each frame the hub accepted: its dts - our ms)

Nothing is kept: a packet with no listener, or before the hub placed the session's first frame, is
dropped on arrival (there is no viewer to give it to). A packet not later than the last one handed out
(the sender reports moved audio back, as ingest drops overlapping AAC frames) is dropped and counted, so
viewers' RTP times never step back.
"""

from __future__ import annotations

from collections.abc import Callable

from ..hub.stream import Stream
from .rtp_packets import RtpFrame

OPUS_PER_MS = 48
"""Opus RTP clock ticks (48 kHz) per ms."""

OpusListener = Callable[[RtpFrame], None]


class OpusSource:
    """One WHIP session's Opus, on the hub's timeline, for whoever listens (a stream's WebRTC feed)."""

    def __init__(self) -> None:
        self.listeners: set[OpusListener] = set()
        self.offset_ms: int | None = None
        """Hub ms minus session ms; None until the hub placed a frame of this session."""
        self.closed = False
        self.passed = 0
        self.dropped_back = 0
        self._last: int | None = None

    def placed(self, session_ms: int, hub_ms: int) -> None:
        """The hub put a frame the session stamped `session_ms` at `hub_ms` (the offset moves when the hub
        rebases a new session or its clock jumped)."""
        self.offset_ms = hub_ms - session_ms

    def packet(self, session_ms: int, payload: bytes) -> None:
        """One Opus packet at `session_ms` on the session's clock."""
        if not self.listeners or self.offset_ms is None or self.closed or not payload:
            return
        rtp_time = (session_ms + self.offset_ms) * OPUS_PER_MS
        if self._last is not None and rtp_time <= self._last:
            self.dropped_back += 1
            return
        self._last = rtp_time
        frame = RtpFrame((bytes(payload),), rtp_time)
        self.passed += 1
        for listener in list(self.listeners):
            listener(frame)

    def close(self) -> None:
        """The session ended: nothing more comes (listeners notice `closed` and go elsewhere)."""
        self.closed = True
        self.listeners.clear()


def opus_source_of(stream: Stream) -> OpusSource | None:
    """The live Opus source of the stream's publisher (a WHIP session), or None (RTMP, a relay, a rendition's
    transcoder, no publisher)."""
    source = getattr(stream.publisher, "opus_source", None)
    return source if isinstance(source, OpusSource) and not source.closed else None
