"""MPEG-DASH: the MPD that lists a CmafWindow's segments, the very files the LL-HLS playlists list.

One AdaptationSet per track (video, audio), each with one Representation and a SegmentTemplate:
`initialization` names the track's init of that Period, `media` is "{track}-$Number$.m4s" (the
HLS name of the same segment: $Number$ is the media sequence number) and a SegmentTimeline gives
every listed segment's decode time (S@t, from tfdt) and duration (S@d) in the track's timescale.

Live (type="dynamic", profiles isoff-live and CMAF, DASH-IF IOP 4.3):
- availabilityStartTime is the wall clock at the stream's first timeline anchor plus a small margin
  (`availability_margin_s`, the time a segment takes to be cut and listed), and stays fixed for the
  stream's life. Each Timeline (cmaf.py) is a Period: Period@start is its anchor's wall
  time minus availabilityStartTime and presentationTimeOffset its anchor's decode time, so
  AST + Period@start + (S@t + S@d - PTO) / timescale is the wall time at which the segment ended,
  i.e. when it became available. A discontinuity (new publisher, new codec config) starts a new
  Period with the new init.
- publishTime is `now`; minimumUpdatePeriod and minBufferTime are the target duration;
  timeShiftBufferDepth covers the listed segments; suggestedPresentationDelay defaults to three
  target durations and at least 4 s (DASH-IF IOP 4.3.3.2.2: with a SegmentTimeline a player learns of a
  segment only at its next MPD refresh, so three 1 s segments leave it under a second of buffer at
  times); maxSegmentDuration is the longest segment seen.
- A UTCTiming element (urn:mpeg:dash:utc:http-iso:2014) points at `utc_timing_url`, by default
  "/time": the edge must answer GET there with the current UTC time as ISO 8601 text
  ("2024-05-01T12:00:00.250Z", what hls.format_program_date_time writes), so players (dash.js)
  compute segment availability on the server's clock, not the viewer's.
Ended (window.ended): type="static", Periods back to back from 0 and a mediaPresentationDuration.

ABR: each rendition's video track (`DashRendition`, its own CmafWindow, cut where the source's is,
remux/segment.py) is one more Representation in the video AdaptationSet, with its own SegmentTemplate
(its files live under its own stream's folder: the caller's `prefix` for it is e.g. "../demo@360p/ID-").
Its segments go to the Period whose timeline covers their start; since renditions keep the source's
times and numbers, the same presentationTimeOffset places them at the same instants as the source's.

Nothing here reads a clock or touches a socket; URIs are cmaf.py's names behind the caller's
`prefix`, with `query` appended.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from ..errors import UsageError
from .cmaf import AUDIO, VIDEO, CmafSegment, Timeline, init_name
from .cmaf_window import CmafTrackWindow, CmafWindow
from .hls import format_program_date_time

PROFILES = "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019"
UTC_TIMING_SCHEME = "urn:mpeg:dash:utc:http-iso:2014"
DEFAULT_UTC_TIMING_URL = "/time"
CHANNEL_CONFIGURATION_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"


@dataclass(frozen=True, slots=True)
class DashRendition:
    """A rendition's video track, listed as one more Representation of the video AdaptationSet."""

    label: str
    window: CmafWindow
    prefix: str
    """What goes before its file names: a path into its own stream's folder and its packager's prefix."""


@dataclass(frozen=True, slots=True)
class _TrackPeriod:
    track: str
    segments: list[CmafSegment]


# DASH-IF IOP 4.3.3.2.2: the presentation delay is two to four segment durations, and not under 4 s.
MIN_PRESENTATION_DELAY_S = 4.0


