"""CMAF: Frames in, fMP4 init segments, LL-HLS parts and segments out, for HLS and DASH alike.

`CmafSegmenter` cuts one stream into CMAF tracks: a video track (H.264, HEVC, AV1 or VP9; timescale
90 kHz) and an audio track (AAC or Opus; timescale = the sample rate, 48 kHz for Opus). Each
track has its own init segment and its own fragments, as CMAF (ISO/IEC 23000-19) and DASH
(one AdaptationSet per track) want; HLS lists them as a video playlist with an audio rendition,
which hls.js and Safari play, and DASH lists the very same files.

It is sans clock, like TsSegmenter: `push(frame, now)` returns what is complete, and `now` (unix
seconds) only anchors the wall clock of a timeline. The rules:

- Parts. Samples are gathered into a part until the next sample would carry the part past the
  part target (so a part is closed when the sample after it arrives: that sample gives the last
  one its duration). A part is one moof+mdat, `independent` when it starts with a keyframe.
- Segments. A segment is the concatenation of its parts (joined once when it closes). Video
  segments start at a keyframe once the target duration has passed since the segment's start;
  audio follows the video's cut points: its segment N starts with the first audio frame at or
  after video segment N's start, so segment N of both tracks covers the same stretch of time and
  has the same sequence number (each track's numbers stay contiguous, which HLS requires, so the
  two would part ways only if one track stopped for a whole segment). Audio waits for the video
  to get past it before it is placed (at most `max_audio_wait_ms`), since RTMP interleaves the
  two only roughly. Audio-only streams are cut on duration; whether a stream is audio only is
  decided as TsSegmenter decides it.
- Without keyframes for `max_segment_duration_s` (or past `max_segment_bytes`) a segment is cut
  anyway and the next is not independent.
- Time. Decode times are the stream's own (dts_ms x 90 for video; for audio a running count of
  samples, re-synchronised to dts_ms only when a gap of more than half a frame opens, so AAC's
  1024-sample frames do not jitter with millisecond rounding; overlapping audio plays on back to
  back). tfdt is that 64-bit decode time;
  composition offsets (pts - dts) go into trun version 1. A decode time that steps back a little
  is nudged forward by one tick (the presentation time kept); one that jumps back more than a
  second or forward more than the maximum segment duration starts a new timeline, as
  `discontinuity()` would, and is counted in `timeline_resets`.
- Timelines and wall clock. A Timeline is a stretch with continuous decode times: its anchor ties
  a decode time to the wall clock (`now` at its first frame), and every part and segment derives
  its EXT-X-PROGRAM-DATE-TIME (and DASH availability) from it. `discontinuity()` closes the open
  segments at once (they come out of the next push, or finish) and starts a new Timeline.
- Configs. Init segments are made when a config arrives and carry a version (1, 2, ...) so their
  URIs change when they do. A changed video config takes effect at the next keyframe, which
  starts a new segment flagged as a discontinuity (a new Timeline with the same clock, so DASH
  gets a new Period); a changed audio config closes the audio segment at once (its samples need
  the new init) and audio resumes at the next segment. Identical configs resent change nothing.
- Aligned renditions (ABR): as TsSegmenter (hls.py), a source's segmenter given `cuts` records where
  each video segment and each video part starts (CutPlan, segment.py), and a rendition's segmenter given
  `follow` starts its segments and parts at the same frames, with the same sequence numbers, decode
  times (moved back by the source's decode delay) and wall clock. Its audio follows its own video's
  cuts, as ever. Without `follow` nothing of this costs a thing.
- Output. Everything comes out of push()/finish() in order: a segment right after its last part.
  A malformed config or frame raises MediaError from push and leaves the segmenter as it was. Video
  samples are checked for their framing first (NAL unit length prefixes, AV1 OBU sizes), so a sample
  a player's decoder would choke on never reaches an mdat.
- Payloads go into the mdat untouched (AVCC/HVCC NAL units with the config's length size, AV1
  OBUs less the temporal delimiter, raw AAC, Opus packets): one join copies each sample once.

- Muxed. Given a `muxer` (cmaf_mux.CmafMuxer), the segmenter tells it of each video part and audio
  sample as they are made, and its muxed parts and segments (track "muxed": video and audio in each
  moof, for HLS players) come out of push()/finish() after the items they are made of.

`CmafWindow` (cmaf_window.py) keeps the recent segments, the parts of the last few, and the inits they use, per
track; `llhls.py` renders its HLS playlists and answers blocking reloads, `dash.py` its MPD.
Names: `segment_name`, `part_name`, `init_name` and `parse_cmaf_name` (the edge may prefix them).
"""

from __future__ import annotations

import math

import re
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from ..errors import MediaError, UsageError
from ..media.aac import parse_audio_specific_config
from ..media.av1 import iter_obus, parse_av1_config, sequence_header_of, strip_temporal_delimiter
from ..media.frames import Frame, FrameKind
from ..media.h264 import iter_nal_units, parse_avc_config, parse_sps
from ..media.hevc import parse_hevc_config, parse_hevc_sps
from ..media.opus import SAMPLE_RATE as OPUS_SAMPLE_RATE
from ..media.opus import packet_samples, parse_opus_head
from ..media.vp9 import keyframe_size, parse_vpcc
from .fmp4 import (
    AUDIO_TRUN,
    SAMPLE_NON_SYNC,
    SAMPLE_SYNC,
    VIDEO_TRUN,
    InitTrack,
    Pieces,
    av01_sample_entry,
    avc1_sample_entry,
    fragment,
    hvc1_sample_entry,
    init_segment,
    mp4a_sample_entry,
    opus_sample_entry,
    vp09_sample_entry,
)
from .segment import Cut, CutPlan

VIDEO = "video"
AUDIO = "audio"
MUXED = "muxed"
"""Video and audio in one fMP4 rendition (cmaf_mux.py): what HLS players fetch, half the requests."""
TRACKS = (VIDEO, AUDIO)
VIDEO_TIMESCALE = 90_000
CARRIED_VIDEO = frozenset({"h264", "hevc", "av1", "vp9"})
CARRIED_AUDIO = frozenset({"aac", "opus"})

