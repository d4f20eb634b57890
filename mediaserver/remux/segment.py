"""The Segment: one finished piece of a segmented stream (HLS MPEG-TS now, fMP4/CMAF later), and the
CutPlan by which the renditions of a source (ABR) cut their segments where the source cuts its own.

A segmenter produces Segments; a SegmentWindow (remux/hls.py) keeps the recent ones in memory;
the edge serves `data` as is and lists the window in playlists. A Segment never changes once made,
so one bytes object serves every viewer.

Names: a segment is named by its sequence number alone ("seg-123.ts"), so a player's request maps
straight back to a lookup by sequence, and names never repeat within a stream's life.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Segment:
    """One finished media segment, ready to serve."""

    sequence: int
    """Media sequence number: +1 per segment, for the whole life of the packager."""
    data: bytes
    """The complete segment file (MPEG-TS: 188-byte packets starting with PAT and PMT)."""
    start_ms: int
    """Decode time of the first frame, in ms on the stream's timeline."""
    duration_ms: int
    """Media time the segment covers, in ms (the start of the next segment minus this start)."""
    program_date_time: float
    """Wall-clock time of the first frame, in unix seconds (EXT-X-PROGRAM-DATE-TIME)."""
    discontinuity: bool = False
    """The segment starts a new timeline or format (EXT-X-DISCONTINUITY before it)."""
    independent: bool = True
    """The segment starts with a random access point (a keyframe, or audio only)."""

    @property
    def duration_s(self) -> float:
        return self.duration_ms / 1000

    def name(self, extension: str = "ts") -> str:
        return segment_name(self.sequence, extension)


_NAME = re.compile(r"seg-(0|[1-9][0-9]{0,17})\.([a-z0-9]{1,8})")


def segment_name(sequence: int, extension: str = "ts") -> str:
    """The relative URI of a segment: "seg-123.ts"."""
    return f"seg-{sequence}.{extension}"


def parse_segment_name(name: str, extension: str = "ts") -> int | None:
    """The sequence number in a segment name made by segment_name, or None if `name` is not one."""
    match = _NAME.fullmatch(name)
    if match is None or match.group(2) != extension:
        return None
    return int(match.group(1))


# -- aligned renditions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cut:
    """Where a reference segmenter started a segment (or, CMAF, a part): what a follower copies."""

    sequence: int
    """The segment's media sequence number."""
    part: int
    """0 where the segment starts; 1, 2, ... where a later LL-HLS part of it starts."""
    program_date_time: float
    """Wall clock at the cut (unix seconds), as the reference's playlist says."""
    decode_delay_ms: int
    """The reference's pts - dts of the frame at the cut: a B-frame source decodes that much earlier."""
    discontinuity: bool = False
    """The reference's segment starts a new timeline or format."""
    independent: bool = True
    """The cut is at a keyframe."""


class CutPlan:
    """The cuts a source's segmenter made, for its renditions' segmenters to make the same ones.

    Renditions (ABR) have keyframes at exactly the source keyframes' presentation times and keep the
    source's timestamps, so a cut is named by the presentation time (ms) of the frame it starts at. The
    reference (the source's segmenter of one format) `record`s each cut it makes and `passed` each
    keyframe it has seen; a follower asks `at(pts_ms)` at every frame and `decided(pts_ms)` whether the
    reference has got that far (beyond, the follower applies the same rule on its own, which gives the
    same cuts for the same keyframes). Bounded: the last `keep` cuts are kept (256: over a minute of
LL-HLS parts, far more than the GOPs a rendition's packager replays when it starts). Pure, no clock.
    """

    __slots__ = ("keep", "_cuts", "horizon_ms", "newest_ms")

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self._cuts: dict[int, Cut] = {}
        self.horizon_ms: int | None = None
        """The newest presentation time the reference has decided about (a cut or a keyframe)."""
        self.newest_ms: int | None = None
        """The presentation time of the newest cut recorded."""

    def record(self, pts_ms: int, cut: Cut) -> None:
        cuts = self._cuts
        cuts[pts_ms] = cut  # a re-recorded time (a restarted reference) takes the place of the old cut
        if len(cuts) > self.keep:
            del cuts[next(iter(cuts))]  # dicts keep insertion order: the oldest goes
        self.newest_ms = pts_ms
        self.passed(pts_ms)

    def passed(self, pts_ms: int) -> None:
        """The reference has seen a keyframe at `pts_ms` (and cut there or not)."""
        if self.horizon_ms is None or pts_ms > self.horizon_ms:
            self.horizon_ms = pts_ms

    def at(self, pts_ms: int) -> Cut | None:
        """The cut the reference made at the frame shown at `pts_ms`, if it made one."""
        return self._cuts.get(pts_ms)

    def decided(self, pts_ms: int) -> bool:
        """Whether the reference has got as far as `pts_ms`, so a missing cut there means no cut."""
        return self.horizon_ms is not None and pts_ms <= self.horizon_ms

    def __len__(self) -> int:
        return len(self._cuts)
