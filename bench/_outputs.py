"""Viewers of the outputs beyond HTTP-FLV and MPEG-TS HLS: WebSocket-FLV, RTMP play, LL-HLS and DASH.

Push outputs (the server writes, the viewer reads):
- `WsFlvViewer`: a raw-socket WebSocket client (RFC 6455) that upgrades `GET /APP/NAME.flv` and feeds
  the payload of the binary messages to the FLV tag scanner of _flv_viewers.py, without copying
  (unless the server compresses: with `deflate=True` it offers permessage-deflate (RFC 7692) as
  browsers do, and inflates what it gets).
- `RtmpViewer`: RTMP play with the project's sans-IO `mediaserver.rtmp.client.ClientSession` in a
  thin asyncio protocol (it costs about 0.1 % of a core per 2.7 Mbit/s viewer on the development VM).
Both keep the counters of an HTTP-FLV viewer (bytes, tags, keyframes, newest timestamp), so the same
worker and analysis serve all three.

Pull outputs (the viewer asks):
- `LlhlsPlayer` does what hls.js does in low-latency mode: it loads the multivariant playlist, then
  follows the variant's playlist and, if the variant has one, the audio rendition's playlist, each on its
  own pair of keep-alive connections (a muxed variant carries both tracks in one playlist): one for blocking playlist reloads (`_HLS_msn=M&_HLS_part=P` naming the part after the
  last one listed, RFC 8216bis 6.2.5.2), one fetching every new part in order. It starts PART-HOLD-BACK
  behind the live edge at an independent part, fetches EXT-X-MAP inits when they change, and does not
  ask for preload hints (hls.js does not). After a 503 or 400 it reloads without directives.
- `DashPlayer` does what dash.js does with a SegmentTimeline MPD: it reloads the MPD every
  minimumUpdatePeriod and fetches each new segment of every AdaptationSet (video and audio on their own
  connections), starting at the segment that holds "now - suggestedPresentationDelay" on the MPD's
  clock.
Both record, per item (a part "v12.3" or a segment "a40"), when a manifest first listed it and when
their fetch completed; with `keep_bodies` they hand each body to a callback (the latency probes
parse them with _fmp4.py).

Run as a worker process (`python bench/_outputs.py CONFIG_JSON`, CONFIG["kind"] one of ws-flv,
rtmp, llhls, dash), like _flv_viewers.py and _hls_viewers.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

_BENCH = os.path.dirname(os.path.abspath(__file__))
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)
if os.path.dirname(_BENCH) not in sys.path:
    sys.path.insert(1, os.path.dirname(_BENCH))

from _aio import ViewerEnd, install_fast_loop, raise_nofile_limit, report_to_orchestrator, watch_stdin_for_stop  # noqa: E402
from _flv_viewers import FlvError, FlvTagScanner, _Worker  # noqa: E402
from _fmp4 import Mp4Error, TrackInfo, TrackRun, read_fragments, read_init  # noqa: E402
from _hls_viewers import HttpClient, resolve  # noqa: E402
from _http import HttpError, parse_head  # noqa: E402
from _manifests import DashPeriod, DashTrack, LlPlaylist, ManifestError, Mpd, Part  # noqa: E402
from _manifests import parse_ll_playlist, parse_mpd, parse_multivariant  # noqa: E402
from _media import is_keyframe_body  # noqa: E402

READ_SIZE = 256 * 1024
_SHARED = bytearray(READ_SIZE)
_SHARED_VIEW = memoryview(_SHARED)
MAX_HEAD = 64 * 1024
MAX_CONTROL = 125

# ---------------------------------------------------------------- WebSocket-FLV

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
_INFLATE_CHUNK = 256 * 1024
_DEFLATE_TAIL = b"\x00\x00\xff\xff"


class WsError(ValueError):
    """The server broke the WebSocket framing rules (RFC 6455 5.2) or its upgrade answer."""


def ws_accept(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer to Sec-WebSocket-Key `key` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode("ascii")


def ws_client_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One masked client frame (FIN set); control frames only carry up to 125 bytes."""
    mask = os.urandom(4) if mask is None else mask
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


