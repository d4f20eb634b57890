"""HLS players for load tests: many in one process on raw keep-alive sockets, plus a fast listing probe.

Each player behaves like a live player that plays from the live edge: it loads the media playlist,
then fetches every segment it has not fetched yet, in order, once each, on the same keep-alive
connection; it reloads the playlist after the last segment's duration when the playlist had news, or
after half the target duration when it did not (the reload rule of the HLS spec, RFC 8216 6.3.4, as
hls.js applies it). Segment bodies are counted, not kept; playlists are kept and parsed.

Segments are named by their media sequence number (MSN). Players report which MSNs they fetched and
when each MSN first appeared in a playlist they loaded, so the orchestrator can tell whether each
player fetched every segment listed during the window.

The listing probe polls one playlist every 20 ms and records when each segment first appears, and the
first video PTS of each segment (from its MPEG-TS PES headers), so listing delays can be matched to
what a publisher sent.

Run as a worker process (`python bench/_hls_viewers.py CONFIG_JSON`), like _flv_viewers.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _aio import (  # noqa: E402
    install_fast_loop, raise_nofile_limit, report_to_orchestrator, stopped_within, watch_stdin_for_stop,
)
from _http import HttpError, HttpResponseParser, request_bytes  # noqa: E402

READ_SIZE = 256 * 1024
_SHARED = bytearray(READ_SIZE)
_SHARED_VIEW = memoryview(_SHARED)
MAX_PLAYLIST = 1024 * 1024


class PlaylistError(ValueError):
    """A media playlist we cannot follow."""


@dataclass(frozen=True, slots=True)
class Segment:
    msn: int
    duration_s: float
    uri: str


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    target_duration_s: float
    media_sequence: int
    segments: tuple[Segment, ...]
    ended: bool = False


def parse_media_playlist(text: str) -> MediaPlaylist:
    """The parts of an HLS media playlist (RFC 8216 4.3) a live player needs."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "#EXTM3U":
        raise PlaylistError("playlist does not start with #EXTM3U")
    target = None
    seq = 0
    ended = False
    segs: list[Segment] = []
    duration = None
    for raw in lines[1:]:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            tag, _, value = line.partition(":")
            if tag == "#EXT-X-STREAM-INF":
                raise PlaylistError("this is a multivariant playlist, not a media playlist")
            try:
                if tag == "#EXT-X-TARGETDURATION":
                    target = float(value)
                elif tag == "#EXT-X-MEDIA-SEQUENCE":
                    seq = int(value)
                elif tag == "#EXTINF":
                    duration = float(value.split(",", 1)[0])
                elif tag == "#EXT-X-ENDLIST":
                    ended = True
            except ValueError:
                raise PlaylistError(f"bad value in {line[:80]!r}") from None
            continue
        if duration is None:
            raise PlaylistError(f"segment {line[:80]!r} has no #EXTINF before it")
        segs.append(Segment(seq + len(segs), duration, line))
        duration = None
    if target is None:
        raise PlaylistError("playlist has no #EXT-X-TARGETDURATION")
    return MediaPlaylist(target, seq, tuple(segs), ended)


def resolve(playlist_path: str, uri: str) -> str:
    """The request path of a segment URI given relative to the playlist's path."""
    if uri.startswith("http://") or uri.startswith("https://"):
        rest = uri.split("://", 1)[1]
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    if uri.startswith("/"):
        return uri
    base = playlist_path.split("?", 1)[0]
    parts = base[: base.rfind("/")].split("/") + uri.split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        if part == "..":
            if len(out) > 1:
                out.pop()
        elif part != "." or i == len(parts) - 1:
            out.append(part)
    return "/".join(out)


def ts_first_video_pts(data: bytes | bytearray) -> int | None:
    """The PTS (90 kHz) of the first video PES (stream id 0xE0-0xEF) in an MPEG-TS segment, or None."""
    n = len(data) - 187
    for off in range(0, n if n > 0 else 0, 188):
        if data[off] != 0x47:
            raise ValueError(f"MPEG-TS sync byte missing at offset {off}")
        if not data[off + 1] & 0x40:  # payload_unit_start_indicator
            continue
        afc = (data[off + 3] >> 4) & 3
        p = off + 4
        if afc & 2:
            p += 1 + data[off + 4]
        if not afc & 1 or p + 14 > off + 188:
            continue
        if data[p] == 0 and data[p + 1] == 0 and data[p + 2] == 1 and 0xE0 <= data[p + 3] <= 0xEF:
            if data[p + 7] & 0x80:
                b = data[p + 9 : p + 14]
                return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1
    return None


