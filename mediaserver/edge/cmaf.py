"""fMP4/CMAF outputs: LL-HLS (`cmaf.m3u8`) and MPEG-DASH (`manifest.mpd`) over the same segments.

One CmafPackager per stream is a hub sink: it cuts segments and LL-HLS parts once, and both manifests
list those same bytes. A stream with video and audio also gets the muxed rendition (cmaf_mux.py:
both tracks in each part), which cmaf.m3u8 lists as its variant, so an HLS player follows one
playlist instead of two (half the blocking reloads and part requests); DASH keeps the split tracks. Blocking playlist reloads (`_HLS_msn`, `_HLS_part`) and requests for the part a
preload hint names are held until it exists, for at most three target durations (then 503); requests
too far ahead, or malformed, get 400 at once (RFC 8216bis 6.2.5.2).

With ABR, cmaf.m3u8 lists the source's muxed variant and the ladder's renditions' own muxed playlists
(../NAME@LABEL/cmaf-muxed.m3u8: a rendition carries the source's audio), or, for a source without the muxed
rendition (video only), its split video and the renditions' (../NAME@LABEL/cmaf-video.m3u8); manifest.mpd lists
one more Representation per rendition in its video AdaptationSet (files under ../NAME@LABEL/). A rendition's
packager cuts where this one does, so every variant's segment N starts at the same instant.

Files under /APP/NAME/:
  cmaf.m3u8                      multivariant playlist (the muxed variant; or video variant, audio rendition)
  cmaf-muxed.m3u8                LL-HLS media playlist of video and audio together
  cmaf-video.m3u8, cmaf-audio.m3u8   LL-HLS media playlists of each track
  manifest.mpd                   DASH, dynamic while live, static once ended
  INSTANCE-video-init-V.mp4, INSTANCE-video-N.m4s, INSTANCE-video-N.P.m4s (and audio, muxed): init, segments, parts
The instance prefix makes every file name unique to one run of the stream, so files may be cached long.

A frame or config the segmenter cannot parse, live or replayed, is skipped and counted (skipped_frames.py);
the output goes on. If the hub ends the packager after a failure, both manifests say it ended, and the
pool starts a fresh one at the next request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from aiohttp import web

from ..config import HlsConfig
from ..errors import MediaError
from ..hub.stream import Stream, StreamKey
from ..log import LogGate, event
from ..media.frames import Frame
from ..remux import dash, llhls
from ..remux.cmaf import (
    AUDIO,
    CARRIED_AUDIO,
    CARRIED_VIDEO,
    MUXED,
    VIDEO,
    CmafPart,
    CmafSegment,
    CmafSegmenter,
    parse_cmaf_name,
)
from ..remux.cmaf_mux import CmafMuxer
from ..remux.cmaf_window import CmafWindow
from ..remux.hls import format_program_date_time
from ..remux.multivariant import Variant
from ..remux.segment import CutPlan
from ..transcode.service import RenditionView
from ..transcode.ladder import SOURCE_LABEL
from .abr import ladder, measure, rendition_variant
from .common import CONFIG, PLAY_QUERY, QUERY_SLOT, cors_headers, fill_query, json_error, send_shared
from .keys import PACKAGERS, REGISTRY
from .skipped_frames import SkippedFrames

log = logging.getLogger(__name__)

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MPD_TYPE = "application/dash+xml"
SEGMENT_TYPE = "video/iso.segment"
INIT_TYPE = "video/mp4"
MEDIA_PLAYLISTS = {"cmaf-video.m3u8": VIDEO, "cmaf-audio.m3u8": AUDIO, "cmaf-muxed.m3u8": MUXED}
SPLIT_PLAYLISTS = {"cmaf-video.m3u8": VIDEO, "cmaf-audio.m3u8": AUDIO}
CMAF_MANIFESTS = frozenset({"cmaf.m3u8", "manifest.mpd", *MEDIA_PLAYLISTS})
LONG_CACHE = "public, max-age=3600, immutable"


class CmafPackager:
    """One stream's CMAF output: a hub Sink, and the source of its playlists, MPD and files."""

    format = "cmaf"
    waits_for_frames = False
    """Its window changes a few times a second (at part and segment ends it can name in advance with
    `next_output_ms`): between them a publisher's reads may merge, as for the TS packager."""

    def __init__(self, stream: Stream, cfg: HlsConfig, wall_clock: Callable[[], float] = time.time,
                 skip_log: LogGate | None = None, cuts: CutPlan | None = None, follow: CutPlan | None = None) -> None:
        """`cuts`: where a source's packager records its cuts; `follow`: the plan a rendition's follows."""
        self.key = stream.key
        self._info = stream.info
        self.cfg = cfg
        self.prefix = format(int(wall_clock() * 1000) % (36**8), "x") + "-"
        self._wall = wall_clock
        self.last_request = time.monotonic()
        self.ended_at: float | None = None
        self.segmenter = CmafSegmenter(target_duration_s=cfg.segment_duration, part_target_s=cfg.part_duration,
                                       cuts=cuts, follow=follow, muxer=CmafMuxer())
        self.window = CmafWindow(
            target_duration_s=cfg.segment_duration, part_target_s=cfg.part_duration, listed=cfg.playlist_length
        )
        self._cache: dict[str, bytes] = {}
        self._mpd: tuple[bytes, bytes] | None = None
        self._changed_at = wall_clock()
        self._version = 0
        self._changed = asyncio.Event()
        self.held: list = []
        """Requests the fast lane (fastlane.py) holds until this window changes: one list, no task each."""
        self.release_held: Callable[[CmafPackager], None] | None = None
        self._skipped_logged: set[str] = set()
        self._mismatch_logged = False
        self.skipped = SkippedFrames(stream, self.format, skip_log)

    def next_output_ms(self) -> float:
        """The decode time before which no frame changes this packager's window."""
        return self.segmenter.next_output_ms()

    def replay(self, frames: list[Frame], newest_dts: int) -> None:
        """Feed the kept history with the wall times the frames arrived (estimated), as HlsPackager."""
        now = self._wall()
        for frame in frames:
            items = self._push(frame, now - (newest_dts - frame.dts_ms) / 1000)
            if items:
                self.window.extend(items)
        self._notify()

    def _push(self, frame: Frame, wall: float) -> list[CmafPart | CmafSegment]:
        try:
            return self.segmenter.push(frame, wall)
        except MediaError as err:  # the segmenter is as it was: skip this frame, go on
            self.skipped.skip(frame, err)
            return []

    # ----- Sink --------------------------------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        items = self._push(frame, self._wall())
        if items:
            self._add(items)
        if len(self.segmenter.skipped_codecs) != len(self._skipped_logged):
            for codec in self.segmenter.skipped_codecs - self._skipped_logged:
                event(log, "cmaf_track_left_out", logging.WARNING, stream=str(self.key), codec=codec,
                      hint="CMAF carries h264, hevc, av1, aac and opus")
            self._skipped_logged = set(self.segmenter.skipped_codecs)

    def on_discontinuity(self) -> None:
        self.segmenter.discontinuity()

    def on_end(self) -> None:
        """The stream ended, or the hub detached this packager after a failure: end the manifests
        (even if the last segments cannot be closed). Safe to call twice."""
        if self.window.ended:
            return
        try:
            items = self.segmenter.finish(self._wall())
            if items:
                self.window.extend(items)
        finally:
            self.window.end()
            self.ended_at = time.monotonic()
            self._notify()

    def _add(self, items: list[CmafPart | CmafSegment]) -> None:
        self.window.extend(items)
        self._notify()
        if self.segmenter.plan_mismatches and not self._mismatch_logged:
            self._mismatch_logged = True
            log_plan_mismatch(self.key, self.format)

    def _notify(self) -> None:
        self._cache.clear()
        self._mpd = None
        self._version += 1
        self._changed_at = self._wall()
        changed = self._changed
        self._changed = asyncio.Event()
        changed.set()
        if self.held and self.release_held is not None:
            self.release_held(self)  # at once, in the read that changed the window

    @property
    def ended(self) -> bool:
        return self.window.ended

    # ----- rendering ---------------------------------------------------------------------------

    def has_muxed(self) -> bool:
        """Whether the muxed rendition has begun (it begins at the first video segment once audio came)."""
        muxed = self.window.track(MUXED)
        return muxed is not None and muxed.current_init is not None

    def multivariant(self, query: str = "", renditions: Sequence[Variant] = (), source_video: bool = True,
                     renditions_muxed: bool = False) -> bytes:
        """cmaf.m3u8; `renditions` (ABR) are listed after the source's variant (or instead of it: `source_video`
        False): muxed ones with the muxed variant (`renditions_muxed`), else video ones sharing its audio."""
        def render(query: str) -> str:
            return llhls.render_multivariant_playlist(
                self.window, video_uri="cmaf-video.m3u8", audio_uri="cmaf-audio.m3u8", query=query,
                renditions=renditions, source_video=source_video, muxed_uri="cmaf-muxed.m3u8",
                renditions_muxed=renditions_muxed)
        if renditions:
            return render(query).encode()  # the ladder may change from one request to the next
        return self._templated("mv", query, render)

    def media_playlist(self, track: str, query: str = "") -> bytes:
        # The split playlists report each other; the muxed one is a variant alone, with nothing to report.
        others = {uri: t for uri, t in SPLIT_PLAYLISTS.items()
                  if t != track and track != MUXED and self.window.track(t) is not None}
        return self._templated(track, query, lambda q: llhls.render_media_playlist(
            self.window, track, prefix=self.prefix, query=q, rendition_reports=others))

    def mpd(self, query: str = "", renditions: Sequence[dash.DashRendition] = (), source_video: bool = True) -> bytes:
        if not renditions and source_video:
            if not query:
                return self.shared_mpd()[0]
            # A viewer's token: the shared MPD's template (same publishTime), the token filled in.
            return self._templated("mpd", dash.query_in_uri(query), lambda q: dash.render_mpd(
                self.window, now=self._changed_at, prefix=self.prefix, query=q))
        # With the ladder: rendered for this request.
        return dash.render_mpd(self.window, now=self._wall(), prefix=self.prefix, query=query,
                               renditions=renditions, source_video=source_video).encode()

    def shared_mpd(self) -> tuple[bytes, bytes]:
        """The MPD without ABR renditions or a viewer's token, and its ETag: rendered once per change of the
        window, its publishTime the time of that change (an MPD with the same publishTime is the same MPD)."""
        if self._mpd is None:
            body = dash.render_mpd(self.window, now=self._changed_at, prefix=self.prefix).encode()
            self._mpd = (body, f'"{self.prefix}{self._version}"'.encode())
        return self._mpd

    def _templated(self, key: str, query: str, render: Callable[[str], str]) -> bytes:
        """render("") kept until the window changes; with a viewer's `query` (as the renderer writes it into
        URIs), render(QUERY_SLOT) kept so and the query filled in: one rendering per change, not per viewer."""
        if not query:
            body = self._cache.get(key)
            if body is None:
                body = self._cache[key] = render("").encode()
            return body
        template = self._cache.get(key + "?")
        if template is None:
            template = self._cache[key + "?"] = render(QUERY_SLOT).encode()
        return fill_query(template, query)

    def has_track(self) -> bool:
        return bool(self.window.tracks)

    def has_every_track(self) -> bool:
        """Whether every track the stream carries (and CMAF can) is in the window: players read the
        multivariant playlist and the MPD once, so a track missing then stays missing for them."""
        info = self._info
        want = {VIDEO} if info.video_codec in CARRIED_VIDEO else set()
        if info.audio_codec in CARRIED_AUDIO:
            want.add(AUDIO)
            if want == {VIDEO, AUDIO} and self.segmenter.muxer is not None:
                want.add(MUXED)
        return bool(self.window.tracks) and want <= self.window.tracks.keys()

    async def wait_change(self, deadline: float) -> bool:
        """Wait for the window to change, until the loop time `deadline`; False on time-out."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        try:
            async with asyncio.timeout(remaining):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True


def log_plan_mismatch(key: StreamKey, fmt: str) -> None:
    """Once per packager: a rendition could not follow a cut of its source (a frame it lacks, a cut the
    source made alone); its segment numbers now differ from the source's, its times stay aligned."""
    event(log, "rendition_cut_missed", logging.WARNING, stream=str(key), format=fmt,
          effect="segment numbers differ from the source's from here on; times stay aligned")


