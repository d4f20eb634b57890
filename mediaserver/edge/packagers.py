"""Packagers: per-stream HLS segmenters fed synchronously by the hub, segments kept in memory.

A packager starts when its format is first asked for and replays the media the hub keeps, so the
first viewer gets a full playlist at once; it stops when nobody asks for a while. It follows the stream
through publisher reconnects (a discontinuity) and, when the stream ends, flushes the last segment, marks
the playlist ended and stays `ended_linger` seconds so players see EXT-X-ENDLIST before the memory is
released.

Bad media never stops a packager: a frame it cannot parse, live or replayed, is skipped and counted
(skipped_frames.py). A packager that fails anyway (a bug) is ended by the hub; its playlist gets
EXT-X-ENDLIST and the pool replaces it at the next request, since its stream is still live.

The playlist is rendered once per change and served as the same bytes to every viewer.

Renditions (ABR, streams named STREAM@LABEL) are cut where their source is cut (remux/segment.py
CutPlan): every source packager records its cuts, and a rendition's packager of the same format follows
them, so segment N of every rendition starts at the same instant. Asking for a rendition's packager
starts its source's (replaying the source's history first, so the plan reaches back as far as the
rendition's own history) and keeps it alive as long as the rendition's is asked for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..config import HlsConfig
from ..errors import MediaError
from ..hub.registry import StreamRegistry
from ..auth.names import split_rendition
from ..hub.stream import Stream, StreamKey
from ..log import LogGate, event
from ..media.frames import Frame, FrameKind
from ..remux.hls import SegmentWindow, TsSegmenter, render_media_playlist
from ..remux.segment import CutPlan, Segment
from .cmaf import CmafPackager, log_plan_mismatch
from .common import QUERY_SLOT, fill_query
from .sendfile import MemFile, mem_file
from .skipped_frames import SkippedFrames

log = logging.getLogger(__name__)



class HlsPackager:
    """One stream's MPEG-TS HLS: a Sink of the hub, and the source of its playlist and segments."""

    def __init__(self, stream: Stream, cfg: HlsConfig, wall_clock: Callable[[], float] = time.time,
                 skip_log: LogGate | None = None, cuts: CutPlan | None = None, follow: CutPlan | None = None) -> None:
        """`cuts`: where a source's packager records its cuts; `follow`: the plan a rendition's follows."""
        self.key = stream.key
        self.cfg = cfg
        self.instance = format(int(wall_clock() * 1000) % (36**8), "x")
        self._wall = wall_clock
        self.segmenter = TsSegmenter(target_duration_s=cfg.segment_duration, cuts=cuts, follow=follow)
        self.window = SegmentWindow(cfg.playlist_length)
        self.ended = False
        self.ended_at: float | None = None
        self.last_request = time.monotonic()
        self._playlist: bytes | None = None
        self._template: bytes | None = None
        self._files: dict[int, MemFile | None] = {}
        """Kept segments' memfd copies, by sequence (fast-lane viewers get them with os.sendfile)."""
        self._version = 0
        self.playlist_etag = b'"0"'
        """The ETag of the playlist as it is now: one per change of the window."""
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._skipped_logged: set[str] = set()
        self._mismatch_logged = False
        self.skipped = SkippedFrames(stream, self.format, skip_log)

    format = "hls"
    waits_for_frames = False
    """Its playlist changes once a segment (seconds), at a frame it can name in advance (`next_output_ms`):
    until then a publisher's reads may merge widely, which would otherwise cost the server (a wakeup and a
    read per TCP segment of every stream) more than the packaging itself."""

    def next_output_ms(self) -> float:
        """The decode time before which no frame changes this packager's output."""
        return self.segmenter.next_cut_ms()

    def replay(self, frames: list[Frame], newest_dts: int) -> None:
        """Feed the kept history, each frame stamped with the wall time it arrived (estimated from
        the newest frame), so program date times stay true."""
        now = self._wall()
        for frame in frames:
            self._push(frame, now - (newest_dts - frame.dts_ms) / 1000)

    def _push(self, frame: Frame, wall: float) -> None:
        try:
            segments = self.segmenter.push(frame, wall)
        except MediaError as err:  # the segmenter is as it was: skip this frame, go on
            self.skipped.skip(frame, err)
            return
        for segment in segments:
            self._add(segment)

    # ----- Sink --------------------------------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        self._push(frame, self._wall())
        skipped = self.segmenter.skipped_codecs
        if len(skipped) != len(self._skipped_logged):
            for codec in skipped - self._skipped_logged:
                event(log, "hls_track_left_out", logging.WARNING, stream=str(self.key), codec=codec,
                      hint="MPEG-TS HLS carries h264, hevc and aac; cmaf.m3u8 and manifest.mpd carry more")
            self._skipped_logged = set(skipped)

    def on_discontinuity(self) -> None:
        self.segmenter.discontinuity()

    def on_end(self) -> None:
        """The stream ended, or the hub detached this packager after a failure: end the playlist
        (even if the last segment cannot be closed). Safe to call twice."""
        if self.ended:
            return
        try:
            last = self.segmenter.finish(self._wall())
            if last is not None:
                self._add(last)
        finally:
            self.ended = True
            self.ended_at = time.monotonic()
            self._invalidate()
            self._ready.set()

    # ----- serving -----------------------------------------------------------------------------

    def _add(self, segment: Segment) -> None:
        self.window.add(segment)
        files = self._files
        if files:
            oldest = next(iter(self.window)).sequence
            for sequence in [s for s in files if s < oldest]:
                del files[sequence]  # left the window: its file closes with its last reference
        self._invalidate()
        self._ready.set()
        if self.segmenter.plan_mismatches and not self._mismatch_logged:
            self._mismatch_logged = True
            log_plan_mismatch(self.key, self.format)

    def _invalidate(self) -> None:
        self._playlist = None
        self._template = None
        self._version += 1
        self.playlist_etag = f'"{self.instance}-{self._version}"'.encode()
        changed = self._changed
        self._changed = asyncio.Event()
        changed.set()

    def playlist(self, query: str = "") -> bytes:
        """The playlist, shared by every viewer; with a viewer's play-token `query` carried into each
        segment URI, filled into a template rendered once per change (a render per request cost 72 µs)."""
        if query:
            if self._template is None:
                self._template = self._render(QUERY_SLOT)
            return fill_query(self._template, query)
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

    def segment_file(self, sequence: int) -> MemFile | None:
        """The memfd copy of a kept segment, made at its first request (a segment nobody fetches costs no
        second copy); None when hls.sendfile_segments is off or memfd is missing."""
        files = self._files
        if sequence in files:
            return files[sequence]
        segment = self.window.get(sequence)
        if segment is None or not self.cfg.sendfile_segments:
            return None
        file = files[sequence] = mem_file(segment.data)
        return file

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
    """Owns every stream's packagers. A packager starts when its format is first asked for, replaying
    the media the hub keeps (`hub` history) so that first viewer gets a full playlist at once; it stops
    after `idle_timeout` without requests, and an ended stream's packager lingers `ended_linger` so
    players see the end. A published stream nobody watches over HLS or DASH costs no packaging."""

    def __init__(self, registry: StreamRegistry, cfg: HlsConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.cfg = cfg
        self.clock = clock
        self._hls: dict[StreamKey, HlsPackager] = {}
        self._cmaf: dict[StreamKey, CmafPackager] = {}
        self._plans: dict[tuple[str, StreamKey], CutPlan] = {}
        """Each source packager's cuts, by (format, stream): what its renditions' packagers follow."""
        self._sweeper: asyncio.TimerHandle | None = None
        self._skip_log = LogGate()  # shared, so a restarted packager does not log its stream's skips anew
        self.on_released: list[Callable[[], None]] = []
        """Called after packagers left the pool (their segments can be freed)."""
        registry.on_stream_started.append(self._forget_ended)

    def __len__(self) -> int:
        return len(self._hls) + len(self._cmaf)

    def hls(self, key: StreamKey) -> HlsPackager | None:
        """The stream's MPEG-TS packager, started now if the stream is live; None if there is none."""
        return self._get(key, self._hls, HlsPackager)

    def cmaf(self, key: StreamKey) -> CmafPackager | None:
        """The stream's fMP4 packager (LL-HLS and DASH), started now if the stream is live."""
        return self._get(key, self._cmaf, CmafPackager)

    def running_hls(self, key: StreamKey) -> HlsPackager | None:
        """The stream's MPEG-TS packager if one runs and has not ended (a request for it counts as one for
        the idle timeout); None otherwise, and nothing is started: the full `hls` does that."""
        return self._peek(key, self._hls)

    def running_cmaf(self, key: StreamKey) -> CmafPackager | None:
        """As `running_hls`, for the fMP4 packager."""
        return self._peek(key, self._cmaf)

    def _peek(self, key: StreamKey, table: dict):
        packager = table.get(key)
        if packager is None or packager.ended:
            return None
        packager.last_request = self.clock()
        return packager

    def _get(self, key: StreamKey, table: dict, factory) -> HlsPackager | CmafPackager | None:
        follow = None
        source_name, label = split_rendition(key.name)
        if label is not None:
            # A rendition: its source's packager leads (started and kept alive with it).
            source = self._get(StreamKey(key.app, source_name), table, factory)
            if source is not None:
                follow = self._plans.get((factory.format, source.key))
        packager = self._running(key, table) or self._start(key, table, factory, follow)
        if packager is not None:
            packager.last_request = self.clock()
        return packager

    def _running(self, key: StreamKey, table: dict) -> HlsPackager | CmafPackager | None:
        """The stream's packager, unless it ended while its stream is still live: the hub ended it
        after a failure, and a fresh one takes its place (an ended stream's lingers as it is)."""
        packager = table.get(key)
        if packager is None or not packager.ended:
            return packager
        stream = self.registry.get(key)
        if stream is None or stream.ended:
            return packager
        del table[key]
        stream.remove_sink(packager)
        event(log, "packager_stop", logging.WARNING, stream=str(key), format=packager.format, reason="failed",
              action="a fresh packager starts")
        return None

    def _start(self, key: StreamKey, table: dict, factory, follow: CutPlan | None) -> HlsPackager | CmafPackager | None:
        if not self.cfg.enabled:
            return None
        stream = self.registry.get(key)
        if stream is None or stream.ended:
            return None
        # Every packager records its cuts (a few per minute) for renditions that may come to follow them;
        # a fresh one after a failure writes on in the same plan.
        cuts = self._plans.setdefault((factory.format, key), CutPlan()) if follow is None else None
        # Replay skips bad frames itself, so a replay that fails is a bug: then start afresh with the
        # current configs only (output from the next keyframe on), rather than fail the request.
        configs = [f for f in stream.info.headers() if f.kind != FrameKind.DATA]
        for history in (stream.history(), configs, []):
            packager = factory(stream, self.cfg, skip_log=self._skip_log, cuts=cuts, follow=follow)
            try:
                packager.replay(history, stream.gop.newest_dts)
                break
            except Exception:
                log.exception("packager replay failed; stream %s starts again with less history", key)
        stream.add_sink(packager)
        table[key] = packager
        event(log, "packager_start", stream=str(key), format=packager.format, replayed_frames=len(history),
              aligned=follow is not None)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_S, self._sweep)
        return packager

    def _sweep(self) -> None:
        """Stop packagers nobody asked for lately and release ended ones after their linger."""
        self._sweeper = None
        now = self.clock()
        released = 0
        for table in (self._hls, self._cmaf):
            for key, packager in list(table.items()):
                if packager.ended:
                    if now - (packager.ended_at or now) >= self.cfg.ended_linger:
                        del table[key]
                        self._plans.pop((packager.format, key), None)
                        released += 1
                elif now - packager.last_request >= self.cfg.idle_timeout:
                    stream = self.registry.get(key)
                    if stream is not None:
                        stream.remove_sink(packager)
                    del table[key]
                    self._plans.pop((packager.format, key), None)
                    released += 1
                    event(log, "packager_stop", stream=str(key), format=packager.format, reason="idle")
        if released:
            for hook in self.on_released:
                hook()
        if self._hls or self._cmaf:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_S, self._sweep)

    def _forget_ended(self, stream: Stream) -> None:
        """A stream starts again under a name whose last run still lingers: its viewers get the new run."""
        for table in (self._hls, self._cmaf):
            old = table.get(stream.key)
            if old is not None and old.ended:
                del table[stream.key]
                self._plans.pop((old.format, stream.key), None)  # the new run's times start afresh

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._hls.clear()
        self._cmaf.clear()
        self._plans.clear()



_SWEEP_S = 5.0
