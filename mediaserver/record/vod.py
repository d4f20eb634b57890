"""The VOD index of a recorded fragmented MP4 file, and the HLS playlist that plays it by byte ranges.

`index_file` walks the file's top-level boxes: `ftyp` and `moov` (the init: which tracks, their
timescales), then moof+mdat pairs. A recording is written one segment of one track at a time (see
recorder.py), so one playable segment is a run of fragments: it starts at a video fragment that begins
with a keyframe and takes in what follows (audio, more video parts) up to the next one; a file without
video has one segment per fragment. Times come from the video track (tfdt, trun durations, the mdhd
timescale), or the audio track when there is no video.

A crashed recorder leaves a partial box at the end: the index stops at the last whole fragment and says
how many bytes follow it (`trailing_bytes`). Hostile input gets a MediaError (no init, a box smaller than
its header, a sample table larger than its box) or the index of the whole fragments before the damage;
never another exception. Given a file object only the boxes' headers, the moov and the moofs are read
(each bounded by MAX_META_BOX: a moov over it is a MediaError, a moof over it ends the index), never
the media.
"""

from __future__ import annotations

import io
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO
from xml.sax.saxutils import escape, quoteattr

from ..errors import MediaError
from ..media.aac import parse_audio_specific_config
from ..media.av1 import parse_av1_config
from ..media.h264 import parse_avc_config
from ..media.hevc import parse_hevc_config
from ..media.vp9 import parse_vpcc

MAX_META_BOX = 16 << 20
"""The largest moov or moof read into memory; a bigger one is taken for damage."""
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"mvex", b"traf", b"moof"}
_NON_SYNC = 0x00010000
_BETWEEN_FRAGMENTS = {b"free", b"skip", b"styp", b"sidx", b"prft", b"emsg", b"uuid", b"mfra"}


@dataclass(frozen=True, slots=True)
class VodFragment:
    """One playable segment of the file: a byte range and where it sits in time."""

    offset: int
    size: int
    start: int
    """Decode time of its first sample, in the index's timescale."""
    duration: int
    keyframe: bool
    """Starts with a sync sample (a player may start here)."""


@dataclass(frozen=True, slots=True)
class VodIndex:
    init_offset: int
    init_size: int
    timescale: int
    """Of the track the times are read from (video, else audio)."""
    tracks: dict[int, str]
    """track_ID -> handler ("vide", "soun")."""
    fragments: tuple[VodFragment, ...]
    file_size: int
    codecs: tuple[str, ...] = ()
    """RFC 6381 codec strings of the tracks, video first ("avc1.64001f", "mp4a.40.2"); a track whose
    sample entry cannot be read is left out."""
    width: int = 0
    height: int = 0
    """Of the video sample entry (0 without video)."""

    @property
    def total_bytes(self) -> int:
        """Bytes that make a playable file: the init and every whole fragment."""
        if self.fragments:
            last = self.fragments[-1]
            return last.offset + last.size
        return self.init_offset + self.init_size

    @property
    def trailing_bytes(self) -> int:
        """What follows the last whole fragment (a crash's partial write): a catalog may cut it off."""
        return self.file_size - self.total_bytes

    @property
    def duration_s(self) -> float:
        if not self.fragments:
            return 0.0
        first, last = self.fragments[0], self.fragments[-1]
        return (last.start + last.duration - first.start) / self.timescale

    def fragment_seconds(self, fragment: VodFragment) -> float:
        return fragment.duration / self.timescale


# -- box walking -----------------------------------------------------------------------------------


