"""The muxed CMAF rendition: video and audio in the same parts and segments, for HLS players.

CMAF keeps one track per file, as DASH wants; an HLS player then follows two media playlists (video, and
the audio rendition), with their own blocking reloads and parts: twice the requests. `CmafMuxer` makes a
third rendition, `muxed`, out of the very samples the segmenter places:

- Its parts are the video's parts: the same sequence numbers, indices, start, duration, independence,
  timeline and discontinuities (so PART-TARGET, segment cuts and program date times are the video's).
  Each is one moof with two trafs (video, track 1; audio, track 2) and one mdat: the video part's
  samples, then the audio samples that start before the video part ends (and were not taken before).
  A part without audio (the audio stopped) carries the video's traf alone.
- A muxed part is complete once the audio placed reaches its end (the newest audio sample taken to last
  as long as the ones before it, as the segmenter places audio back to back), which is usually when the
  video frame that closed the part arrives, or one audio frame later; if the audio stalls for
  `max_audio_wait_ms` of video, parts go out with what there is. `reset` (discontinuity, timestamp jump, end) sends out everything held.
- Its segments are the concatenation of its parts, closed when the video's segment closes.
- Its init segment declares both tracks (`fmp4.combined_init`); a new version is made whenever the video
  init or the audio init changes, at a video segment start. The rendition starts at the first video
  segment once an audio sample has been placed; a video-only stream has none (players use the video
  playlist), and neither has an audio-only one. Audio samples of a new audio config wait for the next
  segment (the video cuts there, flagged as a discontinuity, as the segmenter does for its audio).

Audio decode times are the audio track's own (its timescale, its running sample count), so A/V sync is
exactly the split tracks'. Every muxed part is serialized once (one join copies each sample once more);
viewers all get the same bytes. Pure: no clock, no IO.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .cmaf import MUXED, VIDEO_TIMESCALE, CmafInit, CmafPart, CmafSegment
from .fmp4 import AUDIO_TRUN, SAMPLE_SYNC, VIDEO_TRUN, TrackRun, combined_init, multi_track_fragment

VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2
DEFAULT_MAX_AUDIO_WAIT_MS = 500
_MAX_HELD_AUDIO = 1024  # audio samples held with no video to go with (an audio-only stream): ~20 s


@dataclass(slots=True)
class _AudioSample:
    tick: int
    payload: bytes | memoryview
    init: CmafInit
    start_90k: int
    duration: int = 0
    """Ticks until the next sample (0 while it is the last one placed)."""


@dataclass(slots=True)
class _VideoPart:
    part: CmafPart
    entries: list[int]
    pieces: list[bytes | memoryview]
    size: int
    segment: CmafSegment | None = None
    """Set on the segment's last part: the muxed segment closes after it."""


@dataclass(slots=True)
class _OpenSegment:
    init: CmafInit
    audio_init: CmafInit
    parts: list[CmafPart] = field(default_factory=list)
    audio_closed: bool = False
    """An audio sample of another config came: this segment takes no more audio."""


