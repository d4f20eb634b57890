"""HLS with MPEG-TS segments: Frames in, Segments out, and the media playlist that lists them.

`TsSegmenter` turns a stream's Frames into MPEG-TS Segments. It is sans clock: each `push` takes
the wall-clock `now`, used only to stamp EXT-X-PROGRAM-DATE-TIME. The rules:

- Tracks. H.264 or HEVC video (stream_type 0x1B or 0x24) and AAC audio are carried. Any other
  codec (AV1, VP9, Opus, MP3, AAC the ADTS header cannot describe...) is left out and its name
  recorded in `skipped_codecs`, for the caller to log once; the other track carries on. Metadata
  frames are ignored.
- Configs. Sequence headers update the codec state and are never written as media: the parameter
  sets (SPS/PPS; VPS/SPS/PPS for HEVC) go in band before every keyframe, behind the access unit
  delimiter, and the AAC config into each ADTS header. A new config that differs
  from the current one mid-stream (a resolution change, a new sample rate) makes the next segment
  start early, at the next keyframe, flagged as a discontinuity (RFC 8216 4.3.2.3).
- Frames before their config cannot be decoded; they are dropped and counted in
  `frames_without_config`. A malformed frame or config raises MediaError from `push`, leaving the
  segmenter as it was, so the caller may log it and go on with the next frame.
- Where segments start. With video, every segment starts at a keyframe: the first at the first
  keyframe (earlier frames are dropped), the next at the first keyframe at least the target
  duration after the segment's start. If no keyframe comes for `max_segment_duration_s` (or the
  segment reaches `max_segment_bytes`, whatever the timestamps say) the segment is cut anyway, and
  the next one is marked not independent. Audio only: segments are cut on
  duration at any audio frame. Whether a stream is audio only is known once audio has played for
  `audio_only_after_ms` with no video config in sight (publishers send configs before media, so
  this wait is normally never needed; it covers audio that leads the video config).
- Time. Segment times are decode times in ms on the stream's timeline. A segment lasts from its
  first frame to the next segment's first frame; the last one, closed by `finish` or
  `discontinuity`, to the end of its last frame. Program date times are anchored once (the wall
  clock at the first segment's first frame) and then advance with media time, so they agree with
  the EXTINF durations; `discontinuity()` re-anchors them.
- Aligned renditions (ABR). A source's segmenter given `cuts` records every cut it makes (CutPlan,
  segment.py); a rendition's segmenter given `follow` cuts where that plan says, with the same sequence
  number and program date time, so segment N of every rendition starts at the same instant. Its media
  before the first planned cut is dropped. Its decode times move back by the source's decode delay at
  the cut (a rendition has no B-frames, the source may have), so start times and durations match too;
  presentation times are kept. Where the plan does not reach yet (the source's segmenter behind) it
  cuts by the rule above, which gives the same cuts for the same keyframes. A planned number that is
  not the next one (a cut it could not follow) is counted in `plan_mismatches`; the rendition's own
  numbering stays contiguous, as HLS requires, and keeps the new difference from then on. Without `follow` nothing of this costs a thing.
- Output. Every finished segment comes out of `push` (or, for the last one, `finish`), so a caller
  that adds whatever those return to its window never loses one.
- Audio framing. Consecutive AAC frames share a PES, up to `audio_frames_per_pes`, which saves
  about a quarter of the audio's TS overhead; a gap in audio timestamps starts a new PES, since a
  PES carries only its first frame's PTS.

`SegmentWindow` keeps the last `listed` segments for the playlist and `retained` more that have
just left it, which players holding an older playlist may still ask for (RFC 8216 6.2.2: a removed
segment stays available for its duration plus the playlist's). `render_media_playlist` writes the
playlist text. Nothing here touches files or sockets; serving is the edge's job.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from ..errors import MediaError, UsageError
from ..media.aac import AacConfig, adts_header, parse_audio_specific_config
from ..media.frames import Frame, FrameKind
from ..media.h264 import AvcConfig, access_unit_to_annexb, parse_avc_config
from ..media.hevc import HevcConfig, parse_hevc_config
from ..media.hevc import access_unit_to_annexb as hevc_access_unit_to_annexb
from .mpegts import STREAM_TYPE_AAC_ADTS, STREAM_TYPE_H264, STREAM_TYPE_HEVC, TsMuxer, ts_time_90k
from .segment import Cut, CutPlan, Segment, segment_name

@dataclass(frozen=True, slots=True)
class _TsVideoCodec:
    """How one video codec goes into MPEG-TS."""

    stream_type: int
    parse_config: Callable[[bytes | memoryview], AvcConfig | HevcConfig]
    to_annexb: Callable[[bytes | memoryview, int, bytes, bool], list[bytes | memoryview]]


_TS_VIDEO = {
    "h264": _TsVideoCodec(STREAM_TYPE_H264, parse_avc_config, access_unit_to_annexb),
    "hevc": _TsVideoCodec(STREAM_TYPE_HEVC, parse_hevc_config, hevc_access_unit_to_annexb),
}

DEFAULT_TARGET_DURATION_S = 2.0
DEFAULT_LISTED_SEGMENTS = 6
_MAX_HELD_AUDIO = 512  # AAC frames held while deciding whether a stream is audio only (~10 s)


class TsSegmenter:
    """Cuts one stream's Frames into MPEG-TS Segments (see the module docstring for the rules)."""

    def __init__(
        self,
        *,
        target_duration_s: float = DEFAULT_TARGET_DURATION_S,
        max_segment_duration_s: float = 10.0,
        first_sequence: int = 0,
        audio_frames_per_pes: int = 4,
        audio_only_after_ms: int = 1000,
        max_segment_bytes: int = 64 << 20,
        cuts: CutPlan | None = None,
        follow: CutPlan | None = None,
    ) -> None:
        if not 0 < target_duration_s <= max_segment_duration_s:
            raise UsageError(
                f"HLS target duration {target_duration_s} s is invalid; it must be > 0 and <= the "
                f"maximum segment duration ({max_segment_duration_s} s)"
            )
        if not 1 <= audio_frames_per_pes <= 16:
            raise UsageError(f"audio_frames_per_pes {audio_frames_per_pes} is invalid; must be 1..16")
        self.target_ms = round(target_duration_s * 1000)
        self.max_ms = round(max_segment_duration_s * 1000)
        self.audio_frames_per_pes = audio_frames_per_pes
        self.audio_only_after_ms = audio_only_after_ms
        self.max_bytes = max_segment_bytes

        self.skipped_codecs: set[str] = set()
        """Codecs met and left out, for the caller to log once each."""
        self.frames_without_config = 0
        """Media frames dropped because their codec's config had not arrived."""
        self.frames_waiting_for_keyframe = 0
        """Frames dropped while waiting for a keyframe to start a segment."""
        self.plan_mismatches = 0
        """Following a plan: planned cuts whose number was not the next one (the rendition kept its own)."""
        self.cuts = cuts
        """Where this segmenter records its cuts for renditions to follow (None: nobody asks)."""
        self.follow = follow
        """The plan this segmenter follows (a rendition's), or None."""
        self._shift: int | None = None  # following: ms its decode times move back by (None: not yet cut)
        self._number_offset = 0  # following: the source's sequence numbers minus ours

        self._muxer: TsMuxer | None = None
        self._next_sequence = first_sequence
        self._avc: AvcConfig | HevcConfig | None = None
        self._video_codec: _TsVideoCodec | None = None
        self._video_codec_name: str | None = None
        self._parameter_sets = b""
        self._aac: AacConfig | None = None
        self._aac_frame_ms = 0.0
        self._aac_unusable = False

        # The open segment.
        self._open = False
        self._start_ms = 0
        self._pdt = 0.0
        self._discontinuity = False
        self._independent = True
        self._has_video = False
        self._has_audio = False
        self._end_ms = 0
        self._last_video_dts: int | None = None

        # Flags for the next segment.
        self._pending_discontinuity = False
        self._format_changed = False
        self._anchor: tuple[int, float] | None = None  # (dts_ms, unix seconds) for program date times
        self._held_audio: list[Frame] = []
        self._closed: Segment | None = None  # closed by discontinuity(), handed out by the next push

        # Audio frames waiting to share one PES.
        self._audio_pieces: list[bytes | memoryview] = []
        self._audio_pts_90k = 0
        self._audio_count = 0
        self._audio_next_ms = 0.0

    # -- public ----------------------------------------------------------------------------------

    @property
    def next_sequence(self) -> int:
        """The sequence number the next finished segment will get."""
        return self._next_sequence

    @property
    def in_segment(self) -> bool:
        """True while a segment is open (frames are being written into it)."""
        return self._open

    def push(self, frame: Frame, now: float) -> list[Segment]:
        """Feed one frame, in the stream's order; returns the segments now complete, oldest first.

        That is usually none or one; a segment closed by discontinuity() comes out here too.
        Raises MediaError for a malformed frame or config; the segmenter is then as it was.
        """
        done = self._push(frame, now)
        if self._closed is not None:
            done.insert(0, self._closed)
            self._closed = None
        return done

    def discontinuity(self, *, forget_configs: bool = False) -> None:
        """The next segment starts a new timeline (EXT-X-DISCONTINUITY).

        For a publisher that restarted or timestamps that jumped. The open segment is closed at
        once, ending with its last frame, and comes out of the next push() (or finish()); the next
        segment starts at the next keyframe (or audio frame, audio only), and program date times are
        re-anchored. With `forget_configs` the codec configs are dropped too, so the configs that
        come next (a new publisher's) decide the tracks afresh.
        """
        if self._open:
            self._closed = self._close(None)
        if forget_configs:
            self._avc = self._aac = None
            self._video_codec = self._video_codec_name = None
            self._parameter_sets = b""
            self._aac_unusable = False
        if self._muxer is not None:  # something was written before: the next segment is a new timeline
            self._pending_discontinuity = True
        self._anchor = None
        self._held_audio.clear()
        self._last_video_dts = None
        self._shift = None

    def finish(self, now: float | None = None) -> Segment | None:
        """Close the last, partial segment at the end of the stream; returns it, if there is one.

        `now` is accepted for symmetry with push; the segment's times come from its frames.
        Frames pushed afterwards start a new timeline, as after discontinuity().
        """
        self.discontinuity()
        segment, self._closed = self._closed, None
        return segment

    def _push(self, frame: Frame, now: float) -> list[Segment]:
        if frame.kind == FrameKind.VIDEO:
            if frame.codec not in _TS_VIDEO:
                self.skipped_codecs.add(frame.codec)
                return []
            if frame.is_config:
                self._video_config(frame)
                return []
            if frame.is_end:
                return []
            if self._avc is None or frame.codec != self._video_codec_name:
                self.frames_without_config += 1
                return []
            return self._video(frame, now)
        if frame.kind == FrameKind.AUDIO:
            if frame.codec != "aac":
                self.skipped_codecs.add(frame.codec)
                return []
            if frame.is_config:
                self._audio_config(frame)
                return []
            if frame.is_end or self._aac_unusable:
                return []
            if self._aac is None:
                self.frames_without_config += 1
                return []
            return self._audio(frame, now)
        return []  # script data: nothing to carry in TS

    # -- configs ---------------------------------------------------------------------------------

    def _video_config(self, frame: Frame) -> None:
        codec = _TS_VIDEO[frame.codec]
        config = codec.parse_config(frame.payload)
        if config == self._avc:
            return  # encoders resend identical sequence headers; nothing changes
        if self._avc is not None or self._open:
            self._format_changed = True
        self._avc = config
        self._video_codec, self._video_codec_name = codec, frame.codec
        self._parameter_sets = config.annexb_parameter_sets()
        self._held_audio.clear()  # video is coming: wait for its keyframe instead

    def _audio_config(self, frame: Frame) -> None:
        config = parse_audio_specific_config(frame.payload)
        if config == self._aac:
            return
        try:
            adts_header(config, 1)
        except MediaError:
            # ADTS cannot describe it (e.g. AAC-LD/ELD, a program config element): leave audio out.
            self.skipped_codecs.add(f"aac ({config.codec_string}, {config.channel_config} channel config)")
            self._aac = None
            self._aac_unusable = True
            return
        if self._aac is not None or self._open:
            self._format_changed = True
        self._flush_audio()  # frames already queued keep their old ADTS headers, in their own PES
        self._held_audio.clear()
        self._aac = config
        self._aac_unusable = False
        self._aac_frame_ms = 1000 * config.frame_samples / config.sample_rate

    # -- media -----------------------------------------------------------------------------------

    def _video(self, frame: Frame, now: float) -> list[Segment]:
        assert self._avc is not None and self._video_codec is not None
        pieces = self._video_codec.to_annexb(
            frame.payload, self._avc.nal_length_size, self._parameter_sets, frame.keyframe
        )
        if self.follow is not None:
            return self._video_following(frame, now, pieces, self.follow)
        dts = frame.dts_ms
        done: list[Segment] = []
        if not self._open:
            if not frame.keyframe:
                self.frames_waiting_for_keyframe += 1
                return done
            self._open_segment(dts, now, video=True, independent=True)
            self._record(frame)
        elif not self._has_video:
            # An audio-only segment, and video has appeared: switch at its first keyframe.
            if not frame.keyframe:
                self.frames_waiting_for_keyframe += 1
                return done
            done.append(self._close(dts))
            self._open_segment(dts, now, video=True, independent=True)
            self._record(frame)
        else:
            elapsed = dts - self._start_ms
            if frame.keyframe and (elapsed >= self.target_ms or self._format_changed):
                done.append(self._close(dts))
                self._open_segment(dts, now, video=True, independent=True)
                self._record(frame)
            elif elapsed >= self.max_ms or self._overfull():
                done.append(self._close(dts))
                self._open_segment(dts, now, video=True, independent=frame.keyframe)
                self._record(frame)
            elif frame.keyframe and self.cuts is not None:
                self.cuts.passed(frame.pts_ms)
        # _write_video, inlined: the hot path of every stream
        assert self._muxer is not None
        self._muxer.write_video(pieces, ts_time_90k(frame.pts_ms), ts_time_90k(dts), frame.keyframe)
        if self._last_video_dts is not None and dts > self._last_video_dts:
            self._end_ms = max(self._end_ms, 2 * dts - self._last_video_dts)
        else:
            self._end_ms = max(self._end_ms, dts)
        self._last_video_dts = dts
        return done

    def _write_video(self, pieces: list[bytes | memoryview], pts: int, dts: int, keyframe: bool) -> None:
        assert self._muxer is not None
        self._muxer.write_video(pieces, ts_time_90k(pts), ts_time_90k(dts), keyframe)
        if self._last_video_dts is not None and dts > self._last_video_dts:
            self._end_ms = max(self._end_ms, 2 * dts - self._last_video_dts)
        else:
            self._end_ms = max(self._end_ms, dts)
        self._last_video_dts = dts

    def _record(self, frame: Frame) -> None:
        """The reference's side of a CutPlan: the segment just opened starts at this frame."""
        if self.cuts is not None:
            self.cuts.record(frame.pts_ms, Cut(
                self._next_sequence, 0, self._pdt, frame.cts_ms, self._discontinuity, self._independent
            ))

    def _video_following(
        self, frame: Frame, now: float, pieces: list[bytes | memoryview], plan: CutPlan
    ) -> list[Segment]:
        """A rendition's video: cut where the source's segmenter cut (see the module docstring)."""
        pts = frame.pts_ms
        cut = plan.at(pts)
        done: list[Segment] = []
        if not self._open or not self._has_video:
            if cut is None or not frame.keyframe:
                self.frames_waiting_for_keyframe += 1
                return done
            if self._shift is None:
                # The source decodes its keyframes this much before showing them: so do we, from here on.
                self._shift = max(0, cut.decode_delay_ms - frame.cts_ms)
            dts = frame.dts_ms - self._shift
            if self._open:
                done.append(self._close(dts))  # an audio-only segment, and video has appeared
            self._take(cut, dts, now, independent=True)
        else:
            dts = frame.dts_ms - (self._shift or 0)
            elapsed = dts - self._start_ms
            decided = plan.decided(pts)
            if cut is not None and (frame.keyframe or not cut.independent):
                # (A keyframe cut where this frame is none: the segment goes on, and the next cut tells.)
                done.append(self._close(dts))
                self._take(cut, dts, now, independent=frame.keyframe)
            elif not decided and frame.keyframe and (elapsed >= self.target_ms or self._format_changed):
                done.append(self._close(dts))  # the plan does not reach here yet: the same rule as the source
                self._open_segment(dts, now, video=True, independent=True)
            elif elapsed >= (2 * self.max_ms if decided else self.max_ms) or self._overfull():
                # Bounded anyway (where the plan reaches, the source's own maximum bounds it first).
                done.append(self._close(dts))
                self._open_segment(dts, now, video=True, independent=frame.keyframe)
        if self._last_video_dts is not None and dts < self._last_video_dts:
            dts = self._last_video_dts  # never back (a keyframe later shown earlier than the source's delay)
        self._write_video(pieces, pts, dts, frame.keyframe)
        return done

    def _take(self, cut: Cut, dts: int, now: float, *, independent: bool) -> None:
        """Open a segment where the plan says, with its number (if it is the next) and its date."""
        if self._muxer is None:
            self._next_sequence = cut.sequence  # the first segment: take the source's number
            self._number_offset = 0
        elif cut.sequence - self._number_offset != self._next_sequence:
            # A cut missed (or made alone): keep the numbers contiguous, as HLS requires, from here on
            # this many behind (or ahead of) the source's; the times stay aligned.
            self.plan_mismatches += 1
            self._number_offset = cut.sequence - self._next_sequence
        if cut.discontinuity and self._muxer is not None:
            self._pending_discontinuity = True
        self._anchor = (dts, cut.program_date_time)
        self._open_segment(dts, now, video=True, independent=independent)

    def _audio(self, frame: Frame, now: float) -> list[Segment]:
        assert self._aac is not None
        raw = frame.payload
        header = adts_header(self._aac, len(raw))
        dts = frame.dts_ms
        done: list[Segment] = []
        if not self._open:
            if self._avc is not None:
                self.frames_waiting_for_keyframe += 1
                return done  # video leads: wait for its keyframe
            held = self._held_audio
            held.append(frame)
            if len(held) > _MAX_HELD_AUDIO:
                del held[0]  # timestamps that do not advance must not hold memory without bound
            if dts - held[0].dts_ms < self.audio_only_after_ms:
                return done
            self._held_audio = []
            # No video config after a while of audio: an audio-only stream.
            if self._anchor is None:
                self._anchor = (dts, now)
            self._open_segment(held[0].dts_ms, now, video=False, independent=True)
            for early in held[:-1]:
                self._write_audio(early.payload, adts_header(self._aac, len(early.payload)), early.dts_ms)
        elif not self._has_audio:
            return done  # audio appeared in a video-only segment; it joins at the next keyframe
        else:
            elapsed = dts - self._start_ms
            if not self._has_video:
                # Audio only (video, if it has just appeared, takes over at its first keyframe).
                if elapsed >= self.target_ms or (self._format_changed and self._avc is None) or self._overfull():
                    done.append(self._close(dts))
                    self._open_segment(dts, now, video=False, independent=True)
            elif self._overfull() or (
                elapsed >= self.max_ms
                and (self._last_video_dts is None or dts - self._last_video_dts >= self.target_ms)
            ):
                # Video stopped coming (or timestamps stopped moving): cut anyway, so a segment
                # cannot grow without bound.
                done.append(self._close(dts))
                self._open_segment(dts, now, video=True, independent=False)
        self._write_audio(raw, header, dts)
        return done

    def _write_audio(self, raw: memoryview, header: bytes, dts: int) -> None:
        if self._audio_count and abs(dts - self._audio_next_ms) > self._aac_frame_ms / 2:
            self._flush_audio()  # a gap: this frame needs its own PTS
        if not self._audio_count:
            self._audio_pts_90k = ts_time_90k(dts)
            self._audio_next_ms = float(dts)
        self._audio_pieces.append(header)
        self._audio_pieces.append(raw)
        self._audio_count += 1
        self._audio_next_ms += self._aac_frame_ms
        self._end_ms = max(self._end_ms, math.ceil(dts + self._aac_frame_ms))
        if self._audio_count >= self.audio_frames_per_pes:
            self._flush_audio()

    def _overfull(self) -> bool:
        assert self._muxer is not None
        return self._muxer.pending_bytes >= self.max_bytes

    def _flush_audio(self) -> None:
        if self._audio_count:
            assert self._muxer is not None
            self._muxer.write_audio(self._audio_pieces, self._audio_pts_90k)
            self._audio_pieces = []
            self._audio_count = 0

    # -- segments --------------------------------------------------------------------------------

    def _open_segment(self, start_ms: int, now: float, *, video: bool, independent: bool) -> None:
        # `video`: the PMT lists video. Audio is listed whenever its config is known.
        has_video = video
        has_audio = self._aac is not None
        video_type = (self._video_codec.stream_type if self._video_codec else STREAM_TYPE_H264) if has_video else None
        audio_type = STREAM_TYPE_AAC_ADTS if has_audio else None
        muxer = self._muxer
        tracks_changed = False
        if muxer is None:
            muxer = self._muxer = TsMuxer(video_type, audio_type)
        else:
            tracks_changed = (has_video, has_audio) != (muxer.has_video, muxer.has_audio)
            muxer.set_streams(video_type, audio_type)
        muxer.write_tables()
        if self._anchor is None:
            self._anchor = (start_ms, now)
        anchor_ms, anchor_now = self._anchor
        self._open = True
        self._start_ms = start_ms
        self._end_ms = start_ms
        self._pdt = anchor_now + (start_ms - anchor_ms) / 1000
        self._discontinuity = self._pending_discontinuity or self._format_changed or tracks_changed
        self._independent = independent
        self._has_video = has_video
        self._has_audio = has_audio
        self._pending_discontinuity = False
        self._format_changed = False

    def next_cut_ms(self) -> float:
        """The earliest decode time at which a frame may close the open segment, so before which this
        segmenter's output does not change; -inf when any frame may (no segment open yet, a format change
        pending, video appearing in an audio-only segment, following a plan). The cut bounds (max_ms,
        max_bytes) are left out: they only bound segments whose media misbehaves."""
        if not self._open or self._format_changed or self.follow is not None or (
                self._avc is not None and not self._has_video):
            return -math.inf
        return self._start_ms + self.target_ms

    def _close(self, next_start_ms: int | None) -> Segment:
        assert self._muxer is not None
        self._flush_audio()
        end = self._end_ms if next_start_ms is None else next_start_ms
        segment = Segment(
            sequence=self._next_sequence,
            data=self._muxer.take(),
            start_ms=self._start_ms,
            duration_ms=max(0, end - self._start_ms),
            program_date_time=self._pdt,
            discontinuity=self._discontinuity,
            independent=self._independent,
        )
        self._next_sequence += 1
        self._open = False
        return segment