class WsDeframer:
    """Server-to-client WebSocket frames in; data message bytes and control frames out.

    feed() takes any split of the stream. Data payload goes to `on_data(buf, start, end)` as slices of
    the buffer fed (or of the inflated bytes, when a message is compressed): the callback must not keep
    the buffer. Control frames (close, ping, pong; at most 125 bytes, never fragmented) go whole to
    `on_control(opcode, payload)`. Masked server frames, unknown opcodes, reserved bits that were not
    negotiated and continuation frames outside a message raise WsError.
    """

    __slots__ = ("on_data", "on_control", "_inflater", "_no_context_takeover", "_hdr", "_need", "_left", "_opcode",
                 "_fin", "_in_message", "_compressed", "_control", "messages", "payload_bytes")

    def __init__(self, on_data, on_control, *, deflate: bool = False, no_context_takeover: bool = False) -> None:
        self.on_data = on_data
        self.on_control = on_control
        self._inflater = zlib.decompressobj(-15) if deflate else None
        self._no_context_takeover = no_context_takeover
        self._hdr = bytearray()
        self._need = 2
        self._left = -1  # -1: reading a header
        self._opcode = 0
        self._fin = False
        self._in_message = False
        self._compressed = False
        self._control = bytearray()
        self.messages = 0
        self.payload_bytes = 0

    def feed(self, buf, pos: int, end: int) -> None:
        while pos < end:
            if self._left < 0:
                take = min(self._need - len(self._hdr), end - pos)
                self._hdr += buf[pos : pos + take]
                pos += take
                if len(self._hdr) < self._need:
                    return
                if not self._header():
                    continue
                if self._left == 0:
                    self._frame_done()
                continue
            take = min(self._left, end - pos)
            if self._opcode >= OP_CLOSE:
                self._control += buf[pos : pos + take]
            else:
                self.payload_bytes += take
                if self._compressed:
                    self._inflate(bytes(buf[pos : pos + take]))
                else:
                    self.on_data(buf, pos, pos + take)
            pos += take
            self._left -= take
            if self._left == 0:
                self._frame_done()

    def _header(self) -> bool:
        """Parse the header gathered so far; False when it turned out to need more bytes."""
        h = self._hdr
        b0, b1 = h[0], h[1]
        if b1 & 0x80:
            raise WsError("the server masked a frame; servers must not (RFC 6455 5.1)")
        n = b1 & 0x7F
        full = 2 + (2 if n == 126 else 8 if n == 127 else 0)
        if len(h) < full:
            self._need = full
            return False
        if n == 126:
            n = int.from_bytes(h[2:4], "big")
        elif n == 127:
            n = int.from_bytes(h[2:10], "big")
            if n >> 63:
                raise WsError("frame length has its most significant bit set")
        opcode = b0 & 0x0F
        fin = bool(b0 & 0x80)
        rsv1 = bool(b0 & 0x40)
        if b0 & 0x30:
            raise WsError(f"reserved bits {b0 & 0x30:#x} set; no extension that uses them was negotiated")
        if opcode >= OP_CLOSE:
            if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                raise WsError(f"unknown control opcode {opcode:#x}")
            if not fin or n > MAX_CONTROL or rsv1:
                raise WsError(f"control frame {opcode:#x} fragmented, compressed or longer than 125 bytes ({n})")
            self._control = bytearray()
        elif opcode == OP_CONT:
            if not self._in_message:
                raise WsError("continuation frame outside a message")
            if rsv1:
                raise WsError("RSV1 set on a continuation frame")
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._in_message:
                raise WsError("a new data message began before the last one ended")
            if rsv1 and self._inflater is None:
                raise WsError("RSV1 (compressed) set but permessage-deflate was not negotiated")
            self._in_message = True
            self._compressed = rsv1
        else:
            raise WsError(f"unknown data opcode {opcode:#x}")
        self._opcode, self._fin, self._left = opcode, fin, n
        self._hdr.clear()
        self._need = 2
        return True

    def _frame_done(self) -> None:
        opcode = self._opcode
        self._left = -1
        if opcode >= OP_CLOSE:
            self.on_control(opcode, bytes(self._control))
            return
        if self._fin:
            if self._compressed:
                self._inflate(_DEFLATE_TAIL)
                if self._no_context_takeover:
                    self._inflater = zlib.decompressobj(-15)
            self._in_message = False
            self._compressed = False
            self.messages += 1

    def _inflate(self, data: bytes) -> None:
        inflater = self._inflater
        try:
            out = inflater.decompress(data, _INFLATE_CHUNK)
            while True:
                if out:
                    self.on_data(out, 0, len(out))
                if not inflater.unconsumed_tail:
                    return
                out = inflater.decompress(inflater.unconsumed_tail, _INFLATE_CHUNK)
        except zlib.error as err:
            raise WsError(f"compressed message does not inflate: {err}") from None


