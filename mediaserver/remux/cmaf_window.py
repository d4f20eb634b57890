"""CmafWindow: the recent CMAF output of one stream, per track, as both manifests list it.

Feed it everything CmafSegmenter returns, in order. It keeps, per track, the last `listed` segments for
the manifests plus `retained` more behind (RFC 8216bis 6.2.2), the parts of the last `part_segments`
segments and of the one in progress (LL-HLS), and each init version still referenced. Pure: no clock,
no IO.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator

from ..errors import UsageError
from .cmaf import (
    DEFAULT_LISTED_SEGMENTS,
    DEFAULT_PART_TARGET_S,
    DEFAULT_TARGET_DURATION_S,
    CmafInit,
    CmafPart,
    CmafSegment,
    Timeline,
)

class CmafTrackWindow:
    """One track's recent segments, the parts of the last few and of the open one, and their inits."""

    def __init__(self, track: str, listed: int, retained: int, part_segments: int) -> None:
        self.track = track
        self.listed_count = listed
        self.retained_count = retained
        self.part_segments = part_segments
        self._segments: deque[CmafSegment] = deque()
        self._recent_parts: deque[tuple[int, tuple[CmafPart, ...]]] = deque()
        self.open_parts: list[CmafPart] = []
        """Parts of the segment in progress (all of the same sequence), oldest first."""
        self._inits: dict[int, CmafInit] = {}
        self._dropped_discontinuities = 0
        self.max_duration_s = 0.0
        """The longest segment ever added, in seconds."""
        self.max_part_s = 0.0
        """The longest part ever added, in seconds."""
        self._next_sequence: int | None = None

    # -- adding ----------------------------------------------------------------------------------

    def add_part(self, part: CmafPart) -> None:
        opened = self.open_parts
        if opened:
            if part.sequence != opened[0].sequence or part.index != len(opened):
                raise UsageError(
                    f"{part.track} part {part.sequence}.{part.index} added after part "
                    f"{opened[-1].sequence}.{opened[-1].index}; parts must come in order"
                )
        elif part.index != 0 or (self._next_sequence is not None and part.sequence < self._next_sequence):
            raise UsageError(f"{part.track} part {part.sequence}.{part.index} does not start a new segment")
        opened.append(part)
        self.max_part_s = max(self.max_part_s, part.duration_s)
        self._inits[part.init.version] = part.init

    def add_segment(self, segment: CmafSegment) -> None:
        if self._next_sequence is not None and segment.sequence < self._next_sequence:
            raise UsageError(
                f"{segment.track} segment {segment.sequence} added after {self._next_sequence - 1}; "
                "sequence numbers must grow"
            )
        parts = tuple(self.open_parts) if self.open_parts and self.open_parts[0].sequence == segment.sequence else ()
        self.open_parts = []
        self._recent_parts.append((segment.sequence, parts))
        while len(self._recent_parts) > self.part_segments:
            self._recent_parts.popleft()
        segments = self._segments
        segments.append(segment)
        self._next_sequence = segment.sequence + 1
        self.max_duration_s = max(self.max_duration_s, segment.duration_s)
        self._inits[segment.init.version] = segment.init
        if len(segments) > self.listed_count and segments[-self.listed_count - 1].discontinuity:
            self._dropped_discontinuities += 1  # it leaves the listing with its EXT-X-DISCONTINUITY
        while len(segments) > self.listed_count + self.retained_count:
            segments.popleft()
        kept = {s.init.version for s in segments} | {p.init.version for p in self.open_parts}
        kept.add(segment.init.version)
        for version in [v for v in self._inits if v not in kept]:
            del self._inits[version]

    # -- reading ---------------------------------------------------------------------------------

    @property
    def listed(self) -> list[CmafSegment]:
        """The segments the playlist lists, oldest first."""
        segments = list(self._segments)
        return segments[-self.listed_count :]

    @property
    def media_sequence(self) -> int:
        listed = self.listed
        if listed:
            return listed[0].sequence
        if self.open_parts:
            return self.open_parts[0].sequence
        return self._next_sequence or 0

    @property
    def discontinuity_sequence(self) -> int:
        return self._dropped_discontinuities

    @property
    def last_sequence(self) -> int | None:
        """The last complete segment's sequence number, if there is one."""
        return self._segments[-1].sequence if self._segments else None

    @property
    def open_sequence(self) -> int:
        """The sequence number of the segment in progress (or the next one to start)."""
        if self.open_parts:
            return self.open_parts[0].sequence
        last = self.last_sequence
        return last + 1 if last is not None else (self._next_sequence or 0)

    @property
    def next_part(self) -> tuple[int, int]:
        """(sequence, index) of the part that comes next: what EXT-X-PRELOAD-HINT names."""
        return self.open_sequence, len(self.open_parts)

    @property
    def current_init(self) -> CmafInit | None:
        if self.open_parts:
            return self.open_parts[-1].init
        if self._segments:
            return self._segments[-1].init
        return None

    def segment(self, sequence: int) -> CmafSegment | None:
        for segment in reversed(self._segments):
            if segment.sequence == sequence:
                return segment
            if segment.sequence < sequence:
                break
        return None

    def parts_of(self, sequence: int) -> tuple[CmafPart, ...] | None:
        """The parts of a segment, if still kept (the open one's included); None otherwise."""
        if self.open_parts and self.open_parts[0].sequence == sequence:
            return tuple(self.open_parts)
        for seq, parts in reversed(self._recent_parts):
            if seq == sequence:
                return parts or None
        return None

    def part(self, sequence: int, index: int) -> CmafPart | None:
        opened = self.open_parts
        if opened and opened[0].sequence == sequence:  # the live edge, asked for most: no copy of the list
            return opened[index] if 0 <= index < len(opened) else None
        parts = self.parts_of(sequence)
        if parts is None or not 0 <= index < len(parts):
            return None
        return parts[index]

    def init(self, version: int) -> CmafInit | None:
        return self._inits.get(version)

    def __iter__(self) -> Iterator[CmafSegment]:
        return iter(self._segments)

    def __len__(self) -> int:
        return len(self._segments)


