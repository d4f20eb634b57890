"""Stream: one live stream's publisher slot, StreamInfo, GopCache, viewers and packager sinks.

`publish_*` is synchronous and never waits for a viewer: it parses the tag body once into a Frame (whose
FLV tag is built once, on the stream's continuous timeline), updates StreamInfo, appends to the shared
GopCache, feeds the synchronous sinks (packagers), and wakes viewers that wait for data.

The timeline: a publisher's unwrapped timestamps are shifted by an offset so that the stream's
timestamps never go back. A publisher that reconnects (or timestamps that jump) continues just after the
last frame shown (its presentation time: a publisher cut off after a P-frame whose B-frames never came
must not make the next session's first picture show before it), and sinks are told of the
discontinuity. Within a track a frame is never stamped before the previous one (a few ms of jitter are
clamped). Only media frames move the timeline: metadata and
sequence headers carry the stream's current time (the newest media time), whatever time the publisher
gave them, so a config resent at 0 is not a jump and viewers never count metadata as lag (a metadata
frame's FLV tag keeps timestamp 0, see publish_metadata). The one thing a config's own time does is
anchor a new session's offset, as the first thing that session sends.

Sequence headers are parsed once here. StreamInfo (what late joiners and starting packagers get first)
keeps the newest one that parses; one that does not is still passed inline, counted in
`bad_sequence_headers`, and logged once per track per publisher session.

Sinks: a packager skips what it cannot use itself (bad media never stops it, ARCHITECTURE.md section 4),
so an exception out of a sink is a bug; the hub then detaches the sink and ends it (`on_end`: its
playlist gets ENDLIST), so its owner can start a fresh one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from ..errors import MediaError
from ..log import LogGate, event
from ..media import aac, av1, flv_body, h264, hevc, opus
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
MAX_REFUSED_CODECS_LOGGED = 8
"""Unsupported codecs a stream logs, each once; more are left out unlogged."""
# The parser of each codec's sequence header: one that raises MediaError is unusable.
_CONFIG_PARSERS: dict[str, Callable[[bytes], object]] = {
    "h264": h264.parse_avc_config,
    "hevc": hevc.parse_hevc_config,
    "av1": av1.parse_av1_config,
    "aac": aac.parse_audio_specific_config,
    "opus": opus.parse_opus_head,
}


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
    """A synchronous consumer of every frame (a packager). It must not block or await.

    A frame it cannot use it skips (and counts with `Stream.count_skipped`); it never raises for bad
    media. Whatever it raises is taken for a bug: it is detached, then `on_end` is called once more
    so it ends its output; `on_end` must therefore be safe to call twice."""

    def on_frame(self, frame: Frame) -> None: ...

    # A sink may also have `on_frames(frames: list[Frame])`: then it gets each batch (the frames of one
    # socket read, in order) in one call instead of one on_frame per frame.
    # A sink may also say `waits_for_frames = False` (read with getattr, default True) and have
    # `next_output_ms() -> float`: its output changes only at a frame whose decode time it names in advance
    # (a TS segment's cut, a CMAF part's end), so until then a publisher's reads may merge while only such
    # sinks consume.

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
        self.waiting_sinks = 0
        """Sinks that serve frames as they come (all but those with `waits_for_frames = False`)."""
        self.on_audience: Callable[[], None] | None = None
        """Called once when a viewer or sink arrives: a publisher whose reads wait for nobody reads at once."""
        self.frames_in = 0
        self.bytes_in = 0
        self.frames_dropped = 0
        self.bad_sequence_headers = 0
        self.frames_skipped: dict[str, int] = {}
        """Frames a packager could not use, by output format ("hls", "cmaf")."""
        self.sessions = 0
        self._offset = 0
        self._rebase_pending = False
        self._last_out = {FrameKind.VIDEO: None, FrameKind.AUDIO: None}
        self._max_out = 0
        self._max_pts = 0  # the newest presentation time: a B-frame stream's last frame may show after its dts
        self._waiter: asyncio.Future[None] | None = None
        self._unsunk: list[Frame] = []
        self._refused_codecs: set[str] = set()
        self._bad_config_logged: set[FrameKind] = set()
        self._good_config = {FrameKind.VIDEO: False, FrameKind.AUDIO: False}
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
        self._bad_config_logged.clear()
        if self.sessions > 1:
            self._rebase_pending = True
            for sink in list(self.sinks):
                self._call_sink(sink, "on_discontinuity")

    def discontinuity(self) -> None:
        """The publisher's media has a gap but keeps its timestamps (a transcoder worker restarted): the
        sinks are told, the timeline is not rebased. The next frames are placed at their own time, however
        far they jumped, so the publisher must never send one older than what it sent before."""
        self._last_out = {FrameKind.VIDEO: None, FrameKind.AUDIO: None}
        for sink in list(self.sinks):
            self._call_sink(sink, "on_discontinuity")

    def end_session(self) -> None:
        self.publisher = None
        if self.state is StreamState.LIVE:
            self.state = StreamState.IDLE

    def _place(self, ts_ms: int, kind: FrameKind) -> tuple[int, int, bool]:
        """Where a media frame the publisher stamped `ts_ms` lands on the stream's timeline:
        (dts_ms, the offset to keep, whether the clock jumped). Nothing changes until `_commit`, so a
        frame that turns out to be a config, or nothing, or malformed leaves the timeline alone."""
        offset = self._offset
        if self._rebase_pending:
            offset = self._max_pts + _SESSION_GAP_MS - ts_ms
        out = ts_ms + offset
        jumped = False
        last = self._last_out[kind]
        if last is not None:
            if out < last - _BACKWARD_JUMP_MS or out > last + _FORWARD_JUMP_MS:
                # The publisher's clock jumped: continue just after the newest frame.
                offset = self._max_pts + _SESSION_GAP_MS - ts_ms
                out = ts_ms + offset
                jumped = True
            if out < last:
                out = last
        return out, offset, jumped

    def _commit(self, kind: FrameKind, out: int, cts_ms: int, offset: int, jumped: bool) -> None:
        self._rebase_pending = False
        self._offset = offset
        self._last_out[kind] = out
        if out > self._max_out:
            self._max_out = out
        if out + cts_ms > self._max_pts:
            self._max_pts = out + cts_ms
        if jumped:
            for sink in list(self.sinks):
                self._call_sink(sink, "on_discontinuity")

    def publish_video(self, ts_ms: int, body: bytes, now: float) -> Frame | None:
        """One video message. Returns the frame, or None when it carries nothing to play or its codec
        is not carried (logged once). Raises MediaError for a malformed body."""
        out, offset, jumped = self._place(ts_ms, FrameKind.VIDEO)
        frame = flv_body.video_frame(body, out)
        if frame is None:
            return None
        if frame.codec not in VIDEO_CODECS:
            self._refuse_codec(frame.codec, "video")
            return None
        if frame.is_config:
            self._anchor_session(offset)
            frame = self._at_current_time(frame)
        else:
            self._commit(FrameKind.VIDEO, out, frame.cts_ms, offset, jumped)
        self._accept(frame, now)
        return frame

    def publish_audio(self, ts_ms: int, body: bytes, now: float) -> Frame | None:
        """One audio message; as publish_video."""
        out, offset, jumped = self._place(ts_ms, FrameKind.AUDIO)
        frame = flv_body.audio_frame(body, out)
        if frame is None:
            return None
        if frame.codec not in AUDIO_CODECS:
            self._refuse_codec(frame.codec, "audio")
            return None
        if frame.is_config:
            self._anchor_session(offset)
            frame = self._at_current_time(frame)
        else:
            self._commit(FrameKind.AUDIO, out, 0, offset, jumped)
        self._accept(frame, now)
        return frame

    def _anchor_session(self, offset: int) -> None:
        """A new session's sequence headers come first and carry its origin (0 from OBS and ffmpeg):
        they set its offset, so its first audio and video frames keep their distance whichever comes
        first. They do not move the timeline otherwise."""
        if self._rebase_pending:
            self._rebase_pending = False
            self._offset = offset

    def _at_current_time(self, config: Frame) -> Frame:
        """A sequence header carries the stream's current time, not the publisher's (configs are rare:
        rebuilding the tag costs nothing that matters)."""
        now_ms = self._max_out
        if config.dts_ms == now_ms:
            return config
        return dataclasses.replace(config, dts_ms=now_ms, tag=flv_body.build_tag(config.kind, now_ms, config.body))

    def publish_metadata(self, body: bytes, values: dict[str, Any], now: float) -> Frame:
        """onMetaData, kept in StreamInfo (sent first to every new viewer) and passed inline. Its place
        in the log is the stream's current time (metadata is not media, so never lag); its FLV tag says
        0, as publishers send it and as players built on ffmpeg want it (flvdec takes an onMetaData
        stamped anything else for a data packet of a new stream)."""
        frame = dataclasses.replace(flv_body.data_frame(body, 0), dts_ms=self._max_out)
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
        video = frame.kind == FrameKind.VIDEO
        parse = _CONFIG_PARSERS.get(frame.codec)
        parsed = None
        if parse is not None:
            try:
                parsed = parse(bytes(frame.payload))
            except MediaError as err:
                self._bad_config(frame, err)
                if self._good_config[frame.kind]:
                    return  # late joiners and starting packagers keep the last good one
        self._good_config[frame.kind] = parse is None or parsed is not None
        if video:
            info.video_config = frame
            info.video_codec = frame.codec
            if isinstance(parsed, h264.AvcConfig):
                try:
                    sps = h264.parse_sps(parsed.sps[0])
                    info.width, info.height = sps.width, sps.height
                except MediaError:
                    pass  # decoders read the SPS themselves; the size is for the admin API only
        else:
            info.audio_config = frame
            info.audio_codec = frame.codec
            if isinstance(parsed, aac.AacConfig):
                info.audio_sample_rate, info.audio_channels = parsed.sample_rate, parsed.channels
        info.config_generation += 1

    def _bad_config(self, frame: Frame, err: MediaError) -> None:
        """Count a malformed sequence header; log the first of each track per publisher session."""
        self.bad_sequence_headers += 1
        if frame.kind in self._bad_config_logged:
            return
        self._bad_config_logged.add(frame.kind)
        kept = self._good_config[frame.kind]
        event(
            log, "bad_sequence_header", logging.WARNING, stream=str(self.key), codec=frame.codec, error=str(err),
            action="passed on as sent; " + ("new viewers get the last good one" if kept else "no good one to fall back on"),
            hint="the encoder sent a malformed codec configuration; restart or update it",
        )

    def _refuse_codec(self, codec: str, track: str) -> None:
        # Logged once per codec, for the first few: a publisher naming a new FourCC in every message would
        # otherwise write a line per message and grow the set without bound.
        if codec not in self._refused_codecs and len(self._refused_codecs) < MAX_REFUSED_CODECS_LOGGED:
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
        self._count_waiting_sinks()
        self._audience_arrived()

    def history(self) -> list[Frame]:
        """What a packager starting now should be fed first: the sequence headers, then the kept media
        from its oldest keyframe (configs that changed on the way stay inline)."""
        self.flush_sinks()
        out = [f for f in (self.info.video_config, self.info.audio_config) if f is not None]
        out.extend(f for f in self.gop.frames_from(self.gop.history_start()) if f.kind != FrameKind.DATA)
        return out

    def remove_sink(self, sink: Sink) -> None:
        """Detach a packager; it first gets what arrived before (a publisher that left mid-read leaves
        its last frames unsunk: a recording stopped afterwards must still have them)."""
        if sink in self.sinks:
            self.flush_sinks()
            self.sinks.remove(sink)
            self._count_waiting_sinks()

    def output_due_ms(self) -> float:
        """The decode time before which no sink's output changes: the earliest `next_output_ms()` of the
        sinks that do not wait for frames (-inf when one cannot say; inf with no sinks)."""
        due = math.inf
        for sink in self.sinks:
            next_output = getattr(sink, "next_output_ms", None)
            due = min(due, next_output() if next_output is not None else -math.inf)
        return due

    def _count_waiting_sinks(self) -> None:
        self.waiting_sinks = sum(1 for s in self.sinks if getattr(s, "waits_for_frames", True))

    def _audience_arrived(self) -> None:
        callback = self.on_audience
        if callback is not None:
            self.on_audience = None
            callback()

    def count_skipped(self, output: str) -> None:
        """A packager of format `output` skipped a frame it could not use (see the snapshot)."""
        self.frames_skipped[output] = self.frames_skipped.get(output, 0) + 1

    def _drop_sink(self, sink: Sink) -> None:
        # Sinks skip bad media themselves, so this is a bug: detach the sink and end it, so its
        # output says it ended (ENDLIST) and its owner starts a fresh one instead of serving it stale.
        log.exception("sink failed; detached from stream %s and ended", self.key)
        self.remove_sink(sink)
        try:
            sink.on_end()
        except Exception:
            log.exception("sink failed again while ending; stream %s", self.key)

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
                batch = getattr(sink, "on_frames", None)
                if batch is not None:
                    batch(frames)
                else:
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
        self._audience_arrived()
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
        """A future that completes when the next frame arrives or the stream ends.

        Every waiter shares one future, each behind a shield of its own: a task cancelled while it waits
        (an RTMP play whose connection dropped) would otherwise cancel the shared future, and with it the
        wait of every other viewer of the stream."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        return asyncio.shield(waiter)

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
            "frames_skipped": dict(self.frames_skipped),
            "bad_sequence_headers": self.bad_sequence_headers,
            "gop_cache_bytes": self.gop.gop_bytes(),
        }
