"""The Segment: one finished piece of a segmented stream (HLS MPEG-TS now, fMP4/CMAF later).

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
