"""Stream: one live stream's publisher slot, StreamInfo, GopCache, viewers and packager sinks.

`publish_*` is synchronous and never waits for a viewer: it parses the tag body once into a Frame (whose
FLV tag is built once, on the stream's continuous timeline), updates StreamInfo, appends to the shared
GopCache, feeds the synchronous sinks (packagers), and wakes viewers that wait for data.

The timeline: a publisher's unwrapped timestamps are shifted by an offset so that the stream's
timestamps never go back. A publisher that reconnects (or timestamps that jump) continues just after the
last frame, and sinks are told of the discontinuity. Within a track a frame is never stamped before the
previous one (a few ms of jitter are clamped).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from ..errors import MediaError
from ..log import LogGate, event
from ..media import flv_body
from ..media.frames import AUDIO_CODECS, VIDEO_CODECS, Frame, FrameKind, StreamInfo
from .gop import GopCache, GopLimits
from .subscriber import SlowPolicy, Subscriber

log = logging.getLogger(__name__)

# How far a track may step back, or jump forward, before it counts as a discontinuity.
_BACKWARD_JUMP_MS = 1_000
_FORWARD_JUMP_MS = 10_000
# The gap left between the last frame of one publisher session and the first of the next.
_SESSION_GAP_MS = 20
# Slow viewers' drops are summed and logged at most this often per stream.
DROP_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class StreamKey:
    app: str
    name: str

    def __str__(self) -> str:
        return f"{self.app}/{self.name}"


class StreamState(Enum):
    LIVE = "live"
    IDLE = "idle"  # publisher gone, within the reconnect grace period
    ENDED = "ended"


class Publisher(Protocol):
    """What the hub needs of whoever publishes: a name for logs and a way to end it."""

    peer: str

    def close(self, reason: str) -> None: ...


class Sink(Protocol):
    """A synchronous consumer of every frame (a packager). It must not block or await."""

    def on_frame(self, frame: Frame) -> None: ...

    def on_discontinuity(self) -> None: ...

    def on_end(self) -> None: ...


class Stream:
    def __init__(self, key: StreamKey, limits: GopLimits, policy: SlowPolicy, now: float) -> None:
        self.key = key
        self.info = StreamInfo()
        self.gop = GopCache(limits)
        self.policy = policy
        self.state = StreamState.IDLE
        self.publisher: Publisher | None = None
        self.created_at = now
        self.published_at = now
        self.last_frame_at = now
        self.subscribers: set[Subscriber] = set()
        self.sinks: list[Sink] = []
        self.frames_in = 0
        self.bytes_in = 0
        self.frames_dropped = 0
        self.sessions = 0
        self._offset = 0
        self._rebase_pending = False
        self._last_out = {FrameKind.VIDEO: None, FrameKind.AUDIO: None}
        self._max_out = 0
        self._waiter: asyncio.Future[None] | None = None
        self._unsunk: list[Frame] = []
        self._refused_codecs: set[str] = set()
        self._drops_unlogged = 0
        self._drop_log = LogGate(DROP_LOG_INTERVAL_S)

    @property
    def ended(self) -> bool:
        return self.state is StreamState.ENDED

    # ----- publisher side -------------------------------------------------------------------------

    def begin_session(self, publisher: Publisher, now: float) -> None:
        """A publisher takes the slot. A later session continues the timeline after a discontinuity."""
        self.publisher = publisher
        self.state = StreamState.LIVE
        self.published_at = self.last_frame_at = now
        self.sessions += 1
        if self.sessions > 1:
            self._rebase_pending = True
            for sink in list(self.sinks):
                self._call_sink(sink, "on_discontinuity")

    def end_session(self) -> None:
        self.publisher = None
        if self.state is StreamState.LIVE:
            self.state = StreamState.IDLE

    def _timeline(self, ts_ms: int, kind: FrameKind) -> int:
        last = self._last_out[kind]
        if self._rebase_pending:
            self._rebase_pending = False
            self._offset = self._max_out + _SESSION_GAP_MS - ts_ms
        out = ts_ms + self._offset
        if last is not None:
            if out < last - _BACKWARD_JUMP_MS or out > last + _FORWARD_JUMP_MS:
                # The publisher's clock jumped: continue just after the newest frame, tell the sinks.
                self._offset = self._max_out + _SESSION_GAP_MS - ts_ms
                out = ts_ms + self._offset
                for sink in list(self.sinks):
                    self._call_sink(sink, "on_discontinuity")
            if out < last:
                out = last
        self._last_out[kind] = out
        if out > self._max_out:
            self._max_out = out
        return out

    def publish_video(self, ts_ms: int, body: bytes, now: float) -> Frame | None:
        """One video message. Returns the frame, or None when it carries nothing to play or its codec
        is not carried (logged once). Raises MediaError for a malformed body."""
        frame = flv_body.video_frame(body, self._timeline(ts_ms, FrameKind.VIDEO))
        if frame is None:
            return None
        if frame.codec not in VIDEO_CODECS:
            self._refuse_codec(frame.codec, "video")
            return None
        self._accept(frame, now)
        return frame

    def publish_audio(self, ts_ms: int, body: bytes, now: float) -> Frame | None:
        """One audio message; as publish_video."""
        frame = flv_body.audio_frame(body, self._timeline(ts_ms, FrameKind.AUDIO))
        if frame is None:
            return None
        if frame.codec not in AUDIO_CODECS:
            self._refuse_codec(frame.codec, "audio")
            return None
        self._accept(frame, now)
        return frame

    def publish_metadata(self, body: bytes, values: dict[str, Any], now: float) -> Frame:
        """onMetaData, kept in StreamInfo (sent first to every new viewer) and passed inline."""
        frame = flv_body.data_frame(body, 0)
        info = self.info
        info.metadata = frame
        info.metadata_values = dict(values)
        info.config_generation += 1
        self._accept(frame, now)
        return frame

    def _accept(self, frame: Frame, now: float) -> None:
        self.last_frame_at = now
        self.frames_in += 1
        self.bytes_in += frame.size
        if frame.is_config and frame.kind != FrameKind.DATA:
            self._update_config(frame)
        self.gop.append(frame)
        if self.sinks:
            self._unsunk.append(frame)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _update_config(self, frame: Frame) -> None:
        info = self.info
        if frame.kind == FrameKind.VIDEO:
            info.video_config = frame
            info.video_codec = frame.codec
            if frame.codec == "h264":
                self._read_h264_size(frame)
        else:
            info.audio_config = frame
            info.audio_codec = frame.codec
            if frame.codec == "aac":
                self._read_aac_config(frame)
        info.config_generation += 1

    def _read_h264_size(self, frame: Frame) -> None:
        from ..media import h264

        try:
            cfg = h264.parse_avc_config(bytes(frame.payload))
            if cfg.sps:
                sps = h264.parse_sps(cfg.sps[0])
                self.info.width, self.info.height = sps.width, sps.height
        except MediaError as err:
            event(log, "bad_sequence_header", logging.WARNING, stream=str(self.key), codec="h264", error=str(err))

    def _read_aac_config(self, frame: Frame) -> None:
        from ..media import aac

        try:
            cfg = aac.parse_audio_specific_config(bytes(frame.payload))
            self.info.audio_sample_rate, self.info.audio_channels = cfg.sample_rate, cfg.channels
        except MediaError as err:
            event(log, "bad_sequence_header", logging.WARNING, stream=str(self.key), codec="aac", error=str(err))

    def _refuse_codec(self, codec: str, track: str) -> None:
        if codec not in self._refused_codecs:
            self._refused_codecs.add(codec)
            supported = ", ".join(sorted(VIDEO_CODECS if track == "video" else AUDIO_CODECS))
            event(
                log, "unsupported_codec", logging.WARNING, stream=str(self.key), track=track, codec=codec,
                action="track left out", supported=supported,
            )

    # ----- sinks ----------------------------------------------------------------------------------

    def add_sink(self, sink: Sink) -> None:
        """Attach a packager; from now on it gets every frame. What came before is `history()`."""
        self.flush_sinks()
        self.sinks.append(sink)

    def history(self) -> list[Frame]:
        """What a packager starting now should be fed first: the sequence headers, then the kept media
        from its oldest keyframe (configs that changed on the way stay inline)."""
        self.flush_sinks()
        out = [f for f in (self.info.video_config, self.info.audio_config) if f is not None]
        out.extend(f for f in self.gop.frames_from(self.gop.history_start()) if f.kind != FrameKind.DATA)
        return out

    def remove_sink(self, sink: Sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    def _drop_sink(self, sink: Sink) -> None:
        log.exception("sink failed; detached from stream %s", self.key)
        self.remove_sink(sink)

    def flush_sinks(self) -> None:
        """Feed the packagers what arrived since the last call. The publisher's adapter calls this once
        per socket read: each packager then runs over several frames in a row, which keeps its code and
        data warm in the CPU caches (bench/load.py publish measured the difference)."""
        frames = self._unsunk
        if not frames:
            return
        self._unsunk = []
        for sink in list(self.sinks):
            try:
                for frame in frames:
                    sink.on_frame(frame)
            except Exception:
                self._drop_sink(sink)

    def _call_sink(self, sink: Sink, method: str) -> None:
        self.flush_sinks()  # what came before a discontinuity or the end belongs before it
        try:
            getattr(sink, method)()
        except Exception:
            self._drop_sink(sink)

    # ----- viewers --------------------------------------------------------------------------------

    def subscribe(self, kind: str, peer: str, now: float) -> tuple[Subscriber, list[Frame]]:
        """A new viewer and its clean start, taken atomically (publishing is synchronous)."""
        sub = Subscriber(self, kind, peer, now, self.policy)
        self.subscribers.add(sub)
        return sub, sub.start()

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if sub.close_reason != "viewer_left":
            self._wake()

    def count_drop(self, frames: int, now: float) -> None:
        """Count a slow viewer's dropped frames; log them at most once per interval per stream."""
        self.frames_dropped += frames
        self._drops_unlogged += frames
        overflows = self._drop_log.should_log("drops", now)
        if overflows:
            event(
                log, "slow_viewers_dropped", logging.WARNING, stream=str(self.key),
                frames=self._drops_unlogged, overflows=overflows, interval_s=DROP_LOG_INTERVAL_S,
            )
            self._drops_unlogged = 0

    def changed(self) -> asyncio.Future[None]:
        """A future that completes when the next frame arrives or the stream ends."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end(self) -> None:
        """The stream is over: viewers get what is queued and then the end; sinks are finished."""
        if self.state is StreamState.ENDED:
            return
        self.state = StreamState.ENDED
        self.publisher = None
        for sink in list(self.sinks):
            self._call_sink(sink, "on_end")
        self.sinks.clear()
        self._wake()

    def snapshot(self, now: float) -> dict[str, Any]:
        """A plain description for logs and the admin API."""
        info = self.info
        viewers: dict[str, int] = {}
        for sub in self.subscribers:
            viewers[sub.kind] = viewers.get(sub.kind, 0) + 1
        return {
            "app": self.key.app,
            "name": self.key.name,
            "state": self.state.value,
            "publisher": self.publisher.peer if self.publisher else None,
            "video": {"codec": info.video_codec, "width": info.width, "height": info.height} if info.video_codec else None,
            "audio": (
                {"codec": info.audio_codec, "sample_rate": info.audio_sample_rate, "channels": info.audio_channels}
                if info.audio_codec
                else None
            ),
            "uptime_s": round(now - self.published_at, 3),
            "frames_in": self.frames_in,
            "bytes_in": self.bytes_in,
            "viewers": viewers,
            "frames_dropped": self.frames_dropped,
            "gop_cache_bytes": self.gop.gop_bytes(),
        }