class WsFlvViewer(ViewerEnd, asyncio.BufferedProtocol):
    """One WebSocket-FLV connection that counts the FLV tags it receives.

    `status` is 200 once the upgrade succeeded (101 with a valid accept key), else the HTTP status."""

    def __init__(self, host: str, port: int, path: str, *, deflate: bool = False, on_tag=None, on_close=None) -> None:
        self.key = base64.b64encode(os.urandom(16)).decode("ascii")
        ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: mediaserver-bench\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
        ).encode("latin-1")
        self.scanner = FlvTagScanner(on_tag)
        self.deframer: WsDeframer | None = None
        self.deflate_offered = deflate
        self.deflate = False
        self._head = bytearray()
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.http_status = 0
        self.error: str | None = None
        self.requested_at = 0.0
        self.head_at = 0.0
        self.closed_at = 0.0
        self.ended = False
        self.wire_bytes = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.requested_at = time.monotonic()
        transport.write(self.request)

    def get_buffer(self, sizehint: int):
        return _SHARED_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        self.wire_bytes += nbytes
        try:
            if self.deframer is None:
                pos = self._upgrade(nbytes)
                if pos is None:
                    return
            else:
                pos = 0
            if pos < nbytes:
                self.deframer.feed(_SHARED, pos, nbytes)
        except (WsError, FlvError, HttpError) as err:
            self.fail(str(err))

    def _upgrade(self, nbytes: int) -> int | None:
        old = len(self._head)
        self._head += _SHARED[:nbytes]
        i = self._head.find(b"\r\n\r\n", max(0, old - 3))
        if i < 0:
            if len(self._head) > MAX_HEAD:
                raise HttpError(f"upgrade response head exceeds {MAX_HEAD} bytes")
            return None
        status, headers = parse_head(bytes(self._head[:i]))
        self.http_status = status
        self.head_at = time.monotonic()
        if status != 101:
            self.status = status
            raise HttpError(f"HTTP {status} instead of 101 Switching Protocols")
        if headers.get("sec-websocket-accept") != ws_accept(self.key):
            raise WsError("Sec-WebSocket-Accept does not match the key sent")
        ext = headers.get("sec-websocket-extensions", "").lower()
        if ext and not self.deflate_offered:
            raise WsError(f"server chose extension {ext!r} that was not offered")
        self.deflate = "permessage-deflate" in ext
        self.deframer = WsDeframer(self.scanner.feed, self._on_control, deflate=self.deflate,
                                   no_context_takeover="server_no_context_takeover" in ext)
        self.status = 200
        consumed = i + 4 - old
        self._head = bytearray()
        return consumed

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if opcode == OP_PING:
            self.transport.write(ws_client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.ended = True
            self.transport.write(ws_client_frame(OP_CLOSE, payload[:2]))
            self.transport.close()

    def eof_received(self):
        self.ended = True
        return False

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if self.deframer is not None:
                self.transport.write(ws_client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
            self.transport.close()


async def open_ws_viewer(host: str, port: int, path: str, **kw) -> WsFlvViewer:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: WsFlvViewer(host, port, path, **kw), host, port)
    return proto


# ---------------------------------------------------------------- RTMP play


class TagCounter:
    """The counters of FlvTagScanner, for viewers that get tags whole (RTMP)."""

    __slots__ = ("on_tag", "bytes", "tags", "video_tags", "audio_tags", "keyframes", "newest_ts", "first_ts")

    def __init__(self, on_tag=None) -> None:
        self.on_tag = on_tag
        self.bytes = 0
        self.tags = 0
        self.video_tags = 0
        self.audio_tags = 0
        self.keyframes = 0
        self.newest_ts = -1
        self.first_ts = -1

    def count(self, kind: int, ts: int, body) -> None:
        self.tags += 1
        keyframe = False
        if kind == 9:
            self.video_tags += 1
            keyframe = is_keyframe_body(body)
            self.keyframes += keyframe
        elif kind == 8:
            self.audio_tags += 1
        if ts > self.newest_ts:
            self.newest_ts = ts
        if self.first_ts < 0:
            self.first_ts = ts
        if self.on_tag is not None:
            self.on_tag(kind, ts, keyframe)


class RtmpViewer(ViewerEnd, asyncio.Protocol):
    """One RTMP play connection (connect, createStream, play) that counts the media it receives.

    `status` is 200 after NetStream.Play.Start, 404 after NetStream.Play.StreamNotFound, 403 after any
    other error status or a refused connect."""

    def __init__(self, host: str, port: int, stream_path: str, *, on_tag=None, on_close=None) -> None:
        from mediaserver.rtmp.client import ClientSession

        app, _, name = stream_path.strip("/").partition("/")
        if not app or not name:
            raise ValueError(f"RTMP stream path {stream_path!r} must be APP/NAME")
        self.app, self.name = app, name
        self.tc_url = f"rtmp://{host}:{port}/{app}"
        self.session = ClientSession()
        self.scanner = TagCounter(on_tag)
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.error: str | None = None
        self.requested_at = 0.0
        self.head_at = 0.0
        self.closed_at = 0.0
        self.ended = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.requested_at = time.monotonic()
        self.session.connect(self.app, self.tc_url)
        self.session.play(self.name)
        transport.write(self.session.data_to_send())

    def data_received(self, data: bytes) -> None:
        self.scanner.bytes += len(data)
        try:
            self.session.receive_data(data)
        except Exception as err:  # the session's protocol errors: this viewer is done
            self.fail(f"{type(err).__name__}: {err}")
            return
        count = self.scanner.count
        for ev in self.session.events():
            name = type(ev).__name__
            if name == "VideoReceived":
                count(9, ev.timestamp, ev.body)
            elif name == "AudioReceived":
                count(8, ev.timestamp, ev.body)
            elif name == "StatusReceived":
                self._on_status(ev)
            elif name == "ConnectResult" and not ev.accepted:
                self.status = 403
                self.fail(f"connect refused: {ev.info}")
        out = self.session.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def _on_status(self, ev) -> None:
        if ev.code == "NetStream.Play.Start":
            self.status = 200
            self.head_at = time.monotonic()
        elif ev.code in ("NetStream.Play.Stop", "NetStream.Play.UnpublishNotify", "NetStream.Play.Complete"):
            self.ended = True
        elif ev.level == "error":
            self.status = 404 if ev.code == "NetStream.Play.StreamNotFound" else 403
            self.fail(f"{ev.code}: {ev.description}")

    def eof_received(self):
        self.ended = True
        return False



async def open_rtmp_viewer(host: str, port: int, stream_path: str, **kw) -> RtmpViewer:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: RtmpViewer(host, port, stream_path, **kw), host, port)
    return proto