DEFAULT_TARGET_DURATION_S = 2.0
DEFAULT_PART_TARGET_S = 0.333
MAX_FRAME_RATE = 300.0
DEFAULT_LISTED_SEGMENTS = 6

_TRACK_IDS = {VIDEO: 1, AUDIO: 2}
_MAX_HELD_AUDIO = 512  # audio frames held waiting for video or for the audio-only decision (~10 s)
_MAX_PART_SAMPLES = 1000  # bounds a part whose timestamps stopped moving
_MAX_PARTS = 512  # bounds a segment the same way
_MAX_BOUNDARIES = 16
_BACKWARD_LIMIT_MS = 1000
_DEFAULT_VIDEO_DURATION = 3000  # 1/30 s at 90 kHz: the last frame's duration when nothing better is known


# -- what comes out --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CmafInit:
    """One track's init segment (ftyp + moov) and what manifests say about the track."""

    track: str
    """"video" or "audio"."""
    version: int
    """1 for the track's first config, +1 at every change: part of the init's URI."""
    data: bytes
    codec: str
    """The project's codec name: "h264", "hevc", "av1", "vp9", "aac", "opus"."""
    codec_string: str
    """RFC 6381 codecs parameter, e.g. "avc1.64001f", "mp4a.40.2", "opus"."""
    timescale: int
    width: int = 0
    height: int = 0
    frame_rate: float | None = None
    """Frames per second the bitstream signals, if it does."""

    @property
    def signalled_frame_rate(self) -> float | None:
        """`frame_rate` if it is one a picture could have: an encoder that stamps in milliseconds may
        signal its tick (1000 fps) instead; then None, and a manifest measures the rate instead."""
        rate = self.frame_rate
        return rate if rate is not None and 0 < rate <= MAX_FRAME_RATE else None
    sample_rate: int = 0
    """Audio: the rate a listener hears, in Hz (the SBR rate for HE-AAC, 48000 for Opus)."""
    channels: int = 0
    nal_length_size: int = 0
    """H.264 and HEVC: bytes in each NAL unit length prefix of a sample (0 for other codecs)."""

    def name(self) -> str:
        return init_name(self.track, self.version)


@dataclass(frozen=True, slots=True)
class Timeline:
    """A stretch of the stream with continuous decode times, tied to the wall clock."""

    index: int
    """0 for the first, +1 at every discontinuity (a DASH Period each)."""
    anchor_ms: int
    """A decode time on the stream's timeline (ms): the first segment's start."""
    anchor_wall: float
    """Unix seconds at `anchor_ms`."""

    def wall_time(self, ms: float) -> float:
        """Unix seconds at stream time `ms` (ms) on this timeline."""
        return self.anchor_wall + (ms - self.anchor_ms) / 1000


@dataclass(frozen=True, slots=True)
class CmafPart:
    """One LL-HLS partial segment: a moof+mdat of one track."""

    track: str
    sequence: int
    """Media sequence number of the segment this part belongs to."""
    index: int
    """0, 1, ... within that segment."""
    data: bytes
    start: int
    """Decode time of the first sample (tfdt), in `timescale` ticks."""
    duration: int
    """In `timescale` ticks."""
    timescale: int
    independent: bool
    """Starts with a keyframe (always, for audio)."""
    init: CmafInit
    timeline: Timeline
    discontinuity: bool
    """The parent segment starts a new timeline or format (EXT-X-DISCONTINUITY before it)."""
    samples: int

    @property
    def duration_s(self) -> float:
        return self.duration / self.timescale

    @property
    def start_ms(self) -> float:
        return self.start * 1000 / self.timescale

    @property
    def program_date_time(self) -> float:
        return self.timeline.wall_time(self.start_ms)

    def name(self) -> str:
        return part_name(self.track, self.sequence, self.index)


@dataclass(frozen=True, slots=True)
class CmafSegment:
    """One CMAF segment of one track: the concatenation of its parts."""

    track: str
    sequence: int
    data: bytes | Pieces
    """The segment's bytes; Pieces only from the recorder's GopFragmenter (written with writev)."""
    start: int
    """Decode time of the first sample, in `timescale` ticks (DASH S@t)."""
    duration: int
    """In `timescale` ticks (DASH S@d)."""
    timescale: int
    init: CmafInit
    timeline: Timeline
    discontinuity: bool
    independent: bool
    """Starts with a keyframe (always, for audio)."""
    part_count: int
    samples: int

    @property
    def duration_s(self) -> float:
        return self.duration / self.timescale

    @property
    def duration_ms(self) -> int:
        return self.duration * 1000 // self.timescale

    @property
    def start_ms(self) -> float:
        return self.start * 1000 / self.timescale

    @property
    def end(self) -> int:
        return self.start + self.duration

    @property
    def program_date_time(self) -> float:
        return self.timeline.wall_time(self.start_ms)

    def name(self) -> str:
        return segment_name(self.track, self.sequence)


# -- names -----------------------------------------------------------------------------------------


def segment_name(track: str, sequence: int) -> str:
    """"video-123.m4s": the same name in the HLS playlist and the DASH template ($Number$)."""
    return f"{track}-{sequence}.m4s"


def part_name(track: str, sequence: int, index: int) -> str:
    """"video-123.4.m4s": part 4 of segment 123."""
    return f"{track}-{sequence}.{index}.m4s"


def init_name(track: str, version: int) -> str:
    """"video-init-2.mp4"."""
    return f"{track}-init-{version}.mp4"


@dataclass(frozen=True, slots=True)
class CmafName:
    """What a CMAF file name made by this module refers to."""

    kind: str
    """"segment", "part" or "init"."""
    track: str
    number: int
    """The segment's sequence, or the init's version."""
    part: int | None = None


_NUMBER = r"(0|[1-9][0-9]{0,17})"
_NAME = re.compile(rf"(video|audio|muxed)-(?:init-{_NUMBER}\.mp4|{_NUMBER}(?:\.{_NUMBER})?\.m4s)")