class _Conn(asyncio.BufferedProtocol):
    """One keep-alive HTTP connection carrying one request at a time."""

    def __init__(self) -> None:
        self.parser = HttpResponseParser(None, self._on_body, self._on_end)
        self.transport = None
        self.closed = False
        self.fut: asyncio.Future | None = None
        self.keep_body = False
        self.body = bytearray()
        self.nbytes = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int):
        return _SHARED_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self.parser.feed(_SHARED, 0, nbytes)
        except HttpError as err:
            self._fail(ConnectionError(f"bad HTTP response: {err}"))

    def _on_body(self, buf, start: int, end: int) -> None:
        self.nbytes += end - start
        if self.keep_body:
            if len(self.body) + end - start > MAX_PLAYLIST:
                raise HttpError(f"playlist larger than {MAX_PLAYLIST} bytes")
            self.body += buf[start:end]

    def _on_end(self) -> None:
        fut, self.fut = self.fut, None
        if fut is not None and not fut.done():
            fut.set_result((self.parser.status, bytes(self.body) if self.keep_body else None, self.nbytes))
        if not self.parser.keep_alive:
            self.transport.close()

    def eof_received(self):
        self.parser.feed_eof()
        return False

    def _fail(self, exc: Exception) -> None:
        fut, self.fut = self.fut, None
        if fut is not None and not fut.done():
            fut.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._fail(ConnectionError(f"connection closed: {exc}" if exc else "connection closed by server"))


class HttpClient:
    """Sequential GETs over one keep-alive connection, reconnecting when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn: _Conn | None = None
        self.connects = 0

    async def get(self, path: str, keep_body: bool, timeout_s: float = 10.0,
                  headers: dict[str, str] | None = None) -> tuple[int, bytes | None, int, float]:
        """(status, body if keep_body, body bytes, latency ms from request written to response complete)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            if self.conn is None or self.conn.closed:
                _, self.conn = await loop.create_connection(_Conn, self.host, self.port)
                self.connects += 1
            c = self.conn
            c.fut = loop.create_future()
            c.keep_body = keep_body
            c.body = bytearray()
            c.nbytes = 0
            t = time.monotonic()
            c.transport.write(request_bytes(self.host, self.port, path, headers=headers))
            try:
                status, body, n = await c.fut
            except BaseException:
                c.transport.close()
                raise
        return status, body, n, (time.monotonic() - t) * 1000.0

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()


@dataclass(slots=True)
class PlayerStats:
    stream: int
    playlists: int = 0
    segments: int = 0
    bytes: int = 0
    not_found: int = 0
    errors: int = 0
    last_error: str | None = None
    missed: int = 0
    """Segments that left the playlist before this player fetched them."""
    fetched: dict[int, float] = field(default_factory=dict)
    """MSN -> monotonic time its fetch completed."""
    started_msn: int | None = None


class HlsPlayer:
    def __init__(self, host: str, port: int, path: str, stats: PlayerStats, first_seen: dict[int, float],
                 latency: dict[str, list[float]], window: tuple[float, float]) -> None:
        self.client = HttpClient(host, port)
        self.path = path
        self.stats = stats
        self.first_seen = first_seen
        self.latency = latency
        self.window = window

    def _record(self, kind: str, started: float, ms: float) -> None:
        if self.window[0] <= started <= self.window[1]:
            self.latency[kind].append(round(ms, 2))

    async def run(self, stop: asyncio.Event) -> None:
        st = self.stats
        next_msn: int | None = None
        while not stop.is_set():
            t_req = time.monotonic()
            wait = 1.0
            try:
                status, body, n, ms = await self.client.get(self.path, keep_body=True)
                st.playlists += 1
                self._record("playlist", t_req, ms)
                if status != 200:
                    st.not_found += status == 404
                    if status != 404:
                        st.errors += 1
                        st.last_error = f"playlist HTTP {status}"
                else:
                    pl = parse_media_playlist(body.decode("utf-8", "replace"))
                    now = time.monotonic()
                    for s in pl.segments:
                        if s.msn not in self.first_seen:
                            self.first_seen[s.msn] = now
                    wait = pl.target_duration_s / 2
                    if pl.segments:
                        if next_msn is None:
                            next_msn = pl.segments[-1].msn  # start at the live edge
                            st.started_msn = next_msn
                        first = pl.segments[0].msn
                        if next_msn < first:
                            st.missed += first - next_msn
                            next_msn = first
                        news = [s for s in pl.segments if s.msn >= next_msn]
                        for s in news:
                            if stop.is_set():
                                break
                            t_seg = time.monotonic()
                            sstatus, _, sn, sms = await self.client.get(resolve(self.path, s.uri), keep_body=False)
                            self._record("segment", t_seg, sms)
                            if sstatus == 200:
                                st.segments += 1
                                st.bytes += sn
                                st.fetched[s.msn] = time.monotonic()
                            else:
                                st.errors += 1
                                st.last_error = f"segment {s.msn} HTTP {sstatus}"
                            next_msn = s.msn + 1
                        if news:
                            wait = pl.segments[-1].duration_s
                    if pl.ended:
                        break
            except (OSError, TimeoutError, HttpError, PlaylistError, ConnectionError) as err:
                st.errors += 1
                st.last_error = f"{type(err).__name__}: {err}"
            delay = t_req + wait - time.monotonic()
            if delay > 0:
                await stopped_within(stop, delay)
        self.client.close()