class SegmentWindow:
    """The recent segments of one stream: the last `listed` for the playlist, `retained` more behind.

    Segments must be added in sequence order. `get` finds any kept segment, listed or retained.
    """

    def __init__(self, listed: int = DEFAULT_LISTED_SEGMENTS, retained: int | None = None) -> None:
        if listed < 1:
            raise UsageError(f"an HLS window must list at least 1 segment, not {listed}")
        if retained is None:
            retained = listed + 1
        if retained < 0:
            raise UsageError(f"retained segments must be >= 0, not {retained}")
        self.listed_count = listed
        self.retained_count = retained
        self._segments: deque[Segment] = deque()
        self._dropped_discontinuities = 0
        self._max_duration_ms = 0
        self._next_sequence: int | None = None
        self.ended = False

    def add(self, segment: Segment) -> None:
        if self.ended:
            raise UsageError("segment added to an HLS window that has ended; start a new window")
        if self._next_sequence is not None and segment.sequence < self._next_sequence:
            raise UsageError(
                f"segment {segment.sequence} added after {self._next_sequence - 1}; sequence numbers must grow"
            )
        segments = self._segments
        segments.append(segment)
        self._next_sequence = segment.sequence + 1
        self._max_duration_ms = max(self._max_duration_ms, segment.duration_ms)
        if len(segments) > self.listed_count:
            # The segment that just left the listing takes its EXT-X-DISCONTINUITY with it (6.2.2).
            if segments[-self.listed_count - 1].discontinuity:
                self._dropped_discontinuities += 1
        while len(segments) > self.listed_count + self.retained_count:
            segments.popleft()

    def end(self) -> None:
        """Mark the stream ended: the playlist gets EXT-X-ENDLIST and takes no more segments."""
        self.ended = True

    @property
    def listed(self) -> list[Segment]:
        """The segments the playlist lists, oldest first."""
        segments = self._segments
        return list(segments)[-self.listed_count :] if len(segments) > self.listed_count else list(segments)

    @property
    def media_sequence(self) -> int:
        """The sequence number of the first listed segment (EXT-X-MEDIA-SEQUENCE)."""
        listed = self.listed
        if listed:
            return listed[0].sequence
        return self._next_sequence or 0

    @property
    def discontinuity_sequence(self) -> int:
        """Discontinuity tags that have left the listing (EXT-X-DISCONTINUITY-SEQUENCE)."""
        return self._dropped_discontinuities

    @property
    def max_duration_ms(self) -> int:
        """The longest segment ever added (so the target duration never shrinks)."""
        return self._max_duration_ms

    def get(self, sequence: int) -> Segment | None:
        for segment in reversed(self._segments):
            if segment.sequence == sequence:
                return segment
            if segment.sequence < sequence:
                break
        return None

    def __iter__(self) -> Iterator[Segment]:
        return iter(self._segments)

    def __len__(self) -> int:
        return len(self._segments)


