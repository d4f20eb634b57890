"""The fast lane: the hottest viewer requests (HLS, LL-HLS and DASH playlists, segments and parts of a
live stream; byte ranges of a recording) answered straight from the connection's bytes, without aiohttp's request machinery.

aiohttp costs about 0.5 ms of CPU per request on this server (a task per request, the request and
response objects, the router's walk over every route, the middlewares, the header serializer), and an
HLS viewer asks twice or more per segment, an LL-HLS viewer a dozen times a second. Here a request is a
bytes object that holds exactly one complete, bodyless `GET` head; it is parsed by `parse_head` (pure),
and when everything it asks for can be answered as the full stack would answer it, the answer is
written to the transport at once: the packager's own bytes, never copied, behind a head made from
prebuilt pieces. Anything else (another method or route, a body, pipelined or partial heads, a
rendition whose transcoder or packager is not running here yet, a stream not here, an error to explain, HTTP/1.0, `Connection: close`) goes to aiohttp as if
the lane did not exist, and so does every request of a server where a viewer needs more than the
stream's existence (play tokens, the on_play webhook), and a request that names its client in
X-Forwarded-For or Forwarded where `http.trusted_proxies` is set (the full stack reads who the client is;
every other request's client is its peer, as the full stack would find too: workers trust loopback for
their siblings' proxied requests, and a viewer's own request still takes the lane).

The lane takes a request only while aiohttp's side of the connection is idle (waiting for its next
request, the last bytes it got having ended a bodyless head), so the two never interleave answers. It
does what the admission middleware does for these requests: the per-address requests-in-progress limit,
the per-format request and byte counters, the HLS viewer count, the packager's last-request time.

Recordings: once the full stack has served `/vod/ID.mp4` or the playlist or MPD of a local file (and
admitted its viewer), the lane answers that recording's next whole-file or single-range GETs for
VOD_CACHE_S as sendfile.serve_file does (os.sendfile; what a full socket does not take is read a chunk at a
time in a thread and written as the reader takes it, the range being bounded by MAX_VOD_RANGE; a range on
the disk only is read into the page cache in a thread first), when the recorded stream's app is open to
viewers; and a finished file's `index.m3u8` and `manifest.mpd`, asked
without a query, with the text the full stack rendered. A player asks for the playlist, the init and two or
three segments back to back, and a request that arrives while aiohttp is still finishing the one before goes
to aiohttp too: a session begun in the lane stays there.

Blocking LL-HLS reloads (`_HLS_msn`/`_HLS_part`) and requests for the part a preload hint names are held
in one list per packager, not a task per request: the packager calls `release` on every change of its
window (in the very read that brought the frame that closed the part), and each held request is answered
when ready, or with 503 after three target durations as the full stack does. Bytes that arrive on a
connection while its request is held wait behind it.

An answer the socket does not take whole waits in the transport; a reader that takes none of it for
`http.write_timeout` is disconnected (stuck.py), as the full stack's FLV and VOD writers do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..auth import cors
from ..auth.names import split_rendition
from ..remux import llhls
from ..remux.cmaf import parse_cmaf_name
from ..transports import reset
from .formats import CARRIED, DASH, LLHLS, TS_HLS
from .keys import CONFIG, GATE, METRICS, PACKAGERS, REGISTRY
from .names import stream_key
from .overload import may_move
from .sendfile import (
    CHUNK, ByteRange, MemFile, Sent, Unsatisfiable, byte_range, in_page_cache, none_match, read_into_cache, send_fd,
    send_mem_file,
)
from .stuck import StuckWriters

if TYPE_CHECKING:
    from .cmaf import CmafPackager

log = logging.getLogger(__name__)

MAX_HEAD = 8192
"""A head longer than this goes to aiohttp (which has its own limits)."""
VOD_CACHE_S = 30.0
"""How long a recording the full stack served may be served by the lane without asking the catalog again."""
MAX_VOD_RANGE = 8 << 20
MAX_VOD_FILES = 1024
"""Recordings the lane keeps open at most (each one's descriptor, for VOD_CACHE_S after the full stack's answer)."""
"""Larger ranges of a recording go to the full stack, which reads what the socket does not take in a thread."""
MAX_QUEUED = 1 << 20
"""Bytes waiting in the transport above which a request goes to aiohttp, which waits for the reader."""
HEAD_CACHE = 1024
"""Parsed heads kept by their bytes: players repeat the same request head (the playlist every target
duration, each segment once per viewer), so most requests skip parse_head (5-11 us) for a dict lookup."""
HEAD_CACHE_MAX_BYTES = 2048
"""Longer heads are parsed every time (the cache holds at most HEAD_CACHE x this)."""

_HLS_TYPE = b"application/vnd.apple.mpegurl"
_TS_TYPE = b"video/mp2t"
_MPD_TYPE = b"application/dash+xml"
_M4S_TYPE = b"video/iso.segment"
_INIT_TYPE = b"video/mp4"
_LONG_CACHE = b"public, max-age=3600, immutable"
_NO_CACHE = b"no-cache"
_MEDIA_PLAYLISTS = {"cmaf-video.m3u8": "video", "cmaf-audio.m3u8": "audio", "cmaf-muxed.m3u8": "muxed"}
VOD_TEXT_TYPES = {"index.m3u8": b"application/vnd.apple.mpegurl; charset=utf-8",
                  "manifest.mpd": b"application/dash+xml; charset=utf-8"}
"""A recording's texts the lane answers, with the Content-Type the full stack's text Response gives them."""


@dataclass(frozen=True, slots=True)
class Head:
    """A simple GET request, as much of it as the lane reads."""

    app: str
    name: str
    file: str
    query: str
    origin: str | None
    if_none_match: str | None
    range: str | None = None
    if_range: str | None = None
    forwarded: bool = False
    """It names a client behind proxies (X-Forwarded-For or Forwarded)."""


def parse_head(data: bytes) -> Head | None:
    """The GET /APP/NAME/FILE request `data` holds entirely, or None when it is anything else: not GET, not
    HTTP/1.1, not exactly one complete head, a body, an upgrade, `Connection: close`, a percent-encoded or
    otherwise unusual target. None sends the request the ordinary way, so None is always safe.

    Every walk over the head is one C call (bytes methods, regular expressions that start at a line
    feed): a browser's dozen headers cost little more than two."""
    if len(data) > MAX_HEAD or not data.endswith(b"\r\n\r\n"):
        return None
    request = _REQUEST_LINE.match(data)
    if request is None:
        return None
    block = data[request.end() - 2:-2]  # every header line between CRLFs
    if _BAD_LINE.search(block) is not None or not block.count(b"\r") == block.count(b"\n") == block.count(b"\r\n"):
        return None  # a second head, folded or malformed lines, bare CRs or LFs: aiohttp answers them
    if _BAD_FIELD.search(block) is not None:
        return None  # a name that is no token, a control byte in a value: aiohttp answers 400
    origin = if_none_match = asked_range = if_range = None
    forwarded = False
    hosts = 0
    for found in _WANTED_HEADER.finditer(block.lower()):
        name = found[1]
        start = found.end()
        value = block[start:block.index(b"\r", start)].strip(b" \t")
        if name == b"host":
            hosts += 1
        elif name == b"origin":
            if origin is not None:
                return None  # twice: aiohttp reads the first, and answers as it reads it
            origin = value.decode("latin-1")
        elif name == b"if-none-match":
            if if_none_match is not None:
                return None
            if_none_match = value.decode("latin-1")
        elif name == b"range":
            if asked_range is not None:
                return None
            asked_range = value.decode("latin-1")
        elif name == b"if-range":
            if if_range is not None:
                return None
            if_range = value.decode("latin-1")
        elif name == b"connection":
            if value.lower() != b"keep-alive":
                return None
        elif name == b"x-forwarded-for" or name == b"forwarded":
            forwarded = True
        else:
            return None  # a body announced, an upgrade or an expectation
    if hosts != 1:
        return None  # HTTP/1.1 asks for exactly one Host: aiohttp answers 400 without, or with two
    path, _, query = request[1].decode("ascii").partition("?")
    parts = path.split("/")
    if len(parts) == 3 and parts[1] == "vod" and parts[2].endswith(".mp4"):
        return Head("vod", "", parts[2], query, origin, if_none_match, asked_range, if_range, forwarded)  # a recording
    if len(parts) != 4 or not all(parts[1:]):
        return None
    return Head(parts[1], parts[2], parts[3], query, origin, if_none_match, asked_range, if_range, forwarded)


