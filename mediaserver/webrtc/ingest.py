"""A WHIP publisher in the hub: one aiortc peer connection's H.264 and Opus become a hub stream, as an
RTMP publish does, with every output.

    RTP -> aiortc (SRTP, jitter buffer, depayload) -> ingest_rtp tap (encoded frames, sender reports)
        video: ingest_video (Annex B -> AVC sequence header + AVCC) -> Stream.publish_video
        audio: ingest_audio (Opus -> AAC in a worker thread)        -> Stream.publish_audio
               opus_source (the Opus as it came, on the hub's timeline) -> the stream's WebRTC viewers
        times: ingest_clock (RTP clocks -> one ms timeline, RTCP SR for A/V sync)

Video is never decoded. Keyframes: WebRTC encoders send one at the start and then only when asked, so
the bridge asks (PLI) while it waits for the first, after a malformed frame, and whenever the last one
is older than `keyframe_interval_s` (the HLS segment target: segments and late viewers start at
keyframes).

The session ends (the hub stream's publisher leaves, the reconnect grace applies) on DELETE, when the hub
closes it (kick, takeover, shutdown), when ICE fails or consent expires (aioice ends the connection),
when no media came `connect_timeout_s` after the answer, or none for `media_timeout_s` since.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpReceiver

from ..errors import MediaError
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream
from ..log import LogGate, event
from .ingest_audio import AacOut, OpusToAac, aac_audio_body, aac_sequence_header_body
from .ingest_clock import SessionClock
from .ingest_rtp import request_keyframe, tap_receiver
from .ingest_video import AvcFromAnnexB
from .opus_source import OpusSource
from .peer import failure_reason

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
OPUS_CLOCK = 48_000
_TICK_S = 0.5
_BAD_MEDIA_LOG_S = 10.0


@dataclass(slots=True)
class KeyframeRequests:
    """When to ask the publisher for a keyframe (PLI). Pure: time comes in."""

    interval_s: float
    """Ask when the newest keyframe is older than this (the HLS segment target)."""
    retry_s: float = 1.0
    """While waiting for a needed keyframe, ask again this often."""
    last_keyframe: float | None = None
    last_request: float | None = None
    requests: int = 0

    def keyframe(self, now: float) -> None:
        self.last_keyframe = now

    def due(self, now: float, waiting: bool) -> bool:
        """Whether to ask now; `waiting` when frames are being dropped until a keyframe comes."""
        since_request = None if self.last_request is None else now - self.last_request
        if waiting:
            due = since_request is None or since_request >= self.retry_s
        else:
            stale = self.last_keyframe is None or now - self.last_keyframe >= self.interval_s
            due = stale and (since_request is None or since_request >= self.interval_s)
        if due:
            self.last_request = now
            self.requests += 1
        return due


@dataclass(slots=True)
class IngestTimeouts:
    connect_s: float = 10.0
    """From the answer to the first media frame (ICE, DTLS)."""
    media_s: float = 10.0
    """The longest silence (no frame of any track) once media flowed."""


@dataclass(slots=True)
class IngestCounters:
    video_frames: int = 0
    audio_packets: int = 0
    bytes_received: int = 0
    bad_frames: int = 0
    keyframe_requests: int = 0
    audio_overlap_dropped: int = 0
    started_at: float = field(default_factory=time.monotonic)


class WhipPublisher:
    """The hub's Publisher for one WHIP session (see the module docstring)."""

    def __init__(
        self, pc: RTCPeerConnection, registry: StreamRegistry, peer: str, *, keyframe_interval_s: float,
        timeouts: IngestTimeouts | None = None, on_closed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.pc = pc
        self.registry = registry
        self.peer = peer
        self.stream: Stream | None = None
        self.timeouts = timeouts or IngestTimeouts()
        self.on_closed = on_closed
        """Awaited once the session is over (the signaling layer forgets it)."""
        self.loop = asyncio.get_running_loop()
        self.clock = SessionClock()
        self.video = AvcFromAnnexB()
        self.audio: OpusToAac | None = None
        self.opus_source: OpusSource | None = None
        """The Opus as it came, for the stream's WebRTC viewers (feeds.py finds it through Stream.publisher)."""
        self.keyframes = KeyframeRequests(keyframe_interval_s)
        self.counters = IngestCounters()
        self.close_reason: str | None = None
        self.session: Any = None
        """The node's Session of this publisher (webrtc/sessions.py), whose byte count is kept current."""
        self._receivers: dict[str, RTCRtpReceiver] = {}
        self._last_media: float | None = None
        self._audio_config_sent = False
        self._last_audio_ms = 0
        self._announced = False
        self._bad_log = LogGate(_BAD_MEDIA_LOG_S)
        self._ticker: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None

    # ----- setting up (before the answer) --------------------------------------------------------

    def tap(self) -> None:
        """Take the encoded frames of every receiving transceiver; call right after setRemoteDescription."""
        for transceiver in self.pc.getTransceivers():
            kind = transceiver.kind
            if kind not in ("video", "audio") or kind in self._receivers:
                continue
            receiver = transceiver.receiver
            self._receivers[kind] = receiver
            self.clock.add_track(kind, VIDEO_CLOCK if kind == "video" else OPUS_CLOCK)
            tap_receiver(
                receiver,
                lambda codec, ts, data, kind=kind: self._on_frame(kind, codec, ts, data),
                lambda rtp, ntp, kind=kind: self.clock.sender_report(kind, rtp, ntp),
            )
        if "audio" in self._receivers:
            self.audio = OpusToAac(self.loop, self._on_aac, name=f"whip-audio {self.peer}")
            self.opus_source = OpusSource()

    def start(self, stream: Stream, expires_in: float | None = None) -> None:
        """The stream is ours (claimed in the registry): watch the connection and the clocks."""
        self.stream = stream
        self.pc.on("connectionstatechange", self._on_connection_state)
        self._ticker = self.loop.create_task(self._tick())
        if expires_in is not None:
            self._expiry = self.loop.call_later(expires_in, self.end, "session_expired")

    # ----- media ---------------------------------------------------------------------------------

    def _on_frame(self, kind: str, codec: str, rtp_timestamp: int, data: bytes) -> None:
        stream = self.stream
        if stream is None or self.close_reason is not None:
            return
        now = time.monotonic()
        self._last_media = now
        self.counters.bytes_received += len(data)
        if self.session is not None:
            self.session.bytes_received = self.counters.bytes_received
        position = self.clock.position(kind, rtp_timestamp, now)
        if kind == "video":
            if codec.upper() != "H264":
                return  # the answer offered H.264 only
            self.counters.video_frames += 1
            self._publish_video(stream, data, self.clock.to_ms("video", position), now)
        elif self.audio is not None and codec.lower() == "opus":
            self.counters.audio_packets += 1
            self.audio.push(position, data)
            if self.opus_source is not None and self.opus_source.listeners:
                self.opus_source.packet(self.clock.to_ms("audio", position), data)

    def _publish_video(self, stream: Stream, data: bytes, ts_ms: int, now: float) -> None:
        try:
            out = self.video.push(data)
            if out.config is not None:
                stream.publish_video(ts_ms, out.config, now)
            if out.frame is not None:
                frame = stream.publish_video(ts_ms, out.frame, now)
                if frame is not None and self.opus_source is not None:
                    self.opus_source.placed(ts_ms, frame.dts_ms)
                if out.keyframe:
                    self.keyframes.keyframe(now)
                    if not self._announced and frame is not None:
                        self._announce()
        except MediaError as err:
            self.counters.bad_frames += 1
            self.video.needs_keyframe = True
            count = self._bad_log.should_log("video", now)
            if count:
                event(log, "bad_media", logging.WARNING, stream=str(stream.key), track="video", error=str(err),
                      frames=count, action="dropped until the next keyframe (asked for one)")
        stream.flush_sinks()

    def _on_aac(self, frames: list[AacOut]) -> None:
        stream = self.stream
        audio = self.audio
        if stream is None or audio is None or self.close_reason is not None:
            return
        now = time.monotonic()
        if not self._audio_config_sent:
            self._audio_config_sent = True
            stream.publish_audio(self.clock.to_ms("audio", frames[0].position), aac_sequence_header_body(audio.asc), now)
        for aac in frames:
            ts_ms = self.clock.to_ms("audio", aac.position)
            if ts_ms < self._last_audio_ms:
                # The sender reports moved audio back (A/V sync): frames that would overlap the ones already
                # published are dropped, once, rather than stamped on top of each other.
                self.counters.audio_overlap_dropped += 1
                continue
            self._last_audio_ms = ts_ms
            frame = stream.publish_audio(ts_ms, aac_audio_body(aac.raw), now)
            if frame is not None and self.opus_source is not None:
                self.opus_source.placed(ts_ms, frame.dts_ms)
        stream.flush_sinks()

    def _announce(self) -> None:
        self._announced = True
        stream = self.stream
        assert stream is not None
        info = stream.info
        fields: dict[str, Any] = {"stream": str(stream.key), "protocol": "whip", "video": info.video_codec or "none"}
        if info.width:
            fields["resolution"] = f"{info.width}x{info.height}"
        fields["audio"] = "opus->aac" if self.audio is not None else "none"
        event(log, "publish_start", **fields)

    # ----- clocks: keyframes, deadlines ---------------------------------------------------------------

    async def _tick(self) -> None:
        while self.close_reason is None:
            await asyncio.sleep(_TICK_S)
            now = time.monotonic()
            if self._last_media is None:
                if now - self.counters.started_at >= self.timeouts.connect_s:
                    self.end("connect_timeout")
                    return
                continue
            if now - self._last_media >= self.timeouts.media_s:
                self.end("media_timeout")
                return
            receiver = self._receivers.get("video")
            if receiver is not None and self.keyframes.due(now, self.video.needs_keyframe):
                self.counters.keyframe_requests += 1
                try:
                    await request_keyframe(receiver)
                except ConnectionError:
                    pass

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self.session is not None:
            self.session.connected = True  # no longer one of its address's sessions still connecting
        if state in ("failed", "closed"):
            # consent expiry shows as "closed" too: aiortc closes DTLS over the dead transport
            failed = failure_reason(self.pc)
            self.end(failed or ("ice_failed" if state == "failed" else "closed"))

    # ----- the end ---------------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """The hub's handle (kick, takeover, shutdown): it already moved on, the stream is not released."""
        if self.stream is not None and self.close_reason is None:
            event(log, "publisher_closed", stream=str(self.stream.key), protocol="whip", reason=reason)
        self.stream = None
        self.end(reason)

    def end(self, reason: str) -> asyncio.Task[None]:
        """End the session (idempotent); the returned task completes when the connection is closed."""
        if self._closing is None:
            self.close_reason = reason
            self._closing = self.loop.create_task(self._shutdown(reason))
        return self._closing

    async def _shutdown(self, reason: str) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._ticker is not None and self._ticker is not asyncio.current_task():
            self._ticker.cancel()
        if self.audio is not None:
            self.audio.close()
        if self.opus_source is not None:
            self.opus_source.close()
        stream, self.stream = self.stream, None
        if stream is not None:
            self.registry.release_publisher(stream, self)
            elapsed = max(time.monotonic() - self.counters.started_at, 1e-3)
            event(log, "publish_stop", stream=str(stream.key), protocol="whip", reason=reason,
                  duration_s=round(elapsed, 1), kbps=round(self.counters.bytes_received * 8 / elapsed / 1000),
                  video_frames=self.counters.video_frames, audio_packets=self.counters.audio_packets,
                  keyframe_requests=self.counters.keyframe_requests, bad_frames=self.counters.bad_frames,
                  audio_dropped=self.audio.dropped if self.audio is not None else 0,
                  **({"opus_passed": self.opus_source.passed} if self.opus_source and self.opus_source.passed else {}),
                  av_sync_ms=self.clock.sync_step_ms.get("audio", "none"),
                  **({"av_sync_ignored_ms": self.clock.sync_ignored_ms["audio"]} if self.clock.sync_ignored_ms else {}),
                  **({"audio_overlap_dropped": self.counters.audio_overlap_dropped}
                     if self.counters.audio_overlap_dropped else {}))
        try:
            await self.pc.close()
        except Exception:  # a connection half set up may fail to close; it is gone either way
            log.debug("peer connection close failed", exc_info=True)
        if self.on_closed is not None:
            await self.on_closed(reason)