def _top_level(f: BinaryIO, file_size: int, pos: int = 0) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, offset, size, header size) of each whole top-level box from `pos`; stops at a partial one."""
    while pos + 8 <= file_size:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            return
        size, kind = struct.unpack(">I4s", head[:8])
        header = 8
        if size == 1:
            if len(head) < 16:
                return
            size = struct.unpack(">Q", head[8:16])[0]
            header = 16
        elif size == 0:
            if kind != b"mdat":
                return  # zeros where a crash left no data yet, or damage: the fragments end here
            size = file_size - pos  # "to the end of the file"
        if size < header:
            raise MediaError(f"box {_name(kind)} at byte {pos} says it is {size} bytes, smaller than its header")
        if pos + size > file_size:
            return  # partial: what a crash leaves
        yield kind, pos, size, header
        pos += size


def _name(kind: bytes) -> str:
    return repr(kind.decode("latin-1"))


def _read_box(f: BinaryIO, offset: int, size: int, kind: bytes) -> bytes:
    if size > MAX_META_BOX:
        raise MediaError(f"{_name(kind)} box at byte {offset} is {size} bytes, more than {MAX_META_BOX} allowed")
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise MediaError(f"{_name(kind)} box at byte {offset} is cut short")
    return data


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise MediaError(f"box {_name(kind)} is cut short")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise MediaError(f"box {_name(kind)} inside a {end - start}-byte box has a bad size {size}")
        yield kind, pos + header, pos + size
        pos += size


def _find(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, s, e in _children(data, start, end):
        if k == kind:
            return s, e
    return None


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise MediaError(what)


# -- moov ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Track:
    handler: str
    timescale: int
    default_flags: int = 0
    codec: str | None = None
    width: int = 0
    height: int = 0


_VISUAL_ENTRY = 78  # SampleEntry + VisualSampleEntry fields before the child boxes (14496-12 12.1.3)
_AUDIO_ENTRY = 28  # SampleEntry + AudioSampleEntry (version 0) fields (12.2.3)


def _sample_entry(data: bytes, stbl: tuple[int, int], track: _Track) -> None:
    """The codec string and picture size from the track's first sample entry (stsd); left unset when the
    entry is one this server does not write or cannot read."""
    stsd = _find(data, *stbl, b"stsd")
    if stsd is None or stsd[0] + 8 > stsd[1]:
        return
    entries = list(_children(data, stsd[0] + 8, stsd[1]))
    if not entries:
        return
    kind, s, e = entries[0]
    visual = kind in (b"avc1", b"avc3", b"hvc1", b"hev1", b"av01", b"vp09")
    if visual and s + _VISUAL_ENTRY <= e:
        track.width, track.height = struct.unpack_from(">HH", data, s + 24)
    first_child = s + (_VISUAL_ENTRY if visual else _AUDIO_ENTRY)
    configs = {k: data[cs:ce] for k, cs, ce in _children(data, first_child, e)} if first_child <= e else {}
    try:
        if kind in (b"avc1", b"avc3") and b"avcC" in configs:
            track.codec = parse_avc_config(configs[b"avcC"]).codec_string.replace("avc1", kind.decode())
        elif kind in (b"hvc1", b"hev1") and b"hvcC" in configs:
            track.codec = parse_hevc_config(configs[b"hvcC"]).codec_string.replace("hvc1", kind.decode(), 1)
        elif kind == b"av01" and b"av1C" in configs:
            track.codec = parse_av1_config(configs[b"av1C"]).codec_string
        elif kind == b"vp09" and b"vpcC" in configs:
            track.codec = parse_vpcc(configs[b"vpcC"]).codec_string
        elif kind == b"mp4a" and b"esds" in configs:
            track.codec = _esds_codec(configs[b"esds"])
        elif kind == b"Opus":
            track.codec = "opus"
    except MediaError:
        track.codec = None


def _esds_codec(esds: bytes) -> str | None:
    """mp4a.40.N from an esds box's payload (14496-1 descriptors: ES > DecoderConfig > DecSpecificInfo)."""
    pos, end = 4, len(esds)  # version and flags first

    def descriptor(expected: int) -> int:
        nonlocal pos
        _need(pos < end and esds[pos] == expected, f"esds: descriptor {expected:#x} missing")
        pos += 1
        size = 0
        for _ in range(4):
            _need(pos < end, "esds is cut short")
            byte = esds[pos]
            pos += 1
            size = size << 7 | byte & 0x7F
            if not byte & 0x80:
                break
        _need(pos + size <= end, "esds descriptor is larger than its box")
        return pos + size

    descriptor(0x03)
    _need(pos + 3 <= end, "esds is cut short")
    flags = esds[pos + 2]
    pos += 3 + (2 if flags & 0x80 else 0) + (2 if flags & 0x20 else 0)
    if flags & 0x40:
        _need(pos < end, "esds is cut short")
        pos += 1 + esds[pos]
    config_end = descriptor(0x04)
    _need(pos + 13 <= config_end, "esds: DecoderConfigDescriptor is cut short")
    object_type = esds[pos]
    pos += 13
    if object_type != 0x40:
        return f"mp4a.{object_type:02X}"  # MPEG-1/2 audio in MP4 (mp4a.6B for MP3)
    info_end = descriptor(0x05)
    return parse_audio_specific_config(esds[pos:info_end]).codec_string