def render_media_playlist(
    window: SegmentWindow,
    *,
    target_duration_s: float = DEFAULT_TARGET_DURATION_S,
    uri_suffix: str = "",
    extension: str = "ts",
    uri: Callable[[Segment], str] | None = None,
    ended: bool = False,
) -> str:
    """The media playlist (RFC 8216 4.3) listing `window`.

    Segment URIs are relative: segment_name(sequence, extension) + `uri_suffix`, the suffix appended
    verbatim (e.g. "?token=..."), or whatever `uri(segment)` returns when given (for names unique
    to a stream instance). EXT-X-ENDLIST is written when the window has ended or `ended` is set. The target
    duration is the configured one rounded up, raised if a segment ever ran longer (every EXTINF
    rounded to the nearest integer must not exceed it, 4.3.3.1); it never shrinks, since a live
    playlist's target duration must not change.
    """
    _check_uri_part(uri_suffix)
    segments = window.listed
    target = max(math.ceil(target_duration_s - 1e-9), _round_half_up_s(window.max_duration_ms), 1)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",  # 3: decimal EXTINF durations (7)
        f"#EXT-X-TARGETDURATION:{target}",
        f"#EXT-X-MEDIA-SEQUENCE:{window.media_sequence}",
    ]
    if window.discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{window.discontinuity_sequence}")
    if segments and all(s.independent for s in segments):
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    for segment in segments:
        if segment.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(segment.program_date_time)}")
        ms = segment.duration_ms
        lines.append(f"#EXTINF:{ms // 1000}.{ms % 1000:03d},")
        if uri is None:
            lines.append(segment_name(segment.sequence, extension) + uri_suffix)
        else:
            lines.append(_check_uri_part(uri(segment)))
    if window.ended or ended:
        lines.append("#EXT-X-ENDLIST")
    lines.append("")
    return "\n".join(lines)


def _check_uri_part(text: str) -> str:
    # A line break or '#' would let a URI smuggle tags into the playlist.
    if any(ord(c) < 0x20 or c in "\x7f#" for c in text):
        raise UsageError(f"segment URI {text!r} holds a control character or '#'")
    return text


def _round_half_up_s(ms: int) -> int:
    return (ms + 500) // 1000


def format_program_date_time(unix_s: float) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. 2024-05-01T12:00:00.250Z."""
    total_ms = round(unix_s * 1000)
    seconds, ms = divmod(total_ms, 1000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{ms:03d}Z"