def render_mpd(
    window: CmafWindow,
    *,
    now: float,
    prefix: str = "",
    query: str = "",
    utc_timing_url: str = DEFAULT_UTC_TIMING_URL,
    suggested_presentation_delay_s: float | None = None,
    minimum_update_period_s: float | None = None,
    availability_margin_s: float = 0.2,
    renditions: Sequence[DashRendition] = (),
    source_video: bool = True,
) -> str:
    """The MPD for `window` at wall time `now` (unix seconds): dynamic while live, static once ended.
    `renditions` (ABR) join the video AdaptationSet of each Period; with `source_video` False they replace
    the source's own video Representation where a Period has any."""
    for text in (prefix, query, utc_timing_url, *(r.prefix for r in renditions)):
        if any(ord(c) < 0x20 or c == "\x7f" for c in text):
            raise UsageError(f"MPD URI part {text!r} holds a control character")
    suffix = f"?{query}" if query else ""
    target = window.target_duration_s
    periods = _periods(window)
    dynamic = not window.ended
    longest = max((tw.max_duration_s for tw in window.tracks.values()), default=target)
    mpd = [
        'xmlns="urn:mpeg:dash:schema:mpd:2011"',
        f'profiles="{PROFILES}"',
        f'type="{"dynamic" if dynamic else "static"}"',
        f'minBufferTime="{_duration(target)}"',
        f'maxSegmentDuration="{_duration(max(longest, target))}"',
    ]
    starts: dict[int, float] = {}
    total = 0.0
    if dynamic:
        first = window.first_timeline
        # A segment is only listed once the frame after it arrives (and audio waits for the video cut),
        # so announce availability a little after the segment's media ends, never before it exists.
        anchor = first.anchor_wall if first is not None else now
        ast = anchor + availability_margin_s
        previous = 0.0
        for timeline, _ in periods:
            previous = starts[timeline.index] = max(previous, timeline.anchor_wall - anchor)
        depth = max((sum(s.duration_s for s in tw.listed) for tw in window.tracks.values()), default=0.0)
        delay = suggested_presentation_delay_s
        if delay is None:
            delay = max(3 * target, MIN_PRESENTATION_DELAY_S)
        update = target if minimum_update_period_s is None else minimum_update_period_s
        mpd += [
            f'availabilityStartTime="{format_program_date_time(ast)}"',
            f'publishTime="{format_program_date_time(now)}"',
            f'minimumUpdatePeriod="{_duration(update)}"',
            f'timeShiftBufferDepth="{_duration(max(depth, target))}"',
            f'suggestedPresentationDelay="{_duration(delay)}"',
        ]
    else:
        for timeline, tracks in periods:
            starts[timeline.index] = total
            total += max(sum(s.duration_s for s in tp.segments) for tp in tracks)
        mpd.append(f'mediaPresentationDuration="{_duration(total)}"')
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<MPD " + " ".join(mpd) + ">"]
    if not periods:
        lines.append(f'  <Period id="p0" start="{_duration(0)}"/>')
    # Live, a Period's presentation time 0 is its timeline's anchor; static, its earliest segment.
    zeros = [timeline.anchor_ms if dynamic else min(tp.segments[0].start_ms for tp in tracks)
             for timeline, tracks in periods]
    ladder = _renditions_by_period(renditions, zeros)
    for number, (timeline, tracks) in enumerate(periods):
        lines.append(f'  <Period id="p{timeline.index}" start="{_duration(starts[timeline.index])}">')
        for adaptation_id, tp in enumerate(tracks):
            tw = window.tracks[tp.track]
            extra = ladder[number] if tp.track == VIDEO else []
            _adaptation_set(lines, adaptation_id, tw, tp.segments, zeros[number], prefix, suffix, extra,
                            source_video or not extra)
        lines.append("  </Period>")
    lines.append(f'  <UTCTiming schemeIdUri="{UTC_TIMING_SCHEME}" value="{_attr(utc_timing_url)}"/>')
    lines.append("</MPD>")
    lines.append("")
    return "\n".join(lines)


def _periods(window: CmafWindow) -> list[tuple[Timeline, list[_TrackPeriod]]]:
    """The listed segments of every track, grouped by timeline (one Period each), oldest first."""
    grouped: dict[int, tuple[Timeline, dict[str, list[CmafSegment]]]] = {}
    for name in (VIDEO, AUDIO):
        tw = window.tracks.get(name)
        if tw is None:
            continue
        for segment in tw.listed:
            entry = grouped.setdefault(segment.timeline.index, (segment.timeline, {}))
            entry[1].setdefault(name, []).append(segment)
    return [
        (timeline, [_TrackPeriod(name, segments) for name, segments in tracks.items()])
        for _, (timeline, tracks) in sorted(grouped.items())
    ]


def _renditions_by_period(
    renditions: Sequence[DashRendition], zeros: list[float]
) -> list[list[tuple[DashRendition, list[CmafSegment]]]]:
    """Each rendition's listed video segments, by the Period whose start (`zeros`, ms) is the last at or
    before theirs; a Period takes the segments of one init only (the first's)."""
    out: list[list[tuple[DashRendition, list[CmafSegment]]]] = [[] for _ in zeros]
    for rendition in renditions:
        tw = rendition.window.track(VIDEO)
        if tw is None or not zeros:
            continue
        grouped: dict[int, list[CmafSegment]] = {}
        for segment in tw.listed:
            number = next((n for n in range(len(zeros) - 1, -1, -1) if zeros[n] <= segment.start_ms), None)
            if number is None:
                continue  # older than every Period
            group = grouped.setdefault(number, [])
            if not group or (segment.init.version == group[0].init.version
                             and segment.sequence == group[-1].sequence + 1):
                group.append(segment)
        for number, segments in grouped.items():
            out[number].append((rendition, segments))
    return out