def _parse_moov(data: bytes) -> dict[int, _Track]:
    tracks: dict[int, _Track] = {}
    for kind, s, e in _children(data, 8, len(data)):
        if kind == b"trak":
            tkhd = _find(data, s, e, b"tkhd")
            mdia = _find(data, s, e, b"mdia")
            _need(tkhd is not None and mdia is not None, "a trak has no tkhd or mdia")
            assert tkhd is not None and mdia is not None
            version = data[tkhd[0]]
            id_at = tkhd[0] + (20 if version == 1 else 12)
            _need(id_at + 4 <= tkhd[1], "tkhd is cut short")
            track_id = struct.unpack_from(">I", data, id_at)[0]
            mdhd = _find(data, *mdia, b"mdhd")
            hdlr = _find(data, *mdia, b"hdlr")
            _need(mdhd is not None and hdlr is not None, f"track {track_id} has no mdhd or hdlr")
            assert mdhd is not None and hdlr is not None
            version = data[mdhd[0]]
            scale_at = mdhd[0] + (20 if version == 1 else 12)
            _need(scale_at + 4 <= mdhd[1] and hdlr[0] + 12 <= hdlr[1], f"track {track_id}'s mdhd or hdlr is cut short")
            timescale = struct.unpack_from(">I", data, scale_at)[0]
            _need(timescale > 0, f"track {track_id} has timescale 0")
            handler = data[hdlr[0] + 8:hdlr[0] + 12].decode("latin-1")
            track = tracks[track_id] = _Track(handler, timescale)
            minf = _find(data, *mdia, b"minf")
            stbl = _find(data, *minf, b"stbl") if minf is not None else None
            if stbl is not None:
                _sample_entry(data, stbl, track)
        elif kind == b"mvex":
            for k, ts, te in _children(data, s, e):
                if k == b"trex" and ts + 24 <= te:
                    track_id, _, _, _, flags = struct.unpack_from(">IIIII", data, ts + 4)
                    if track_id in tracks:
                        tracks[track_id].default_flags = flags
    _need(bool(tracks), "the moov describes no track")
    return tracks


# -- moof ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Traf:
    track_id: int
    start: int | None
    duration: int
    first_sync: bool


