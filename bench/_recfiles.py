"""Reading recordings back for the recording benchmark: samples per track, gaps on each track's timeline.

A recording (mediaserver/record/recorder.py) is ftyp + moov, then moof+mdat fragments of each track. Each
track's fragments must follow one another on its timeline with no hole (a fragment's base decode time is
where the previous one ended): a frame lost between the hub and the file shows as a hole, or as fewer
samples than frames received. The fragment index the server itself serves VOD from (record/vod.py
`index_file`) is read too, so a file it cannot index, or a partial fragment at its end, shows.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _fmp4 import Mp4Error, iter_boxes, read_fragments, read_init  # noqa: E402


@dataclass(slots=True)
class TrackCheck:
    handler: str
    timescale: int
    samples: int = 0
    fragments: int = 0
    holes: int = 0
    """Fragments that did not start where the previous one of the track ended."""
    worst_hole_ms: float = 0.0
    start: int | None = None
    end: int | None = None

    @property
    def duration_s(self) -> float:
        return 0.0 if self.start is None or self.end is None else (self.end - self.start) / self.timescale


@dataclass(slots=True)
class FileCheck:
    bytes: int
    tracks: dict[str, TrackCheck] = field(default_factory=dict)
    """By handler: "vide", "soun"."""
    error: str | None = None

    @property
    def samples(self) -> int:
        return sum(t.samples for t in self.tracks.values())

    @property
    def holes(self) -> int:
        return sum(t.holes for t in self.tracks.values())


def check_recording(data: bytes | bytearray | memoryview) -> FileCheck:
    """Samples, fragments and timeline holes per track of one recording file's bytes."""
    out = FileCheck(len(data))
    try:
        boxes = list(iter_boxes(data, 0, len(data), "file"))
        moov = next(((body - 8, end) for kind, body, end in boxes if kind == b"moov"), None)
        if moov is None:
            raise Mp4Error("no moov")
        ftyp_end = moov[0]
        tracks_info = read_init(bytes(data[:moov[1]])) if ftyp_end >= 0 else {}
        by_id = {tid: TrackCheck(t.handler, t.timescale) for tid, t in tracks_info.items()}
        for kind, body, end in boxes:
            if kind != b"moof":
                continue
            for run in read_fragments(memoryview(data)[body - 8:end], tracks_info):
                t = by_id.get(run.track_id)
                if t is None:
                    raise Mp4Error(f"a fragment of track {run.track_id}, which the moov does not describe")
                if t.end is not None and run.base_decode_time != t.end:
                    t.holes += 1
                    t.worst_hole_ms = max(t.worst_hole_ms, abs(run.base_decode_time - t.end) * 1000 / t.timescale)
                if t.start is None:
                    t.start = run.base_decode_time
                t.end = run.base_decode_time + sum(run.durations)
                t.samples += run.samples
                t.fragments += 1
        out.tracks = {t.handler: t for t in by_id.values()}
    except Mp4Error as err:
        out.error = str(err)
    return out
