"""A small, strict, test-side ISO BMFF reader, written from ISO/IEC 14496-12 independently of remux/fmp4.py.

It walks boxes (checking that every size adds up), and decodes the few boxes the tests look into:
ftyp, mdhd, hdlr, tkhd, the sample entry in stsd, trex, mfhd, tfhd, tfdt and trun.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf", b"dinf"}


@dataclass(slots=True)
class Box:
    kind: bytes
    offset: int
    """Offset of the box's first byte in the buffer given to parse_boxes."""
    size: int
    payload: bytes
    children: list[Box] = field(default_factory=list)

    def find(self, *path: bytes) -> Box:
        box = self
        for kind in path:
            matches = [c for c in box.children if c.kind == kind]
            assert len(matches) == 1, f"{box.kind!r} has {len(matches)} {kind!r} boxes"
            box = matches[0]
        return box


def parse_boxes(data: bytes, base: int = 0) -> list[Box]:
    boxes = []
    pos = 0
    while pos < len(data):
        assert pos + 8 <= len(data), f"box header truncated at {base + pos}"
        size, kind = struct.unpack_from(">I4s", data, pos)
        assert size >= 8 and pos + size <= len(data), f"box {kind!r} at {base + pos} claims {size} bytes"
        payload = data[pos + 8 : pos + size]
        box = Box(kind, base + pos, size, payload)
        if kind in CONTAINERS:
            box.children = parse_boxes(payload, base + pos + 8)
        elif kind == b"stsd":
            box.children = parse_boxes(payload[8:], base + pos + 16)
        elif kind == b"dref":
            box.children = parse_boxes(payload[8:], base + pos + 16)
        boxes.append(box)
        pos += size
    return boxes


def top(data: bytes) -> dict[bytes, list[Box]]:
    out: dict[bytes, list[Box]] = {}
    for box in parse_boxes(data):
        out.setdefault(box.kind, []).append(box)
    return out


def full_header(box: Box) -> tuple[int, int, bytes]:
    """(version, flags, rest) of a FullBox."""
    value = int.from_bytes(box.payload[:4], "big")
    return value >> 24, value & 0xFFFFFF, box.payload[4:]


@dataclass(slots=True)
class SampleEntry:
    kind: bytes
    width: int
    height: int
    channels: int
    sample_rate: int
    config_kind: bytes
    config: bytes


def sample_entry(stsd: Box) -> SampleEntry:
    entry = stsd.children[0]
    p = entry.payload
    assert p[:6] == bytes(6) and int.from_bytes(p[6:8], "big") == 1, "SampleEntry reserved / data_reference_index"
    if entry.kind in (b"avc1", b"hvc1", b"av01"):
        width, height = struct.unpack_from(">HH", p, 24)
        assert struct.unpack_from(">II", p, 28) == (0x00480000, 0x00480000), "72 dpi"
        assert struct.unpack_from(">Hh", p, 74) == (0x0018, -1), "depth and pre_defined"
        children = parse_boxes(p[78:])
        return SampleEntry(entry.kind, width, height, 0, 0, children[0].kind, children[0].payload)
    channels, sample_size = struct.unpack_from(">HH", p, 16)
    assert sample_size == 16
    rate = int.from_bytes(p[24:28], "big") >> 16
    children = parse_boxes(p[28:])
    return SampleEntry(entry.kind, 0, 0, channels, rate, children[0].kind, children[0].payload)


def read_descriptor(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, payload, position after) of an MPEG-4 descriptor (14496-1 8.3.3)."""
    tag = data[pos]
    pos += 1
    size = 0
    for _ in range(4):
        byte = data[pos]
        pos += 1
        size = (size << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return tag, data[pos : pos + size], pos + size


def esds_audio_specific_config(esds_payload: bytes) -> bytes:
    """The DecoderSpecificInfo inside an esds box's payload (FullBox header included)."""
    tag, es, _ = read_descriptor(esds_payload, 4)
    assert tag == 0x03
    tag, decoder_config, _ = read_descriptor(es, 3)
    assert tag == 0x04 and decoder_config[0] == 0x40 and decoder_config[1] == 0x15
    tag, specific, _ = read_descriptor(decoder_config, 13)
    assert tag == 0x05
    return specific


@dataclass(slots=True)
class Fragment:
    sequence_number: int
    track_id: int
    tfhd_flags: int
    default_sample_flags: int | None
    base_media_decode_time: int
    trun_version: int
    samples: list[dict[str, int]]
    data_offset: int
    moof_offset: int
    mdat_payload: bytes
    mdat_offset: int


def fragments(data: bytes) -> list[Fragment]:
    """Every moof+mdat pair in `data` (which may start with an init segment)."""
    boxes = parse_boxes(data)
    out = []
    for i, box in enumerate(boxes):
        if box.kind != b"moof":
            continue
        mdat = boxes[i + 1]
        assert mdat.kind == b"mdat", "a moof must be followed by its mdat"
        mfhd = box.find(b"mfhd")
        _, _, rest = full_header(mfhd)
        sequence_number = int.from_bytes(rest[:4], "big")
        traf = box.find(b"traf")
        _, tfhd_flags, rest = full_header(traf.find(b"tfhd"))
        track_id = int.from_bytes(rest[:4], "big")
        pos = 4
        if tfhd_flags & 0x01:
            pos += 8
        if tfhd_flags & 0x02:
            pos += 4
        if tfhd_flags & 0x08:
            pos += 4
        if tfhd_flags & 0x10:
            pos += 4
        default_flags = int.from_bytes(rest[pos : pos + 4], "big") if tfhd_flags & 0x20 else None
        version, _, rest = full_header(traf.find(b"tfdt"))
        base = int.from_bytes(rest[:8], "big") if version == 1 else int.from_bytes(rest[:4], "big")
        trun_version, trun_flags, rest = full_header(traf.find(b"trun"))
        count = int.from_bytes(rest[:4], "big")
        pos = 4
        data_offset = 0
        if trun_flags & 0x01:
            data_offset = int.from_bytes(rest[pos : pos + 4], "big", signed=True)
            pos += 4
        if trun_flags & 0x04:
            pos += 4
        samples = []
        for _ in range(count):
            sample: dict[str, int] = {}
            for flag, name in ((0x100, "duration"), (0x200, "size"), (0x400, "flags")):
                if trun_flags & flag:
                    sample[name] = int.from_bytes(rest[pos : pos + 4], "big")
                    pos += 4
            if trun_flags & 0x800:
                sample["cts"] = int.from_bytes(rest[pos : pos + 4], "big", signed=trun_version == 1)
                pos += 4
            samples.append(sample)
        assert pos == len(rest), "trun has bytes beyond its samples"
        out.append(
            Fragment(sequence_number, track_id, tfhd_flags, default_flags, base, trun_version, samples,
                     data_offset, box.offset, mdat.payload, mdat.offset)
        )
    return out