def _parse_moof(data: bytes, tracks: dict[int, _Track]) -> list[_Traf]:
    out = []
    for kind, s, e in _children(data, 8, len(data)):
        if kind != b"traf":
            continue
        tfhd = _find(data, s, e, b"tfhd")
        _need(tfhd is not None and tfhd[0] + 8 <= tfhd[1], "a traf has no whole tfhd")
        assert tfhd is not None
        tf_flags, track_id = struct.unpack_from(">II", data, tfhd[0])
        tf_flags &= 0xFFFFFF
        track = tracks.get(track_id)
        _need(track is not None, f"a fragment names track {track_id}, which the moov does not describe")
        assert track is not None
        pos = tfhd[0] + 8
        default_duration = 0
        default_flags = track.default_flags
        for bit, width in ((0x1, 8), (0x2, 4), (0x8, 4), (0x10, 4), (0x20, 4)):
            if tf_flags & bit:
                _need(pos + width <= tfhd[1], "tfhd is cut short")
                if bit == 0x8:
                    default_duration = struct.unpack_from(">I", data, pos)[0]
                elif bit == 0x20:
                    default_flags = struct.unpack_from(">I", data, pos)[0]
                pos += width
        start = None
        tfdt = _find(data, s, e, b"tfdt")
        if tfdt is not None:
            version = data[tfdt[0]] if tfdt[0] < tfdt[1] else 0
            width = 8 if version == 1 else 4
            _need(tfdt[0] + 4 + width <= tfdt[1], "tfdt is cut short")
            start = int.from_bytes(data[tfdt[0] + 4:tfdt[0] + 4 + width], "big")
        duration = 0
        first_sync: bool | None = None
        for k, ts, te in _children(data, s, e):
            if k != b"trun":
                continue
            _need(ts + 8 <= te, "trun is cut short")
            flags, count = struct.unpack_from(">II", data, ts)
            flags &= 0xFFFFFF
            pos = ts + 8 + (4 if flags & 0x1 else 0)
            first_flags = None
            if flags & 0x4:
                _need(pos + 4 <= te, "trun is cut short")
                first_flags = struct.unpack_from(">I", data, pos)[0]
                pos += 4
            fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit]
            stride = 4 * len(fields)
            _need(pos + count * stride <= te, f"trun says {count} samples, more than its box holds")
            if count == 0:
                continue
            if 0x100 in fields:
                at = fields.index(0x100) * 4
                duration += sum(struct.unpack_from(">I", data, pos + at + i * stride)[0] for i in range(count))
            else:
                duration += default_duration * count
            if first_sync is None:
                if first_flags is None:
                    first_flags = (
                        struct.unpack_from(">I", data, pos + fields.index(0x400) * 4)[0] if 0x400 in fields
                        else default_flags
                    )
                first_sync = not first_flags & _NON_SYNC
        out.append(_Traf(track_id, start, duration, bool(first_sync) if first_sync is not None else False))
    return out


# -- the index -------------------------------------------------------------------------------------


def index_file(source: bytes | bytearray | memoryview | BinaryIO, *, grown_from: VodIndex | None = None) -> VodIndex:
    """The VOD index of a fragmented MP4 (see the module docstring); MediaError if it is not one.

    `grown_from`: the index of the same file when it was shorter (a recording only ever appends): its
    segments are kept but the last (which may have grown), and only the boxes after them are read."""
    f: BinaryIO = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        f.seek(0, io.SEEK_END)
        file_size = f.tell()
        return _index(f, file_size, grown_from)
    except MediaError:
        raise
    except (struct.error, IndexError, ValueError, OverflowError) as err:  # damage the checks above missed
        raise MediaError(f"not a fragmented MP4 this server can index: {err}") from err


INDEX_CACHE_FILES = 64
_index_cache: dict[str, tuple[int, int, int, VodIndex]] = {}


def index_path(path: str | os.PathLike[str]) -> VodIndex:
    """index_file of a file on disk, kept while its size and mtime stay the same: a VOD playlist is asked
    for by every viewer, and reading the moofs costs about 90 us of CPU per segment (4 ms for 90 s, more
    than 150 ms for an hour). A file that grew (a recording being written, the same inode) is read from its
    last segment on, so a DVR playlist costs one new fragment's reading per new fragment, whatever the
    file's length. Blocking: call it in a thread."""
    st = os.stat(path)
    key = os.fspath(path)
    hit = _index_cache.get(key)
    if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns and hit[2] == st.st_ino:
        return hit[3]
    grown_from = hit[3] if hit is not None and hit[2] == st.st_ino and hit[0] < st.st_size else None
    with open(path, "rb") as f:
        index = index_file(f, grown_from=grown_from)
    if len(_index_cache) >= INDEX_CACHE_FILES and key not in _index_cache:
        _index_cache.pop(next(iter(_index_cache)), None)  # the oldest entry
    _index_cache[key] = (st.st_size, st.st_mtime_ns, st.st_ino, index)
    return index