class CmafMuxer:
    """Builds the muxed rendition from a CmafSegmenter's taps (see the module docstring)."""

    def __init__(self, max_audio_wait_ms: int = DEFAULT_MAX_AUDIO_WAIT_MS) -> None:
        self.max_audio_wait = max_audio_wait_ms * 90
        self._audio: deque[_AudioSample] = deque()
        self._audio_reach: int | None = None  # expected end (90 kHz) of the newest audio sample placed
        self._audio_step = 0  # the last duration two audio samples told
        self._video: deque[_VideoPart] = deque()
        self._open: _OpenSegment | None = None
        self._inits: dict[tuple[int, int], CmafInit] = {}
        self._current: CmafInit | None = None
        self._audio_init: CmafInit | None = None  # the last muxed segment's (audio may pause)
        self._versions = 0
        self._fragment_number = 0
        self._out: list[CmafPart | CmafSegment] = []
        self.parts_without_audio = 0
        """Muxed parts that went out with the video alone (the audio stalled or stopped)."""

    # -- taps ------------------------------------------------------------------------------------

    def audio_sample(self, tick: int, payload: bytes | memoryview, init: CmafInit) -> None:
        audio = self._audio
        start = tick * VIDEO_TIMESCALE // init.timescale
        if audio:
            last = audio[-1]
            step = tick - last.tick
            if last.init is init and 0 < step < init.timescale:
                last.duration = self._audio_step = step
            else:
                last.duration = self._nominal(last)
        sample = _AudioSample(tick, payload, init, start)
        audio.append(sample)
        if len(audio) > _MAX_HELD_AUDIO:
            audio.popleft()
        # The segmenter places audio back to back, so the newest sample lasts as long as the last ones did.
        self._audio_reach = start + self._nominal(sample) * VIDEO_TIMESCALE // init.timescale
        if self._video:
            self._drain(force=False)

    def video_part(self, part: CmafPart, entries: list[int], pieces: list[bytes | memoryview], size: int) -> None:
        self._video.append(_VideoPart(part, entries, pieces, size))
        self._drain(force=False)

    def video_segment(self, segment: CmafSegment) -> None:
        if self._video and self._video[-1].part.sequence == segment.sequence:
            self._video[-1].segment = segment
        elif self._open is not None and self._open.parts and self._open.parts[0].sequence == segment.sequence:
            self._close_segment(segment)
        self._drain(force=False)

    def reset(self) -> None:
        self._drain(force=True)
        self._video.clear()
        self._open = None  # (its video segment closed before the reset, and with it this one)
        self._audio_init = None  # a new timeline starts with its own audio, or none
        self._audio.clear()
        self._audio_reach = None

    def holds_parts(self) -> bool:
        """Whether a video part waits for its audio: the next audio sample may complete it."""
        return bool(self._video)

    def take(self) -> list[CmafPart | CmafSegment]:
        out, self._out = self._out, []
        return out

    # -- muxing ----------------------------------------------------------------------------------

    def _drain(self, *, force: bool) -> None:
        video = self._video
        while video:
            held = video[0]
            part = held.part
            end = part.start + part.duration
            reach = self._audio_reach
            ready = (
                force
                or (reach is not None and reach >= end)
                or (self._open is not None and self._open.audio_closed)
                or video[-1].part.start + video[-1].part.duration - end >= self.max_audio_wait
            )
            if not ready:
                return
            video.popleft()
            self._mux(held, force)

    def _mux(self, held: _VideoPart, force: bool) -> None:
        part = held.part
        if part.index == 0:
            self._open = self._start_segment(part)
        segment = self._open
        if segment is None or (segment.parts and segment.parts[0].sequence != part.sequence):
            return  # not started (no audio yet), or started mid-segment: wait for the next segment
        end = part.start + part.duration
        audio = self._audio
        taken: list[_AudioSample] = []
        while audio and audio[0].start_90k < end:
            sample = audio[0]
            if sample.init is not segment.audio_init:
                if sample.init.version < segment.audio_init.version:
                    audio.popleft()  # an old config's leftover: its segment has gone
                    continue
                segment.audio_closed = True  # a new config: from the next segment on
                break
            if not sample.duration:
                sample.duration = self._nominal(sample)  # the newest: as long as the last ones
            taken.append(audio.popleft())
        runs = [TrackRun(VIDEO_TRACK_ID, part.start, VIDEO_TRUN, held.entries, held.pieces, held.size)]
        if taken:
            entries: list[int] = []
            for sample in taken:
                entries += (sample.duration, len(sample.payload))
            runs.append(TrackRun(AUDIO_TRACK_ID, taken[0].tick, AUDIO_TRUN, entries,
                                 [s.payload for s in taken], sum(len(s.payload) for s in taken), SAMPLE_SYNC))
        else:
            self.parts_without_audio += 1
        self._fragment_number += 1
        muxed = CmafPart(
            track=MUXED, sequence=part.sequence, index=part.index,
            data=multi_track_fragment(self._fragment_number, runs),
            start=part.start, duration=part.duration, timescale=part.timescale, independent=part.independent,
            init=segment.init, timeline=part.timeline, discontinuity=part.discontinuity, samples=part.samples,
        )
        segment.parts.append(muxed)
        self._out.append(muxed)
        if held.segment is not None:
            self._close_segment(held.segment)

    def _start_segment(self, part: CmafPart) -> _OpenSegment | None:
        """The muxed segment for the video segment `part` starts, with the audio config of the audio
        that starts with it (older audio, before the first segment or the new timeline, is dropped)."""
        audio = self._audio
        while audio and audio[0].start_90k < part.start:
            audio.popleft()
        audio_init = audio[0].init if audio else self._audio_init
        if audio_init is None:
            return None  # no audio yet: the rendition starts once there is
        self._audio_init = audio_init
        return _OpenSegment(self._init_for(part.init, audio_init), audio_init)

    def _init_for(self, video: CmafInit, audio: CmafInit) -> CmafInit:
        key = (video.version, audio.version)
        current = self._current
        if current is not None and self._inits.get(key) is current:
            return current
        self._versions += 1
        init = CmafInit(
            track=MUXED, version=self._versions, data=combined_init([video.data, audio.data]),
            codec=video.codec, codec_string=f"{video.codec_string},{audio.codec_string}",
            timescale=video.timescale, width=video.width, height=video.height, frame_rate=video.frame_rate,
            sample_rate=audio.sample_rate, channels=audio.channels, nal_length_size=video.nal_length_size,
        )
        self._inits = {key: init}
        self._current = init
        return init

    def _close_segment(self, video: CmafSegment) -> None:
        segment = self._open
        self._open = None
        if segment is None or not segment.parts or segment.parts[0].sequence != video.sequence:
            return
        parts = segment.parts
        first = parts[0]
        self._out.append(CmafSegment(
            track=MUXED, sequence=video.sequence, data=b"".join(p.data for p in parts),
            start=video.start, duration=video.duration, timescale=video.timescale, init=segment.init,
            timeline=video.timeline, discontinuity=first.discontinuity, independent=video.independent,
            part_count=len(parts), samples=video.samples,
        ))

    def _nominal(self, sample: _AudioSample) -> int:
        """An audio sample's duration when no next sample tells: the last one told, else an AAC frame
        (1024 samples) or 20 ms of Opus."""
        if self._audio_step:
            return self._audio_step
        return 1024 if sample.init.codec == "aac" else sample.init.timescale // 50
