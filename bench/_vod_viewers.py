"""HLS VOD players for the VOD fan-out benchmark: many in one process on raw keep-alive sockets.

A recording's VOD playlist (`/vod/ID/index.m3u8`) lists byte ranges of one file (EXT-X-MAP and
EXT-X-BYTERANGE, RFC 8216 4.3.2.2 and 4.3.2.5). Each player plays sessions one after another, as viewers
come and go: a session loads the playlist, fetches the init range, picks a start segment at random ("various
start points": a viewer who seeks), then fetches one segment per segment duration, in order, with
`Range: bytes=A-B` on its keep-alive connection, for a random session length (or to the end of the file),
and watches what it fetched to its end before the next session: one minute of media per viewer-minute.
A segment is good when the answer is 206 with exactly the bytes asked for. A fetch that completes after the
moment its segment is due to play (the session's start + the media before it + `buffer_s`) is a stall.

Run as a worker process (`python bench/_vod_viewers.py CONFIG_JSON`), like _hls_viewers.py; it reports one
JSON line when stopped (a "stop" line or EOF on stdin).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _aio import (  # noqa: E402
    install_fast_loop, raise_nofile_limit, report_to_orchestrator, stopped_within, watch_stdin_for_stop,
)
from _hls_viewers import HttpClient, PlaylistError, resolve  # noqa: E402
from _http import HttpError  # noqa: E402


@dataclass(frozen=True, slots=True)
class RangeSegment:
    duration_s: float
    uri: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class VodPlaylist:
    map_uri: str
    map_offset: int
    map_length: int
    segments: tuple[RangeSegment, ...]
    ended: bool


def _byterange(value: str, next_offset: int) -> tuple[int, int]:
    """(offset, length) of an EXT-X-BYTERANGE / BYTERANGE value "n[@o]" (RFC 8216 4.3.2.2)."""
    length, at, offset = value.strip().strip('"').partition("@")
    try:
        n = int(length)
        o = int(offset) if at else next_offset
    except ValueError:
        raise PlaylistError(f"bad byte range {value!r}") from None
    if n <= 0 or o < 0:
        raise PlaylistError(f"bad byte range {value!r}")
    return o, n


def _attr(attrs: str, name: str) -> str | None:
    for part in attrs.split(","):
        k, _, v = part.partition("=")
        if k.strip() == name:
            return v.strip().strip('"')
    return None


def parse_vod_playlist(text: str) -> VodPlaylist:
    """A media playlist of byte ranges: its EXT-X-MAP and every segment's URI, range and duration."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaylistError("playlist does not start with #EXTM3U")
    map_uri = None
    map_range = (0, 0)
    segs: list[RangeSegment] = []
    duration = None
    pending_range: str | None = None
    next_offset = 0
    ended = False
    for line in lines[1:]:
        if line.startswith("#"):
            tag, _, value = line.partition(":")
            if tag == "#EXT-X-MAP":
                map_uri = _attr(value, "URI")
                rng = _attr(value, "BYTERANGE")
                if map_uri is None or rng is None:
                    raise PlaylistError(f"EXT-X-MAP without URI or BYTERANGE: {line[:80]!r}")
                map_range = _byterange(rng, 0)
            elif tag == "#EXTINF":
                try:
                    duration = float(value.split(",", 1)[0])
                except ValueError:
                    raise PlaylistError(f"bad EXTINF {line[:80]!r}") from None
            elif tag == "#EXT-X-BYTERANGE":
                pending_range = value
            elif tag == "#EXT-X-ENDLIST":
                ended = True
            continue
        if duration is None or pending_range is None:
            raise PlaylistError(f"segment {line[:80]!r} without EXTINF or EXT-X-BYTERANGE")
        offset, length = _byterange(pending_range, next_offset)
        segs.append(RangeSegment(duration, line, offset, length))
        next_offset = offset + length
        duration = pending_range = None
    if map_uri is None:
        raise PlaylistError("no EXT-X-MAP: not a byte-range fMP4 playlist")
    return VodPlaylist(map_uri, map_range[0], map_range[1], tuple(segs), ended)


def range_header(offset: int, length: int) -> dict[str, str]:
    return {"Range": f"bytes={offset}-{offset + length - 1}"}


@dataclass(slots=True)
class VodStats:
    sessions: int = 0
    playlists: int = 0
    segments: int = 0
    bytes: int = 0
    errors: int = 0
    wrong_answers: int = 0
    """Answers that were not 206 with exactly the bytes asked for."""
    stalls: int = 0
    last_error: str | None = None