def _init(f: BinaryIO, file_size: int) -> tuple[dict[int, _Track], int, int]:
    """The tracks of the file's moov, where the init ends, and the track times are read from."""
    first = True
    for kind, offset, size, _header in _top_level(f, file_size):
        if first:
            _need(kind in (b"ftyp", b"moov", b"styp"), f"this is not an MP4 file (first box {_name(kind)})")
            first = False
        if kind == b"moov":
            tracks = _parse_moov(_read_box(f, offset, size, kind))
            video = [t for t, tr in tracks.items() if tr.handler == "vide"]
            return tracks, offset + size, video[0] if video else min(tracks)
        if kind in (b"moof", b"mdat"):
            raise MediaError("a fragment comes before the moov: not a recording this server made")
    raise MediaError("no moov box: not a whole MP4 file (or cut before its init)")


def _index(f: BinaryIO, file_size: int, grown_from: VodIndex | None = None) -> VodIndex:
    tracks, init_end, main_id = _init(f, file_size)
    fragments: list[VodFragment] = []
    start_at = init_end
    if grown_from is not None and grown_from.fragments and grown_from.init_size == init_end:
        fragments = list(grown_from.fragments[:-1])
        start_at = grown_from.fragments[-1].offset  # the last segment may have grown: gathered again
    # The segment being gathered: [offset, end, start, duration, keyframe]
    current: list | None = None
    pending_moof: tuple[int, int, list[_Traf]] | None = None
    gap_end = 0  # the end of boxes between fragments, joined to the one before once another follows
    for kind, offset, size, _header in _top_level(f, file_size, start_at):
        if kind == b"moof":
            if pending_moof is not None:
                break  # a moof without its mdat: damage; keep what came before
            if gap_end and current is not None:
                current[1] = gap_end  # keep the byte ranges contiguous
            gap_end = 0
            if size > MAX_META_BOX:
                break  # no recorder writes such a moof: damage; keep what came before
            pending_moof = (offset, size, _parse_moof(_read_box(f, offset, size, kind), tracks))
            continue
        if kind != b"mdat":
            if kind not in _BETWEEN_FRAGMENTS or pending_moof is not None:
                break  # not a box a muxer puts between fragments: damage; keep what came before
            gap_end = offset + size  # (a `free` box last, a direct write's padding, is trailing: cut at close)
            continue
        if pending_moof is None:
            break  # an mdat without a moof: damage
        moof_offset, _, trafs = pending_moof
        pending_moof = None
        end = offset + size
        main = next((t for t in trafs if t.track_id == main_id), None)
        starts_segment = main is not None and (main.first_sync or tracks[main_id].handler != "vide")
        if current is None or starts_segment:
            if current is not None:
                fragments.append(VodFragment(current[0], current[1] - current[0], current[2], current[3], current[4]))
            start = main.start if main is not None and main.start is not None else (
                current[2] + current[3] if current is not None else 0)
            current = [moof_offset, end, start, 0, starts_segment]
        current[1] = end
        if main is not None:
            current[3] += main.duration
    if current is not None:
        fragments.append(VodFragment(current[0], current[1] - current[0], current[2], current[3], current[4]))
    ordered = sorted(tracks.values(), key=lambda tr: tr.handler != "vide")
    video = next((tr for tr in ordered if tr.handler == "vide"), None)
    return VodIndex(0, init_end, tracks[main_id].timescale, dict((t, tr.handler) for t, tr in tracks.items()),
                    tuple(fragments), file_size, tuple(tr.codec for tr in ordered if tr.codec),
                    video.width if video else 0, video.height if video else 0)


# -- playlists -------------------------------------------------------------------------------------


