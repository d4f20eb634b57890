"""The asyncio side of RTMP: one Protocol per connection around a sans-IO ServerSession.

It owns the sockets, the timeouts (handshake, idle), the translation of session events into hub calls
(claim a stream, publish frames, release), and the publisher handle the hub uses to end a connection.
Whether a publisher or player gets in is the gate's decision (mediaserver/gate.py, shared with HTTP):
this module asks it and turns the Verdict into an onStatus answer.
Players (`play`) are hub subscribers. Each frame is chunked once under a type-0 header for every player
with the same chunk size and message stream id (`SharedChunks`), a batch goes out in one socket write,
and a player waits for its socket to drain (backpressure) before taking the next batch. Play writes and
publishers' reads are merged over a window that `hub/pacing.py` widens only as load grows.

Bad input from a peer (a protocol error, a malformed media body) is logged once with the peer's address
and closes that connection only; every other stream carries on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from typing import Any

from ..auth.admission import Admission
from ..auth.names import redacted
from ..auth.tokens import normalize_address, query_without, token_from_query
from ..config import RtmpConfig
from ..errors import PeerError
from ..gate import ABR, CREDENTIAL, HOOK, LIMIT, NAME, Gate, Verdict
from ..hub.registry import PublishRefused, StreamRegistry
from ..hub.pacing import GAUGE, MergePolicy, SharedBatch, next_tick, until_tick
from ..hub.stream import Stream, StreamKey
from ..hub.tracks import LabelFor, TrackRenditions, default_label
from ..hub.subscriber import SlowConsumer, Subscriber
from ..log import Bound, event
from ..tls import PausableTlsProtocol, TlsCertificate
from ..media import multitrack
from ..media.frames import FrameKind
from ..media.timestamps import TimestampUnwrapper
from ..transports import reset
from . import events as ev
from .chunk import MESSAGE_UNITS, SharedChunks
from .session import MEDIA_CSID, ServerSession, SessionPhase

log = logging.getLogger(__name__)

PlayBatch = SharedBatch[tuple[bytes, list[tuple[int, int, int, int]]]]
"""A batch of frames as chunks, and the last header sent on each chunk stream (for the session's encoder)."""

_FULL_READ = 200_000
"""A read this large (uvloop reads up to 256,000 bytes, asyncio 256 KiB) may have left more in the socket:
read on at once rather than cap a publisher's rate at one buffer per window."""
_MERGE, _BACKLOG, _THROTTLE = 1, 2, 4
"""Why a connection's reading is paused (RtmpConnection._holds): merged reads; answers the peer has not read
(it reads none of them: read none of its bytes, or its commands would grow our send buffer without bound);
messages past rtmp.max_messages_per_s."""
_BURST_S = 5.0
"""rtmp.max_messages_per_s lets this many seconds of it pass at once (an encoder's backlog after a stall)."""
_PUBLISH_CODES = {  # a refusal's kind -> the onStatus code publishers (OBS, ffmpeg) show
    CREDENTIAL: "NetStream.Publish.Unauthorized", HOOK: "NetStream.Publish.Unauthorized",
    LIMIT: "NetStream.Publish.Rejected",
}


class RtmpServer:
    """Listens for RTMP connections and tracks them for an ordered shutdown."""

    def __init__(self, cfg: RtmpConfig, registry: StreamRegistry, gate: Gate | None = None,
                 tls: TlsCertificate | None = None, tls_port: int = 0) -> None:
        self.cfg = cfg
        self.tls = tls
        """RTMPS: the same server on `tls_port` too, behind this certificate."""
        self.tls_port = tls_port
        self.registry = registry
        self.gate = gate or Gate(Admission(), registry)
        self.label_for: LabelFor = default_label
        """How a multitrack publisher's extra tracks are named (STREAM@LABEL): set from the ABR ladder."""
        """Admission and cluster decisions, shared with the HTTP side (the default admits everyone)."""
        self.connections: set[RtmpConnection] = set()
        self.read_policy = MergePolicy(cfg.read_merge_ms, cfg.merge_mode, merge_when_unwatched=True,
                                       unwatched_ms=cfg.read_merge_unwatched_ms)
        """Publishers' merged reads: the full window while nobody watches or the loop is busy, else none."""
        self._resumes: dict[float, list[RtmpConnection]] = {}
        """Publishers whose reading resumes at a tick (loop time): one timer per tick for all of them."""
        self.play_policy = MergePolicy(cfg.play_merge_ms, cfg.merge_mode)
        self._shared: weakref.WeakKeyDictionary[Stream, dict[tuple[int, int], tuple[SharedChunks, PlayBatch]]] = (
            weakref.WeakKeyDictionary())
        self._server: asyncio.base_events.Server | None = None
        self._tls_server: asyncio.base_events.Server | None = None
        self._ids = 0
        self.reuse_port = False
        """[server] workers > 1: every worker binds the ports, the kernel spreads connections among them."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        reuse_port = self.reuse_port or None
        self._server = await loop.create_server(self._make_connection, self.cfg.bind, self.cfg.port, reuse_address=True,
                                                reuse_port=reuse_port)
        if self.tls is not None:
            try:
                # Plain TCP wrapped in our TLS layer (tls.py), not create_server(ssl=...): uvloop's TLS keeps
                # reading the socket while a publisher's reads are paused for merging, ours stops it.
                self._tls_server = await loop.create_server(
                    self._make_tls_connection, self.cfg.bind, self.tls_port, reuse_address=True, reuse_port=reuse_port)
            except OSError:
                self._server.close()
                raise

    @property
    def serving(self) -> bool:
        return all(s is not None and s.is_serving() for s in (self._server, *([self._tls_server] if self.tls else [])))

    def shared_chunks(self, stream: Stream, chunk_size: int, stream_id: int) -> tuple[SharedChunks, PlayBatch]:
        """The chunk bytes of `stream`'s frames for players with this chunk size and message stream id, and
        of the last batch of them (players that wake on the same tick take the same batch)."""
        by_key = self._shared.get(stream)
        if by_key is None:
            by_key = self._shared[stream] = {}
        shared = by_key.get((chunk_size, stream_id))
        if shared is None:
            # Twice the viewers' window: a player within it never makes its own bytes.
            limit = 2 * stream.gop.limits.window_bytes + 2 * 1024 * 1024
            shared = by_key[(chunk_size, stream_id)] = (SharedChunks(chunk_size, stream_id, max_bytes=limit),
                                                        SharedBatch())
        return shared

    def resume_at_tick(self, conn: RtmpConnection, offset_s: float, grid_s: float) -> float:
        """Resume `conn`'s reading at the first multiple of `grid_s` after now + `offset_s`; returns that
        tick. Publishers paused on the same tick share one timer and are read in the same loop iteration
        (one epoll wakeup)."""
        loop = asyncio.get_running_loop()
        at = next_tick(loop.time() + offset_s, grid_s)
        group = self._resumes.get(at)
        if group is None:
            group = self._resumes[at] = []
            loop.call_at(at, self._resume_group, at)
        group.append(conn)
        return at

    def _resume_group(self, at: float) -> None:
        for conn in self._resumes.pop(at, ()):
            conn.resume_reading_at(at)

    def _make_connection(self) -> RtmpConnection:
        self._ids += 1
        return RtmpConnection(self, self._ids)

    def _make_tls_connection(self) -> PausableTlsProtocol:
        """Made at accept, before the TLS handshake: connection_made follows only if it succeeds, so a
        connection not made by the handshake deadline is a failed handshake (counted once). The TLS
        handshake has its own deadline; rtmp's handshake deadline starts after it."""
        conn = self._make_connection()
        conn.tls = True
        assert self.tls is not None
        failures = self.tls.failures
        loop = asyncio.get_running_loop()
        layer = PausableTlsProtocol(loop, conn, self.tls.context, self.cfg.handshake_timeout)

        def check() -> None:
            if conn.transport is None:
                failures.not_made()

        loop.call_later(self.cfg.handshake_timeout + 0.5, check)
        return layer

    async def stop_accepting(self) -> None:
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()

    async def close(self) -> None:
        for conn in list(self.connections):
            conn.close("server_shutdown")
        for server in (self._server, self._tls_server):
            if server is None:
                continue
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except TimeoutError:
                pass


class RtmpConnection(asyncio.Protocol):
    """One client connection: a publisher, a player, or (briefly) neither."""

    def __init__(self, server: RtmpServer, conn_id: int) -> None:
        self.server = server
        self.cfg = server.cfg
        self.registry = server.registry
        self.conn_id = conn_id
        self.peer = "unknown"
        self.log: logging.LoggerAdapter = Bound(log, {"conn": conn_id})
        self.session = ServerSession(
            chunk_size=self.cfg.chunk_size,
            max_message_size=self.cfg.max_message_size,
            max_command_size=self.cfg.max_command_size,
        )
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.app = ""
        self.stream: Stream | None = None
        self.tracks: TrackRenditions | None = None
        """A multitrack publisher's extra tracks, published as renditions (made at its first such message)."""
        self.stream_id = 0
        self._video_ts = TimestampUnwrapper()
        self._audio_ts = TimestampUnwrapper()
        self._last_rx = self.loop.time()
        """Loop time of the last read that completed a message: the idle clock (a peer trickling a byte now and
        then into a partial message, holding up to twice rtmp.max_message_size, is idle too)."""
        self._messages_seen = 0
        self._timer: asyncio.TimerHandle | None = None
        self._setup_deadline: float | None = None
        """Loop time by which connect + publish/play must be done (from the handshake), or None once done."""
        self._closing = False
        self._announced = False
        self._play_task: asyncio.Task[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._publish_started = 0.0
        self._holds = 0
        """Why reading is paused: _MERGE | _BACKLOG | _THROTTLE bits (0: reading)."""
        self._resume_tick: float | None = None
        """The tick at which paused reading resumes (None: not paused, or resumed early)."""
        self.ip = ""
        """The client's address, normalized (as HTTP's): limits, token bindings and webhooks see one form."""
        self._counted_ip = False
        self._admitting: asyncio.Task[None] | None = None
        """Admission (the gate) in progress for a publish or play request."""
        self._expiry: asyncio.TimerHandle | None = None
        self.tls = False
        """Accepted on the RTMPS port."""
        self._decoder = self.session.decoder
        self._units_per_s = self.cfg.max_messages_per_s * MESSAGE_UNITS
        self._refilled_at = self.loop.time()
        self._refill_below = int(self._units_per_s * _BURST_S / 2)
        """The bucket is refilled (for all the time since the last refill) only once it is half spent: no work
        per read for a stream, which spends a few hundredths of it a second."""
        self._throttle_timer: asyncio.TimerHandle | None = None
        self._throttled = False
        if self._units_per_s:
            self._decoder.allowance = int(self._units_per_s * _BURST_S)

    # ----- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        self.log = Bound(log, {"conn": self.conn_id, "peer": self.peer, **({"tls": True} if self.tls else {})})
        if isinstance(peer, tuple):
            self.ip = normalize_address(str(peer[0]))
            if self.server.gate.connection_opened(self.ip, self.log, protocol="rtmp") is not None:
                self._closing = True
                transport.abort()
                return
            self._counted_ip = True
        self.server.connections.add(self)
        self._timer = self.loop.call_later(self.cfg.handshake_timeout, self._check_timeouts)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = self.loop.time()
        decoder = self._decoder
        if self._units_per_s and decoder.allowance < self._refill_below:
            self._refill(now)
        try:
            self.session.receive_data(data)
            if decoder.completed != self._messages_seen:
                self._messages_seen = decoder.completed
                self._last_rx = now
            for event_ in self.session.events():
                self._on_event(event_)
            if self.stream is not None:
                self.stream.flush_sinks()
                if self.tracks is not None:
                    self.tracks.flush_sinks()
        except PeerError as err:
            event(self.log, "rtmp_protocol_error", logging.WARNING, error=str(err), stream=self._stream_name())
            self._flush()
            self._abort("protocol_error")
            return
        self._flush()
        if decoder.holding:  # over rtmp.max_messages_per_s: read the rest once it is allowed
            self._throttle()
            return
        stream = self.stream
        if stream is not None and not self._holds and len(data) < _FULL_READ:
            # Merged reads (as SRS's mr): let a publisher's bytes pile up in the socket for a few ms, so
            # each wakeup handles several messages instead of one TCP segment; only when nobody waits for
            # the frames or the loop is busy (hub/pacing.py), since it delays every viewer. With nothing
            # consuming the stream at all the window is wider, and a first viewer or sink ends it early.
            policy = self.server.read_policy
            subscribers = len(stream.subscribers)
            if self.tracks is not None:  # multitrack: its renditions have viewers of their own
                offset, grid = 0.0, policy.window_s(subscribers + len(stream.sinks), GAUGE.busy())
            else:
                patient = len(stream.sinks) - stream.waiting_sinks
                due_s = (stream.output_due_ms() - stream.gop.newest_dts) / 1000 if patient else math.inf
                offset, grid = policy.read_pause(subscribers + stream.waiting_sinks, patient, due_s, GAUGE.busy())
            if grid:
                self._holds = _MERGE  # nothing else held it (per read: inline, not _hold)
                self.transport.pause_reading()
                self._resume_tick = self.server.resume_at_tick(self, offset, grid)
                stream.on_audience = self._resume_reading

    def resume_reading_at(self, tick: float) -> None:
        """The server's tick `tick` came: resume, unless reading already resumed (and paused again) since."""
        if self._resume_tick == tick:
            self._resume_reading()

    def _resume_reading(self) -> None:
        self._resume_tick = None
        holds = self._holds
        if holds & _MERGE:  # _release(_MERGE), inline: once per merged read
            self._holds = holds = holds & ~_MERGE
            if not holds and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def _hold(self, why: int) -> None:
        if not self._holds and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._holds |= why

    def _release(self, why: int) -> None:
        if not self._holds & why:
            return
        self._holds &= ~why
        if not self._holds and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _refill(self, now: float) -> None:
        """The message allowance's token bucket: rtmp.max_messages_per_s, up to _BURST_S of it."""
        rate = self._units_per_s
        cap = int(rate * _BURST_S)
        gained = int((now - self._refilled_at) * rate)
        left = self._decoder.allowance or 0
        if left + gained >= cap:
            self._decoder.allowance, self._refilled_at = cap, now
        elif gained > 0:
            self._decoder.allowance = left + gained
            self._refilled_at += gained / rate

    def _throttle(self) -> None:
        """The peer sent past its allowance: read nothing more until enough for a few messages has come."""
        if not self._throttled:
            self._throttled = True
            event(self.log, "rtmp_throttled", logging.WARNING, max_messages_per_s=self.cfg.max_messages_per_s,
                  stream=self._stream_name(), hint="a stream sends a few hundred messages a second")
        self._hold(_THROTTLE)
        if self._throttle_timer is None:
            self._throttle_timer = self.loop.call_later(64 * MESSAGE_UNITS / self._units_per_s, self._unthrottle)

    def _unthrottle(self) -> None:
        self._throttle_timer = None
        if self._closing or self.transport is None or self.transport.is_closing():
            return
        self.data_received(b"")  # the held bytes, as far as the allowance now goes
        if not self._decoder.holding:
            self._release(_THROTTLE)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self._counted_ip:
            self._counted_ip = False
            self.server.gate.connection_closed(self.ip)
        if self._admitting is not None:
            self._admitting.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
        if self._timer is not None:
            self._timer.cancel()
        if self._throttle_timer is not None:
            self._throttle_timer.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self._play_task is not None:
            self._play_task.cancel()
        self._end_publish("connection_closed")

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self.loop.create_future()
        self._hold(_BACKLOG)

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._release(_BACKLOG)

    # ----- timeouts -------------------------------------------------------------------------------

    def _start_setup_deadline(self) -> None:
        """The handshake is done: connect and publish/play must follow within connect_timeout, whatever
        trickles in (the idle timer resets on every byte, so it cannot catch a slow client)."""
        self._setup_deadline = self.loop.time() + self.cfg.connect_timeout
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.cfg.connect_timeout, self._check_timeouts)

    def _check_timeouts(self) -> None:
        if self._closing:
            return
        if not self.session.handshake_done:
            event(self.log, "rtmp_handshake_timeout", logging.WARNING, after_s=self.cfg.handshake_timeout)
            self._abort("handshake_timeout")
            return
        now = self.loop.time()
        phase = self.session.phase
        if phase is SessionPhase.PUBLISHING or phase is SessionPhase.PLAYING:
            self._setup_deadline = None
        elif self._setup_deadline is None:
            self._setup_deadline = now + self.cfg.connect_timeout  # its stream ended: a fresh deadline for the next
        elif now >= self._setup_deadline and not self.session.awaiting_answer:  # not while we decide
            event(self.log, "rtmp_connect_timeout", logging.WARNING, phase=str(phase), after_s=self.cfg.connect_timeout)
            self._abort("connect_timeout")
            return
        idle = now - self._last_rx
        if idle >= self.cfg.idle_timeout and self._play_task is None:
            event(self.log, "rtmp_idle_timeout", logging.WARNING, idle_s=round(idle, 1), stream=self._stream_name())
            self._abort("idle_timeout")
            return
        wait = self.cfg.idle_timeout - idle
        if self._setup_deadline is not None:
            wait = min(wait, self._setup_deadline - now)
        self._timer = self.loop.call_later(max(0.5, wait), self._check_timeouts)

    # ----- session events -------------------------------------------------------------------------

    def _on_event(self, e: ev.Event) -> None:
        if isinstance(e, ev.VideoReceived):
            if self.stream is not None and e.stream_id == self.stream_id:
                if self.tracks is None and multitrack.is_video_multitrack(e.body):
                    self.tracks = TrackRenditions(self.registry, self.stream, self.peer, self.server.label_for)
                publish = self.tracks.publish_video if self.tracks is not None else self.stream.publish_video
                frame = publish(self._video_ts.unwrap(e.timestamp), e.body, time.monotonic())
                if not self._announced and frame is not None and frame.keyframe:
                    self._announce()
        elif isinstance(e, ev.AudioReceived):
            if self.stream is not None and e.stream_id == self.stream_id:
                publish = self.tracks.publish_audio if self.tracks is not None else self.stream.publish_audio
                frame = publish(self._audio_ts.unwrap(e.timestamp), e.body, time.monotonic())
                if not self._announced and frame is not None and not frame.is_config and self.stream.info.video_config is None and self.stream.frames_in > 50:
                    self._announce()
        elif isinstance(e, ev.MetadataReceived):
            if self.stream is not None and e.stream_id == self.stream_id:
                self.stream.publish_metadata(e.body, dict(e.values), time.monotonic())
        elif isinstance(e, ev.Connected):
            self.app = e.app.partition("?")[0]
        elif isinstance(e, ev.HandshakeCompleted):
            self._start_setup_deadline()
        elif isinstance(e, ev.PublishRequested):
            self._on_publish(e)
        elif isinstance(e, ev.PublishFinished):
            if e.stream_id == self.stream_id:
                self._end_publish("unpublished")
        elif isinstance(e, ev.PlayRequested):
            self._on_play(e)
        elif isinstance(e, ev.PlayFinished):
            if self._play_task is not None:
                self._play_task.cancel()

    def _on_publish(self, e: ev.PublishRequested) -> None:
        if self.stream is not None or self._play_task is not None or self._admitting is not None:
            self.session.reject_publish(e.request_id, "NetStream.Publish.BadName", "This connection already has a stream.")
            self._close_after_flush()
            return
        self._admitting = self.loop.create_task(self._admit_publish(e))

    def _token(self, query: str) -> str:
        """The token of a publish or play request: in the stream name's query, else in the connect URL's."""
        return token_from_query(query) or token_from_query(self.session.app.partition("?")[2])

    async def _admit_publish(self, e: ev.PublishRequested) -> None:
        try:
            verdict = await self.server.gate.admit_publish(
                e.app or self.app, e.name, token=self._token(e.query), query=query_without(e.query, None),
                address=self.ip, logger=self.log,
            )
        except Exception:  # a bug: the encoder hears "no" now instead of waiting out the idle deadline
            log.exception("admitting the publish of %s failed", e.name[:64])
            verdict = None
        finally:
            self._admitting = None
        if self._closing or self.transport is None or self.transport.is_closing():
            return
        if verdict is None:
            self._reject_publish(e.request_id, "NetStream.Publish.BadName", "Publishing refused: internal error.")
            return
        refusal = verdict.refusal
        if refusal is not None:
            code = _PUBLISH_CODES.get(refusal.kind, "NetStream.Publish.BadName")
            self._reject_publish(e.request_id, code, f"Publishing refused: {refusal.message}.")
            return
        assert verdict.key is not None
        await self.server.registry.hear_out_publisher(verdict.key, self)
        if self._closing or self.transport is None or self.transport.is_closing():
            return
        self._start_publish(e, verdict.key, verdict.expires_in)
        self._flush()  # outside data_received: nothing else sends the answer

    def hear_out(self) -> bool:
        """A publish for this connection's name came (registry.hear_out_publisher): if reads are paused,
        read now, so an unpublish or close waiting in the socket is seen. True when they were paused."""
        if not self._holds & _MERGE:
            return False
        self._resume_reading()
        return True

    def _start_publish(self, e: ev.PublishRequested, key: StreamKey, expires_in: float | None) -> None:
        """Take the stream in the hub and answer NetStream.Publish.Start (or refuse when the name is taken
        here); `expires_in` (from the on_publish hook) ends the session after that many seconds."""
        try:
            stream = self.registry.claim_publisher(key, self)
        except PublishRefused as err:
            self.session.reject_publish(e.request_id, err.code, str(err))
            event(self.log, "publish_refused", logging.WARNING, stream=str(key), reason=str(err))
            self._close_after_flush()
            return
        self.stream = stream
        self.stream_id = e.stream_id
        self._video_ts = TimestampUnwrapper()
        self._audio_ts = TimestampUnwrapper()
        self._publish_started = time.monotonic()
        self._bytes_at_start = stream.bytes_in
        if not self.session.accept_publish(e.request_id):  # the client closed that stream meanwhile
            self._end_publish("unpublished")
            return
        if expires_in is not None:
            self._expiry = self.loop.call_later(expires_in, self._expire_publish)
        event(self.log, "publish_accepted", stream=str(key), session=stream.sessions)

    def _announce(self) -> None:
        """The one line that says what a publisher sends, once its codecs are known."""
        self._announced = True
        stream = self.stream
        assert stream is not None
        info = stream.info
        meta = info.metadata_values
        fields: dict[str, Any] = {"stream": str(stream.key)}
        if info.video_codec:
            fields["video"] = info.video_codec
            if info.width:
                fields["resolution"] = f"{info.width}x{info.height}"
            if meta.get("framerate"):
                fields["fps"] = meta.get("framerate")
        if info.audio_codec:
            fields["audio"] = info.audio_codec
            if info.audio_sample_rate:
                fields["audio_hz"] = info.audio_sample_rate
                fields["channels"] = info.audio_channels
        kbps = sum(v for k in ("videodatarate", "audiodatarate") if isinstance(v := meta.get(k), (int, float)))
        if kbps:
            fields["kbps"] = round(kbps)
        event(self.log, "publish_start", **fields)

    def _end_publish(self, reason: str) -> None:
        stream = self.stream
        if stream is None:
            return
        self.stream = None
        if stream.on_audience == self._resume_reading:
            stream.on_audience = None
        if self.tracks is not None:
            self.tracks.close()
            self.tracks = None
        elapsed = max(time.monotonic() - self._publish_started, 1e-3)
        sent = stream.bytes_in - self._bytes_at_start
        self.registry.release_publisher(stream, self)
        event(
            self.log, "publish_stop", stream=str(stream.key), reason=reason, duration_s=round(elapsed, 1),
            kbps=round(sent * 8 / elapsed / 1000), frames=stream.frames_in,
        )

    # ----- play -----------------------------------------------------------------------------------

    def _on_play(self, e: ev.PlayRequested) -> None:
        if self.stream is not None or self._play_task is not None or self._admitting is not None:
            self._reject_play(e.request_id, "NetStream.Play.Failed", "This connection already has a stream.")
            return
        self._admitting = self.loop.create_task(self._admit_play(e))

    async def _admit_play(self, e: ev.PlayRequested) -> None:
        gate = self.server.gate
        try:
            verdict = await gate.admit_play(
                e.app or self.app, e.name, token=self._token(e.query), query=query_without(e.query, None),
                address=self.ip, protocol="rtmp", logger=self.log,
            )
        finally:
            self._admitting = None
        if self._closing or self.transport is None or self.transport.is_closing():
            gate.viewer_left(verdict)
            return
        refusal = verdict.refusal
        if refusal is not None:
            code = "NetStream.Play.StreamNotFound" if refusal.kind in (NAME, ABR) else "NetStream.Play.Failed"
            self._reject_play(e.request_id, code, f"Playing refused: {refusal.message}.")
            return
        self._start_play(e, verdict)
        self._flush()  # outside data_received: nothing else sends the answer

    def _start_play(self, e: ev.PlayRequested, verdict: Verdict) -> None:
        stream = verdict.stream
        if stream is None or stream.ended:  # not published (or it ended while the webhook was asked)
            self.server.gate.viewer_left(verdict)
            assert verdict.key is not None
            error, hint = self.server.gate.not_found(verdict.key)
            self._reject_play(e.request_id, "NetStream.Play.StreamNotFound", f"{error[:1].upper()}{error[1:]}; {hint}.")
            # A name nobody publishes may be a stream key typed into a player: never logged as sent.
            event(self.log, "play_refused", stream=f"{verdict.key.app}/{redacted(verdict.key.name)}", reason="not_found")
            return
        self.session.accept_play(e.request_id)
        sub, start = stream.subscribe("rtmp", self.peer, self.loop.time())
        event(self.log, "viewer_join", stream=str(stream.key), format="rtmp", viewers=len(stream.subscribers))
        self._play_task = self.loop.create_task(self._play(sub, start, e.stream_id, verdict))
        if verdict.expires_in is not None:
            self._expiry = self.loop.call_later(verdict.expires_in, sub.close, "session_expired")

    async def _play(self, sub: Subscriber, start: list, stream_id: int, verdict: Verdict) -> None:
        reason = "viewer_left"
        session = self.session
        joined = self.loop.time()
        stream = sub.stream
        policy = self.server.play_policy
        # Every frame is chunked once for all players with our chunk size and stream id, under a type-0
        # header, so the same bytes serve a player whatever it was sent before (a joiner, a skip); players
        # that wake on the same tick take the same batch, whose joined bytes are shared too.
        shared, batches = self.server.shared_chunks(stream, session.out_chunk_size, stream_id)

        def chunked(frames: list) -> tuple[bytes, list[tuple[int, int, int, int]]]:
            parts = []
            last: dict[int, tuple[int, int, int, int]] = {}
            for f in frames:
                kind = f.kind
                ts = f.dts_ms & 0xFFFFFFFF if kind != FrameKind.DATA else 0
                csid = MEDIA_CSID[kind]
                parts.append(shared.get(f, csid, kind, ts, f.body))
                last[csid] = (csid, kind, ts, len(f.tag) - 15)
            return b"".join(parts), list(last.values())

        try:
            batch = start
            while batch is not None:
                if batch:
                    sent_before = session.bytes_sent
                    data, headers = batches.get(batch, chunked) if batch is not start else chunked(batch)
                    session.send_shared(stream_id, data, headers)
                    self._flush()
                    self.registry.count_sent(sub, session.bytes_sent - sent_before)  # the viewer and egress metrics
                    if self._writable is not None and not self._writable.done():
                        async with asyncio.timeout(self.server.cfg.idle_timeout):
                            await self._writable
                    if self.transport is None or self.transport.is_closing():
                        return
                merge_s = policy.window_s(len(stream.subscribers), GAUGE.busy())
                if merge_s:
                    await asyncio.sleep(until_tick(self.loop.time(), merge_s))
                batch = await sub.next_batch()
            reason = sub.close_reason or "stream_ended"
            session.end_play(stream_id)
            self._flush()
        except SlowConsumer:
            reason = "slow_consumer"
            self._abort("slow_consumer")
        except TimeoutError:
            reason = "write_timeout"
            self._abort("write_timeout")
        except asyncio.CancelledError:
            reason = "viewer_left"
        finally:
            sub.close(reason if reason != "stream_ended" else "viewer_left")
            event(self.log, "viewer_leave", stream=str(sub.stream.key), format="rtmp", reason=reason,
                  bytes=sub.bytes_sent, dropped_frames=sub.frames_dropped)
            self._play_task = None
            self.server.gate.viewer_left(verdict, sub.close_reason or "viewer_left", self.loop.time() - joined,
                                         sub.bytes_sent, sub.frames_dropped)

    # ----- answers ---------------------------------------------------------------------------------

    def _expire_publish(self) -> None:
        if self.stream is not None:
            self._end_publish("session_expired")
            self._close_after_flush()

    def _reject_publish(self, request_id: int, code: str, description: str) -> None:
        """Refuse, then close: OBS (librtmp) and ffmpeg show the error instead of retrying forever."""
        if self.transport is not None and not self.transport.is_closing():
            self.session.reject_publish(request_id, code, description)
            self._close_after_flush()

    def _reject_play(self, request_id: int, code: str, description: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.session.reject_play(request_id, code, description)
            self._flush()

    # ----- output and closing ---------------------------------------------------------------------

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close_after_flush(self) -> None:
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def _abort(self, reason: str) -> None:
        self._closing = True
        reset(self.transport)  # a reset: the kernel drops what a stuck peer left in the send queue

    def close(self, reason: str) -> None:
        """The hub's handle: end this connection (kick, takeover, shutdown)."""
        if self._closing:
            return
        self._closing = True
        if self.stream is not None:
            event(self.log, "publisher_closed", stream=str(self.stream.key), reason=reason)
            if self.stream.on_audience == self._resume_reading:
                self.stream.on_audience = None
            self.stream = None  # the hub already moved on; do not release twice
        if self.tracks is not None:  # a multitrack publisher's renditions end with it (their own publisher is ours)
            self.tracks.close()
            self.tracks = None
        if self.transport is not None:
            self._flush()
            self.transport.close()

    def _stream_name(self) -> str:
        return str(self.stream.key) if self.stream is not None else ""
