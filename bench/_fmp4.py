"""A small reader of fragmented MP4 (ISO BMFF, ISO/IEC 14496-12) for the LL-HLS and DASH latency probes.

It reads what a probe needs to put a part or segment on the publisher's timeline, and nothing else:

- an init segment (ftyp + moov): per track, its id, handler ("vide", "soun", ...), timescale (mdhd)
  and the default sample duration of its trex, if the init has one;
- a media segment or part (moof + mdat, one or more pairs): per track fragment, the base media
  decode time (tfdt) and every sample's duration (trun, else tfhd's default, else trex's), so the
  first and last sample's decode time and the fragment's end follow.

Sample data, sizes beyond what the trun layout needs to be stepped over, and every other box are
skipped. Everything is bounded by the bytes given: a box may not claim more than its parent holds,
a trun may not declare more samples than its box has room for (or than MAX_SAMPLES when its samples
take no room), and nesting is only followed where the boxes above live. Malformed input raises
Mp4Error, which says what and where.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

MAX_SAMPLES = 100_000
"""A trun with no per-sample fields could declare 2^32 samples in 12 bytes: refuse more than this."""
MAX_BOXES = 100_000


class Mp4Error(ValueError):
    """The bytes are not the fragmented MP4 we can read; the message says what and where."""


@dataclass(frozen=True, slots=True)
class TrackInfo:
    track_id: int
    handler: str
    """"vide", "soun", ..."""
    timescale: int
    default_duration: int | None = None
    """trex's default sample duration, used when a fragment gives none."""


@dataclass(frozen=True, slots=True)
class TrackRun:
    """One track fragment: where it starts on the track's timeline and how long its samples last."""

    track_id: int
    base_decode_time: int
    """tfdt, in the track's timescale."""
    durations: tuple[int, ...]
    """Every sample's duration, in order."""

    @property
    def samples(self) -> int:
        return len(self.durations)

    @property
    def last_decode_time(self) -> int:
        """The decode time of the last sample (the base time when there are none)."""
        return self.base_decode_time + sum(self.durations[:-1])

    @property
    def end(self) -> int:
        """The decode time just after the last sample."""
        return self.base_decode_time + sum(self.durations)


def iter_boxes(data, start: int = 0, end: int | None = None, where: str = "file") -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, box end) of each box in data[start:end]; size 1 (64-bit) and size 0 (to the end)."""
    end = len(data) if end is None else end
    pos = start
    count = 0
    while pos < end:
        count += 1
        if count > MAX_BOXES:
            raise Mp4Error(f"more than {MAX_BOXES} boxes in the {where}")
        if end - pos < 8:
            raise Mp4Error(f"{end - pos} stray bytes at offset {pos} of the {where}: too few for a box header")
        size, kind = struct.unpack_from(">I4s", data, pos)
        body = pos + 8
        if size == 1:
            if end - pos < 16:
                raise Mp4Error(f"box {kind!r} at offset {pos} is truncated in its 64-bit size")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            body = pos + 16
        elif size == 0:
            size = end - pos
        if size < body - pos:
            raise Mp4Error(f"box {kind!r} at offset {pos} has size {size}, smaller than its header")
        if pos + size > end:
            raise Mp4Error(f"box {kind!r} at offset {pos} claims {size} bytes but the {where} has {end - pos} left: truncated")
        yield kind, body, pos + size
        pos += size


def _child(data, start: int, end: int, kind: bytes, where: str) -> tuple[int, int] | None:
    for k, body, box_end in iter_boxes(data, start, end, where):
        if k == kind:
            return body, box_end
    return None


def _need(body: int, box_end: int, n: int, kind: str) -> None:
    if box_end - body < n:
        raise Mp4Error(f"{kind} box has {box_end - body} bytes; it needs at least {n}")


def read_init(data: bytes | bytearray | memoryview) -> dict[int, TrackInfo]:
    """Track id -> TrackInfo for every trak of an init segment's moov."""
    moov = _child(data, 0, len(data), b"moov", "init segment")
    if moov is None:
        raise Mp4Error("no moov box: this is not an init segment")
    defaults: dict[int, int] = {}
    mvex = _child(data, *moov, b"mvex", "moov")
    if mvex is not None:
        for kind, body, box_end in iter_boxes(data, *mvex, "mvex"):
            if kind == b"trex":
                _need(body, box_end, 24, "trex")
                track_id, _, duration = struct.unpack_from(">III", data, body + 4)
                defaults[track_id] = duration
    tracks: dict[int, TrackInfo] = {}
    for kind, body, box_end in iter_boxes(data, *moov, "moov"):
        if kind != b"trak":
            continue
        tkhd = _child(data, body, box_end, b"tkhd", "trak")
        mdia = _child(data, body, box_end, b"mdia", "trak")
        if tkhd is None or mdia is None:
            raise Mp4Error("a trak without tkhd or mdia")
        _need(*tkhd, 4, "tkhd")
        version = data[tkhd[0]]
        id_at = tkhd[0] + (20 if version == 1 else 12)
        _need(tkhd[0], tkhd[1], id_at - tkhd[0] + 4, "tkhd")
        (track_id,) = struct.unpack_from(">I", data, id_at)
        mdhd = _child(data, *mdia, b"mdhd", "mdia")
        hdlr = _child(data, *mdia, b"hdlr", "mdia")
        if mdhd is None or hdlr is None:
            raise Mp4Error(f"track {track_id}: mdia without mdhd or hdlr")
        _need(*mdhd, 4, "mdhd")
        scale_at = mdhd[0] + (20 if data[mdhd[0]] == 1 else 12)
        _need(mdhd[0], mdhd[1], scale_at - mdhd[0] + 4, "mdhd")
        (timescale,) = struct.unpack_from(">I", data, scale_at)
        if timescale == 0:
            raise Mp4Error(f"track {track_id} has timescale 0")
        _need(*hdlr, 12, "hdlr")
        handler = bytes(data[hdlr[0] + 8 : hdlr[0] + 12]).decode("latin-1")
        tracks[track_id] = TrackInfo(track_id, handler, timescale, defaults.get(track_id))
    if not tracks:
        raise Mp4Error("the moov has no trak")
    return tracks