async def join_burst(opener, host: str, port: int, path: str, timeout_s: float = 10.0,
                     settle_s: float = 0.02) -> tuple[float, int] | None:
    """A new viewer of a push output (any opener: HTTP-FLV, WebSocket-FLV, RTMP): (request sent -> first
    video keyframe fully received in ms, how much media came with it in ms). The second is the newest
    timestamp received `settle_s` after the keyframe minus the keyframe's: the cached GOP a player that
    starts at the keyframe is behind live by. None on failure."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[float, int]] = loop.create_future()
    viewer = None

    def on_tag(kind: int, ts: int, keyframe: bool) -> None:
        if keyframe and not done.done():
            done.set_result((time.monotonic(), ts))

    def on_close(v) -> None:
        if not done.done():
            done.set_exception(ConnectionError(v.error or "stream ended before a keyframe"))

    try:
        async with asyncio.timeout(timeout_s):
            viewer = await opener(host, port, path, on_tag=on_tag, on_close=on_close)
            t, key_ts = await done
            await asyncio.sleep(settle_s)
            return (t - viewer.requested_at) * 1000.0, viewer.scanner.newest_ts - key_ts
    except (TimeoutError, ConnectionError, OSError):
        return None
    finally:
        if viewer is not None:
            viewer.close()


# ---------------------------------------------------------------- pull players: shared bookkeeping


@dataclass(slots=True)
class PullStats:
    stream: int
    manifests: int = 0
    items: int = 0
    """Parts (LL-HLS) or segments (DASH) fetched with 200."""
    inits: int = 0
    bytes: int = 0
    errors: int = 0
    last_error: str | None = None
    gaps: int = 0
    """Times the next item wanted had already left the manifest (the player fell behind)."""
    statuses: Counter = field(default_factory=Counter)
    """Non-200 answers by status."""
    fetched: dict[str, float] = field(default_factory=dict)
    """Item key ("v12.3", "a40") -> monotonic time its fetch completed."""
    started: str | None = None

    def error(self, why: str) -> None:
        self.errors += 1
        self.last_error = why[:200]


def part_key(track: str, part: Part) -> str:
    return f"{track[0]}{part.msn}.{part.index}"


async def _sleep_unless(stop: asyncio.Event, delay: float) -> None:
    if delay > 0 and not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass


_NET_ERRORS = (OSError, TimeoutError, HttpError, ConnectionError)


# ---------------------------------------------------------------- LL-HLS

_PARSED: dict[bytes, LlPlaylist] = {}
_PARSED_MAX = 32


def parse_playlist_cached(body: bytes) -> LlPlaylist:
    """parse_ll_playlist, remembered for the last few bodies: the players of one worker get the same
    bytes after each part, and parsing them again for each would make the client the bottleneck."""
    pl = _PARSED.get(body)
    if pl is None:
        pl = parse_ll_playlist(body.decode("utf-8", "replace"))
        if len(_PARSED) >= _PARSED_MAX:
            del _PARSED[next(iter(_PARSED))]
        _PARSED[body] = pl
    return pl


class LlhlsTrack:
    """One media playlist of an LL-HLS stream, followed as hls.js low-latency mode follows it."""

    def __init__(self, host: str, port: int, path: str, track: str, stats: PullStats, first_seen: dict[str, float],
                 latency: dict[str, list[float]] | None = None, window: tuple[float, float] = (0.0, 0.0), *,
                 keep_bodies: bool = False, on_playlist: Callable | None = None, on_item: Callable | None = None) -> None:
        self.playlists = HttpClient(host, port)
        self.media = HttpClient(host, port)
        self.path = path
        self.track = track
        self.stats = stats
        self.first_seen = first_seen
        self.latency = latency
        self.window = window
        self.keep_bodies = keep_bodies
        self.on_playlist = on_playlist
        """on_playlist(track, playlist, t, first): each playlist loaded."""
        self.on_item = on_item
        """on_item(track, kind ("init" or "part"), Part | uri, body, t): each 200 fetch."""
        self.playlist: LlPlaylist | None = None

    def _record(self, kind: str, started: float, ms: float) -> None:
        if self.latency is not None and self.window[0] <= started <= self.window[1]:
            self.latency[kind].append(round(ms, 2))

    async def run(self, stop: asyncio.Event) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        media_task = asyncio.ensure_future(self._media_loop(queue, stop))
        try:
            await self._playlist_loop(queue, stop)
        finally:
            media_task.cancel()
            try:
                await media_task
            except (asyncio.CancelledError, Exception):
                pass
            self.playlists.close()
            self.media.close()

    def _start_key(self, pl: LlPlaylist) -> tuple[int, int]:
        """hls.js starts PART-HOLD-BACK behind the live edge; video needs an independent part there."""
        parts = pl.parts()
        if not parts:
            return (pl.next_msn, 0)
        hold = pl.part_hold_back_s or 3 * (pl.part_target_s or pl.target_duration_s)
        behind = 0.0
        i = len(parts) - 1
        while i > 0 and behind + parts[i].duration_s <= hold:
            behind += parts[i].duration_s
            i -= 1
        while i > 0 and not parts[i].independent:
            i -= 1
        return parts[i].key

    async def _playlist_loop(self, queue: asyncio.Queue, stop: asyncio.Event) -> None:
        st = self.stats
        next_key: tuple[int, int] | None = None
        last_map: str | None = None
        directive: tuple[int, int] | None = None
        first = True
        while not stop.is_set():
            path = self.path if directive is None else f"{self.path}?_HLS_msn={directive[0]}&_HLS_part={directive[1]}"
            t_req = time.monotonic()
            try:
                status, body, _, ms = await self.playlists.get(path, keep_body=True, timeout_s=15)
            except _NET_ERRORS as err:
                st.error(f"playlist: {type(err).__name__}: {err}")
                directive = None
                await _sleep_unless(stop, 0.5)
                continue
            st.manifests += 1
            self._record("manifest", t_req, ms)
            if status != 200:
                st.statuses[status] += 1
                directive = None  # 503 (held too long) or 400 (asked too far ahead): reload plainly
                if status not in (503, 400):
                    await _sleep_unless(stop, 0.5)
                continue
            try:
                pl = parse_playlist_cached(body)
            except ManifestError as err:
                st.error(f"playlist: {err}")
                directive = None
                await _sleep_unless(stop, 0.5)
                continue
            now = time.monotonic()
            self.playlist = pl
            parts = pl.parts()
            for p in reversed(parts):  # newest first: the parts before were seen already
                key = part_key(self.track, p)
                if key in self.first_seen:
                    break
                self.first_seen[key] = now
            if self.on_playlist is not None:
                self.on_playlist(self.track, pl, now, first)
            first = False
            if next_key is None:
                next_key = self._start_key(pl)
                st.started = f"{next_key[0]}.{next_key[1]}"
            if parts and parts[0].key > next_key:
                st.gaps += 1
                next_key = parts[0].key
            for p in parts:
                if p.key >= next_key:
                    if p.map_uri is not None and p.map_uri != last_map:
                        queue.put_nowait(("init", p.map_uri))
                        last_map = p.map_uri
                    queue.put_nowait(("part", p))
                    next_key = (p.msn, p.index + 1)
            if pl.ended:
                return
            if pl.can_block_reload:
                last = pl.last_part
                directive = (last.msn, last.index + 1) if last is not None else (pl.next_msn, 0)
            else:
                directive = None
                await _sleep_unless(stop, t_req + (pl.part_target_s or pl.target_duration_s / 2) - time.monotonic())

    async def _media_loop(self, queue: asyncio.Queue, stop: asyncio.Event) -> None:
        st = self.stats
        while not stop.is_set():
            kind, item = await queue.get()
            uri = item if kind == "init" else item.uri
            t_req = time.monotonic()
            try:
                status, body, n, ms = await self.media.get(resolve(self.path, uri), keep_body=self.keep_bodies)
            except _NET_ERRORS as err:
                st.error(f"{kind}: {type(err).__name__}: {err}")
                continue
            now = time.monotonic()
            if status != 200:
                st.statuses[status] += 1
                st.error(f"{kind} {uri[-40:]} HTTP {status}")
                continue
            st.bytes += n
            if kind == "init":
                st.inits += 1
            else:
                st.items += 1
                st.fetched[part_key(self.track, item)] = now
                self._record("media", t_req, ms)
            if self.on_item is not None:
                self.on_item(self.track, kind, item, body, now)


class LlhlsPlayer:
    """An hls.js-like low-latency player: the multivariant playlist, then one LlhlsTrack per rendition.

    hls.js loads the multivariant playlist once. `wait_for_audio_s` > 0 makes this player reload it
    (every 0.2 s, for at most that long) while it lists no audio (neither an audio rendition nor a
    muxed variant, whose playlist carries both tracks), as a probe that must measure both tracks does;
    `multivariant_loads_without_audio` counts those loads."""

    def __init__(self, host: str, port: int, path: str, stats: PullStats, first_seen: dict[str, float],
                 latency: dict[str, list[float]] | None = None, window: tuple[float, float] = (0.0, 0.0), *,
                 wait_for_audio_s: float = 0.0, **kw) -> None:
        self.host, self.port, self.path = host, port, path
        self.stats = stats
        self.first_seen = first_seen
        self.latency = latency
        self.window = window
        self.wait_for_audio_s = wait_for_audio_s
        self.kw = kw
        self.tracks: list[LlhlsTrack] = []
        self.connects = 0
        self.multivariant_loads_without_audio = 0

    async def run(self, stop: asyncio.Event) -> None:
        client = HttpClient(self.host, self.port)
        mv = None
        give_up = time.monotonic() + self.wait_for_audio_s
        try:
            while not stop.is_set():
                try:
                    status, body, _, _ = await client.get(self.path, keep_body=True, timeout_s=10)
                    self.stats.manifests += 1
                    if status == 200:
                        mv = parse_multivariant(body.decode("utf-8", "replace"))
                        if mv.audio or mv.muxed:
                            break
                        self.multivariant_loads_without_audio += 1
                        if time.monotonic() >= give_up:
                            break
                        await _sleep_unless(stop, 0.2)
                        continue
                    self.stats.statuses[status] += 1
                except (*_NET_ERRORS, ManifestError) as err:
                    self.stats.error(f"multivariant: {type(err).__name__}: {err}")
                await _sleep_unless(stop, 0.5)
        finally:
            self.connects += client.connects
            client.close()
        if mv is None:
            return
        renditions = [("video", mv.variants[0])] + [("audio", uri) for uri in mv.audio[:1]]
        self.tracks = [LlhlsTrack(self.host, self.port, resolve(self.path, uri), name, self.stats, self.first_seen,
                                  self.latency, self.window, **self.kw) for name, uri in renditions]
        try:
            await asyncio.gather(*(t.run(stop) for t in self.tracks))
        finally:
            self.connects += sum(t.playlists.connects + t.media.connects for t in self.tracks)


# ---------------------------------------------------------------- DASH


class DashPlayer:
    """A dash.js-like player of a dynamic SegmentTimeline MPD: reload every minimumUpdatePeriod,
    fetch every new segment of each AdaptationSet on its own connection."""

    def __init__(self, host: str, port: int, path: str, stats: PullStats, first_seen: dict[str, float],
                 latency: dict[str, list[float]] | None = None, window: tuple[float, float] = (0.0, 0.0), *,
                 keep_bodies: bool = False, poll_interval_s: float | None = None, start_at_edge: bool = False,
                 on_mpd: Callable | None = None, on_item: Callable | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.host, self.port, self.path = host, port, path
        self.stats = stats
        self.first_seen = first_seen
        self.latency = latency
        self.window = window
        self.keep_bodies = keep_bodies
        self.poll_interval_s = poll_interval_s
        """None: the MPD's minimumUpdatePeriod (as dash.js); a probe polls faster."""
        self.start_at_edge = start_at_edge
        """Start at the newest segment instead of now - suggestedPresentationDelay."""
        self.on_mpd = on_mpd
        """on_mpd(mpd, t, first): each MPD loaded."""
        self.on_item = on_item
        """on_item(content_type, kind, (period, track, segment) | uri, body, t): each 200 fetch."""
        self.clock = clock
        self.mpd_client = HttpClient(host, port)
        self.clients: dict[str, HttpClient] = {}
        self.queues: dict[str, asyncio.Queue] = {}
        self.tasks: list[asyncio.Task] = []
        self.connects = 0

    def _record(self, kind: str, started: float, ms: float) -> None:
        if self.latency is not None and self.window[0] <= started <= self.window[1]:
            self.latency[kind].append(round(ms, 2))

    def _start_number(self, mpd: Mpd, period: DashPeriod, track: DashTrack) -> int:
        segs = track.segments
        if self.start_at_edge or mpd.availability_start is None:
            return segs[-1].number
        delay = mpd.suggested_presentation_delay_s
        if delay is None:
            delay = 4 * max(s.d for s in segs) / track.timescale  # dash.js: four segments without one
        at = ((self.clock() - delay - mpd.availability_start - period.start_s) * track.timescale
              + track.presentation_time_offset)
        for s in segs:
            if s.t <= at < s.t + s.d:
                return s.number
        return segs[0].number if at < segs[0].t else segs[-1].number

    async def run(self, stop: asyncio.Event) -> None:
        st = self.stats
        next_number: dict[str, int] = {}
        last_init: dict[str, str] = {}
        first = True
        try:
            while not stop.is_set():
                t_req = time.monotonic()
                wait = 1.0
                try:
                    status, body, _, ms = await self.mpd_client.get(self.path, keep_body=True, timeout_s=10)
                    st.manifests += 1
                    self._record("manifest", t_req, ms)
                    if status != 200:
                        st.statuses[status] += 1
                    else:
                        mpd = parse_mpd(body.decode("utf-8", "replace"))
                        now = time.monotonic()
                        if self.on_mpd is not None:
                            self.on_mpd(mpd, now, first)
                        first = False
                        wait = mpd.minimum_update_period_s or 2.0
                        for period in mpd.periods:
                            for track in period.tracks:
                                self._take(mpd, period, track, now, next_number, last_init)
                        if not mpd.dynamic:
                            return
                except (*_NET_ERRORS, ManifestError) as err:
                    st.error(f"mpd: {type(err).__name__}: {err}")
                interval = self.poll_interval_s if self.poll_interval_s is not None else wait
                await _sleep_unless(stop, t_req + interval - time.monotonic())
        finally:
            for t in self.tasks:
                t.cancel()
            for t in self.tasks:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass
            self.connects = self.mpd_client.connects + sum(c.connects for c in self.clients.values())
            self.mpd_client.close()
            for c in self.clients.values():
                c.close()

    def _take(self, mpd: Mpd, period: DashPeriod, track: DashTrack, now: float, next_number: dict[str, int],
              last_init: dict[str, str]) -> None:
        kind = track.content_type
        for s in track.segments:
            self.first_seen.setdefault(f"{kind[0]}{s.number}", now)
        if not track.segments:
            return
        if kind not in self.queues:
            self.queues[kind] = asyncio.Queue()
            self.clients[kind] = HttpClient(self.host, self.port)
            self.tasks.append(asyncio.ensure_future(self._media_loop(kind)))
        queue = self.queues[kind]
        if kind not in next_number:
            next_number[kind] = self._start_number(mpd, period, track)
            if kind == "video" or self.stats.started is None:
                self.stats.started = str(next_number[kind])
        want = next_number[kind]
        if track.segments[0].number > want:
            self.stats.gaps += 1
            want = track.segments[0].number
        for s in track.segments:
            if s.number >= want:
                if track.init_uri and last_init.get(kind) != track.init_uri:
                    queue.put_nowait(("init", track.init_uri))
                    last_init[kind] = track.init_uri
                queue.put_nowait(("segment", (period, track, s)))
                want = s.number + 1
        next_number[kind] = want

    async def _media_loop(self, kind: str) -> None:
        st = self.stats
        queue, client = self.queues[kind], self.clients[kind]
        while True:
            what, item = await queue.get()
            uri = item if what == "init" else item[1].media_uri(item[2])
            t_req = time.monotonic()
            try:
                status, body, n, ms = await client.get(resolve(self.path, uri), keep_body=self.keep_bodies)
            except _NET_ERRORS as err:
                st.error(f"{what}: {type(err).__name__}: {err}")
                continue
            now = time.monotonic()
            if status != 200:
                st.statuses[status] += 1
                st.error(f"{what} {uri[-40:]} HTTP {status}")
                continue
            st.bytes += n
            if what == "init":
                st.inits += 1
            else:
                st.items += 1
                st.fetched[f"{kind[0]}{item[2].number}"] = now
                self._record("media", t_req, ms)
            if self.on_item is not None:
                self.on_item(kind, what, item, body, now)