class CmafWindow:
    """The recent CMAF output of one stream, per track: what the LL-HLS playlists and the MPD list.

    Feed it everything the segmenter returns, in order (`extend`). Both manifests read it; the edge
    serves `track(...).segment(...)`, `.part(...)` and `.init(...)` from it.
    """

    def __init__(
        self,
        *,
        target_duration_s: float = DEFAULT_TARGET_DURATION_S,
        part_target_s: float = DEFAULT_PART_TARGET_S,
        listed: int = DEFAULT_LISTED_SEGMENTS,
        retained: int | None = None,
        part_segments: int = 4,
    ) -> None:
        if listed < 1:
            raise UsageError(f"a CMAF window must list at least 1 segment, not {listed}")
        if retained is None:
            retained = listed + 1
        if retained < 0 or part_segments < 1:
            raise UsageError(f"retained segments ({retained}) must be >= 0 and part segments ({part_segments}) >= 1")
        self.target_duration_s = target_duration_s
        self.part_target_s = part_target_s
        self.listed_count = listed
        self.retained_count = retained
        self.part_segments = part_segments
        self.tracks: dict[str, CmafTrackWindow] = {}
        self.first_timeline: Timeline | None = None
        """The stream's first timeline: DASH's availabilityStartTime is its anchor."""
        self.ended = False

    def add(self, item: CmafPart | CmafSegment) -> None:
        if self.ended:
            raise UsageError("CMAF output added to a window that has ended; start a new window")
        track = self.tracks.get(item.track)
        if track is None:
            track = self.tracks[item.track] = CmafTrackWindow(
                item.track, self.listed_count, self.retained_count, self.part_segments
            )
        if self.first_timeline is None:
            self.first_timeline = item.timeline
        if isinstance(item, CmafPart):
            track.add_part(item)
        else:
            track.add_segment(item)

    def extend(self, items: Iterable[CmafPart | CmafSegment]) -> None:
        for item in items:
            self.add(item)

    def end(self) -> None:
        """The stream ended: playlists get EXT-X-ENDLIST, the MPD becomes static."""
        self.ended = True

    def track(self, name: str) -> CmafTrackWindow | None:
        return self.tracks.get(name)

    def target_duration(self, track: str | None = None) -> int:
        """EXT-X-TARGETDURATION: the configured target rounded up, raised if a segment ran longer.

        Every EXTINF rounded to the nearest integer must not exceed it (RFC 8216bis 4.4.3.1); it
        never shrinks, since a live playlist's target duration must not change.
        """
        windows = [self.tracks[track]] if track in self.tracks else list(self.tracks.values())
        longest = max((w.max_duration_s for w in windows), default=0.0)
        return max(math.ceil(self.target_duration_s - 1e-9), math.floor(longest + 0.5), 1)

    def part_target(self, track: str | None = None) -> float:
        """PART-TARGET in seconds (whole ms): the configured target plus 1 ms for millisecond
        timestamps, raised (never lowered) if a part ever ran longer, so every part fits it."""
        windows = [self.tracks[track]] if track in self.tracks else list(self.tracks.values())
        longest = max((w.max_part_s for w in windows), default=0.0)
        return max(math.ceil(self.part_target_s * 1000 - 1e-6) + 1, math.ceil(longest * 1000 - 1e-6)) / 1000
