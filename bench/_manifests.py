"""Parsers for the manifests the LL-HLS and DASH clients follow: LL-HLS playlists and the DASH MPD.

- `parse_multivariant(text)`: the variant playlists and audio renditions of an HLS multivariant
  playlist (RFC 8216bis 4.4.6).
- `parse_ll_playlist(text)`: an HLS media playlist with Low-Latency parts (RFC 8216bis 4.4.4.9,
  4.4.5.2, 4.4.3.7-8): segments, each with its parts; the parts of the segment in progress; the
  preload hint; EXT-X-MAP in force for each; server control (CAN-BLOCK-RELOAD, PART-HOLD-BACK,
  HOLD-BACK). Segments and parts are numbered by media sequence number (MSN) and part index.
  Playlist delta updates (EXT-X-SKIP) are refused: the clients never ask for them.
- `parse_mpd(text)`: a DASH MPD (ISO/IEC 23009-1) with SegmentTemplate + SegmentTimeline, the layout
  a live packager writes: per Period and AdaptationSet, the segments' numbers, times and durations,
  and the URIs of the init and of each segment ($Number$, $Time$, $RepresentationID$, $Bandwidth$,
  with %0Nd widths). SegmentTemplate@duration without a timeline and S@r="-1" are refused with the
  reason, as is an MPD with a DOCTYPE (no entity expansion, whatever the parser).

All three take text already bounded by the HTTP client and raise ManifestError, naming the line or
element, on anything they cannot follow.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone

MAX_TIMELINE_SEGMENTS = 100_000


class ManifestError(ValueError):
    """A playlist or MPD the clients cannot follow."""


# ---------------------------------------------------------------- HLS


_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,"]*)(?:,|$)')


def parse_attributes(text: str) -> dict[str, str]:
    """An HLS attribute list (4.2): KEY=VALUE pairs, quoted strings unquoted."""
    out: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _ATTR.match(text, pos)
        if m is None:
            raise ManifestError(f"bad attribute list at {text[pos:pos + 40]!r}")
        value = m.group(2)
        out[m.group(1)] = value[1:-1] if value.startswith('"') else value
        pos = m.end()
    return out


@dataclass(frozen=True, slots=True)
class Multivariant:
    variants: tuple[str, ...]
    """URIs of EXT-X-STREAM-INF variants, in order."""
    audio: tuple[str, ...]
    """URIs of EXT-X-MEDIA TYPE=AUDIO renditions that have one."""
    muxed: bool = False
    """The first variant carries audio and video itself: its CODECS names both, and it has no AUDIO group."""


def parse_multivariant(text: str) -> Multivariant:
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise ManifestError("playlist does not start with #EXTM3U")
    variants: list[str] = []
    audio: list[str] = []
    want_uri = False
    first_info: dict[str, str] | None = None
    for line in lines[1:]:
        if not line:
            continue
        if line.startswith("#EXT-X-STREAM-INF:"):
            want_uri = True
            if first_info is None:
                first_info = parse_attributes(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MEDIA:"):
            attrs = parse_attributes(line.split(":", 1)[1])
            if attrs.get("TYPE") == "AUDIO" and "URI" in attrs:
                audio.append(attrs["URI"])
        elif line.startswith("#EXTINF") or line.startswith("#EXT-X-PART:"):
            raise ManifestError("this is a media playlist, not a multivariant playlist")
        elif not line.startswith("#") and want_uri:
            variants.append(line)
            want_uri = False
    if not variants:
        raise ManifestError("multivariant playlist lists no variant (no EXT-X-STREAM-INF with a URI)")
    codecs = [c.strip().split(".")[0] for c in (first_info or {}).get("CODECS", "").split(",") if c.strip()]
    muxed = (first_info is not None and "AUDIO" not in first_info
             and any(c in _AUDIO_CODECS for c in codecs) and any(c not in _AUDIO_CODECS for c in codecs))
    return Multivariant(tuple(variants), tuple(audio), muxed)


_AUDIO_CODECS = frozenset({"mp4a", "opus", "ac-3", "ec-3", "fLaC"})


@dataclass(frozen=True, slots=True)
class Part:
    msn: int
    index: int
    duration_s: float
    uri: str
    independent: bool
    map_uri: str | None

    @property
    def key(self) -> tuple[int, int]:
        return (self.msn, self.index)


@dataclass(frozen=True, slots=True)
class LlSegment:
    msn: int
    duration_s: float
    uri: str
    parts: tuple[Part, ...]
    map_uri: str | None


@dataclass(frozen=True, slots=True)
class LlPlaylist:
    target_duration_s: float
    media_sequence: int
    segments: tuple[LlSegment, ...]
    open_parts: tuple[Part, ...]
    """Parts of the segment in progress (MSN = the last segment's + 1)."""
    part_target_s: float | None
    can_block_reload: bool
    part_hold_back_s: float | None
    hold_back_s: float | None
    preload_hint: str | None
    """URI of the EXT-X-PRELOAD-HINT TYPE=PART, if any."""
    ended: bool

    def parts(self) -> list[Part]:
        """Every listed part, oldest first."""
        out = [p for s in self.segments for p in s.parts]
        out.extend(self.open_parts)
        return out

    @property
    def last_part(self) -> Part | None:
        if self.open_parts:
            return self.open_parts[-1]
        for s in reversed(self.segments):
            if s.parts:
                return s.parts[-1]
        return None

    @property
    def next_msn(self) -> int:
        """The MSN of the segment in progress."""
        return self.media_sequence + len(self.segments)


def parse_ll_playlist(text: str) -> LlPlaylist:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "#EXTM3U":
        raise ManifestError("playlist does not start with #EXTM3U")
    target = None
    seq = 0
    segments: list[LlSegment] = []
    pending: list[tuple[float, str, bool, str | None]] = []
    part_target = None
    control: dict[str, str] = {}
    hint = None
    ended = False
    map_uri = None
    duration = None
    for raw in lines[1:]:
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("#"):
            if duration is None:
                raise ManifestError(f"segment {line[:80]!r} has no #EXTINF before it")
            msn = seq + len(segments)
            parts = tuple(Part(msn, i, d, u, ind, m) for i, (d, u, ind, m) in enumerate(pending))
            segments.append(LlSegment(msn, duration, line, parts, map_uri))
            pending = []
            duration = None
            continue
        tag, _, value = line.partition(":")
        try:
            if tag == "#EXT-X-STREAM-INF":
                raise ManifestError("this is a multivariant playlist, not a media playlist")
            if tag == "#EXT-X-TARGETDURATION":
                target = float(value)
            elif tag == "#EXT-X-MEDIA-SEQUENCE":
                if segments or pending:
                    raise ManifestError("EXT-X-MEDIA-SEQUENCE after the first segment")
                seq = int(value)
            elif tag == "#EXTINF":
                duration = float(value.split(",", 1)[0])
            elif tag == "#EXT-X-MAP":
                map_uri = parse_attributes(value).get("URI")
            elif tag == "#EXT-X-PART":
                a = parse_attributes(value)
                pending.append((float(a["DURATION"]), a["URI"], a.get("INDEPENDENT") == "YES", map_uri))
            elif tag == "#EXT-X-PART-INF":
                part_target = float(parse_attributes(value)["PART-TARGET"])
            elif tag == "#EXT-X-SERVER-CONTROL":
                control = parse_attributes(value)
            elif tag == "#EXT-X-PRELOAD-HINT":
                a = parse_attributes(value)
                if a.get("TYPE") == "PART":
                    hint = a.get("URI")
            elif tag == "#EXT-X-SKIP":
                raise ManifestError("playlist delta updates (EXT-X-SKIP) are not supported; do not ask with _HLS_skip")
            elif tag == "#EXT-X-ENDLIST":
                ended = True
        except (KeyError, ValueError) as err:
            if isinstance(err, ManifestError):
                raise
            raise ManifestError(f"bad value in {line[:80]!r}: {err}") from None
    if target is None:
        raise ManifestError("playlist has no #EXT-X-TARGETDURATION")
    msn = seq + len(segments)
    open_parts = tuple(Part(msn, i, d, u, ind, m) for i, (d, u, ind, m) in enumerate(pending))

    def number(key: str) -> float | None:
        try:
            return float(control[key]) if key in control else None
        except ValueError:
            raise ManifestError(f"bad {key} {control[key]!r} in EXT-X-SERVER-CONTROL") from None

    return LlPlaylist(target, seq, tuple(segments), open_parts, part_target, control.get("CAN-BLOCK-RELOAD") == "YES",
                      number("PART-HOLD-BACK"), number("HOLD-BACK"), hint, ended)


# ---------------------------------------------------------------- DASH

_DURATION = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
_TEMPLATE = re.compile(r"\$(Number|Time|RepresentationID|Bandwidth)(%0(\d{1,2})d)?\$|\$\$")


def parse_duration(text: str) -> float:
    """xs:duration without years and months ("PT2S", "PT0.333S", "P1DT2H"), in seconds."""
    m = _DURATION.match(text.strip())
    if m is None or text.strip() in ("P", "PT"):
        raise ManifestError(f"bad duration {text[:40]!r}: expected e.g. PT2S (years and months are not supported)")
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def parse_datetime(text: str) -> float:
    """xs:dateTime ("2026-11-22T02:23:35.004Z") as unix seconds; a time without a zone is UTC (DASH)."""
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ManifestError(f"bad date-time {text[:40]!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def expand_template(template: str, *, number: int | None = None, time: int | None = None,
                    representation_id: str = "", bandwidth: int = 0) -> str:
    """A SegmentTemplate URI with its identifiers filled in (ISO/IEC 23009-1 5.3.9.4.4)."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, width = m.group(1), m.group(3)
        value = {"Number": number, "Time": time, "RepresentationID": representation_id, "Bandwidth": bandwidth}[name]
        if value is None:
            raise ManifestError(f"template {template!r} needs ${name}$, which this segment does not have")
        if width and name != "RepresentationID":
            return f"{int(value):0{int(width)}d}"
        return str(value)

    return _TEMPLATE.sub(sub, template)


@dataclass(frozen=True, slots=True)
class DashSegment:
    number: int
    t: int
    d: int


@dataclass(frozen=True, slots=True)
class DashTrack:
    content_type: str
    """"video", "audio", ... (from contentType, mimeType or the Representation)."""
    representation_id: str
    bandwidth: int
    timescale: int
    presentation_time_offset: int
    init_uri: str | None
    media_template: str
    segments: tuple[DashSegment, ...]

    def media_uri(self, segment: DashSegment) -> str:
        return expand_template(self.media_template, number=segment.number, time=segment.t,
                               representation_id=self.representation_id, bandwidth=self.bandwidth)


@dataclass(frozen=True, slots=True)
class DashPeriod:
    id: str
    start_s: float
    tracks: tuple[DashTrack, ...]


@dataclass(frozen=True, slots=True)
class Mpd:
    dynamic: bool
    availability_start: float | None
    """availabilityStartTime, unix seconds."""
    publish_time: float | None
    minimum_update_period_s: float | None
    suggested_presentation_delay_s: float | None
    min_buffer_time_s: float | None
    time_shift_buffer_depth_s: float | None
    periods: tuple[DashPeriod, ...]
    utc_timing: str | None

    def segment_end_wall(self, period: DashPeriod, track: DashTrack, segment: DashSegment) -> float | None:
        """When the MPD says a segment becomes available: AST + Period@start + (t + d - PTO) / timescale."""
        if self.availability_start is None:
            return None
        return (self.availability_start + period.start_s
                + (segment.t + segment.d - track.presentation_time_offset) / track.timescale)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def parse_mpd(text: str) -> Mpd:
    if "<!DOCTYPE" in text[:4096].upper():
        raise ManifestError("MPD with a DOCTYPE refused (entity expansion)")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise ManifestError(f"MPD is not well-formed XML: {err}") from None
    if _local(root.tag) != "MPD":
        raise ManifestError(f"root element is <{_local(root.tag)}>, not <MPD>")

    def opt(el: ET.Element, name: str, conv):
        v = el.get(name)
        return conv(v) if v is not None else None

    periods = []
    total = 0
    for i, p in enumerate(_children(root, "Period")):
        start = opt(p, "start", parse_duration) or 0.0
        tracks = []
        for aset in _children(p, "AdaptationSet"):
            aset_template = (_children(aset, "SegmentTemplate") or [None])[0]
            for rep in _children(aset, "Representation") or [None]:
                template = aset_template
                if rep is not None and _children(rep, "SegmentTemplate"):
                    template = _children(rep, "SegmentTemplate")[0]
                if template is None:
                    raise ManifestError("an AdaptationSet without SegmentTemplate (only SegmentTemplate is supported)")
                track = _track(aset, rep, template)
                total += len(track.segments)
                if total > MAX_TIMELINE_SEGMENTS:
                    raise ManifestError(f"the MPD lists more than {MAX_TIMELINE_SEGMENTS} segments")
                tracks.append(track)
        periods.append(DashPeriod(p.get("id", str(i)), start, tuple(tracks)))
    utc = None
    for u in _children(root, "UTCTiming"):
        utc = u.get("value")
        break
    return Mpd(
        dynamic=root.get("type", "static") == "dynamic",
        availability_start=opt(root, "availabilityStartTime", parse_datetime),
        publish_time=opt(root, "publishTime", parse_datetime),
        minimum_update_period_s=opt(root, "minimumUpdatePeriod", parse_duration),
        suggested_presentation_delay_s=opt(root, "suggestedPresentationDelay", parse_duration),
        min_buffer_time_s=opt(root, "minBufferTime", parse_duration),
        time_shift_buffer_depth_s=opt(root, "timeShiftBufferDepth", parse_duration),
        periods=tuple(periods),
        utc_timing=utc,
    )


def _int(el: ET.Element, name: str, default: int | None = None) -> int:
    v = el.get(name)
    if v is None:
        if default is None:
            raise ManifestError(f"<{_local(el.tag)}> has no {name}")
        return default
    try:
        return int(v)
    except ValueError:
        raise ManifestError(f"<{_local(el.tag)}> {name}={v[:20]!r} is not an integer") from None


def _track(aset: ET.Element, rep: ET.Element | None, template: ET.Element) -> DashTrack:
    def attr(name: str) -> str | None:
        for el in (rep, aset):
            if el is not None and el.get(name) is not None:
                return el.get(name)
        return None

    kind = attr("contentType") or (attr("mimeType") or "").split("/", 1)[0] or "unknown"
    timescale = _int(template, "timescale", 1)
    if timescale <= 0:
        raise ManifestError(f"SegmentTemplate timescale {timescale} must be positive")
    media = template.get("media")
    if not media:
        raise ManifestError("SegmentTemplate without a media template")
    timelines = _children(template, "SegmentTimeline")
    if not timelines:
        raise ManifestError("SegmentTemplate without SegmentTimeline (@duration addressing is not supported)")
    number = _int(template, "startNumber", 1)
    segments: list[DashSegment] = []
    t = None
    for s in _children(timelines[0], "S"):
        d = _int(s, "d")
        r = _int(s, "r", 0)
        if r < 0:
            raise ManifestError('S@r="-1" (repeat to the period end) is not supported')
        if d <= 0:
            raise ManifestError(f"S@d={d} must be positive")
        if s.get("t") is not None:
            t = _int(s, "t")
        elif t is None:
            t = 0
        if len(segments) + r + 1 > MAX_TIMELINE_SEGMENTS:
            raise ManifestError(f"a SegmentTimeline lists more than {MAX_TIMELINE_SEGMENTS} segments")
        for _ in range(r + 1):
            segments.append(DashSegment(number, t, d))
            number += 1
            t += d
    rid = (rep.get("id") if rep is not None else None) or ""
    bandwidth = int(rep.get("bandwidth", "0")) if rep is not None and (rep.get("bandwidth") or "0").isdigit() else 0
    init = template.get("initialization")
    init_uri = expand_template(init, representation_id=rid, bandwidth=bandwidth) if init else None
    return DashTrack(kind, rid, bandwidth, timescale, _int(template, "presentationTimeOffset", 0), init_uri, media,
                     tuple(segments))