def _directive(request: web.Request, name: str) -> int | None:
    """A non-negative integer delivery directive from the query, None when absent; 400 when malformed."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:  # isdigit alone passes "²", which int() refuses
        raise json_error(400, f"{name}={raw[:32]!r} is not a whole number >= 0",
                         "LL-HLS delivery directives are _HLS_msn=N and _HLS_part=M", cors_headers(request))
    return int(raw)


def _token_query(request: web.Request) -> str:
    """The query to carry into the URIs a manifest lists: the play token the admission checked, if any."""
    return request.get(PLAY_QUERY, "")


async def serve_cmaf(request: web.Request, packager: CmafPackager, file: str) -> web.StreamResponse:
    """Every file of the CMAF outputs; the route has already found the stream's packager."""
    cfg = request.app[CONFIG].hls
    cors = cors_headers(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3 * cfg.segment_duration
    query = _token_query(request)

    if file == "cmaf.m3u8" or file == "manifest.mpd":
        # Wait (bounded) for every track, so the player learns of the audio too; after a segment's
        # time, answer with what there is.
        every_track_by = loop.time() + cfg.segment_duration
        while not packager.has_every_track() and not packager.ended:
            if not await packager.wait_change(min(deadline, every_track_by)) and loop.time() >= every_track_by:
                break
        if not packager.has_track():
            raise json_error(503, f"stream {packager.key} has no segment yet",
                             "the publisher has not sent a keyframe yet; retry in a few seconds",
                             {"Retry-After": "2", **cors})
        source = request.app[REGISTRY].get(packager.key)
        views = await ladder(request, source, "cmaf") if source is not None and not packager.ended else []
        marked = any(v.label == SOURCE_LABEL for v in views)  # a watermarked top rung replaces the source
        if file == "cmaf.m3u8":
            muxed = packager.has_muxed()
            variants = _ladder_variants(request, source, views, muxed) if source is not None else []
            return _playlist_response(packager.multivariant(query, variants, source_video=not marked,
                                                            renditions_muxed=muxed), cors)
        renditions = await _ladder_representations(request, views, min(deadline, every_track_by))
        marked = marked and any(r.label == SOURCE_LABEL for r in renditions)
        return web.Response(body=packager.mpd(query, renditions, source_video=not marked),
                            headers={"Content-Type": MPD_TYPE, "Cache-Control": "no-cache", **cors})

    track = MEDIA_PLAYLISTS.get(file)
    if track is not None:
        msn = _directive(request, "_HLS_msn")
        part = _directive(request, "_HLS_part")
        while True:
            if packager.window.track(track) is None and not packager.ended:
                readiness = llhls.Readiness.WAIT
            elif packager.window.track(track) is None:
                raise json_error(404, f"stream {packager.key} has no {track} track", "use cmaf.m3u8", cors)
            else:
                readiness = llhls.playlist_request(packager.window, track, msn, part)
            if readiness is llhls.Readiness.READY:
                return _playlist_response(packager.media_playlist(track, query), cors)
            if readiness is llhls.Readiness.BAD_REQUEST:
                raise json_error(400, f"_HLS_msn={msn} _HLS_part={part} is too far ahead of the live edge",
                                 "ask for the next segment or part the last playlist announced", cors)
            if not await packager.wait_change(deadline):
                raise json_error(503, "the requested segment or part did not appear in time",
                                 "reload the playlist without delivery directives", {"Retry-After": "1", **cors})

    if not file.startswith(packager.prefix):
        raise json_error(404, f"{file[:64]!r} is not a file of stream {packager.key}",
                         "reload cmaf.m3u8 or manifest.mpd: file names change when the stream restarts", cors)
    name = parse_cmaf_name(file[len(packager.prefix):])
    if name is None:
        raise json_error(404, f"{file[:64]!r} is not a file of stream {packager.key}", "reload the playlist", cors)
    if name.kind == "init":
        tw = packager.window.track(name.track)
        init = tw.init(name.number) if tw is not None else None
        if init is None:
            raise json_error(404, f"init segment {file[:64]!r} does not exist", "reload the playlist", cors)
        return await send_shared(request, init.data, {"Content-Type": INIT_TYPE, "Cache-Control": LONG_CACHE, **cors})
    while True:
        readiness = llhls.resource_request(packager.window, name.track, name.number, name.part)
        if readiness is llhls.Readiness.READY:
            tw = packager.window.track(name.track)
            assert tw is not None
            item = tw.segment(name.number) if name.part is None else tw.part(name.number, name.part)
            assert item is not None
            return await send_shared(request, item.data, {"Content-Type": SEGMENT_TYPE, "Cache-Control": LONG_CACHE, **cors})
        if readiness is llhls.Readiness.GONE:
            raise json_error(404, f"{file[:64]!r} is not (or no longer) available",
                             "reload the playlist: segments expire as the live window slides", cors)
        if readiness is llhls.Readiness.BAD_REQUEST:
            raise json_error(400, f"{file[:64]!r} is too far ahead of the live edge",
                             "ask for the part the preload hint names", cors)
        if not await packager.wait_change(deadline):
            raise json_error(503, f"{file[:64]!r} did not appear in time", "reload the playlist", {"Retry-After": "1", **cors})


def _ladder_variants(request: web.Request, source: Stream, views: list[RenditionView], muxed: bool) -> list[Variant]:
    """The renditions as cmaf.m3u8 variants: ../NAME@LABEL/cmaf-muxed.m3u8 (`muxed`: each carries the source's
    audio in its parts) or ../NAME@LABEL/cmaf-video.m3u8 (with the source's audio group)."""
    registry = request.app[REGISTRY]
    frame_rate = measure(source)[1] if views else None
    playlist = "cmaf-muxed.m3u8" if muxed else "cmaf-video.m3u8"
    return [rendition_variant(view, registry.get(view.key), source, f"../{view.key.name}/{playlist}",
                              ts=False, frame_rate=frame_rate) for view in views]


async def _ladder_representations(
    request: web.Request, views: list[RenditionView], deadline: float
) -> list[dash.DashRendition]:
    """The renditions as Representations: their packagers (started now if need be: they follow the
    source's cuts) once each has a video segment, waiting for that until the loop time `deadline`."""
    pool = request.app[PACKAGERS]
    out = []
    for view in views:
        packager = pool.cmaf(view.key)
        if packager is None:
            continue
        while not _has_video_segment(packager) and not packager.ended:
            if not await packager.wait_change(deadline):
                break
        if _has_video_segment(packager):
            out.append(dash.DashRendition(view.label, packager.window, f"../{view.key.name}/{packager.prefix}"))
    return out


def _has_video_segment(packager: CmafPackager) -> bool:
    video = packager.window.track(VIDEO)
    return video is not None and video.last_sequence is not None


def _playlist_response(body: bytes, cors: dict[str, str]) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": PLAYLIST_TYPE, "Cache-Control": "no-cache", **cors})


async def serve_time(request: web.Request) -> web.Response:
    """UTC time for DASH players (the MPD's UTCTiming, urn:mpeg:dash:utc:http-iso:2014)."""
    return web.Response(
        text=format_program_date_time(time.time()),
        headers={"Content-Type": "text/plain", "Cache-Control": "no-store", **cors_headers(request)},
    )