async def run_players(cfg: dict, stop: asyncio.Event) -> dict:
    """Run cfg["count"] players until `stop`; returns the worker's result."""
    n, first, total = cfg["count"], cfg["first_index"], cfg["total_viewers"]
    t0, ramp_s, tick_s = cfg["t0"], cfg["ramp_s"], cfg["tick_s"]
    window = (cfg["window_start"], cfg["window_end"])
    first_seen: dict[int, dict[int, float]] = {}
    latency: dict[str, list[float]] = {"playlist": [], "segment": []}
    players = []
    tasks = []
    rnd = random.Random(first)

    async def start(p: HlsPlayer, at: float) -> None:
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await p.run(stop)

    for i in range(n):
        g = first + i
        s = g % cfg["stream_count"]
        st = PlayerStats(stream=s)
        p = HlsPlayer(cfg["host"], cfg["port"], cfg["paths"][s], st, first_seen.setdefault(s, {}), latency, window)
        players.append(p)
        # Spread the starts over the ramp, with jitter so reloads do not fall into lockstep.
        at = t0 + ramp_s * (g / max(1, total)) + rnd.random() * 0.5
        tasks.append(asyncio.ensure_future(start(p, at)))
    tick_late: list[float] = []
    k = 0
    while not stop.is_set() and k < cfg["max_ticks"]:
        due = t0 + k * tick_s
        delay = due - time.monotonic()
        if delay > 0 and await stopped_within(stop, delay):
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
    for p in players:
        p.client.close()
    return {
        "pid": os.getpid(),
        "players": [
            {
                "stream": p.stats.stream, "playlists": p.stats.playlists, "segments": p.stats.segments,
                "bytes": p.stats.bytes, "not_found": p.stats.not_found, "errors": p.stats.errors,
                "last_error": p.stats.last_error, "missed": p.stats.missed, "started_msn": p.stats.started_msn,
                "connects": p.client.connects, "fetched": p.stats.fetched,
            }
            for p in players
        ],
        "first_seen": {s: d for s, d in first_seen.items()},
        "latency_ms": latency,
        "tick_late_ms": tick_late,
    }


# ---------------------------------------------------------------- listing probe


class ListingProbe:
    """Polls one playlist every `interval_s` and records when each segment first appears.

    Also fetches each new segment once (on a second connection, so polling is not held up) to read
    its first video PTS. Times are time.monotonic() values."""

    def __init__(self, host: str, port: int, path: str, interval_s: float = 0.02, fetch_segments: bool = True):
        self.poller = HttpClient(host, port)
        self.fetcher = HttpClient(host, port)
        self.path = path
        self.interval_s = interval_s
        self.fetch_segments = fetch_segments
        self.started_at = 0.0
        self.first_listed_at: float | None = None
        self.first_seen: dict[int, float] = {}
        self.durations: dict[int, float] = {}
        self.first_pts: dict[int, int | None] = {}
        self.fetched_at: dict[int, float] = {}
        """MSN -> when the probe's fetch of it completed (200 only)."""
        self.target_duration_s: float | None = None
        self.errors = 0
        self.polls = 0
        self._fetch_queue: asyncio.Queue[Segment] = asyncio.Queue()

    async def run(self, stop: asyncio.Event) -> None:
        self.started_at = time.monotonic()
        fetch_task = asyncio.ensure_future(self._fetch_loop(stop)) if self.fetch_segments else None
        next_at = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    status, body, _, _ = await self.poller.get(self.path, keep_body=True, timeout_s=5)
                    self.polls += 1
                    now = time.monotonic()
                    if status == 200:
                        pl = parse_media_playlist(body.decode("utf-8", "replace"))
                        self.target_duration_s = pl.target_duration_s
                        for s in pl.segments:
                            if s.msn not in self.first_seen:
                                self.first_seen[s.msn] = now
                                self.durations[s.msn] = s.duration_s
                                if self.fetch_segments:
                                    self._fetch_queue.put_nowait(s)
                        if pl.segments and self.first_listed_at is None:
                            self.first_listed_at = now
                except (OSError, TimeoutError, HttpError, PlaylistError, ConnectionError):
                    self.errors += 1
                next_at += self.interval_s
                delay = next_at - time.monotonic()
                if delay < 0:
                    next_at = time.monotonic()
                    delay = 0
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
        finally:
            if fetch_task is not None:
                fetch_task.cancel()
            self.poller.close()
            self.fetcher.close()

    async def _fetch_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            s = await self._fetch_queue.get()
            try:
                status, body, _, _ = await self.fetcher.get(resolve(self.path, s.uri), keep_body=True, timeout_s=5)
                if status == 200:
                    self.fetched_at[s.msn] = time.monotonic()
                self.first_pts[s.msn] = ts_first_video_pts(body) if status == 200 else None
            except (OSError, TimeoutError, HttpError, ConnectionError, ValueError):
                self.first_pts[s.msn] = None


def worker_main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    install_fast_loop()
    raise_nofile_limit()

    async def main() -> dict:
        stop = asyncio.Event()
        watch_stdin_for_stop(stop)
        return await run_players(cfg, stop)

    return report_to_orchestrator(asyncio.run(main()))


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv))