def parse_cmaf_name(name: str) -> CmafName | None:
    """The file a name made by segment_name/part_name/init_name refers to; None for any other name."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    track, version, sequence, part = match.groups()
    if version is not None:
        return CmafName("init", track, int(version))
    if part is not None:
        return CmafName("part", track, int(sequence), int(part))
    return CmafName("segment", track, int(sequence))


# -- one track's fragment writer -------------------------------------------------------------------


class _Track:
    """One track's config, position and open segment/part; builds its fragments."""

    __slots__ = (
        "name", "track_id", "trun_flags", "stride", "default_flags",
        "config_bytes", "codec", "init", "pending", "versions", "timescale",
        "last_tick", "last_duration", "fragment_number", "last_sequence",
        "open", "sequence", "seg_start", "timeline", "discontinuity", "independent", "parts",
        "seg_bytes", "seg_samples", "boundary", "force_discontinuity", "frame_samples",
        "part_start", "part_independent", "entries", "pieces", "payload_size", "count", "tap",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.track_id = _TRACK_IDS[name]
        video = name == VIDEO
        self.trun_flags = VIDEO_TRUN if video else AUDIO_TRUN
        self.stride = 4 if video else 2
        self.default_flags = None if video else SAMPLE_SYNC
        self.config_bytes: bytes | None = None
        self.codec: str | None = None
        self.init: CmafInit | None = None
        self.pending: CmafInit | None = None
        self.versions = 0
        self.timescale = VIDEO_TIMESCALE if video else 0
        self.last_tick: int | None = None
        self.last_duration = 0
        self.fragment_number = 0
        self.last_sequence: int | None = None
        self.open = False
        self.sequence = 0
        self.seg_start = 0
        self.timeline: Timeline | None = None
        self.discontinuity = False
        self.independent = True
        self.parts: list[CmafPart] = []
        self.seg_bytes = 0
        self.seg_samples = 0
        self.boundary: _Boundary | None = None
        self.force_discontinuity = False
        self.frame_samples = 1024
        self.part_start = 0
        self.part_independent = True
        self.entries: list[int] = []
        self.pieces: list[bytes | memoryview] = []
        self.payload_size = 0
        self.count = 0
        self.tap: SampleTap | None = None

    @property
    def active_init(self) -> CmafInit | None:
        """The init the next segment will use."""
        return self.pending or self.init

    def start_segment(
        self, sequence: int, tick: int, timeline: Timeline, discontinuity: bool, independent: bool
    ) -> None:
        if self.pending is not None:
            self.init, self.pending = self.pending, None
        self.open = True
        self.sequence = sequence
        self.last_sequence = sequence
        self.seg_start = self.part_start = tick
        self.timeline = timeline
        self.discontinuity = discontinuity or self.force_discontinuity
        self.force_discontinuity = False
        self.independent = independent
        self.parts = []
        self.seg_bytes = self.seg_samples = 0

    def append(self, tick: int, cts: int, payload: bytes | memoryview, sync: bool) -> None:
        entries = self.entries
        if self.count:
            duration = tick - self.last_tick  # type: ignore[operator]
            entries[-self.stride] = duration
            self.last_duration = duration
        else:
            self.part_independent = sync
        size = len(payload)
        if self.stride == 4:
            entries += (0, size, SAMPLE_SYNC if sync else SAMPLE_NON_SYNC, cts)
        else:
            entries += (0, size)
        self.pieces.append(payload)
        self.payload_size += size
        self.count += 1
        self.last_tick = tick
        if self.tap is not None and self.stride == 2:
            self.tap.audio_sample(tick, payload, self.init)  # type: ignore[arg-type]

    def close_part(self, end_tick: int) -> CmafPart:
        assert self.count and self.init is not None and self.timeline is not None
        duration = max(1, end_tick - self.last_tick)  # type: ignore[operator]
        self.entries[-self.stride] = duration
        self.last_duration = duration
        self.fragment_number += 1
        data = fragment(
            sequence_number=self.fragment_number,
            track_id=self.track_id,
            base_media_decode_time=self.part_start,
            trun_flags=self.trun_flags,
            entries=self.entries,
            payload=self.pieces,
            payload_size=self.payload_size,
            default_sample_flags=self.default_flags,
        )
        end = self.last_tick + duration  # type: ignore[operator]
        part = CmafPart(
            track=self.name, sequence=self.sequence, index=len(self.parts), data=data,
            start=self.part_start, duration=end - self.part_start, timescale=self.timescale,
            independent=self.part_independent, init=self.init, timeline=self.timeline,
            discontinuity=self.discontinuity, samples=self.count,
        )
        self.parts.append(part)
        self.seg_bytes += len(data)
        self.seg_samples += self.count
        if self.tap is not None and self.stride == 4:
            self.tap.video_part(part, self.entries, self.pieces, self.payload_size)  # handed over: new lists below
        self.entries = []
        self.pieces = []
        self.payload_size = 0
        self.count = 0
        self.part_start = end
        return part

    def close_segment(self, end_tick: int, out: list[CmafPart | CmafSegment]) -> None:
        if self.count:
            out.append(self.close_part(end_tick))
        self.open = False
        parts = self.parts
        if not parts:
            return
        assert self.init is not None and self.timeline is not None
        end = parts[-1].start + parts[-1].duration
        segment = CmafSegment(
            track=self.name, sequence=self.sequence, data=b"".join(p.data for p in parts),
            start=self.seg_start, duration=end - self.seg_start, timescale=self.timescale,
            init=self.init, timeline=self.timeline, discontinuity=self.discontinuity,
            independent=self.independent, part_count=len(parts), samples=self.seg_samples,
        )
        out.append(segment)
        self.parts = []
        if self.tap is not None and self.stride == 4:
            self.tap.video_segment(segment)

    def estimated_end(self) -> int:
        """Where the last sample ends when no next sample says: its nominal or previous duration."""
        assert self.last_tick is not None
        return self.last_tick + (self.last_duration or (_DEFAULT_VIDEO_DURATION if self.stride == 4 else 1))

    def forget_position(self) -> None:
        self.last_tick = None
        self.last_duration = 0
        self.boundary = None

    def forget_config(self) -> None:
        self.config_bytes = None
        self.codec = None
        self.init = self.pending = None


class SampleTap(Protocol):
    """What a muxer (cmaf_mux.py) is told of the segmenter's video parts and audio samples, as they are made."""

    def video_part(self, part: CmafPart, entries: list[int], pieces: list[bytes | memoryview], size: int) -> None:
        """A video part closed; `entries` and `pieces` are its trun fields and samples (now the tap's)."""

    def video_segment(self, segment: CmafSegment) -> None:
        """A video segment closed (after its last part)."""

    def audio_sample(self, tick: int, payload: bytes | memoryview, init: CmafInit) -> None:
        """An audio sample placed at decode time `tick` (in `init.timescale` ticks)."""

    def reset(self) -> None:
        """Every open segment closed at a discontinuity, a timestamp jump or the end: flush what is held."""

    def take(self) -> list[CmafPart | CmafSegment]:
        """The muxed parts and segments complete since the last call, in order."""
        ...

    def holds_parts(self) -> bool:
        """Whether a video part waits for audio, so a next audio sample may complete it."""
        ...


@dataclass(frozen=True, slots=True)
class _Boundary:
    """Where a video segment starts: audio starts its segment of the same number there."""

    sequence: int
    start_ms: int
    timeline: Timeline
    discontinuity: bool


# -- the segmenter ---------------------------------------------------------------------------------


class CmafSegmenter:
    """Cuts one stream's Frames into CMAF init segments, parts and segments (see the module docstring)."""

    def __init__(
        self,
        *,
        target_duration_s: float = DEFAULT_TARGET_DURATION_S,
        part_target_s: float = DEFAULT_PART_TARGET_S,
        max_segment_duration_s: float = 10.0,
        first_sequence: int = 0,
        audio_only_after_ms: int = 1000,
        max_audio_wait_ms: int = 500,
        max_segment_bytes: int = 64 << 20,
        max_part_bytes: int = 16 << 20,
        cuts: CutPlan | None = None,
        follow: CutPlan | None = None,
        muxer: SampleTap | None = None,
    ) -> None:
        if not 0 < target_duration_s <= max_segment_duration_s:
            raise UsageError(
                f"CMAF target duration {target_duration_s} s is invalid; it must be > 0 and <= the "
                f"maximum segment duration ({max_segment_duration_s} s)"
            )
        if not 0.05 <= part_target_s <= target_duration_s:
            raise UsageError(
                f"LL-HLS part target {part_target_s} s is invalid; it must be 0.05 s or more and at most "
                f"the target duration ({target_duration_s} s)"
            )
        self.target_ms = round(target_duration_s * 1000)
        self.part_target_ms = part_target_s * 1000
        self.max_ms = round(max_segment_duration_s * 1000)
        self.audio_only_after_ms = audio_only_after_ms
        self.max_audio_wait_ms = max_audio_wait_ms
        self.max_bytes = max_segment_bytes
        self.max_part_bytes = max_part_bytes

        self.skipped_codecs: set[str] = set()
        """Codecs met and left out, for the caller to log once each."""
        self.frames_without_config = 0
        """Media frames dropped because their codec's config had not arrived."""
        self.frames_waiting_for_keyframe = 0
        """Frames dropped while waiting for a keyframe (or, audio, for the video's first segment)."""
        self.timeline_resets = 0
        """Timestamp jumps that started a new timeline without a discontinuity() call."""
        self.plan_mismatches = 0
        """Following a plan: planned cuts whose number was not the next one (the rendition kept its own)."""
        self.cuts = cuts
        """Where this segmenter records its video cuts for renditions to follow (None: nobody asks)."""
        self.follow = follow
        """The plan this segmenter follows (a rendition's), or None."""
        self._shift: int | None = None  # following: ms its video decode times move back by
        self._number_offset = 0  # following: the source's sequence numbers minus ours

        self._video = _Track(VIDEO)
        self._audio = _Track(AUDIO)
        self._audio_config_latest: bytes | None = None  # the newest audio config pushed (maybe still queued)
        self._next_sequence = first_sequence
        self._timeline: Timeline | None = None
        self._timelines = 0
        self._pending_discontinuity = False
        self._format_changed = False
        self._boundaries: deque[_Boundary] = deque(maxlen=_MAX_BOUNDARIES)
        self._audio_queue: deque[tuple[Frame, int]] = deque()  # (frame, its samples; -1 for a config)
        self._audio_only = False
        self._audio_starved_since: int | None = None
        self._video_watermark: int | None = None
        self._out: list[CmafPart | CmafSegment] = []
        self._last_now = 0.0
        self.muxer = muxer
        """What also makes the muxed rendition (cmaf_mux.CmafMuxer: video and audio in each part), or None."""
        self._muxer = self._video.tap = self._audio.tap = muxer

    # -- public ----------------------------------------------------------------------------------

    @property
    def next_sequence(self) -> int:
        """The smallest sequence number no segment has taken yet."""
        return self._next_sequence

    def init(self, track: str) -> CmafInit | None:
        """The init segment the track's next (or open) segment uses, once its config is known."""
        t = self._track(track)
        return t.init if t.open else t.active_init

    def push(self, frame: Frame, now: float) -> list[CmafPart | CmafSegment]:
        """Feed one frame in the stream's order; returns the parts and segments now complete, in order.

        Raises MediaError for a malformed config or frame; the segmenter is then as it was.
        """
        out: list[CmafPart | CmafSegment] = []
        self._last_now = now
        self._push(frame, now, out)
        if self._out:
            out[:0] = self._out
            self._out = []
        if self._muxer is not None:
            out += self._muxer.take()
        return out

    def discontinuity(self, *, forget_configs: bool = False) -> None:
        """The next segment starts a new timeline (EXT-X-DISCONTINUITY, a new DASH Period).

        The open segments are closed at once, each ending with its last sample, and come out of the
        next push() (or finish()); the next segment starts at the next keyframe and the wall clock is
        re-anchored there. With `forget_configs` the codec configs are dropped too, so what comes
        next (a new publisher's configs) decides the tracks afresh.
        """
        self._close_all(self._out, force_audio=True)
        self._shift = None
        if forget_configs:
            for track in (self._video, self._audio):
                track.forget_config()
            self._audio_config_latest = None
            self._audio_only = False

    def finish(self, now: float | None = None) -> list[CmafPart | CmafSegment]:
        """Close the open segments at the end of the stream; returns the last parts and segments.

        `now` is accepted for symmetry with push. Frames pushed afterwards start a new timeline.
        """
        self.discontinuity()
        out, self._out = self._out, []
        if self._muxer is not None:
            out += self._muxer.take()
        return out

    def next_output_ms(self) -> float:
        """The earliest decode time (ms) of a frame that may complete a part or segment, so before which
        this segmenter's output does not change; -inf when any frame may (a track not open yet, a config
        or discontinuity pending, following a plan, a muxed part waiting for its audio).

        A part closes at the first sample whose predicted end (its tick plus the interval before it)
        passes the part target, so with the track's last interval `d` that sample comes at
        part_start + target - d; a sample that comes early (a shorter interval) does so by a fraction of
        a frame. A video segment closes at a keyframe once its target has passed. Caps on bytes and
        sample counts are left out: they only bound parts and segments whose media misbehaves."""
        if self.follow is not None or self._format_changed or self._pending_discontinuity:
            return -math.inf
        if self._muxer is not None and self._audio_config_latest is not None and self._muxer.holds_parts():
            return -math.inf
        v, a = self._video, self._audio
        due = math.inf
        if v.active_init is not None and not self._audio_only:
            if not v.open or v.last_tick is None:
                return -math.inf
            due = min(v.seg_start + self.target_ms * 90, self._part_due(v)) / 90
        if self._audio_config_latest is not None:
            if not a.open or a.last_tick is None or not a.timescale or a.pending is not None:
                return -math.inf
            if any(samples < 0 for _, samples in self._audio_queue):
                return -math.inf  # a new audio config waits in the queue
            ticks = self._part_due(a)
            if not self._driven_by_video():
                ticks = min(ticks, a.seg_start + self.target_ms * a.timescale // 1000)
            elif a.boundary is not None:
                # A video segment that started after the audio's: the audio cuts at its first frame there.
                for boundary in self._boundaries:
                    if boundary.start_ms > a.boundary.start_ms:
                        due = min(due, boundary.start_ms)
                        break
            due = min(due, ticks * 1000 / a.timescale)
        return due if due != math.inf else -math.inf

    def _part_due(self, t: _Track) -> float:
        """The earliest tick of a sample expected to close the track's open part (see next_output_ms)."""
        threshold = t.part_start + (self.part_target_ms + 1) * t.timescale / 1000
        if t.last_duration > 0:
            return threshold - t.last_duration + 1  # (it must pass the target, not reach it)
        # No interval known yet: the first sample T with 2T - last > threshold (any interval).
        return (threshold + t.last_tick) / 2  # type: ignore[operator]

    # -- dispatch --------------------------------------------------------------------------------

    def _track(self, name: str) -> _Track:
        if name == VIDEO:
            return self._video
        if name == AUDIO:
            return self._audio
        raise UsageError(f"unknown CMAF track {name!r}; tracks are {TRACKS}")

    def _push(self, frame: Frame, now: float, out: list[CmafPart | CmafSegment]) -> None:
        if frame.kind == FrameKind.VIDEO:
            if frame.codec not in CARRIED_VIDEO:
                self.skipped_codecs.add(frame.codec)
            elif frame.is_config:
                self._video_config(frame)
            elif frame.is_end:
                pass
            else:
                self._video_frame(frame, now, out)
                self._drain_audio(now, out)
        elif frame.kind == FrameKind.AUDIO:
            if frame.codec not in CARRIED_AUDIO:
                self.skipped_codecs.add(frame.codec)
            elif frame.is_config:
                raw = bytes(frame.payload)
                if raw != self._audio_config_latest:
                    self._audio_init(frame, 0)  # validates it before it is queued
                    if self._audio.last_sequence is not None and self._driven_by_video():
                        # The video cuts at its next keyframe, where audio resumes with the new init.
                        self._format_changed = True
                    self._audio_config_latest = raw
                    self._audio_queue.append((frame, -1))
                    self._drain_audio(now, out)
            elif frame.is_end:
                pass
            elif self._audio_config_latest is None:
                self.frames_without_config += 1
            else:
                samples = packet_samples(frame.payload) if frame.codec == "opus" else 0
                if len(self._audio_queue) >= _MAX_HELD_AUDIO:
                    self._process_audio(*self._audio_queue.popleft(), now, out)
                self._audio_queue.append((frame, samples))
                self._drain_audio(now, out)

    # -- configs ---------------------------------------------------------------------------------

    def _video_config(self, frame: Frame) -> None:
        v = self._video
        raw = bytes(frame.payload)
        if raw == v.config_bytes and frame.codec == v.codec:
            return  # encoders resend identical sequence headers; nothing changes
        init = self._video_init(frame.codec, raw, v.versions + 1)  # raises before anything changes
        v.versions += 1
        v.config_bytes, v.codec = raw, frame.codec
        if v.open:
            v.pending = init
            self._format_changed = True  # cut at the next keyframe, with a discontinuity
        else:
            v.init, v.pending = init, None

    def _video_init(self, codec: str, raw: bytes, version: int) -> CmafInit:
        width = height = 0
        frame_rate = None
        nal_length_size = 0
        if codec == "h264":
            avc = parse_avc_config(raw)
            codec_string, nal_length_size = avc.codec_string, avc.nal_length_size
            try:
                sps = parse_sps(avc.sps[0])
                width, height, frame_rate = sps.width, sps.height, sps.frame_rate
            except MediaError:
                pass  # decoders read the SPS themselves; the sample entry's size is advisory
            entry = avc1_sample_entry(raw, width, height)
        elif codec == "hevc":
            hevc = parse_hevc_config(raw)
            codec_string, nal_length_size = hevc.codec_string, hevc.nal_length_size
            try:
                info = parse_hevc_sps(hevc.sps[0])
                width, height = info.width, info.height
            except MediaError:
                pass
            entry = hvc1_sample_entry(raw, width, height)
        elif codec == "vp9":
            # vpcC holds no picture size: the init gets it from the first keyframe (_sized_vp9_init).
            codec_string = parse_vpcc(raw).codec_string
            entry = vp09_sample_entry(raw, width, height)
        else:
            av1 = parse_av1_config(raw)
            codec_string = av1.codec_string
            try:
                header = sequence_header_of(av1)
                if header is not None:
                    width, height, frame_rate = header.max_width, header.max_height, header.frame_rate
            except MediaError:
                pass
            entry = av01_sample_entry(raw, width, height)
        data = init_segment([InitTrack(_TRACK_IDS[VIDEO], b"vide", VIDEO_TIMESCALE, entry, width, height)])
        return CmafInit(
            track=VIDEO, version=version, data=data, codec=codec, codec_string=codec_string,
            timescale=VIDEO_TIMESCALE, width=width, height=height, frame_rate=frame_rate,
            nal_length_size=nal_length_size,
        )

    def _sized_vp9_init(self, target: CmafInit, width: int, height: int) -> None:
        """Give a VP9 init (made before any frame) the size its first keyframe declares, before it is used."""
        entry = vp09_sample_entry(self._video.config_bytes or b"", width, height)
        data = init_segment([InitTrack(_TRACK_IDS[VIDEO], b"vide", VIDEO_TIMESCALE, entry, width, height)])
        sized = CmafInit(
            track=VIDEO, version=target.version, data=data, codec=target.codec, codec_string=target.codec_string,
            timescale=VIDEO_TIMESCALE, width=width, height=height,
        )
        v = self._video
        if v.pending is target:
            v.pending = sized
        elif v.init is target:
            v.init = sized

    def _audio_init(self, frame: Frame, version: int) -> CmafInit:
        raw = bytes(frame.payload)
        if frame.codec == "aac":
            asc = parse_audio_specific_config(raw)
            channels = asc.channels or 2  # a program config element: the decoder reads the layout
            entry = mp4a_sample_entry(raw, channels, asc.sample_rate)
            timescale, codec_string = asc.sample_rate, asc.codec_string
            heard = asc.output_sample_rate or asc.sample_rate
        else:
            opus = parse_opus_head(raw)
            channels = opus.channels
            entry = opus_sample_entry(opus.dops(), channels)
            timescale, codec_string, heard = OPUS_SAMPLE_RATE, opus.codec_string, OPUS_SAMPLE_RATE
        data = init_segment([InitTrack(_TRACK_IDS[AUDIO], b"soun", timescale, entry)])
        return CmafInit(
            track=AUDIO, version=version, data=data, codec=frame.codec, codec_string=codec_string,
            timescale=timescale, sample_rate=heard, channels=channels,
        )

    def _apply_audio_config(self, frame: Frame, out: list[CmafPart | CmafSegment]) -> None:
        a = self._audio
        if bytes(frame.payload) == a.config_bytes and frame.codec == a.codec:
            return  # the config in force, sent again
        init = self._audio_init(frame, a.versions + 1)
        a.versions += 1
        a.config_bytes, a.codec = bytes(frame.payload), frame.codec
        if a.open:
            # Samples after this need the new init: end the audio segment here; audio resumes with
            # the next segment, flagged as a discontinuity for every track.
            a.close_segment(a.estimated_end(), out)
            a.force_discontinuity = True
            a.last_tick = None  # a.boundary stays: audio resumes at the video's next segment
            a.last_duration = 0
        a.init, a.pending = init, None
        a.timescale = init.timescale
        if init.codec == "aac":
            a.frame_samples = parse_audio_specific_config(a.config_bytes).frame_samples

    # -- video -----------------------------------------------------------------------------------

    def _driven_by_video(self) -> bool:
        return not self._audio_only and self._video.active_init is not None

    def _video_frame(self, frame: Frame, now: float, out: list[CmafPart | CmafSegment]) -> None:
        v = self._video
        target = v.active_init
        if target is None or frame.codec != target.codec:
            self.frames_without_config += 1
            return
        if v.open and v.init is not None and frame.codec != v.init.codec and not frame.keyframe:
            self.frames_waiting_for_keyframe += 1  # a new codec: wait for its keyframe
            return
        payload = frame.payload
        # Check the sample's framing before anything changes (a bad one raises MediaError).
        if target.nal_length_size:
            for _ in iter_nal_units(payload, target.nal_length_size):
                pass
        elif frame.codec == "av1":
            payload = strip_temporal_delimiter(payload)
            for _ in iter_obus(payload):
                pass
        elif frame.codec == "vp9" and frame.keyframe and not target.width:
            size = keyframe_size(payload)
            if size is not None:
                self._sized_vp9_init(target, *size)
        tick = frame.dts_ms * 90
        if self.follow is not None:
            self._video_following(frame, now, payload, self.follow, out)
            return
        if v.open:
            step = tick - v.last_tick  # type: ignore[operator]
            if step > self.max_ms * 90 or step < -_BACKWARD_LIMIT_MS * 90:
                self.timeline_resets += 1
                self._close_all(out, force_audio=True)
            elif step <= 0:
                tick = v.last_tick + 1  # type: ignore[operator]
        cts = frame.pts_ms * 90 - tick
        cuts = self.cuts
        if not v.open:
            if not frame.keyframe:
                self.frames_waiting_for_keyframe += 1
                return
            self._open_video(tick, now, independent=True)
            if cuts is not None:
                self._record(cuts, frame, tick)
        else:
            elapsed = tick - v.seg_start
            if frame.keyframe and (elapsed >= self.target_ms * 90 or self._format_changed):
                v.close_segment(tick, out)
                self._open_video(tick, now, independent=True)
            elif (
                elapsed >= self.max_ms * 90
                or v.seg_bytes + v.payload_size >= self.max_bytes
                or len(v.parts) >= _MAX_PARTS
            ):
                v.close_segment(tick, out)
                self._open_video(tick, now, independent=frame.keyframe)
            elif self._part_is_full(v, tick):
                out.append(v.close_part(tick))
            else:
                if frame.keyframe and cuts is not None:
                    cuts.passed(frame.pts_ms)
                cuts = None  # nothing starts at this frame
            if cuts is not None:
                self._record(cuts, frame, tick)
        v.append(tick, cts, payload, frame.keyframe)
        self._video_watermark = frame.dts_ms

    def _record(self, cuts: CutPlan, frame: Frame, tick: int) -> None:
        """The reference's side of a CutPlan: a video segment or part starts at this frame."""
        v = self._video
        assert v.timeline is not None
        cuts.record(frame.pts_ms, Cut(
            v.sequence, len(v.parts), v.timeline.wall_time(tick / 90), frame.pts_ms - tick // 90,
            v.discontinuity and not v.parts, frame.keyframe,
        ))

    def _video_following(
        self, frame: Frame, now: float, payload: bytes | memoryview, plan: CutPlan, out: list[CmafPart | CmafSegment]
    ) -> None:
        """A rendition's video: segments and parts start where the source's did (see the module docstring)."""
        v = self._video
        pts = frame.pts_ms
        cut = plan.at(pts)
        if not v.open:
            if cut is None or cut.part or not frame.keyframe:
                self.frames_waiting_for_keyframe += 1
                return
            if self._shift is None:
                # The source decodes its keyframes this much before showing them: so do we, from here on.
                self._shift = max(0, cut.decode_delay_ms - frame.cts_ms)
            tick = (frame.dts_ms - self._shift) * 90
            self._take(cut, tick, now, independent=True)
        else:
            tick = (frame.dts_ms - (self._shift or 0)) * 90
            step = tick - v.last_tick  # type: ignore[operator]
            if step > self.max_ms * 90 or step < -_BACKWARD_LIMIT_MS * 90:
                self.timeline_resets += 1
                self._close_all(out, force_audio=True)
                self._shift = None
                self._video_following(frame, now, payload, plan, out)
                return
            if step <= 0:
                tick = v.last_tick + 1  # type: ignore[operator]
            elapsed = tick - v.seg_start
            decided = plan.decided(pts)
            if cut is not None and not cut.part and (frame.keyframe or not cut.independent):
                # (A keyframe cut where this frame is none: the segment goes on, and the next cut tells.)
                v.close_segment(tick, out)
                self._take(cut, tick, now, independent=frame.keyframe)
            elif (
                elapsed >= (2 * self.max_ms if decided else self.max_ms) * 90
                or v.seg_bytes + v.payload_size >= self.max_bytes
                or len(v.parts) >= _MAX_PARTS
            ):
                # Bounded anyway (where the plan reaches, the source's own maximum bounds it first).
                v.close_segment(tick, out)
                self._open_video(tick, now, independent=frame.keyframe)
            elif frame.keyframe and (self._format_changed or (not decided and elapsed >= self.target_ms * 90)):
                # A new config of its own needs its init from this keyframe on, plan or not; and where the
                # plan does not reach yet, the same rule as the source's.
                v.close_segment(tick, out)
                self._open_video(tick, now, independent=True)
            elif cut is not None or (not decided and self._part_is_full(v, tick)) or self._part_is_overfull(v):
                if v.count:
                    out.append(v.close_part(tick))
        v.append(tick, pts * 90 - tick, payload, frame.keyframe)
        self._video_watermark = tick // 90

    def _take(self, cut: Cut, tick: int, now: float, *, independent: bool) -> None:
        """Open a video segment where the plan says, with its number (if it is the next) and its date."""
        v = self._video
        if v.last_sequence is None:
            self._next_sequence = max(self._next_sequence, cut.sequence)  # the first: the source's number
            self._number_offset = cut.sequence - self._next_sequence
        elif cut.sequence - self._number_offset != v.last_sequence + 1:
            # A cut missed (or made alone): keep the numbers contiguous, as HLS requires, from here on
            # this many behind (or ahead of) the source's; the times stay aligned.
            self.plan_mismatches += 1
            self._number_offset = cut.sequence - v.last_sequence - 1
        timeline = None
        new_timeline = cut.discontinuity and v.last_sequence is not None
        if self._timeline is None or new_timeline:
            # Anchor the wall clock where the source's says, so program date times agree.
            timeline = self._timeline = Timeline(self._timelines, tick // 90, cut.program_date_time)
            self._timelines += 1
            self._pending_discontinuity |= new_timeline
        self._open_video(tick, now, independent=independent, timeline=timeline)

    def _part_is_overfull(self, t: _Track) -> bool:
        return t.payload_size >= self.max_part_bytes or t.count >= _MAX_PART_SAMPLES

    def _part_is_full(self, t: _Track, tick: int) -> bool:
        # Close the part when this sample would carry it past the target (its duration is taken
        # to be like the previous one's), so parts stay within PART-TARGET.
        predicted_end = tick + (tick - t.last_tick)  # type: ignore[operator]
        return (
            # A millisecond of slack (PART-TARGET is advertised 1 ms up) lets ten 30 fps frames make
            # one 0.333 s part instead of nine.
            (predicted_end - t.part_start) * 1000 > (self.part_target_ms + 1) * t.timescale
            or t.payload_size >= self.max_part_bytes
            or t.count >= _MAX_PART_SAMPLES
        )

    def _open_video(self, tick: int, now: float, *, independent: bool, timeline: Timeline | None = None) -> None:
        v = self._video
        ms = tick // 90
        discontinuity = self._pending_discontinuity or self._format_changed or v.force_discontinuity
        if timeline is None:
            timeline = self._timeline_at(ms, now, discontinuity)
        sequence = self._claim(v, self._next_sequence)
        v.start_segment(sequence, tick, timeline, discontinuity, independent)
        self._pending_discontinuity = self._format_changed = False
        self._audio_only = False  # video drives from here (audio follows its boundaries)
        self._boundaries.append(_Boundary(sequence, ms, timeline, discontinuity))

    def _timeline_at(self, ms: int, now: float, discontinuity: bool) -> Timeline:
        current = self._timeline
        if current is None:
            current = Timeline(self._timelines, ms, now)
        elif discontinuity:
            # A new format on the same clock: a new Period, but program date times run on.
            current = Timeline(self._timelines, ms, current.wall_time(ms))
        else:
            return current
        self._timelines += 1
        self._timeline = current
        return current

    def _claim(self, track: _Track, wanted: int) -> int:
        # Each track's sequence numbers stay contiguous; a track that starts takes the number wanted.
        sequence = wanted if track.last_sequence is None else track.last_sequence + 1
        self._next_sequence = max(self._next_sequence, sequence + 1)
        return sequence

    # -- audio -----------------------------------------------------------------------------------

    def _drain_audio(self, now: float, out: list[CmafPart | CmafSegment]) -> None:
        queue = self._audio_queue
        while queue and not self._audio_must_wait(queue[0][0].dts_ms):
            frame, samples = queue.popleft()
            self._process_audio(frame, samples, now, out)

    def _audio_must_wait(self, dts: int) -> bool:
        if self._audio_only:
            return False
        queue = self._audio_queue
        if self._video.active_init is None:
            # No video config: wait a while for one before calling the stream audio only.
            if queue[-1][0].dts_ms - queue[0][0].dts_ms >= self.audio_only_after_ms:
                self._audio_only = True
                return False
            return True
        watermark = self._video_watermark
        if watermark is not None and dts <= watermark:
            return False
        reference = watermark if watermark is not None else queue[0][0].dts_ms
        return queue[-1][0].dts_ms - reference <= self.max_audio_wait_ms  # video stalled: stop holding

    def _process_audio(self, frame: Frame, samples: int, now: float, out: list[CmafPart | CmafSegment]) -> None:
        if samples < 0:
            self._apply_audio_config(frame, out)
            return
        a = self._audio
        init = a.active_init
        if init is None or frame.codec != init.codec:
            self.frames_without_config += 1
            return
        if frame.codec == "aac":
            samples = a.frame_samples
        timescale = init.timescale
        dts = frame.dts_ms
        tick = (dts * timescale + 500) // 1000
        if a.last_tick is not None:
            expected = a.last_tick + a.last_duration
            drift = tick - expected
            if drift > self.max_ms * timescale // 1000 or drift < -_BACKWARD_LIMIT_MS * timescale // 1000:
                self.timeline_resets += 1
                self._close_all(out, force_audio=False)
            elif drift <= a.last_duration // 2:
                tick = expected  # within rounding of where it should be, or overlapping: back to back
        if self._driven_by_video():
            if not self._follow_video(a, tick, dts, out):
                return
        elif not a.open:
            self._audio_starved_since = None
            self._open_audio_alone(a, tick, now)
        else:
            elapsed = tick - a.seg_start
            if (
                elapsed * 1000 >= self.target_ms * timescale
                or a.seg_bytes + a.payload_size >= self.max_bytes
                or len(a.parts) >= _MAX_PARTS
            ):
                a.close_segment(tick, out)
                self._open_audio_alone(a, tick, now)
            elif self._part_is_full(a, tick):
                out.append(a.close_part(tick))
        a.append(tick, 0, frame.payload, True)
        a.last_duration = samples  # the next frame is expected this many ticks later

    def _follow_video(self, a: _Track, tick: int, dts: int, out: list[CmafPart | CmafSegment]) -> bool:
        """Place an audio frame by the video's segment starts; False when it has to be dropped."""
        boundary = self._boundary_at(dts)
        if not a.open:
            if boundary is None or (a.boundary is not None and boundary.start_ms <= a.boundary.start_ms):
                self.frames_waiting_for_keyframe += 1
                self._check_audio_starved(dts)
                return False
            self._audio_starved_since = None
            a.start_segment(
                self._claim(a, boundary.sequence), tick, boundary.timeline, boundary.discontinuity, True
            )
            a.boundary = boundary
            return True
        if boundary is not None and (a.boundary is None or boundary.start_ms > a.boundary.start_ms):
            a.close_segment(tick, out)
            timeline = boundary.timeline
            a.start_segment(self._claim(a, boundary.sequence), tick, timeline, boundary.discontinuity, True)
            a.boundary = boundary
        elif (tick - a.seg_start) * 1000 >= self.max_ms * a.timescale or a.seg_bytes + a.payload_size >= self.max_bytes:
            # The video stopped coming: cut anyway so the audio segment cannot grow without bound.
            a.close_segment(tick, out)
            assert a.timeline is not None
            a.start_segment(self._claim(a, self._next_sequence), tick, a.timeline, False, True)
        elif self._part_is_full(a, tick):
            out.append(a.close_part(tick))
        return True

    def _boundary_at(self, dts: int) -> _Boundary | None:
        for boundary in reversed(self._boundaries):
            if boundary.start_ms <= dts:
                return boundary
        return None

    def _check_audio_starved(self, dts: int) -> None:
        # A video config but no video segment for a long while: carry on as an audio-only stream.
        if self._video.open:
            return
        if self._audio_starved_since is None or dts < self._audio_starved_since:
            self._audio_starved_since = dts
        elif dts - self._audio_starved_since >= self.max_ms:
            self._audio_only = True
            self._audio_starved_since = None

    def _open_audio_alone(self, a: _Track, tick: int, now: float) -> None:
        discontinuity = self._pending_discontinuity or a.force_discontinuity
        ms = tick * 1000 // a.timescale
        timeline = self._timeline_at(ms, now, discontinuity)
        a.start_segment(self._claim(a, self._next_sequence), tick, timeline, discontinuity, True)
        self._pending_discontinuity = False

    # -- closing ---------------------------------------------------------------------------------

    def _close_all(self, out: list[CmafPart | CmafSegment], *, force_audio: bool) -> None:
        """Close every open segment and start over on a new timeline (discontinuity, reset, finish)."""
        if force_audio:
            queue = self._audio_queue
            while queue:  # audio that waited for the video belongs to the timeline that ends here
                frame, samples = queue.popleft()
                self._process_audio(frame, samples, self._last_now, out)
        for track in (self._video, self._audio):
            if track.open:
                track.close_segment(track.estimated_end(), out)
            track.forget_position()
        if self._muxer is not None:
            self._muxer.reset()
        if self._video.last_sequence is not None or self._audio.last_sequence is not None:
            self._pending_discontinuity = True  # something was written: what follows is a new timeline
        self._timeline = None
        self._boundaries.clear()
        self._video_watermark = None
        self._audio_starved_since = None
