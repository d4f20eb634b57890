"""An HLS client for tests: parse media playlists, check the rules of RFC 8216, poll and fetch segments.

`HlsPoller` polls a playlist like a player does, fetches every segment once as it appears, and keeps
every playlist it saw so `check_sliding_window` can verify how they followed each other.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp
from multidict import CIMultiDict

PLAYLIST_CONTENT_TYPES = ("application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl")


@dataclass(frozen=True, slots=True)
class PlaylistSegment:
    uri: str
    duration_s: float
    sequence: int
    discontinuity: bool


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    text: str
    version: int | None
    target_duration: int | None
    media_sequence: int
    segments: tuple[PlaylistSegment, ...]
    ended: bool
    discontinuity_sequence: int = 0

    @property
    def last_sequence(self) -> int | None:
        return self.segments[-1].sequence if self.segments else None


def parse_media_playlist(text: str) -> MediaPlaylist:
    """Parse the tags a live media playlist uses; raise AssertionError on lines a player would reject."""
    lines = [line.strip() for line in text.splitlines()]
    assert lines and lines[0] == "#EXTM3U", f"playlist must start with #EXTM3U: {text[:200]!r}"
    version = target = None
    media_sequence = 0
    disc_sequence = 0
    ended = False
    segments: list[PlaylistSegment] = []
    pending_duration: float | None = None
    pending_disc = False
    for line in lines[1:]:
        if not line:
            continue
        if line.startswith("#EXT-X-VERSION:"):
            version = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            target = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            media_sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            disc_sequence = int(line.split(":", 1)[1])
        elif line == "#EXT-X-DISCONTINUITY":
            pending_disc = True
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line.startswith("#EXTINF:"):
            assert pending_duration is None, f"two #EXTINF without a URI between them: {text!r}"
            pending_duration = float(line.split(":", 1)[1].split(",", 1)[0])
        elif line.startswith("#"):
            continue  # other tags (independent segments, program date time, ...) are allowed
        else:
            assert pending_duration is not None, f"segment URI {line!r} has no #EXTINF"
            assert not ended, "segments after #EXT-X-ENDLIST"
            segments.append(PlaylistSegment(line, pending_duration, media_sequence + len(segments), pending_disc))
            pending_duration = None
            pending_disc = False
    assert pending_duration is None, "#EXTINF at the end without a URI"
    return MediaPlaylist(text, version, target, media_sequence, tuple(segments), ended, disc_sequence)


def check_playlist_rules(pl: MediaPlaylist, max_segments: int | None = None) -> None:
    """RFC 8216 rules a player relies on (4.3.3.1, 4.3.2.1) and the server's own window limit."""
    assert pl.target_duration is not None, "#EXT-X-TARGETDURATION is required"
    for seg in pl.segments:
        # 4.3.3.1: each EXTINF, rounded to the nearest integer, is <= the target duration.
        assert math.floor(seg.duration_s + 0.5) <= pl.target_duration, (
            f"segment {seg.uri} lasts {seg.duration_s} s, above the target duration {pl.target_duration}"
        )
        assert seg.duration_s > 0, f"segment {seg.uri} has duration {seg.duration_s}"
    uris = [s.uri for s in pl.segments]
    assert len(set(uris)) == len(uris), f"a segment URI is listed twice: {uris}"
    if max_segments is not None:
        assert len(pl.segments) <= max_segments, f"{len(pl.segments)} segments listed; the window is {max_segments}"


def check_sliding_window(history: list[MediaPlaylist]) -> None:
    """Successive playlists must agree: a media sequence number always names the same URI and duration,
    the media sequence never goes back, and once #EXT-X-ENDLIST appears it stays (RFC 8216 6.2.2)."""
    by_sequence: dict[int, PlaylistSegment] = {}
    last_media_sequence = -1
    ended = False
    for pl in history:
        assert pl.media_sequence >= last_media_sequence, (
            f"#EXT-X-MEDIA-SEQUENCE went back from {last_media_sequence} to {pl.media_sequence}"
        )
        last_media_sequence = pl.media_sequence
        assert not (ended and not pl.ended), "#EXT-X-ENDLIST disappeared from a later playlist"
        ended = pl.ended
        for seg in pl.segments:
            seen = by_sequence.setdefault(seg.sequence, seg)
            assert (seen.uri, seen.duration_s) == (seg.uri, seg.duration_s), (
                f"media sequence {seg.sequence} was {seen.uri} ({seen.duration_s} s), now {seg.uri} ({seg.duration_s} s)"
            )


@dataclass(slots=True)
class FetchedSegment:
    sequence: int
    uri: str
    url: str
    duration_s: float
    status: int
    headers: CIMultiDict[str]
    data: bytes


@dataclass(slots=True)
class HlsPoller:
    """Polls a media playlist and fetches each new segment once."""

    url: str
    session: aiohttp.ClientSession
    watch: Callable[[], None] | None = None
    """Called between polls; raises to end polling early (the server or the publisher died)."""
    interval_s: float = 0.5
    history: list[MediaPlaylist] = field(default_factory=list)
    playlist_responses: list[tuple[int, CIMultiDict[str]]] = field(default_factory=list)
    segments: dict[int, FetchedSegment] = field(default_factory=dict)

    @property
    def latest(self) -> MediaPlaylist | None:
        return self.history[-1] if self.history else None

    async def fetch_playlist(self) -> MediaPlaylist | None:
        """One GET of the playlist; None while it answers 404 (stream not live or not packaged yet)."""
        async with self.session.get(self.url) as resp:
            body = await resp.text()
            self.playlist_responses.append((resp.status, CIMultiDict(resp.headers)))
            if resp.status == 404:
                return None
            assert resp.status == 200, f"GET {self.url} answered {resp.status}: {body[:300]!r}"
        pl = parse_media_playlist(body)
        self.history.append(pl)
        return pl

    async def fetch_new_segments(self, pl: MediaPlaylist) -> list[FetchedSegment]:
        new = []
        for seg in pl.segments:
            if seg.sequence in self.segments:
                continue
            url = urljoin(self.url, seg.uri)
            async with self.session.get(url) as resp:
                data = await resp.read()
                fetched = FetchedSegment(seg.sequence, seg.uri, url, seg.duration_s, resp.status, CIMultiDict(resp.headers), data)
            self.segments[seg.sequence] = fetched
            new.append(fetched)
        return new

    async def poll_until(self, predicate, timeout_s: float, fetch_segments: bool = True) -> MediaPlaylist:
        """Poll until predicate(playlist) holds; fails the test with the last playlist on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            pl = await asyncio.wait_for(self.fetch_playlist(), timeout=5)
            if pl is not None:
                if fetch_segments:
                    await asyncio.wait_for(self.fetch_new_segments(pl), timeout=10)
                if predicate(pl):
                    return pl
            if self.watch is not None:
                self.watch()
            if time.monotonic() >= deadline:
                last = self.latest.text if self.latest else f"no playlist (statuses {self.playlist_responses[-3:]})"
                raise AssertionError(f"{self.url}: condition not met within {timeout_s} s; last playlist:\n{last}")
            await asyncio.sleep(self.interval_s)