# ---------------------------------------------------------------- latency recorders


def _span(runs: list[TrackRun], tracks: dict[int, TrackInfo] | None) -> tuple[float, float] | None:
    """(last sample's decode time, end) in ms over a part's or segment's track runs."""
    if not runs or not tracks:
        return None
    last = end = None
    for r in runs:
        info = tracks.get(r.track_id)
        if info is None or not r.samples:
            continue
        lm, em = r.last_decode_time * 1000 / info.timescale, r.end * 1000 / info.timescale
        last = lm if last is None else max(last, lm)
        end = em if end is None else max(end, em)
    return None if last is None else (last, end)


class LlhlsRecorder:
    """Callbacks for an LlhlsPlayer with keep_bodies: when each part was listed and arrived, and the
    media time of its last sample and of its end (from tfdt + trun)."""

    def __init__(self) -> None:
        self.inits: dict[str, dict[int, TrackInfo]] = {}
        self.listed: dict[str, float] = {}
        self.backlog: set[str] = set()
        self.records: list[dict] = []
        self.errors: Counter = Counter()
        self.part_hold_back_s: float | None = None
        self.part_target_s: float | None = None
        self.part_durations: dict[str, list[float]] = {"video": [], "audio": []}

    def on_playlist(self, track: str, pl: LlPlaylist, t: float, first: bool) -> None:
        self.part_hold_back_s = pl.part_hold_back_s
        self.part_target_s = pl.part_target_s
        for p in pl.parts():
            key = part_key(track, p)
            if key not in self.listed:
                self.listed[key] = t
                if first:
                    self.backlog.add(key)
                else:
                    self.part_durations[track].append(p.duration_s)

    def on_item(self, track: str, kind: str, item, body: bytes | None, t: float) -> None:
        try:
            if kind == "init":
                self.inits[track] = read_init(body)
                return
            tracks = self.inits.get(track)
            runs = read_fragments(body, tracks)
        except Mp4Error as err:
            self.errors[str(err)[:80]] += 1
            return
        key = part_key(track, item)
        # A muxed part (video and audio trafs) gives a record per track, each timed by its own samples.
        handlers = {info.handler for info in (tracks or {}).values()}
        kinds = {"vide": "video", "soun": "audio"}
        found = False
        for handler in sorted(handlers):
            ids = {tid for tid, info in (tracks or {}).items() if info.handler == handler}
            span = _span([r for r in runs if r.track_id in ids], tracks)
            if span is None:
                continue
            found = True
            self.records.append({"track": kinds.get(handler, track) if len(handlers) > 1 else track, "key": key,
                                 "last_ms": span[0], "end_ms": span[1], "arrived": t,
                                 "listed": self.listed.get(key), "backlog": key in self.backlog})
        if not found:
            self.errors["part without samples, or before its init"] += 1