def hls_playlist(index: VodIndex, uri: str, *, window_s: float | None = None, live: bool = False) -> str:
    """An HLS media playlist playing `uri` (the file) by byte ranges: EXT-X-MAP for the init, one
    EXTINF + EXT-X-BYTERANGE per segment.

    A whole recording: PLAYLIST-TYPE VOD and ENDLIST. `live` (a file still being written, DVR): no
    ENDLIST, the last segment left out (its audio may still be on its way), and with `window_s` only
    the newest segments that fit in it (a sliding window, MEDIA-SEQUENCE numbering them in the file);
    without `window_s`, PLAYLIST-TYPE EVENT."""
    frags = list(index.fragments)
    if live and frags:
        frags.pop()
    first = 0
    if window_s is not None:
        if window_s <= 0:
            raise MediaError(f"DVR window {window_s} s must be > 0")
        total = 0.0
        first = len(frags)
        while first > 0:
            seconds = index.fragment_seconds(frags[first - 1])
            if first < len(frags) and total + seconds > window_s:
                break  # (the newest segment is listed whatever its length)
            first -= 1
            total += seconds
    listed = frags[first:]
    target = max((math.ceil(index.fragment_seconds(x) - 0.001) for x in listed), default=1)
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{max(1, target)}",
             f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    if not live:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    elif window_s is None:
        lines.append("#EXT-X-PLAYLIST-TYPE:EVENT")
    if listed and all(x.keyframe for x in listed):
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    if live and sum(index.fragment_seconds(x) for x in listed) > 3 * target:
        # A DVR viewer starts at the live edge (three target durations back, as RFC 8216 asks of a live
        # start) and scrubs back from there; without this, players may start at the window's beginning.
        lines.append(f"#EXT-X-START:TIME-OFFSET=-{3 * max(1, target)},PRECISE=NO")
    lines.append(f'#EXT-X-MAP:URI="{uri}",BYTERANGE="{index.init_size}@{index.init_offset}"')
    for x in listed:
        lines += [f"#EXTINF:{index.fragment_seconds(x):.3f},", f"#EXT-X-BYTERANGE:{x.size}@{x.offset}", uri]
    if not live:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _iso_duration(seconds: float) -> str:
    return f"PT{max(0.0, seconds):.3f}S"


def dash_manifest(index: VodIndex, uri: str) -> str:
    """A static MPEG-DASH manifest playing `uri` (the file) by byte ranges: a SegmentList whose
    Initialization is the init's range and whose SegmentURLs are the segments' ranges, timed by a
    SegmentTimeline in the index's timescale (presentationTimeOffset: the file's first time, so the
    presentation starts at 0), one S element per segment.

    The fragments carry every track in one file, so the file is one muxed Representation (codecs lists
    the video and the audio codec; MSE plays both from one SourceBuffer). No ContentComponent elements:
    dash.js refuses an AdaptationSet that declares itself multiplexed, and plays this one as video."""
    frags = index.fragments
    if not frags:
        raise MediaError("the recording has no whole fragment yet: nothing to play")
    handlers = set(index.tracks.values())
    content = "video" if "vide" in handlers else "audio"
    duration_s = index.duration_s
    bandwidth = max(1, round((index.total_bytes - index.init_size) * 8 / duration_s)) if duration_s > 0 else 1
    rep = [f'id="{content}"', f'bandwidth="{bandwidth}"']
    if index.codecs:
        rep.append(f"codecs={quoteattr(','.join(index.codecs))}")
    if content == "video" and index.width and index.height:
        rep += [f'width="{index.width}"', f'height="{index.height}"']
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-main:2011" '
        f'type="static" mediaPresentationDuration="{_iso_duration(duration_s)}" minBufferTime="PT2S">',
        '  <Period id="0" start="PT0S">',
        f'    <AdaptationSet contentType="{content}" mimeType="{content}/mp4" segmentAlignment="true" '
        'startWithSAP="1">',
        f"      <Representation {' '.join(rep)}>",
        f"        <BaseURL>{escape(uri)}</BaseURL>",
        f'        <SegmentList timescale="{index.timescale}" presentationTimeOffset="{frags[0].start}">',
        f'          <Initialization range="{index.init_offset}-{index.init_offset + index.init_size - 1}"/>',
        "          <SegmentTimeline>",
    ]
    for x in frags:  # one S per SegmentURL: dash.js pairs them one to one (it ignores S@r in a SegmentList)
        lines.append(f'            <S t="{x.start}" d="{x.duration}"/>')
    lines.append("          </SegmentTimeline>")
    for x in frags:
        lines.append(f'          <SegmentURL mediaRange="{x.offset}-{x.offset + x.size - 1}"/>')
    lines += ["        </SegmentList>", "      </Representation>", "    </AdaptationSet>", "  </Period>", "</MPD>"]
    return "\n".join(lines) + "\n"

