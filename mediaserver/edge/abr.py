"""The ladder a multivariant output lists (master.m3u8, cmaf.m3u8, manifest.mpd), asked of the AbrService.

`ladder(request, stream, family)` answers the renditions of a source to list, highest first: those the
service has ready (asking for them starts the stream's transcode on demand; the service waits at most
abr.wait) whose video codec the output family carries ("ts": H.264 and HEVC; "cmaf": H.264, HEVC and AV1,
as remux/ carries them). ABR absent, off for the app, asked of a rendition,
or refused (no rung below the source, a source the workers cannot decode, this node's budget spent)
lists nothing: the multivariant then offers the source alone, an honest answer that plays; a refusal is
logged once per interval per stream and reason.

`source_variant` and `rendition_variant` describe a stream as an EXT-X-STREAM-INF: BANDWIDTH measured
from the kept history (the peak bit rate of a GOP; the metadata's rates before a GOP is complete),
RESOLUTION, CODECS from the sequence headers, FRAME-RATE measured.
"""

from __future__ import annotations

import logging
import math
import time

from aiohttp import web

from ..auth.names import split_rendition
from ..hub.stream import Stream
from ..log import LogGate, event
from ..media.frames import FrameKind
from ..remux.multivariant import Variant, codecs_of
from ..transcode.ladder import CARRIED as LADDER_CARRIED
from ..transcode.service import AbrRefusal, RenditionView
from .formats import CARRIED as OUTPUT_CARRIED
from .formats import LLHLS, TS_HLS
from .keys import ABR

log = logging.getLogger(__name__)

FAMILIES = {"ts": TS_HLS, "cmaf": LLHLS}
"""Output family (transcode/ladder.py's names) -> the output format whose codecs bound it."""
TS_OVERHEAD = 1.05
"""MPEG-TS packets, PES headers and tables add about 4 % to the payload (bench/ts_mux.py)."""

_refusal_log = LogGate(60.0)  # process-wide, like the logger it rations: one line per stream and reason a minute


async def ladder(request: web.Request, stream: Stream, family: str) -> list[RenditionView]:
    """The renditions of `stream` a multivariant of `family` ("ts" or "cmaf") lists, highest first."""
    abr = request.app.get(ABR)
    key = stream.key
    if abr is None or split_rendition(key.name)[1] is not None or not abr.enabled_for(key):
        return []
    answer = await abr.renditions(key, start=True)
    if isinstance(answer, AbrRefusal):
        pending = _refusal_log.should_log((key, answer.status), time.monotonic())
        if pending:
            event(log, "abr_source_only", logging.INFO if answer.status == 404 else logging.WARNING,
                  stream=str(key), status=answer.status, reason=answer.reason, error=answer.error,
                  requests=pending)
        return []
    carried = LADDER_CARRIED[family] & OUTPUT_CARRIED[FAMILIES[family]]
    return [view for view in answer if view.codec in carried]


def source_variant(stream: Stream, uri: str, *, ts: bool) -> Variant:
    """The source as a variant: measured rate (plus TS overhead for `ts`), size and codecs."""
    info = stream.info
    peak, rate = measure(stream)
    if peak is None:
        values = info.metadata_values
        kbps = sum(_number(values.get(k)) for k in ("videodatarate", "audiodatarate"))
        peak = int(kbps * 1000) or None
    bandwidth = math.ceil((peak or 1) * (TS_OVERHEAD if ts else 1.0))
    return Variant(uri, bandwidth, _codecs(stream, stream, ts=ts), info.width or 0, info.height or 0,
                   rate or _number(info.metadata_values.get("framerate")) or None)


def rendition_variant(
    view: RenditionView, rendition: Stream | None, source: Stream, uri: str, *, ts: bool, frame_rate: float | None
) -> Variant:
    """A rendition as a variant: the service's bit rate for it, its size, its codec with the source's audio
    (no CODECS while its stream is not on this node: a viewer's request pulls it), and `frame_rate`, the
    source's (a rendition keeps the source's timestamps)."""
    bandwidth = math.ceil(view.bandwidth * (TS_OVERHEAD if ts else 1.0))
    codecs = _codecs(rendition, source, ts=ts) if rendition is not None else ()
    return Variant(uri, bandwidth, codecs, view.width, view.height, frame_rate)


def measure(stream: Stream) -> tuple[int | None, float | None]:
    """(peak bits per second over the kept GOPs, video frames per second) from the hub's history;
    None for what a complete GOP cannot tell yet."""
    starts: list[int] = []
    sizes: list[int] = []
    video_dts: list[int] = []
    for frame in stream.history():
        if frame.is_config or frame.kind == FrameKind.DATA:
            continue
        if frame.kind == FrameKind.VIDEO:
            if frame.keyframe:
                starts.append(frame.dts_ms)
                sizes.append(0)
            video_dts.append(frame.dts_ms)
        if sizes:
            sizes[-1] += frame.size
    peak = None
    for n in range(len(starts) - 1):  # the last GOP is still growing
        span = starts[n + 1] - starts[n]
        if span > 0:
            rate = 8000 * sizes[n] // span
            peak = rate if peak is None else max(peak, rate)
    # The mean step between frames near the median one: millisecond timestamps of 30 fps alternate 33 and
    # 34 ms, while a dropped frame, a repeated or a clamped timestamp would skew a plain mean.
    steps = sorted(b - a for a, b in zip(video_dts, video_dts[1:]) if b > a)
    frame_rate = None
    if steps:
        median = steps[len(steps) // 2]
        near = [step for step in steps if median / 2 <= step <= median * 1.5]
        frame_rate = 1000 * len(near) / sum(near)
    return peak, frame_rate


def _codecs(video_from: Stream, audio_from: Stream, *, ts: bool) -> tuple[str, ...]:
    """CODECS: the video config's and the (source's) audio config's, as far as the output carries them."""
    audio = audio_from.info.audio_config
    if audio is not None and ts and audio.codec != "aac":
        audio = None  # MPEG-TS HLS leaves other audio out
    codecs = codecs_of(video_from.info.video_config, audio)
    wanted = sum(f is not None for f in (video_from.info.video_config, audio))
    return codecs if len(codecs) == wanted else ()  # an incomplete CODECS misleads players: none at all


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else 0.0