class DashRecorder:
    """Callbacks for a DashPlayer with keep_bodies: when each segment was listed and fetched, when the
    MPD said it would be available (on the monotonic clock, via `wall_offset` = time.time() -
    time.monotonic()), and the media time of its last sample and of its end."""

    def __init__(self, wall_offset: float) -> None:
        self.wall_offset = wall_offset
        self.inits: dict[str, dict[int, TrackInfo]] = {}
        self.listed: dict[str, float] = {}
        self.advertised: dict[str, float] = {}
        self.backlog: set[str] = set()
        self.records: list[dict] = []
        self.errors: Counter = Counter()
        self.mpd: Mpd | None = None
        self.mpds = 0
        self.mpds_without_audio = 0

    def on_mpd(self, mpd: Mpd, t: float, first: bool) -> None:
        self.mpd = mpd
        self.mpds += 1
        if not any(tr.content_type == "audio" for p in mpd.periods for tr in p.tracks):
            self.mpds_without_audio += 1
        for period in mpd.periods:
            for track in period.tracks:
                for s in track.segments:
                    key = f"{track.content_type[0]}{s.number}"
                    if key in self.listed:
                        continue
                    self.listed[key] = t
                    if first:
                        self.backlog.add(key)
                    wall = mpd.segment_end_wall(period, track, s)
                    if wall is not None:
                        self.advertised[key] = wall - self.wall_offset

    def on_item(self, content_type: str, kind: str, item, body: bytes | None, t: float) -> None:
        try:
            if kind == "init":
                self.inits[content_type] = read_init(body)
                return
            span = _span(read_fragments(body, self.inits.get(content_type)), self.inits.get(content_type))
        except Mp4Error as err:
            self.errors[str(err)[:80]] += 1
            return
        if span is None:
            self.errors["segment without samples, or before its init"] += 1
            return
        _, _, segment = item
        key = f"{content_type[0]}{segment.number}"
        self.records.append({"track": content_type, "key": key, "last_ms": span[0], "end_ms": span[1],
                             "fetched": t, "listed": self.listed.get(key), "advertised": self.advertised.get(key),
                             "backlog": key in self.backlog})


