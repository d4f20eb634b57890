"""Low-Latency HLS over CMAF: the multivariant and media playlists, and blocking-reload answers.

The playlists list what a CmafWindow holds (RFC 8216bis, "HTTP Live Streaming 2nd Edition"):

- `render_multivariant_playlist`: once the window has the muxed rendition (video and audio in one
  fMP4, cmaf_mux.py), one EXT-X-STREAM-INF for it, CODECS naming both and no audio group: a player
  follows one playlist, not two, and makes half the requests. Otherwise one EXT-X-STREAM-INF for the
  video playlist with the audio track as an EXT-X-MEDIA rendition (TYPE=AUDIO, its own playlist); an
  audio-only stream points the variant at the audio playlist. CODECS, RESOLUTION, FRAME-RATE and
  BANDWIDTH come from the inits and the segments. With ABR, the ladder's renditions follow as more
  variants with the same audio, so the split layout is kept (multivariant.py writes the playlist).
- `render_media_playlist`: one track's playlist. EXT-X-VERSION 9; EXT-X-TARGETDURATION from the
  window (never shrinking); EXT-X-SERVER-CONTROL with CAN-BLOCK-RELOAD=YES, PART-HOLD-BACK (three
  part targets) and HOLD-BACK (three target durations); EXT-X-PART-INF; EXT-X-MAP before the first
  segment and again after a discontinuity that changes the init; EXT-X-PROGRAM-DATE-TIME before
  each segment; EXT-X-PART for the segments of the last three target durations (older parts are
  left out, 4.4.4.9) and for the segment in progress; EXT-X-PRELOAD-HINT for the next part;
  EXT-X-RENDITION-REPORT for the other playlists; EXT-X-ENDLIST once the window ended.
- `playlist_request` answers a blocking playlist reload (6.2.5.2): given _HLS_msn and _HLS_part,
  is the playlist ready, should the request wait for more, or is it a bad request (a part without
  a segment number, a segment more than two past the last, a part further ahead than the Advance
  Part Limit). A part index past a finished segment's last part means part 0 of the next segment.
  `resource_request` answers the same for a part, segment or init GET: a request for the part the
  preload hint names (or one a little further) waits for it.

The caller (the edge) does the waiting: on WAIT it awaits the window's next change and asks
again, and gives up after three target durations with 503, as 6.2.5.2 suggests. Nothing here
waits, reads a clock or touches a socket. URIs are the names from cmaf.py behind the caller's
`prefix`, with `query` (e.g. "token=...") appended.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import Enum

from ..errors import UsageError
from .cmaf import (
    AUDIO,
    MUXED,
    VIDEO,
    CmafInit,
    CmafPart,
    CmafSegment,
    init_name,
    part_name,
    segment_name,
)
from .cmaf_window import CmafTrackWindow, CmafWindow
from .hls import format_program_date_time
from .multivariant import AudioGroup, Variant, render_multivariant

PROTOCOL_VERSION = 9
PART_HOLD_BACK_PARTS = 3  # PART-HOLD-BACK SHOULD be at least three part targets (4.4.3.8)
HOLD_BACK_TARGETS = 3
PART_HORIZON_TARGETS = 3  # parts older than three target durations may go (4.4.4.9)
AUDIO_GROUP = "audio"


class Readiness(Enum):
    """What to do with a request for a playlist, part or segment."""

    READY = "ready"
    """Answer now."""
    WAIT = "wait"
    """Hold the request until the window changes, then ask again (503 after three target durations)."""
    BAD_REQUEST = "bad_request"
    """Answer 400 at once: the request is malformed or too far in the future."""
    GONE = "gone"
    """Answer 404: it left the window, or never existed."""


# -- blocking playlist reload ----------------------------------------------------------------------


def advance_part_limit(part_target_s: float) -> float:
    """How many parts ahead a request may ask for (6.2.5.2): 3 / PART-TARGET below one second, else 3."""
    return 3 / part_target_s if part_target_s < 1 else 3.0


def playlist_request(window: CmafWindow, track: str, msn: int | None, part: int | None) -> Readiness:
    """Answer a media playlist request carrying the _HLS_msn / _HLS_part delivery directives."""
    if msn is None:
        return Readiness.BAD_REQUEST if part is not None else Readiness.READY
    if msn < 0 or (part is not None and part < 0):
        return Readiness.BAD_REQUEST
    if window.ended:
        return Readiness.READY  # the playlist will not change again: serve it
    tw = window.track(track)
    if tw is None:
        return Readiness.WAIT  # nothing yet: the edge's wait is bounded
    last = tw.last_sequence
    last_listed = last if last is not None else tw.open_sequence - 1
    if msn > last_listed + 2:
        return Readiness.BAD_REQUEST
    if part is None:
        return Readiness.READY if last is not None and msn <= last else Readiness.WAIT
    return _part_readiness(window, tw, track, msn, part)


def _part_readiness(window: CmafWindow, tw: CmafTrackWindow, track: str, msn: int, part: int) -> Readiness:
    last = tw.last_sequence
    # A part index past a finished segment's last part asks for part 0 of the next (6.2.5.2).
    while last is not None and msn <= last:
        parts = tw.parts_of(msn)
        count = len(parts) if parts is not None else _segment_part_count(tw, msn)
        if count is None or part < count:
            return Readiness.READY
        msn, part = msn + 1, 0
    open_sequence, next_index = tw.next_part
    if msn == open_sequence and part < next_index:
        return Readiness.READY
    part_target = window.part_target(track)
    parts_per_segment = max(1, math.ceil(window.target_duration_s / part_target - 1e-9))
    ahead = (msn - open_sequence) * parts_per_segment + part - (next_index - 1)
    if ahead > advance_part_limit(part_target):
        return Readiness.BAD_REQUEST
    return Readiness.WAIT


def _segment_part_count(tw: CmafTrackWindow, sequence: int) -> int | None:
    segment = tw.segment(sequence)
    return segment.part_count if segment is not None else None


def resource_request(
    window: CmafWindow, track: str, sequence: int, part: int | None = None
) -> Readiness:
    """Answer a GET of a segment (part None) or a part: READY, WAIT (it is the next part, or one
    within the Advance Part Limit, as a preload hint makes players ask), GONE or BAD_REQUEST."""
    tw = window.track(track)
    if part is None:
        if tw is not None and tw.segment(sequence) is not None:
            return Readiness.READY
        return Readiness.GONE
    if tw is None:
        return Readiness.GONE if window.ended else Readiness.WAIT
    if tw.part(sequence, part) is not None:
        return Readiness.READY
    if window.ended:
        return Readiness.GONE
    open_sequence, next_index = tw.next_part
    if sequence < open_sequence or (sequence == open_sequence and part < next_index):
        return Readiness.GONE  # in the past and no longer kept (or past a segment's last part)
    part_target = window.part_target(track)
    parts_per_segment = max(1, math.ceil(window.target_duration_s / part_target - 1e-9))
    ahead = (sequence - open_sequence) * parts_per_segment + part - next_index
    if ahead >= advance_part_limit(part_target):
        return Readiness.BAD_REQUEST
    return Readiness.WAIT


# -- playlists -------------------------------------------------------------------------------------


def render_media_playlist(
    window: CmafWindow,
    track: str,
    *,
    prefix: str = "",
    query: str = "",
    rendition_reports: Mapping[str, str] | None = None,
) -> str:
    """One track's LL-HLS media playlist.

    `rendition_reports` maps the URI of each other media playlist to its track name, e.g.
    {"audio.m3u8": "audio"}; each gets an EXT-X-RENDITION-REPORT with its last segment and part.
    """
    _check_uri_part(prefix)
    _check_uri_part(query)
    suffix = f"?{query}" if query else ""
    tw = window.track(track)
    target = window.target_duration(track)
    part_target = window.part_target(track)
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{PROTOCOL_VERSION}",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
        f"PART-HOLD-BACK={_decimal(PART_HOLD_BACK_PARTS * part_target)},HOLD-BACK={HOLD_BACK_TARGETS * target}",
        f"#EXT-X-PART-INF:PART-TARGET={_decimal(part_target)}",
    ]
    if tw is None:
        lines.append("#EXT-X-MEDIA-SEQUENCE:0")
        if window.ended:
            lines.append("#EXT-X-ENDLIST")
        lines.append("")
        return "\n".join(lines)
    segments = tw.listed
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{tw.media_sequence}")
    if tw.discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{tw.discontinuity_sequence}")
    if all(s.independent for s in segments) and all(p.independent for p in tw.open_parts[:1]):
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")

    # Parts are listed for the segments that end within three target durations of the end.
    horizon = PART_HORIZON_TARGETS * target
    remaining = horizon - sum(p.duration_s for p in tw.open_parts)
    with_parts: set[int] = set()
    for segment in reversed(segments):
        if remaining <= 0:
            break
        with_parts.add(segment.sequence)
        remaining -= segment.duration_s

    current_map: CmafInit | None = None
    for segment in segments:
        current_map = _segment_header(lines, segment, current_map, prefix, suffix)
        if segment.sequence in with_parts:
            lines.extend(_part_line(part, prefix, suffix) for part in tw.parts_of(segment.sequence) or ())
        lines.append(f"#EXTINF:{_decimal(segment.duration_s)},")
        lines.append(prefix + segment_name(track, segment.sequence) + suffix)
    if tw.open_parts and not window.ended:
        first = tw.open_parts[0]
        current_map = _segment_header(lines, first, current_map, prefix, suffix)
        lines.extend(_part_line(part, prefix, suffix) for part in tw.open_parts)
    if not window.ended:
        sequence, index = tw.next_part
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{prefix}{part_name(track, sequence, index)}{suffix}"')
        for uri, other in (rendition_reports or {}).items():
            _check_uri_part(uri)
            report = window.track(other)
            if report is None or other == track:
                continue
            next_sequence, next_index = report.next_part
            if next_index:
                last_msn, last_part = next_sequence, next_index - 1
            else:
                last_msn = next_sequence - 1
                parts = report.parts_of(last_msn)
                last_part = len(parts) - 1 if parts else 0
            if last_msn >= 0:
                lines.append(f'#EXT-X-RENDITION-REPORT:URI="{uri}{suffix}",LAST-MSN={last_msn},LAST-PART={last_part}')
    else:
        lines.append("#EXT-X-ENDLIST")
    lines.append("")
    return "\n".join(lines)


def _segment_header(
    lines: list[str], item: CmafSegment | CmafPart, current: CmafInit | None, prefix: str, suffix: str
) -> CmafInit:
    # EXT-X-DISCONTINUITY, then EXT-X-MAP whenever the init differs from the one in force, then the date.
    init = item.init
    if item.discontinuity:
        lines.append("#EXT-X-DISCONTINUITY")
    if current is None or init.version != current.version:
        lines.append(f'#EXT-X-MAP:URI="{prefix}{init_name(init.track, init.version)}{suffix}"')
    lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(item.program_date_time)}")
    return init


def _part_line(part: CmafPart, prefix: str, suffix: str) -> str:
    line = f'#EXT-X-PART:DURATION={_decimal(part.duration_s)},URI="{prefix}{part.name()}{suffix}"'
    return line + ",INDEPENDENT=YES" if part.independent else line


def render_multivariant_playlist(
    window: CmafWindow,
    *,
    video_uri: str = "video.m3u8",
    audio_uri: str = "audio.m3u8",
    query: str = "",
    renditions: Sequence[Variant] = (),
    source_video: bool = True,
    muxed_uri: str | None = None,
    renditions_muxed: bool = False,
) -> str:
    """The multivariant playlist: the video playlist as the variant, audio as its rendition group.
    With `source_video` False (and renditions) the renditions alone are the video variants.

    Lists the tracks the window has seen; an audio-only stream's variant is the audio playlist.
    `renditions` (ABR) are more video variants after the source's, each playing with the same audio
    group (their CODECS should name the audio codec too). With `muxed_uri`, a window that has the muxed
    rendition lists it as the source's variant, without an audio group: alone, or with `renditions` that are
    muxed too (`renditions_muxed`: their URIs name their own muxed playlists). Raises ValueError for muxed
    renditions when the window has no muxed rendition (the caller asks `has_muxed` first).
    """
    muxed = window.track(MUXED) if muxed_uri is not None and (not renditions or renditions_muxed) else None
    muxed_init = muxed.current_init if muxed is not None else None
    if renditions_muxed and renditions and muxed_init is None:
        raise ValueError("muxed renditions need the source's muxed rendition")
    if muxed is not None and muxed_init is not None and muxed_uri is not None:
        peak, average = _bandwidth(muxed)
        variant = Variant(
            muxed_uri, peak, tuple(muxed_init.codec_string.split(",")), muxed_init.width, muxed_init.height,
            muxed_init.signalled_frame_rate or _measured_frame_rate(muxed), average,
        )
        variants = [variant, *renditions] if source_video or not renditions else list(renditions)
        return render_multivariant(variants, query=query, version=PROTOCOL_VERSION)
    video = window.track(VIDEO)
    audio = window.track(AUDIO)
    video_init = video.current_init if video is not None else None
    audio_init = audio.current_init if audio is not None else None
    if video_init is None and audio_init is None:
        return render_multivariant([], query=query, version=PROTOCOL_VERSION)
    peak, average = _bandwidth(audio) if audio is not None else (0, 0)
    if video_init is None or video is None:
        assert audio_init is not None
        variant = Variant(audio_uri, peak, (audio_init.codec_string,), average_bandwidth=average)
        return render_multivariant([variant], query=query, version=PROTOCOL_VERSION)
    video_peak, video_average = _bandwidth(video)
    group = None
    codecs = [video_init.codec_string]
    if audio_init is not None:
        codecs.append(audio_init.codec_string)
        group = AudioGroup(audio_uri, AUDIO_GROUP, "audio", audio_init.channels)
    source = Variant(
        video_uri, video_peak + peak, tuple(codecs), video_init.width, video_init.height,
        video_init.signalled_frame_rate or _measured_frame_rate(video), video_average + average,
    )
    variants = [source, *renditions] if source_video or not renditions else list(renditions)
    return render_multivariant(variants, audio=group, query=query, version=PROTOCOL_VERSION)


def _bandwidth(tw: CmafTrackWindow) -> tuple[int, int]:
    """(peak, average) bits per second over the listed segments (or the parts, before any segment)."""
    items: list[tuple[int, float]] = [(len(s.data), s.duration_s) for s in tw.listed]
    if not items:
        items = [(len(p.data), p.duration_s) for p in tw.open_parts]
    items = [(size, duration) for size, duration in items if duration > 0]
    if not items:
        return 0, 0
    peak = max(8 * size / duration for size, duration in items)
    average = 8 * sum(size for size, _ in items) / sum(duration for _, duration in items)
    return math.ceil(peak), math.ceil(average)


def _measured_frame_rate(tw: CmafTrackWindow) -> float | None:
    segments = tw.listed
    duration = sum(s.duration_s for s in segments)
    if not segments or duration <= 0:
        return None
    return sum(s.samples for s in segments) / duration


def _decimal(seconds: float) -> str:
    # Decimal-floating-point with up to 5 places and no trailing zeros beyond 3 (e.g. "2.000", "0.33333").
    text = f"{seconds:.5f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(3, '0')}"


def _check_uri_part(text: str) -> str:
    # A line break, quote or '#' would let a URI smuggle tags or attributes into the playlist.
    if any(ord(c) < 0x20 or c in '\x7f"#' for c in text):
        raise UsageError(f"playlist URI part {text!r} holds a control character, a quote or '#'")
    return text