# trun per-sample fields, in the order they appear, by flag: (flag, bytes)
_TRUN_SAMPLE_FIELDS = ((0x100, 4), (0x200, 4), (0x400, 4), (0x800, 4))


def read_fragments(data: bytes | bytearray | memoryview, tracks: Mapping[int, TrackInfo] | None = None) -> list[TrackRun]:
    """Every track fragment of the moofs in a media segment or part, in order.

    `tracks` (from read_init) supplies trex default durations for fragments that carry none."""
    runs: list[TrackRun] = []
    for kind, body, box_end in iter_boxes(data, 0, len(data), "segment"):
        if kind != b"moof":
            continue
        for tkind, tbody, tend in iter_boxes(data, body, box_end, "moof"):
            if tkind == b"traf":
                runs.append(_read_traf(data, tbody, tend, tracks))
    return runs


def _read_traf(data, start: int, end: int, tracks: Mapping[int, TrackInfo] | None) -> TrackRun:
    track_id = None
    default_duration = None
    base = None
    durations: list[int] = []
    for kind, body, box_end in iter_boxes(data, start, end, "traf"):
        if kind == b"tfhd":
            _need(body, box_end, 8, "tfhd")
            flags = int.from_bytes(data[body + 1 : body + 4], "big")
            (track_id,) = struct.unpack_from(">I", data, body + 4)
            p = body + 8
            for flag, size in ((0x01, 8), (0x02, 4)):  # base-data-offset, sample-description-index
                if flags & flag:
                    p += size
            if flags & 0x08:  # default-sample-duration
                _need(body, box_end, p - body + 4, "tfhd")
                (default_duration,) = struct.unpack_from(">I", data, p)
        elif kind == b"tfdt":
            _need(body, box_end, 8, "tfdt")
            if data[body] == 1:
                _need(body, box_end, 12, "tfdt")
                (base,) = struct.unpack_from(">Q", data, body + 4)
            else:
                (base,) = struct.unpack_from(">I", data, body + 4)
        elif kind == b"trun":
            durations.extend(_read_trun(data, body, box_end, track_id, default_duration, tracks))
    if track_id is None:
        raise Mp4Error("a traf without tfhd")
    if base is None:
        raise Mp4Error(f"track {track_id}: a traf without tfdt (no base media decode time)")
    return TrackRun(track_id, base, tuple(durations))


def _read_trun(data, body: int, end: int, track_id: int | None, default_duration: int | None,
               tracks: Mapping[int, TrackInfo] | None) -> list[int]:
    if track_id is None:
        raise Mp4Error("a trun before its traf's tfhd")
    _need(body, end, 8, "trun")
    flags = int.from_bytes(data[body + 1 : body + 4], "big")
    (count,) = struct.unpack_from(">I", data, body + 4)
    p = body + 8
    if flags & 0x01:  # data-offset
        p += 4
    if flags & 0x04:  # first-sample-flags
        p += 4
    per_sample = sum(size for flag, size in _TRUN_SAMPLE_FIELDS if flags & flag)
    if p > end:
        raise Mp4Error(f"trun of track {track_id} is truncated in its header")
    if per_sample:
        if count > (end - p) // per_sample:
            raise Mp4Error(f"trun of track {track_id} declares {count} samples of {per_sample} bytes "
                           f"but has room for {(end - p) // per_sample}")
    elif count > MAX_SAMPLES:
        raise Mp4Error(f"trun of track {track_id} declares {count} samples; at most {MAX_SAMPLES} are read")
    if flags & 0x100:
        step = per_sample // 4
        values = struct.unpack_from(f">{count * step}I", data, p)
        return list(values[0::step])
    if default_duration is None and tracks is not None and track_id in tracks:
        default_duration = tracks[track_id].default_duration
    if default_duration is None:
        raise Mp4Error(f"trun of track {track_id} has no sample durations and no default (tfhd or trex) applies")
    return [default_duration] * count