# ---------------------------------------------------------------- worker process

PUSH_KINDS = ("ws-flv", "rtmp")
PULL_KINDS = ("llhls", "dash")


def push_opener(kind: str, deflate: bool = False):
    if kind == "ws-flv":
        return lambda host, port, path, **kw: open_ws_viewer(host, port, path, deflate=deflate, **kw)
    if kind == "rtmp":
        return open_rtmp_viewer
    raise ValueError(f"unknown push output {kind!r}; expected one of {PUSH_KINDS}")


async def run_pull_players(cfg: dict, stop: asyncio.Event) -> dict:
    """Run cfg["count"] LL-HLS or DASH players until `stop`; returns the worker's result."""
    kind = cfg["kind"]
    player_class = {"llhls": LlhlsPlayer, "dash": DashPlayer}[kind]
    n, first, total = cfg["count"], cfg["first_index"], cfg["total_viewers"]
    t0, ramp_s, tick_s = cfg["t0"], cfg["ramp_s"], cfg["tick_s"]
    window = (cfg["window_start"], cfg["window_end"])
    first_seen: dict[int, dict[str, float]] = {}
    latency: dict[str, list[float]] = {"manifest": [], "media": []}
    players = []
    tasks = []
    rnd = random.Random(first)

    async def start(p, at: float) -> None:
        await _sleep_unless(stop, at - time.monotonic())
        if not stop.is_set():
            await p.run(stop)

    for i in range(n):
        g = first + i
        s = g % cfg["stream_count"]
        p = player_class(cfg["host"], cfg["port"], cfg["paths"][s], PullStats(stream=s), first_seen.setdefault(s, {}),
                         latency, window)
        players.append(p)
        # Spread the starts over the ramp, with jitter so reloads do not fall into lockstep.
        at = t0 + ramp_s * (g / max(1, total)) + rnd.random() * 0.5
        tasks.append(asyncio.ensure_future(start(p, at)))
    tick_late: list[float] = []
    k = 0
    while not stop.is_set() and k < cfg["max_ticks"]:
        due = t0 + k * tick_s
        await _sleep_unless(stop, due - time.monotonic())
        if stop.is_set():
            break
        tick_late.append(round((time.monotonic() - due) * 1000, 2))
        k += 1
    stop.set()
    try:
        async with asyncio.timeout(5):
            await asyncio.gather(*tasks, return_exceptions=True)
    except TimeoutError:
        for t in tasks:
            t.cancel()
    return {
        "pid": os.getpid(),
        "kind": kind,
        "players": [
            {
                "stream": p.stats.stream, "manifests": p.stats.manifests, "items": p.stats.items,
                "inits": p.stats.inits, "bytes": p.stats.bytes, "errors": p.stats.errors,
                "last_error": p.stats.last_error, "gaps": p.stats.gaps, "started": p.stats.started,
                "statuses": {str(k): v for k, v in p.stats.statuses.items()}, "connects": p.connects,
                "fetched": p.stats.fetched,
            }
            for p in players
        ],
        "first_seen": {s: d for s, d in first_seen.items()},
        "latency_ms": latency,
        "tick_late_ms": tick_late,
    }


def worker_main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    install_fast_loop()
    raise_nofile_limit()
    kind = cfg["kind"]

    async def main() -> dict:
        if kind in PUSH_KINDS:
            return await _Worker(cfg, push_opener(kind, cfg.get("ws_deflate", False))).run()
        stop = asyncio.Event()
        watch_stdin_for_stop(stop)
        return await run_pull_players(cfg, stop)

    return report_to_orchestrator(asyncio.run(main()))


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv))