def _adaptation_set(
    lines: list[str],
    adaptation_id: int,
    tw: CmafTrackWindow,
    segments: list[CmafSegment],
    zero_ms: float,
    prefix: str,
    suffix: str,
    renditions: Sequence[tuple[DashRendition, list[CmafSegment]]] = (),
    source_video: bool = True,
) -> None:
    first = segments[0]
    init = first.init  # a new init always starts a new timeline, so one per Period
    kind = "video" if tw.track == VIDEO else "audio"
    lines.append(
        f'    <AdaptationSet id="{adaptation_id}" contentType="{kind}" mimeType="{kind}/mp4" '
        'segmentAlignment="true" startWithSAP="1">'
    )
    _segment_template(lines, "      ", tw.track, segments, zero_ms, prefix, suffix)
    representation = [f'id="{tw.track}"', *_representation(segments)]
    if tw.track == VIDEO:
        if source_video:
            lines.append("      <Representation " + " ".join(representation) + "/>")
        for rendition, own in renditions:
            rep = [f'id="{tw.track}-{_attr(rendition.label)}"', *_representation(own)]
            lines.append("      <Representation " + " ".join(rep) + ">")
            _segment_template(lines, "        ", tw.track, own, zero_ms, rendition.prefix, suffix)
            lines.append("      </Representation>")
    else:
        if init.sample_rate:
            representation.append(f'audioSamplingRate="{init.sample_rate}"')
        lines.append("      <Representation " + " ".join(representation) + ">")
        if init.channels:
            scheme = CHANNEL_CONFIGURATION_SCHEME
            lines.append(f'        <AudioChannelConfiguration schemeIdUri="{scheme}" value="{init.channels}"/>')
        lines.append("      </Representation>")
    lines.append("    </AdaptationSet>")


def _segment_template(
    lines: list[str], indent: str, track: str, segments: list[CmafSegment], zero_ms: float, prefix: str, suffix: str
) -> None:
    first = segments[0]
    init = first.init
    timescale = first.timescale
    # The same instant for every track (so they stay in sync), never after the first segment.
    offset = min(math.floor(zero_ms * timescale / 1000), first.start)
    media = _template(prefix) + f"{track}-$Number$.m4s" + _template(suffix)
    initialization = _template(prefix + init_name(init.track, init.version) + suffix)
    lines.append(
        f'{indent}<SegmentTemplate timescale="{timescale}" presentationTimeOffset="{offset}" '
        f'startNumber="{first.sequence}" initialization="{_attr(initialization)}" media="{_attr(media)}">'
    )
    lines.append(f"{indent}  <SegmentTimeline>")
    lines.extend(indent + line for line in _timeline_entries(segments))
    lines.append(f"{indent}  </SegmentTimeline>")
    lines.append(f"{indent}</SegmentTemplate>")


def _representation(segments: list[CmafSegment]) -> list[str]:
    """bandwidth (the peak over the segments), codecs and, for video, size and frame rate."""
    init = segments[0].init
    rates = [8 * len(s.data) / s.duration_s for s in segments if s.duration > 0]
    bandwidth = max(1, math.ceil(max(rates, default=0)))
    out = [f'bandwidth="{bandwidth}"', f'codecs="{_attr(init.codec_string)}"']
    if init.track == VIDEO:
        if init.width and init.height:
            out += [f'width="{init.width}"', f'height="{init.height}"']
        rate = init.signalled_frame_rate or _measured_frame_rate(segments)
        if rate:
            out.append(f'frameRate="{_frame_rate(rate)}"')
    return out


def _timeline_entries(segments: list[CmafSegment]) -> list[str]:
    # S@t where the timeline starts or has a gap; runs of equal durations folded into S@r.
    entries: list[list[int]] = []  # [t or -1, d, r]
    end: int | None = None
    for segment in segments:
        if end is not None and segment.start == end and entries[-1][1] == segment.duration:
            entries[-1][2] += 1
        else:
            entries.append([segment.start if segment.start != end else -1, segment.duration, 0])
        end = segment.start + segment.duration
    lines = []
    for t, d, r in entries:
        attributes = ([f't="{t}"'] if t >= 0 else []) + [f'd="{d}"'] + ([f'r="{r}"'] if r else [])
        lines.append("    <S " + " ".join(attributes) + "/>")
    return lines


def _measured_frame_rate(segments: list[CmafSegment]) -> float | None:
    duration = sum(s.duration_s for s in segments)
    return sum(s.samples for s in segments) / duration if duration > 0 else None


def _frame_rate(rate: float) -> str:
    # Whole rates as integers, NTSC rates as N/1001, anything else to the millisecond.
    if abs(rate - round(rate)) < 0.01:
        return str(round(rate))
    ntsc = rate * 1.001
    if abs(ntsc - round(ntsc)) < 0.01:
        return f"{round(ntsc) * 1000}/1001"
    return f"{round(rate * 1000)}/1000"


def _duration(seconds: float) -> str:
    """xs:duration in seconds, to the millisecond: "PT2S", "PT0.333S"."""
    ms = max(0, round(seconds * 1000))
    whole, fraction = divmod(ms, 1000)
    if not fraction:
        return f"PT{whole}S"
    return f"PT{whole}.{fraction:03d}".rstrip("0") + "S"


def query_in_uri(query: str) -> str:
    """`query` as render_mpd writes it into a SegmentTemplate's URIs (after the "?"): filling a template
    rendered with a placeholder query gives the same bytes as rendering with `query`."""
    return _attr(_template(query))


def _template(text: str) -> str:
    # "$" starts a template identifier; a literal one is written "$$" (ISO/IEC 23009-1 5.3.9.4.4).
    return text.replace("$", "$$")


def _attr(text: str) -> str:
    return escape(text, {'"': "&quot;"})
