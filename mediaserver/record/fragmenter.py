"""GopFragmenter: the recorder's cutter for the common stream, one moof+mdat per track per fragment of whole GOPs.

The CmafSegmenter the live CMAF outputs use (remux/cmaf.py) places every frame as it comes: parts, audio
following the video's cuts, timeline checks; about 11 µs of Python per frame, four times what recording
may cost in all (bench/README.md, bench.record). A recording needs none of its parts, so for H.264 or HEVC
video with AAC audio this keeps the frames of the open fragment in a list (nothing else per frame) and, at the
next keyframe at least `fragment_s` later, builds the video fragment and the audio that came before that
keyframe with one `fmp4.fragment_pieces` call each: the same boxes, inits (made by CmafSegmenter's own
builders) and timescales (video 90 kHz, audio its sample rate) as the live outputs, as CmafSegment objects
the Recorder stores as it stores the segmenter's. Their `data` is the fragment in pieces (fmp4.Pieces: the
boxes' headers, then views of the video frames' payloads, then the audio's), which the Recorder's writer
hands to one writev: a fragment's megabytes of video are never copied in Python, on the event loop. The
audio's payloads, a few hundred bytes each, are joined here into one part (some 100 kB a fragment): the
writer's Python step for each 400-byte part cost more than this join does (bench/README.md, "Recording
cost").

Anything else goes to a CmafSegmenter from then on, configs handed over: another codec, audio with no video
config, and any change of codec configuration once media has been cut (the Recorder starts a new file at a
new init anyway). Audio that waits for a video keyframe longer than the longest fragment is cut on its own,
so memory stays bounded when the video stops.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import islice, repeat
from operator import add, attrgetter, floordiv, getitem, lt, mul, sub
from struct import Struct

from ..errors import MediaError
from ..media.aac import parse_audio_specific_config
from ..media.frames import Frame, FrameKind
from ..media.h264 import iter_nal_units
from ..remux.cmaf import AUDIO, VIDEO, VIDEO_TIMESCALE, CmafInit, CmafPart, CmafSegment, CmafSegmenter, Timeline
from ..remux.fmp4 import AUDIO_TRUN, SAMPLE_NON_SYNC, SAMPLE_SYNC, VIDEO_TRUN, fragment_pieces

LEAN_VIDEO = ("h264", "hevc")
LEAN_AUDIO = ("aac",)
_DEFAULT_VIDEO_TICKS = 3000  # 1/30 s: the last frame's duration when no frame follows
_VIDEO_ID, _AUDIO_ID = 1, 2
_dts = attrgetter("dts_ms")
_cts = attrgetter("cts_ms")
_keyframe = attrgetter("keyframe")
_tag = attrgetter("tag")
_payload_start = attrgetter("payload_start")
_SAMPLE_FLAGS = (SAMPLE_NON_SYNC, SAMPLE_SYNC)
"""By Frame.keyframe (False, True)."""
_MAX_GRID = 4096
"""Audio frames a fragment's cheap back-to-back test takes (12 s of 96 kHz AAC is 1,125): more (a stalled
clock, frames only the byte bound stops) go to the exact loop, so the grid kept per stream stays small."""
_NAL_LENGTH = {1: Struct(">B").unpack_from, 2: Struct(">H").unpack_from, 4: Struct(">I").unpack_from}
"""A NAL length prefix read in place, as (length,), by the prefix's size (avcC and hvcC allow 1, 2 or 4, and
their parsers refuse the rest): 56 ns against 129 for slicing it out to int.from_bytes, and a video frame
has one to three."""


def _payloads(frames: list[Frame]) -> tuple[list[memoryview], list[int]]:
    """The frames' codec payloads (zero-copy views: Frame.payload, the tag less its 4-byte PreviousTagSize) and
    their sizes, in C-level passes."""
    views = list(map(getitem, map(memoryview, map(_tag, frames)), map(slice, map(_payload_start, frames), repeat(-4))))
    return views, list(map(len, views))


def _avcc_whole(tag: bytes, start: int, length_size: int) -> bool:
    """The NAL length prefixes of the sample in tag[start:-4] tile it exactly (iter_nal_units' check, on
    the tag's bytes without a view per NAL unit: most samples hold one to three)."""
    end = len(tag) - 4
    pos = start
    length = _NAL_LENGTH[length_size]
    while pos < end:
        if pos + length_size > end:
            return False
        pos += length_size + length(tag, pos)[0]
    return pos == end


class GopFragmenter:
    """push(frame, now) -> segments now complete; discontinuity(); finish(now); init(track): the subset of
    CmafSegmenter's interface the Recorder uses."""

    def __init__(self, fragment_s: float, max_fragment_s: float, max_bytes: int = 64 << 20) -> None:
        self._segmenter_args = dict(target_duration_s=fragment_s, part_target_s=fragment_s,
                                    max_segment_duration_s=max_fragment_s)
        self._builder = CmafSegmenter(**self._segmenter_args)  # its init builders: the live outputs' bytes
        self.general: CmafSegmenter | None = None
        """The CmafSegmenter everything goes to once the stream is not the common one."""
        self.target_ms = round(fragment_s * 1000)
        self.max_ms = round(max_fragment_s * 1000)
        self.max_bytes = max_bytes
        self._video_cfg: Frame | None = None
        self._audio_cfg: Frame | None = None
        self._video_init: CmafInit | None = None
        self._audio_init: CmafInit | None = None
        self._frame_samples = 1024
        self._grid: list[float] = []
        """_audio_grid's."""
        self._nal_length_size = 4
        self._v: list[Frame] = []
        self._v_bytes = 0
        self._v_keys = 0
        """Keyframes in `_v`: a cut sets the sample flags from this when only the first frame is one (the
        common fragment), instead of reading every frame's."""
        self._a: list[Frame] = []
        self._a_bytes = 0
        """The waiting audio's tag bytes: bounded by `max_bytes` as the video is, so a publisher that sends audio
        with a stalled clock (its fragment never reaching `max_ms`) fills neither memory nor the cut's join."""
        self._cut_any = False
        self._sequence = 0
        self._fragments = 0
        """moofs built so far: their mfhd numbers run 1, 2, 3 in the order they come out, which is the order a
        file gets them, so the Recorder need not renumber (copy) them."""
        self._timeline: Timeline | None = None
        self._timelines = 0
        self._v_last_tick: int | None = None
        self._v_last_duration = 0
        self._a_last_tick: int | None = None
        self._out: list[CmafPart | CmafSegment] = []
        self._now = 0.0
        self.skipped = 0
        """Frames push_many could not use (malformed samples), left out."""

    # ----- the interface ---------------------------------------------------------------------------

    def init(self, track: str) -> CmafInit | None:
        if self.general is not None:
            return self.general.init(track)
        return self._video_init if track == VIDEO else self._audio_init

    def push(self, frame: Frame, now: float) -> list[CmafPart | CmafSegment]:
        """One frame; a sample it cannot use raises MediaError (nothing of it kept)."""
        self._now = now
        if self.general is not None:
            return self._take(self.general.push(frame, now))
        self._one(frame, now)
        return self._take([])

    def push_many(self, frames: list[Frame], now: float) -> list[CmafPart | CmafSegment]:
        """The frames of one socket read (Stream.flush_sinks hands a batch): what push does for each, with
        the common frame (media inside an open GOP) kept in a few operations, and a sample it cannot use
        counted in `skipped` instead of raised. The state the common frame reads is held in locals (the open
        fragments' codecs and time limits among it), read again after any other frame (which may cut, and so
        replace the lists)."""
        self._now = now
        out: list[CmafPart | CmafSegment] = []
        video_kind, audio_kind = FrameKind.VIDEO, FrameKind.AUDIO
        max_bytes = self.max_bytes
        general, v_codec, v_limit, a_codec, a_limit = self._common_state()
        v, a, v_bytes, a_bytes, length_size = self._v, self._a, self._v_bytes, self._a_bytes, self._nal_length_size
        nal_length = _NAL_LENGTH[length_size]
        for frame in frames:
            if general is None and not frame.is_config and not frame.is_end:
                # The common frames, kept as _video and _audio would keep them, their other checks all false
                # (an empty list's codec is None, which no frame has).
                kind = frame.kind
                if kind == video_kind:
                    tag = frame.tag
                    size = len(tag)
                    if not frame.keyframe and frame.codec == v_codec and frame.dts_ms < v_limit \
                            and v_bytes + size <= max_bytes:
                        # The NAL length prefixes tile the sample (_avcc_whole, inline: most hold one to three).
                        end = size - 4
                        last = end - length_size
                        pos = frame.payload_start
                        while pos <= last:
                            pos += length_size + nal_length(tag, pos)[0]
                        if pos == end:
                            v.append(frame)  # inside the open GOP
                            v_bytes += size
                            continue
                elif kind == audio_kind:
                    size = len(frame.tag)
                    if frame.codec == a_codec and frame.dts_ms <= a_limit and a_bytes + size <= max_bytes:
                        a.append(frame)  # waiting for the next video cut
                        a_bytes += size
                        continue
            self._v_bytes, self._a_bytes = v_bytes, a_bytes
            try:
                if general is not None:
                    out += general.push(frame, now)
                else:
                    self._one(frame, now)
            except MediaError:
                self.skipped += 1
            general, v_codec, v_limit, a_codec, a_limit = self._common_state()
            v, a, v_bytes, a_bytes, length_size = self._v, self._a, self._v_bytes, self._a_bytes, self._nal_length_size
            nal_length = _NAL_LENGTH[length_size]
        self._v_bytes, self._a_bytes = v_bytes, a_bytes
        return self._take(out)

    def _common_state(self) -> tuple[CmafSegmenter | None, str | None, float, str | None, float]:
        """What push_many checks a common frame against: the segmenter that took over, and each open
        fragment's codec (None when none is open) and the decode time its next frame must stay under (video)
        or at (audio)."""
        v, a = self._v, self._a
        return (self.general, v[0].codec if v else None, v[0].dts_ms + self.max_ms if v else 0.0,
                a[0].codec if a else None, a[0].dts_ms + self.max_ms if a else 0.0)

    def discontinuity(self) -> None:
        if self.general is not None:
            self.general.discontinuity()
            return
        self._flush()
        self._timeline = None
        self._v_last_tick = self._a_last_tick = None

    def finish(self, now: float | None = None) -> list[CmafPart | CmafSegment]:
        if self.general is not None:
            return self._take(self.general.finish(now))
        self._flush()
        self._timeline = None
        self._v_last_tick = self._a_last_tick = None
        return self._take([])

    # ----- frames --------------------------------------------------------------------------------

    def _one(self, frame: Frame, now: float) -> None:
        kind = frame.kind
        if kind == FrameKind.VIDEO:
            if frame.is_config:
                self._config(frame, now)
            elif not frame.is_end:
                self._video(frame, now)
        elif kind == FrameKind.AUDIO:
            if frame.is_config:
                self._config(frame, now)
            elif not frame.is_end:
                self._audio(frame, now)

    def _take(self, items: list[CmafPart | CmafSegment]) -> list[CmafPart | CmafSegment]:
        if self._out:
            items = self._out + items
            self._out = []
        return items

    def _config(self, frame: Frame, now: float) -> None:
        video = frame.kind == FrameKind.VIDEO
        known = self._video_cfg if video else self._audio_cfg
        if known is not None and known.codec == frame.codec and bytes(known.payload) == bytes(frame.payload):
            return  # encoders resend identical sequence headers
        if frame.codec not in (LEAN_VIDEO if video else LEAN_AUDIO) or (
                known is not None and (self._cut_any or self._v or self._a)):
            self._to_general(frame, now)
            return
        if video:
            init = self._builder._video_init(frame.codec, bytes(frame.payload), 1)  # raises before any change
            self._video_init, self._video_cfg, self._nal_length_size = init, frame, init.nal_length_size
        else:
            init = self._builder._audio_init(frame, 1)
            self._frame_samples = parse_audio_specific_config(bytes(frame.payload)).frame_samples
            self._audio_init, self._audio_cfg = init, frame

    def _to_general(self, frame: Frame, now: float) -> None:
        """From now on the CmafSegmenter cuts: what is open is cut first, the configs handed over."""
        self._flush()
        general = CmafSegmenter(first_sequence=self._sequence, **self._segmenter_args)
        for cfg in (self._video_cfg, self._audio_cfg):
            if cfg is not None and not (frame.is_config and cfg.kind == frame.kind):  # unless replaced
                general.push(cfg, now)
        self._out.extend(general.push(frame, now))
        self.general = general

    def _video(self, frame: Frame, now: float) -> None:
        if self._video_init is None or frame.codec != self._video_init.codec:
            return
        if not _avcc_whole(frame.tag, frame.payload_start, self._nal_length_size):
            for _ in iter_nal_units(frame.payload, self._nal_length_size):
                pass  # raises the MediaError that says what is wrong, as the segmenter would
        v = self._v
        if not v:
            if not frame.keyframe:
                return  # a fragment starts at a keyframe
            if self._timeline is None:
                self._timelines += 1
                self._timeline = Timeline(self._timelines - 1, frame.dts_ms, now)
        else:
            elapsed = frame.dts_ms - v[0].dts_ms
            if (frame.keyframe and elapsed >= self.target_ms) or elapsed >= self.max_ms or \
                    self._v_bytes + frame.size > self.max_bytes:
                self._cut(frame.dts_ms)
                v = self._v
        v.append(frame)
        self._v_bytes += frame.size
        self._v_keys += frame.keyframe

    def _audio(self, frame: Frame, now: float) -> None:
        if self._audio_init is None or frame.codec != self._audio_init.codec:
            return
        if self._video_cfg is None:
            self._to_general(frame, now)  # audio with no video (yet): the segmenter waits and decides
            return
        a = self._a
        if a and self._a_bytes + frame.size > self.max_bytes:
            self._out.extend(self._audio_fragment(len(a), None))  # too much waits: what waits goes alone
        a.append(frame)
        self._a_bytes += frame.size
        if frame.dts_ms - a[0].dts_ms > self.max_ms:
            self._out.extend(self._audio_fragment(len(a), None))  # the video stopped: audio alone

    # ----- cutting -------------------------------------------------------------------------------

    def _cut(self, end_ms: int | None) -> None:
        """Close the open video fragment at `end_ms` (the next fragment's first frame; None: the end) and
        the audio before it."""
        v = self._v
        if not v:
            return
        self._cut_any = True
        sequence = self._sequence
        self._sequence += 1
        # Per-sample fields in C-level passes (map, zip): this runs for every sample recorded.
        dts = list(map(_dts, v))
        ticks = list(map(mul, dts, repeat(90)))
        last = self._v_last_tick
        moved = (last is not None and ticks[0] <= last) or not all(map(lt, ticks, islice(ticks, 1, None)))
        if moved:
            for i, tick in enumerate(ticks):  # decode times that do not grow: each a tick past the last
                if last is not None and tick <= last:
                    ticks[i] = tick = last + 1
                last = tick
        last = ticks[-1]
        if end_ms is not None:
            end = max(end_ms * 90, last + 1)
        else:
            end = last + (self._v_last_duration or _DEFAULT_VIDEO_TICKS)
        durations = list(map(sub, islice(ticks, 1, None), ticks))
        durations.append(end - last)
        if moved:  # pts - dts, from the decode times as written
            offsets = list(map(sub, map(mul, map(add, dts, map(_cts, v)), repeat(90)), ticks))
        else:  # which is the composition offset, when they stand as they came
            offsets = list(map(mul, map(_cts, v), repeat(90)))
        payload, sizes = _payloads(v)
        payload_size = sum(sizes)
        # The trun's entries (duration, size, flags, offset) interleaved by slice assignment: no tuple a sample.
        entries = [SAMPLE_NON_SYNC] * (4 * len(v))
        entries[0::4] = durations
        entries[1::4] = sizes
        entries[3::4] = offsets
        if self._v_keys == 1 and v[0].keyframe:
            entries[2] = SAMPLE_SYNC
        elif self._v_keys:
            entries[2::4] = list(map(_SAMPLE_FLAGS.__getitem__, map(_keyframe, v)))
        if len(v) > 1:
            self._v_last_duration = ticks[-1] - ticks[-2]
        self._v_last_tick = end - 1 if end_ms is not None else last  # the next frame lands after the end
        self._fragments += 1
        data = fragment_pieces(sequence_number=self._fragments, track_id=_VIDEO_ID, base_media_decode_time=ticks[0],
                              trun_flags=VIDEO_TRUN, entries=entries, payload=payload, payload_size=payload_size)
        assert self._video_init is not None and self._timeline is not None
        self._out.append(CmafSegment(
            track=VIDEO, sequence=sequence, data=data, start=ticks[0], duration=end - ticks[0],
            timescale=VIDEO_TIMESCALE, init=self._video_init, timeline=self._timeline, discontinuity=False,
            independent=v[0].keyframe, part_count=1, samples=len(v)))
        start_ms = v[0].dts_ms
        self._v = []
        self._v_bytes = 0
        self._v_keys = 0
        a = self._a
        first = 0
        while first < len(a) and a[first].dts_ms < start_ms and self._a_last_tick is None:
            first += 1  # audio from before the recording's first keyframe
        if first:
            del a[:first]
            self._recount_audio()
        # The hub keeps a track's decode times growing, so the audio before end_ms is a prefix.
        count = len(a) if end_ms is None else bisect_left(a, end_ms, key=_dts)
        self._out.extend(self._audio_fragment(count, sequence))

    def _audio_fragment(self, count: int, sequence: int | None) -> list[CmafSegment]:
        a = self._a
        if not count or self._audio_init is None:
            return []
        if sequence is None:
            sequence = self._sequence
            self._sequence += 1
        init = self._audio_init
        first_ms = a[0].dts_ms
        scale = init.timescale
        samples = self._frame_samples
        last = self._a_last_tick
        frames = a[:count]
        # One part of the payloads joined, not a view a frame (the module docstring).
        samples_bytes = list(map(getitem, map(_tag, frames), map(slice, map(_payload_start, frames), repeat(-4))))
        sizes = list(map(len, samples_bytes))
        payload = (b"".join(samples_bytes),)
        payload_size = len(payload[0])
        half = samples // 2
        dts = list(map(_dts, frames))
        start = (dts[0] * scale + 500) // 1000
        if last is not None and start - (last + samples) <= half:
            start = last + samples  # within rounding of back to back, or overlapping
        bound = (start + half) * 1000 / scale - 1
        if count <= _MAX_GRID and max(map(sub, dts, self._audio_grid(count, samples * 1000 / scale))) <= bound:
            # Every frame back to back (AAC frames last `samples` each): the common case, in C-level passes.
            # Frame i's tick, (dts * scale + 500) // 1000, is then at most start + i * samples + half, as the
            # loop below asks, with no tick computed: its decode time stays a millisecond (scale / 1000 ticks,
            # 7 or more) under that bound, float rounding is far smaller, and rounding to a tick adds at most
            # half a tick. A frame nearer the bound than that goes to the loop, which decides exactly.
            entries = [samples] * (2 * count)  # (duration, size) a sample
            entries[1::2] = sizes
            last = start + (count - 1) * samples
        else:
            ticks = list(map(floordiv, map(add, map(mul, dts, repeat(scale)), repeat(500)), repeat(1000)))
            entries = []
            first = True
            for tick, size in zip(ticks, sizes):
                if last is not None:
                    expected = last + samples
                    if tick - expected <= half:
                        tick = expected  # within rounding of back to back, or overlapping
                    elif not first:
                        entries[-2] = tick - last  # a gap: the previous frame lasts until this one
                if first:
                    start, first = tick, False
                entries += (samples, size)
                last = tick
        self._a_last_tick = last
        del a[:count]
        self._recount_audio()
        self._fragments += 1
        data = fragment_pieces(sequence_number=self._fragments, track_id=_AUDIO_ID, base_media_decode_time=start,
                              trun_flags=AUDIO_TRUN, entries=entries, payload=payload,
                              payload_size=payload_size, default_sample_flags=SAMPLE_SYNC)
        if self._timeline is None:  # audio before any video on this timeline
            self._timelines += 1
            self._timeline = Timeline(self._timelines - 1, first_ms, self._now)
        timeline = self._timeline
        return [CmafSegment(
            track=AUDIO, sequence=sequence, data=data, start=start, duration=last + samples - start,
            timescale=scale, init=init, timeline=timeline, discontinuity=False, independent=True,
            part_count=1, samples=count)]

    def _audio_grid(self, count: int, step: float) -> list[float]:
        """[0, step, 2 * step, ...], at least `count` long (at most _MAX_GRID): where back-to-back frames' decode
        times lie, in ms from the first (kept: a fragment's audio is the same length each time)."""
        grid = self._grid
        if len(grid) < count or grid[1] != step:
            grid = self._grid = [i * step for i in range(min(max(count, 2 * len(grid), 512), _MAX_GRID))]
        return grid

    def _recount_audio(self) -> None:
        """`_a_bytes` again, after frames left `_a`: counted over what is left (a frame or two after a video
        cut), not over what left (a fragment's worth)."""
        self._a_bytes = sum(map(len, map(_tag, self._a)))

    def _flush(self) -> None:
        if self._v:
            self._cut(None)
        elif self._a:
            self._out.extend(self._audio_fragment(len(self._a), None))