class VodPlayer:
    def __init__(self, host: str, port: int, path: str, stats: VodStats, rnd: random.Random,
                 session_s: tuple[float, float], buffer_s: float, latency: dict[str, list[float]],
                 window: tuple[float, float]) -> None:
        self.client = HttpClient(host, port)
        self.path = path
        self.stats = stats
        self.rnd = rnd
        self.session_s = session_s
        self.buffer_s = buffer_s
        self.latency = latency
        self.window = window

    def _note(self, kind: str, started: float, ms: float) -> None:
        if self.window[0] <= started <= self.window[1]:
            self.latency[kind].append(round(ms, 2))

    async def _range(self, uri: str, offset: int, length: int, kind: str) -> bool:
        st = self.stats
        t = time.monotonic()
        status, _, n, ms = await self.client.get(resolve(self.path, uri), keep_body=False,
                                                 headers=range_header(offset, length))
        self._note(kind, t, ms)
        if status != 206 or n != length:
            st.wrong_answers += 1
            st.last_error = f"{kind} {offset}+{length}: HTTP {status}, {n} bytes"
            return False
        st.bytes += n
        return True

    async def session(self, stop: asyncio.Event) -> None:
        st = self.stats
        t = time.monotonic()
        status, body, _, ms = await self.client.get(self.path, keep_body=True)
        self._note("playlist", t, ms)
        st.playlists += 1
        if status != 200:
            st.wrong_answers += 1
            st.last_error = f"playlist HTTP {status}"
            await asyncio.sleep(1.0)
            return
        pl = parse_vod_playlist(body.decode("utf-8", "replace"))
        if not pl.segments:
            raise PlaylistError("the VOD playlist lists no segment")
        st.sessions += 1
        if not await self._range(pl.map_uri, pl.map_offset, pl.map_length, "init"):
            await asyncio.sleep(1.0)
            return
        first = self.rnd.randrange(len(pl.segments))
        length_s = self.rnd.uniform(*self.session_s)
        started = time.monotonic()
        media_s = 0.0  # media fetched so far in this session
        for seg in pl.segments[first:]:
            if stop.is_set():
                return
            if media_s >= length_s:
                break
            # Real-time pace: the next segment is fetched when the one before starts to play.
            delay = started + media_s - self.buffer_s - time.monotonic()
            if delay > 0 and await stopped_within(stop, delay):
                return
            if not await self._range(seg.uri, seg.offset, seg.length, "segment"):
                await asyncio.sleep(1.0)
                return
            st.segments += 1
            if time.monotonic() > started + media_s + self.buffer_s:
                st.stalls += 1
            media_s += seg.duration_s
        # The viewer watches what it fetched before the next session (a new viewer, or a seek): without this
        # wait each session's last `buffer_s` was fetched and never played, and a player pulled ~1.2x real time.
        rest = started + media_s - time.monotonic()
        if rest > 0:
            await stopped_within(stop, rest)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.session(stop)
            except (OSError, TimeoutError, HttpError, PlaylistError, ConnectionError) as err:
                self.stats.errors += 1
                self.stats.last_error = f"{type(err).__name__}: {err}"
                await stopped_within(stop, 1.0)
        self.client.close()


async def run_players(cfg: dict, stop: asyncio.Event) -> dict:
    n, first, total = cfg["count"], cfg["first_index"], cfg["total_viewers"]
    t0, ramp_s = cfg["t0"], cfg["ramp_s"]
    window = (cfg["window_start"], cfg["window_end"])
    latency: dict[str, list[float]] = {"playlist": [], "init": [], "segment": []}
    players = []
    tasks = []

    async def start(p: VodPlayer, at: float) -> None:
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await p.run(stop)

    for i in range(n):
        g = first + i
        p = VodPlayer(cfg["host"], cfg["port"], cfg["path"], VodStats(), random.Random(cfg["seed"] * 100003 + g),
                      (cfg["session_min_s"], cfg["session_max_s"]), cfg["buffer_s"], latency, window)
        players.append(p)
        tasks.append(asyncio.ensure_future(start(p, t0 + ramp_s * g / max(1, total))))
    await stop.wait()
    try:
        async with asyncio.timeout(5):
            await asyncio.gather(*tasks, return_exceptions=True)
    except TimeoutError:
        for t in tasks:
            t.cancel()
    for p in players:
        p.client.close()
    keys = ("sessions", "playlists", "segments", "bytes", "errors", "wrong_answers", "stalls")
    return {
        "pid": os.getpid(),
        "players": [{**{k: getattr(p.stats, k) for k in keys}, "last_error": p.stats.last_error,
                     "connects": p.client.connects} for p in players],
        "latency_ms": latency,
    }


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