_REQUEST_LINE = re.compile(rb'GET (/[!"$&-~]*) HTTP/1\.1\r\n')
"""A GET of a target of visible ASCII without `%` (aiohttp decodes those) or `#`."""
_BAD_LINE = re.compile(rb"\n(?:[ \t:]|[^:\r]*+(?:\r|(?<=[ \t]):))")
"""A header line that is folded, empty (a second head), nameless, without a colon, or with blanks before it."""
_BAD_FIELD = re.compile(rb"\n(?!\Z|[!#$%&'*+\-.^_`|~0-9A-Za-z]+:)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""A header line whose name is not an HTTP token, or a control byte (other than tab) anywhere."""
_WANTED_HEADER = re.compile(
    rb"\n(host|origin|if-none-match|range|if-range|connection|x-forwarded-for|forwarded"
    rb"|content-length|transfer-encoding|upgrade|expect):")
"""The headers the lane reads (Host is counted), and those it leaves to aiohttp (a body, an upgrade, an expectation)."""


def directive(query: str, name: str) -> int | None | bool:
    """The LL-HLS delivery directive `name` in `query`: its value, None when absent, False when it is not a
    plain whole number or appears twice (the full stack answers that with 400)."""
    found: int | None | bool = None
    for pair in query.split("&") if query else ():
        key, _, value = pair.partition("=")
        if key == name:
            if found is not None or not (value.isascii() and value.isdigit()) or len(value) > 12:
                return False
            found = int(value)
    return found


@dataclass(slots=True, eq=False)
class _Held:
    """A request waiting for its playlist, part or segment."""

    conn: Any
    head: Head
    packager: CmafPackager
    deadline: float
    address: str
    try_answer: Callable[[_Held, dict], bool]
    asked: tuple
    """What it waits for: (track, msn, part) of a playlist, (track, sequence, part) of a file."""


@dataclass(slots=True, eq=False)
class _VodFile:
    """A recording the full stack served lately: the lane answers its ranges until `expires`."""

    expires: float
    app: str
    stream: str
    path: str
    fd: int = -1
    expiry: asyncio.TimerHandle | None = None
    texts: dict[str, bytes] = field(default_factory=dict)
    """A finished file's playlist and MPD by file name, as the full stack rendered them (no token)."""
    texts_size: int = -1
    """The file's size the texts describe: at any other size the full stack answers."""


class FastLane:
    """Answers simple viewer GETs of one application (see the module docstring)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.answered = 0
        """Requests answered by the lane since start (tests and benches see it is used)."""
        self._date = b""
        self._date_at = -1
        self._dates: dict[float, bytes] = {}
        self._cors: dict[str | None, bytes] = {}
        self._waiting: set[CmafPackager] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._vod_files: dict[str, _VodFile] = {}
        self._heads: dict[bytes, Head] = {}
        self.stuck = StuckWriters(lambda: app[CONFIG].http.write_timeout)
        """Connections whose answers wait in their transports: aborted when the reader takes nothing."""
        self._rests: set[asyncio.Task] = set()

    # ----- the connection's side ---------------------------------------------------------------

    def enabled(self) -> bool:
        """Whether the lane may answer at all: nothing about a viewer needs more than the stream."""
        return self.app[CONFIG].hls.fast_lane and not self.app[GATE].admission.wants_hook("play")

    def take(self, conn: Any, data: bytes) -> bool:
        """Answer (or hold) the request `data` holds on `conn`, a GuardedRequestHandler whose aiohttp side is
        idle; False leaves it to aiohttp, nothing written."""
        head = self._heads.get(data)
        if head is None:
            head = parse_head(data)
            if head is None:
                return False
            if len(data) <= HEAD_CACHE_MAX_BYTES:
                if len(self._heads) >= HEAD_CACHE:
                    self._heads.clear()
                self._heads[data] = head  # a Head is frozen: one may serve every request of the same bytes
        if not self.enabled():
            return False
        app = self.app
        if head.forwarded and app[CONFIG].http.trusted_proxies:
            return False  # behind a trusted proxy, the client is who the full stack reads from these headers
        if head.name == "":
            return self._vod(conn, head)
        if head.app == "vod":  # the recordings' routes come before any application's (edge/vod.py)
            return self._vod_text(conn, head)
        if not app[GATE].admission.policy.play_is_open(head.app):
            return False
        key = stream_key(head.app, head.name)
        if key is None:
            return False
        source = None
        if "@" in head.name:  # a rendition: only while its transcoder publishes it here, its source's packager too
            base, label = split_rendition(head.name)
            source = stream_key(head.app, base) if label is not None and head.file != "manifest.mpd" else None
            if source is None:
                return False
        stream = app[REGISTRY].get(key)
        if stream is None or stream.ended:
            return False
        transport = conn.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size() > MAX_QUEUED:
            return False
        file = head.file
        if may_move(app, conn.lane_address, key, file, head.query):
            return False  # a starting player on an edge with a ceiling: the full stack may send it elsewhere
        pool = app[PACKAGERS]
        if file == "index.m3u8" or file.endswith(".ts"):
            packager = pool.running_hls(key)
            if packager is None or (source is not None and pool.running_hls(source) is None):
                return False  # (a rendition's packager follows its source's cuts: both are kept alive)
            if file == "index.m3u8":
                info = stream.info
                carried = CARRIED[TS_HLS]
                if not packager.has_segments or any(c is not None and c not in carried
                                                    for c in (info.video_codec, info.audio_codec)):
                    return False
                return self._answer(conn, head, str(key), "hls", _HLS_TYPE, self._playlist_cache(packager),
                                    packager.playlist(), packager.playlist_etag)
            segment = packager.segment(file)
            if segment is None:
                return False
            return self._answer(conn, head, str(key), "hls", _TS_TYPE, _LONG_CACHE, segment.data,
                                file=packager.segment_file(segment.sequence))
        packager = pool.running_cmaf(key)
        if packager is None or (source is not None and pool.running_cmaf(source) is None):
            return False
        info = stream.info
        carried = CARRIED[DASH if file == "manifest.mpd" else LLHLS]
        if any(c is not None and c not in carried for c in (info.video_codec, info.audio_codec)):
            return False  # the full stack answers 415
        if file == "manifest.mpd":
            if not packager.has_every_track() or self._abr_applies(key):
                return False
            body, etag = packager.shared_mpd()
            return self._answer(conn, head, str(key), "cmaf", _MPD_TYPE, _NO_CACHE, body, etag)
        track = _MEDIA_PLAYLISTS.get(file)
        if track is not None:
            msn, part = directive(head.query, "_HLS_msn"), directive(head.query, "_HLS_part")
            if msn is False or part is False or packager.window.track(track) is None:
                return False
            readiness = llhls.playlist_request(packager.window, track, msn, part)  # type: ignore[arg-type]
            if readiness is llhls.Readiness.BAD_REQUEST:
                return False
            asked = (track, msn, part)
            return self._start(conn, head, str(key), packager, readiness, self._try_playlist, asked, asked)
        name = parse_cmaf_name(file[len(packager.prefix):]) if file.startswith(packager.prefix) else None
        if name is None:
            return False
        if name.kind == "init":
            tw = packager.window.track(name.track)
            init = tw.init(name.number) if tw is not None else None
            if init is None:
                return False
            return self._answer(conn, head, str(key), "cmaf", _INIT_TYPE, _LONG_CACHE, init.data)
        readiness = llhls.resource_request(packager.window, name.track, name.number, name.part)
        if readiness is not llhls.Readiness.READY and readiness is not llhls.Readiness.WAIT:
            return False
        asked = (name.track, name.number, name.part)
        return self._start(conn, head, str(key), packager, readiness, self._try_file, asked, ("file", asked))

    # ----- recordings ----------------------------------------------------------------------------

    def remember_vod(self, rec_id: str, app: str, stream: str, path: str,
                     text: tuple[str, bytes, int] | None = None) -> None:
        """The full stack served recording `rec_id` from the local file `path`: later range requests of it may
        take the lane (for VOD_CACHE_S, when the recorded stream's app is open to viewers). `text`: (file name,
        body, the file's size) of the finished file's playlist or MPD it answered with, which the lane answers
        from then on too."""
        files = self._vod_files
        entry = files.get(rec_id)
        if entry is not None and (entry.path != path or (text is not None and entry.texts_size != text[2])):
            self._forget_vod(rec_id, entry)
            entry = None
        if entry is None:
            if len(files) >= MAX_VOD_FILES:
                for known, kept in list(files.items()):
                    self._forget_vod(known, kept)
            entry = files[rec_id] = _VodFile(0.0, app, stream, path)
        elif entry.expiry is not None:
            entry.expiry.cancel()
        if text is not None:
            name, body, entry.texts_size = text
            entry.texts[name] = body
        entry.expires = time.monotonic() + VOD_CACHE_S
        # The descriptor closes when the entry ends, asked for or not: a recording deleted meanwhile frees
        # its disk space within VOD_CACHE_S.
        entry.expiry = asyncio.get_running_loop().call_later(VOD_CACHE_S, self._forget_vod, rec_id, entry)

    def close(self) -> None:
        """The app stops: the recordings kept open are closed."""
        for rec_id, entry in list(self._vod_files.items()):
            self._forget_vod(rec_id, entry)
        for task in self._rests:
            task.cancel()
        self.stuck.close()

    def _forget_vod(self, rec_id: str, entry: _VodFile) -> None:
        if self._vod_files.get(rec_id) is entry:
            del self._vod_files[rec_id]
        if entry.expiry is not None:
            entry.expiry.cancel()
        if entry.fd >= 0:
            os.close(entry.fd)
            entry.fd = -1

    def _vod_file(self, conn: Any, rec_id: str) -> tuple[_VodFile, os.stat_result] | None:
        """The recording the full stack served lately, open, and its file's state, when the lane may answer
        for it on `conn` now."""
        found = self._vod_files.get(rec_id)
        if found is None or found.expires < time.monotonic():
            return None
        if not self.app[GATE].admission.policy.play_is_open(found.app):
            return None
        transport = conn.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size() > MAX_QUEUED:
            return None
        if found.fd < 0:  # opened once for every viewer's ranges (sendfile and pread take their own offsets)
            try:
                found.fd = os.open(found.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        st = os.fstat(found.fd)
        if st.st_nlink == 0:  # deleted (by the API, retention, or after its upload): the full stack says so
            self._forget_vod(rec_id, found)
            return None
        return found, st

    def _vod_text(self, conn: Any, head: Head) -> bool:
        """/vod/ID/index.m3u8 or manifest.mpd of a finished file the full stack described lately, as it did
        (the same text; with a query, a token perhaps, the full stack answers)."""
        content_type = VOD_TEXT_TYPES.get(head.file)
        if content_type is None or head.query:
            return False
        known = self._vod_file(conn, head.name)
        if known is None:
            return False
        found, st = known
        body = found.texts.get(head.file)
        if body is None or st.st_size != found.texts_size:
            return False
        gate = self.app[GATE]
        address = conn.lane_address
        if gate.connection_opened(address) is not None:
            return False
        try:
            conn.transport.write(b"".join((
                _STATUS[200], b"Content-Type: ", content_type, b"\r\nContent-Length: %d\r\n" % len(body),
                b"Cache-Control: no-cache\r\nDate: ", self._now_date(), b"\r\n", self._cors_lines(head.origin),
                b"\r\n", body)))
            self.stuck.wrote(conn.transport)
        finally:
            gate.connection_closed(address)
        self.answered += 1
        self.app[METRICS].response_done("other", len(body))  # as the middleware counts /vod/
        conn.lane_answered()
        return True

    def _vod(self, conn: Any, head: Head) -> bool:
        """/vod/ID.mp4, whole or one range, from a file the full stack served lately: os.sendfile as
        sendfile.serve_file does; 416, 304 and anything unusual go to the full stack."""
        known = self._vod_file(conn, head.file[:-4])
        if known is None:
            return False
        found, st = known
        fd = found.fd
        transport = conn.transport
        size = st.st_size
        etag = f'"{st.st_mtime_ns:x}-{size:x}"'
        if none_match(head.if_none_match, etag):
            return False
        asked = head.range
        if asked is not None and head.if_range is not None and head.if_range.strip() != etag:
            asked = None
        try:
            part = byte_range(asked, size)
        except Unsatisfiable:
            return False
        if part is None:
            part = ByteRange(0, size)
            status, extra = 200, b""
        else:
            status, extra = 206, b"Content-Range: bytes %d-%d/%d\r\n" % (part.start, part.end - 1, size)
        if part.size > MAX_VOD_RANGE:
            return False  # what the socket does not take is read in a thread by the full stack
        gate = self.app[GATE]
        address = conn.lane_address
        if gate.connection_opened(address) is not None:
            return False
        sending = False
        try:
            answer_head = b"".join((
                _STATUS[status], b"Content-Type: video/mp4\r\nContent-Length: %d\r\n" % part.size,
                b"Cache-Control: no-cache\r\nAccept-Ranges: bytes\r\nDate: ", self._now_date(),
                b"\r\nETag: ", etag.encode(), b"\r\nLast-Modified: ", self._http_date(st.st_mtime), b"\r\n",
                extra, self._cors_lines(head.origin), b"\r\n"))
            if not in_page_cache(fd, part.start, part.size):
                # On the disk only: read into the page cache in a thread, then sent (never the loop waiting on it).
                Sent.uncached += 1
                sending = self._send_rest(conn, fd, part.start, part.end, address, answer_head)
                left = 0
            else:
                sent = send_fd(transport, fd, part.start, part.size, answer_head)
                left = part.size - sent
            if left > CHUNK:
                sending = self._send_rest(conn, fd, part.start + sent, part.end, address)  # in progress till sent
            elif left:
                # The socket is full: the small rest from the page cache, through the transport.
                rest = os.pread(fd, left, part.start + sent)
                transport.write(rest)
                if len(rest) < left:
                    transport.abort()  # the file was cut short meanwhile: the answer cannot be completed
                self.stuck.wrote(transport)
        finally:
            if not sending:
                gate.connection_closed(address)
        self.answered += 1
        self.app[METRICS].response_done("other", part.size)  # as the middleware counts /vod/
        conn.lane_answered()
        return True

    def _send_rest(self, conn: Any, fd: int, offset: int, end: int, address: str, head: bytes | None = None) -> bool:
        """Bytes [offset, end) of a recording, after what a full socket took: read CHUNK at a time in a thread
        (as sendfile.serve_file does) and written as the reader takes them, so a slow reader holds a chunk and
        the transport's high-water mark, not the range. The connection is held meanwhile (what it sends next
        waits); a reader that takes nothing for `http.write_timeout` is dropped. With the answer's `head`: a
        range not in the page cache, read into it in the thread first, then sent as a cached one."""
        try:
            own = os.dup(fd)  # its own descriptor: the recording may leave the lane's cache meanwhile
        except OSError:  # out of descriptors: the answer cannot be completed
            reset(conn.transport)
            return False
        loop = asyncio.get_running_loop()
        conn.lane_hold(loop.time() + self.app[CONFIG].http.write_timeout)
        task = loop.create_task(self._rest(conn, own, offset, end, address, head))
        self._rests.add(task)
        task.add_done_callback(self._rests.discard)
        return True

    async def _rest(self, conn: Any, fd: int, offset: int, end: int, address: str, head: bytes | None) -> None:
        timeout = self.app[CONFIG].http.write_timeout
        try:
            if head is not None:
                await asyncio.to_thread(read_into_cache, fd, offset, end - offset)
                transport = conn.transport
                if transport is None or transport.is_closing():
                    return
                offset += send_fd(transport, fd, offset, end - offset, head)
            while offset < end:
                async with asyncio.timeout(timeout):
                    await conn._drain_helper()  # aiohttp's flow control: until under the high-water mark
                chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, end - offset), offset)
                transport = conn.transport
                if transport is None or transport.is_closing():
                    return
                if not chunk:
                    transport.abort()  # the file was cut short meanwhile: the answer cannot be completed
                    return
                transport.write(chunk)
                offset += len(chunk)
                conn.lane_answered()  # progress: the keep-alive does not run out under a long answer
            self.stuck.wrote(transport)
        except (TimeoutError, ConnectionError, OSError):
            reset(conn.transport, closing_too=True)  # stuck, gone, or the file unreadable: it cannot be completed
        finally:
            os.close(fd)
            self.app[GATE].connection_closed(address)
            conn.lane_release()

    def _abr_applies(self, key) -> bool:
        from .keys import ABR
        abr = self.app.get(ABR)
        return abr is not None and abr.enabled_for(key)

    @staticmethod
    def _playlist_cache(packager) -> bytes:
        cfg = packager.cfg
        max_age = max(0, int(cfg.segment_duration / 2))
        return f"max-age={max_age}".encode() if max_age else _NO_CACHE

    # ----- answering ---------------------------------------------------------------------------

    def _answer(self, conn: Any, head: Head, stream: str, fmt: str, content_type: bytes, cache: bytes,
                body: bytes, etag: bytes | None = None, file: MemFile | None = None) -> bool:
        gate = self.app[GATE]
        address = conn.lane_address
        if gate.connection_opened(address) is not None:
            return False  # over the requests-in-progress limit: the full stack says so
        try:
            self._write(conn, head, stream, fmt, address, 200, content_type, cache, body, etag, file=file)
        finally:
            gate.connection_closed(address)
        return True

    def _write(self, conn: Any, head: Head, stream: str, fmt: str, address: str, status: int,
               content_type: bytes, cache: bytes, body: bytes, etag: bytes | None = None,
               extra: bytes = b"", file: MemFile | None = None) -> None:
        transport = conn.transport
        if transport is None or transport.is_closing():
            return
        if etag is not None and none_match(head.if_none_match, etag.decode()):
            status, body = 304, b""
        parts = [_STATUS[status], b"Content-Type: ", content_type,
                 b"\r\nContent-Length: %d" % len(body) if status != 304 else b"",
                 b"\r\nCache-Control: ", cache, b"\r\nDate: ", self._now_date(), b"\r\n",
                 self._cors_lines(head.origin), extra]
        if etag is not None:
            parts += (b"ETag: ", etag, b"\r\n")
        parts.append(b"\r\n")
        if len(body) < 16384:
            parts.append(body)
            transport.write(b"".join(parts))
        elif file is not None and status == 200:
            send_mem_file(transport, file, body, b"".join(parts))  # from the segment's memfd, no copy from Python's buffer
        else:
            transport.writelines((b"".join(parts), body))  # one writev; the packager's bytes as they are
        self.stuck.wrote(transport)
        self.answered += 1
        metrics = self.app[METRICS]
        metrics.response_done(fmt, len(body))
        if status < 300:
            metrics.hls_request(address, stream)
        conn.lane_answered()

    def _http_date(self, when: float) -> bytes:
        """A file's Last-Modified (the same few files are asked again and again)."""
        date = self._dates.get(when)
        if date is None:
            if len(self._dates) >= 1024:
                self._dates.clear()
            date = self._dates[when] = formatdate(when, usegmt=True).encode()
        return date

    def _now_date(self) -> bytes:
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = formatdate(now, usegmt=True).encode()
        return self._date

    def _cors_lines(self, origin: str | None) -> bytes:
        lines = self._cors.get(origin)
        if lines is None:
            allowed = self.app[CONFIG].http.cors_origin
            headers = cors.cors_headers(origin, (allowed,) if allowed else (), cors.MEDIA_EXPOSED)
            lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
            if len(self._cors) > 64:
                self._cors.clear()
            self._cors[origin] = lines
        return lines

    def _error(self, held: _Held, status: int, error: str, hint: str, retry_after: bool = False) -> None:
        body = json.dumps({"error": error, "hint": hint}).encode()
        self._write(held.conn, held.head, "", "hls", held.address, status, b"application/json; charset=utf-8",
                    _NO_CACHE, body, extra=b"Retry-After: 1\r\n" if retry_after else b"")

    # ----- held requests -----------------------------------------------------------------------

    def _start(self, conn: Any, head: Head, stream: str, packager: CmafPackager, readiness: llhls.Readiness,
               try_answer: Callable[[_Held, dict], bool], asked: tuple, seen_key: tuple) -> bool:
        gate = self.app[GATE]
        address = conn.lane_address
        if gate.connection_opened(address) is not None:
            return False
        loop = asyncio.get_running_loop()
        held = _Held(conn, head, packager, loop.time() + 3 * packager.cfg.segment_duration, address, try_answer,
                     asked)
        if readiness is llhls.Readiness.READY:
            try:
                try_answer(held, {seen_key: readiness})  # (asked just now: not asked again)
            finally:
                gate.connection_closed(address)
            return True
        conn.lane_hold(held.deadline)
        packager.release_held = self.release
        packager.held.append(held)
        self._waiting.add(packager)
        if self._sweeper is None:
            self._sweeper = loop.call_later(1.0, self._sweep)
        return True

    def release(self, packager: CmafPackager) -> None:
        """The packager's window changed (or ended): answer what is ready now, drop what is closed or late."""
        held = packager.held
        if not held:
            return
        now = asyncio.get_running_loop().time()
        keep = []
        seen: dict = {}  # readiness by what was asked: hundreds of held requests ask for the same few things
        for h in held:
            if not self._settle(h, now, seen):
                keep.append(h)
        packager.held = keep
        if not keep:
            self._waiting.discard(packager)

    def _settle(self, held: _Held, now: float, seen: dict) -> bool:
        """Answer `held` if it can be now (or has waited too long); False keeps it waiting."""
        conn = held.conn
        transport = conn.transport
        done = transport is None or transport.is_closing()
        if not done:
            try:
                done = held.try_answer(held, seen)
                if not done and now >= held.deadline:
                    self._error(held, 503, "the requested segment or part did not appear in time",
                                "reload the playlist without delivery directives", retry_after=True)
                    done = True
            except Exception:  # a bug: this viewer's connection goes, the packager and the others carry on
                log.exception("fast lane failed to answer a held request; connection closed")
                transport.abort()
                done = True
        if done:
            self.app[GATE].connection_closed(held.address)
            conn.lane_release()
        return done

    def _sweep(self) -> None:
        self._sweeper = None
        for packager in list(self._waiting):
            self.release(packager)
        if self._waiting:
            self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep)

    def _try_playlist(self, held: _Held, seen: dict) -> bool:
        packager = held.packager
        track, msn, part = asked = held.asked
        readiness = seen.get(asked)
        if readiness is None:
            readiness = seen[asked] = llhls.playlist_request(packager.window, track, msn, part)
        if readiness is llhls.Readiness.READY:
            self._write(held.conn, held.head, str(packager.key), "cmaf", held.address, 200, _HLS_TYPE, _NO_CACHE,
                        packager.media_playlist(track))
            return True
        if readiness is llhls.Readiness.BAD_REQUEST:
            self._error(held, 400, f"_HLS_msn={msn} _HLS_part={part} is too far ahead of the live edge",
                        "ask for the next segment or part the last playlist announced")
            return True
        return False

    def _try_file(self, held: _Held, seen: dict) -> bool:
        packager = held.packager
        file = held.head.file
        track, number, part = asked = held.asked
        key = ("file", asked)
        readiness = seen.get(key)
        if readiness is None:
            readiness = seen[key] = llhls.resource_request(packager.window, track, number, part)
        if readiness is llhls.Readiness.READY:
            tw = packager.window.track(track)
            assert tw is not None
            item = tw.segment(number) if part is None else tw.part(number, part)
            assert item is not None
            self._write(held.conn, held.head, str(packager.key), "cmaf", held.address, 200, _M4S_TYPE, _LONG_CACHE,
                        item.data)  # (a memfd copy sent with sendfile cost more CPU on loopback than this writev)
            return True
        if readiness is llhls.Readiness.GONE:
            self._error(held, 404, f"{file[:64]!r} is not (or no longer) available",
                        "reload the playlist: segments expire as the live window slides")
            return True
        if readiness is llhls.Readiness.BAD_REQUEST:
            self._error(held, 400, f"{file[:64]!r} is too far ahead of the live edge",
                        "ask for the part the preload hint names")
            return True
        return False


_STATUS = {
    200: b"HTTP/1.1 200 OK\r\n",
    206: b"HTTP/1.1 206 Partial Content\r\n",
    304: b"HTTP/1.1 304 Not Modified\r\n",
    400: b"HTTP/1.1 400 Bad Request\r\n",
    404: b"HTTP/1.1 404 Not Found\r\n",
    503: b"HTTP/1.1 503 Service Unavailable\r\n",
}

FAST_LANE = web.AppKey("fast_lane", FastLane)
