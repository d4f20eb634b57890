"""Packagers: per-stream HLS segmenters fed synchronously by the hub, segments kept in memory.

Segmenting costs little, so a packager starts with every stream (a hub sink) and the first HLS viewer
gets a full playlist at once. It follows the stream through publisher reconnects (a discontinuity) and,
when the stream ends, flushes the last segment, marks the playlist ended and stays `ended_linger`
seconds so players see EXT-X-ENDLIST before the memory is released.

The playlist is rendered once per change and served as the same bytes to every viewer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..config import HlsConfig
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..log import event
from ..media.frames import Frame
from ..remux.hls import SegmentWindow, TsSegmenter, render_media_playlist
from ..remux.segment import Segment
from .cmaf import CmafPackager

log = logging.getLogger(__name__)


class HlsPackager:
    """One stream's MPEG-TS HLS: a Sink of the hub, and the source of its playlist and segments."""

    def __init__(self, stream: Stream, cfg: HlsConfig, wall_clock: Callable[[], float] = time.time) -> None:
        self.key = stream.key
        self.cfg = cfg
        self.instance = format(int(wall_clock() * 1000) % (36**8), "x")
        self._wall = wall_clock
        self.segmenter = TsSegmenter(target_duration_s=cfg.segment_duration)
        self.window = SegmentWindow(cfg.playlist_length)
        self.ended = False
        self.ended_at: float | None = None
        self._playlist: bytes | None = None
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._skipped_logged: set[str] = set()

    # ----- Sink --------------------------------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        for segment in self.segmenter.push(frame, self._wall()):
            self._add(segment)
        skipped = self.segmenter.skipped_codecs
        if len(skipped) != len(self._skipped_logged):
            for codec in skipped - self._skipped_logged:
                event(log, "hls_track_left_out", logging.WARNING, stream=str(self.key), codec=codec,
                      hint="MPEG-TS HLS carries h264, hevc and aac; cmaf.m3u8 and manifest.mpd carry more")
            self._skipped_logged = set(skipped)

    def on_discontinuity(self) -> None:
        self.segmenter.discontinuity()

    def on_end(self) -> None:
        last = self.segmenter.finish(self._wall())
        if last is not None:
            self._add(last)
        self.ended = True
        self.ended_at = time.monotonic()
        self._invalidate()
        self._ready.set()

    # ----- serving -----------------------------------------------------------------------------

    def _add(self, segment: Segment) -> None:
        self.window.add(segment)
        self._invalidate()
        self._ready.set()

    def _invalidate(self) -> None:
        self._playlist = None
        changed = self._changed
        self._changed = asyncio.Event()
        changed.set()

    def playlist(self, query: str = "") -> bytes:
        if query:
            return self._render(query)
        if self._playlist is None:
            self._playlist = self._render("")
        return self._playlist

    def _render(self, query: str) -> bytes:
        text = render_media_playlist(
            self.window,
            target_duration_s=self.cfg.segment_duration,
            ended=self.ended,
            uri=lambda seg: f"{self.instance}-{seg.sequence}.ts" + (f"?{query}" if query else ""),
        )
        return text.encode()

    def segment(self, name: str) -> Segment | None:
        """The segment named `INSTANCE-SEQUENCE.ts`, if still kept."""
        prefix, sep, rest = name.partition("-")
        if not sep or prefix != self.instance or not rest.endswith(".ts"):
            return None
        number = rest[:-3]
        if not number.isdigit() or len(number) > 12:
            return None
        return self.window.get(int(number))

    @property
    def has_segments(self) -> bool:
        return len(self.window) > 0

    async def wait_ready(self, timeout: float) -> bool:
        """Wait (bounded) for the first segment, so a viewer arriving at the start gets a playable
        playlist rather than an error."""
        if self._ready.is_set():
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True


class PackagerPool:
    """Owns every stream's packager: created when a stream starts, dropped after it ended and lingered."""

    def __init__(self, registry: StreamRegistry, cfg: HlsConfig) -> None:
        self.cfg = cfg
        self._hls: dict[StreamKey, HlsPackager] = {}
        self._cmaf: dict[StreamKey, CmafPackager] = {}
        self._linger: dict[StreamKey, asyncio.TimerHandle] = {}
        if cfg.enabled:
            registry.on_stream_started.append(self._start)
            registry.on_stream_ended.append(self._ended)

    def __len__(self) -> int:
        return len(self._hls) + len(self._cmaf)

    def hls(self, key: StreamKey) -> HlsPackager | None:
        return self._hls.get(key)

    def cmaf(self, key: StreamKey) -> CmafPackager | None:
        return self._cmaf.get(key)

    def _start(self, stream: Stream) -> None:
        handle = self._linger.pop(stream.key, None)
        if handle is not None:
            handle.cancel()
        packager = HlsPackager(stream, self.cfg)
        self._hls[stream.key] = packager
        stream.add_sink(packager)
        # The fMP4 flavour (LL-HLS and DASH) costs about a fifth of the TS one per frame
        # (bench/fmp4_mux.py), so it runs for every stream too and its first viewer starts at once.
        cmaf = CmafPackager(stream, self.cfg, packager.instance)
        self._cmaf[stream.key] = cmaf
        stream.add_sink(cmaf)

    def _ended(self, stream: Stream) -> None:
        packager = self._hls.get(stream.key)
        if packager is None:
            return
        loop = asyncio.get_running_loop()
        self._linger[stream.key] = loop.call_later(self.cfg.ended_linger, self._drop, stream.key, packager)

    def _drop(self, key: StreamKey, packager: HlsPackager) -> None:
        self._linger.pop(key, None)
        if self._hls.get(key) is packager:
            del self._hls[key]
            self._cmaf.pop(key, None)

    def close(self) -> None:
        for handle in self._linger.values():
            handle.cancel()
        self._linger.clear()
        self._hls.clear()
        self._cmaf.clear()
