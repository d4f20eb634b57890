"""Fragmented MP4 (ISO/IEC 14496-12) writer: init segments and moof+mdat fragments.

An init segment is `ftyp` + `moov`; `moov` describes the tracks with empty sample tables (every
sample lives in fragments) and `mvex/trex` says fragments follow:

    ftyp
    moov  mvhd
          trak  tkhd
                mdia  mdhd  hdlr
                      minf  vmhd | smhd   dinf/dref/url
                            stbl  stsd/(avc1+avcC | hvc1+hvcC | av01+av1C | vp09+vpcC | mp4a+esds | Opus+dOps)
                                  stts stsc stsz stco (all empty)
          mvex  trex

A fragment is one `moof` and one `mdat` for one track (`fragment`), or for several (`multi_track_fragment`:
one traf per track in the moof, their samples one after the other in the mdat, as a muxed HLS rendition has):

    moof  mfhd (sequence_number)
          traf  tfhd (track_ID, default-base-is-moof [, default_sample_flags])
                tfdt (version 1: 64-bit baseMediaDecodeTime)
                trun (data_offset; per sample: duration, size [, flags, composition offset])
    mdat  the samples, back to back

`trun` version 1 carries signed composition offsets (pts - dts), so B-frames need no edit list.
The data offset counts from the start of the moof (default-base-is-moof, as CMAF requires), so a
fragment is self-contained and fragments can be concatenated in any grouping: LL-HLS parts and
the segment that joins them are the same bytes.

Speed: a fragment is built with one struct.pack for its whole trun (the caller keeps the per-sample
fields in one flat list) and one join that copies the sample payloads into the mdat (`fragment_pieces`
leaves them unjoined, for a writev); nothing else touches the payload. Nothing here reads a clock or a file.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UsageError

# Sample flags (14496-12 8.8.3.1): sample_depends_on 2 (an I picture) for sync samples;
# sample_depends_on 1 plus sample_is_non_sync_sample for the rest.
SAMPLE_SYNC = 0x02000000
SAMPLE_NON_SYNC = 0x01010000

# tfhd flags (8.8.7.1)
_TFHD_DEFAULT_SAMPLE_FLAGS = 0x000020
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
# trun flags (8.8.8.1)
TRUN_DATA_OFFSET = 0x000001
TRUN_DURATION = 0x000100
TRUN_SIZE = 0x000200
TRUN_FLAGS = 0x000400
TRUN_CTS = 0x000800

VIDEO_TRUN = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS | TRUN_CTS
"""Per sample: duration, size, flags, signed composition offset (4 fields)."""
AUDIO_TRUN = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE
"""Per sample: duration, size (2 fields); every sample is a sync sample via tfhd."""

_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = ((ord("u") - 0x60) << 10) | ((ord("n") - 0x60) << 5) | (ord("d") - 0x60)
MAX_BOX_SIZE = 0xFFFFFFFF

DEFAULT_BRANDS = (b"iso6", b"cmfc", b"mp41")
"""ftyp: ISO base media version 6 (tfdt v1, default-base-is-moof), CMAF track, MP4 v1."""


def box(kind: bytes, *payload: bytes) -> bytes:
    """A box: 32-bit size, four-character type, payload."""
    size = 8 + sum(len(p) for p in payload)
    if size > MAX_BOX_SIZE:
        raise UsageError(f"{kind!r} box of {size} bytes does not fit a 32-bit size")
    return b"".join((size.to_bytes(4, "big"), kind, *payload))


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A FullBox: a box whose payload starts with an 8-bit version and 24-bit flags."""
    return box(kind, ((version << 24) | flags).to_bytes(4, "big"), *payload)


# -- sample entries --------------------------------------------------------------------------------


def _visual_sample_entry(kind: bytes, width: int, height: int, *children: bytes) -> bytes:
    # 14496-12 12.1.3: SampleEntry (6 reserved, data_reference_index 1), then VisualSampleEntry.
    if not (0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
        raise UsageError(f"picture size {width}x{height} does not fit a visual sample entry")
    fields = struct.pack(
        ">6xH16xHHIIIH32sHh",
        1,  # data_reference_index
        width, height,
        0x00480000, 0x00480000,  # 72 dpi
        0,  # reserved
        1,  # frame_count
        b"",  # compressorname (a zero length byte and padding)
        0x0018,  # depth: colour, no alpha
        -1,  # pre_defined
    )
    return box(kind, fields, *children)


def avc1_sample_entry(avcc: bytes, width: int, height: int) -> bytes:
    """An avc1 sample entry holding the AVCDecoderConfigurationRecord as its avcC box."""
    return _visual_sample_entry(b"avc1", width, height, box(b"avcC", avcc))


def hvc1_sample_entry(hvcc: bytes, width: int, height: int) -> bytes:
    """An hvc1 sample entry (parameter sets in the record; the name Apple players require)."""
    return _visual_sample_entry(b"hvc1", width, height, box(b"hvcC", hvcc))


def av01_sample_entry(av1c: bytes, width: int, height: int) -> bytes:
    """An av01 sample entry holding the AV1CodecConfigurationRecord as its av1C box."""
    return _visual_sample_entry(b"av01", width, height, box(b"av1C", av1c))


def vp09_sample_entry(vpcc: bytes, width: int, height: int) -> bytes:
    """A vp09 sample entry; `vpcc` is the vpcC box's payload (version and flags first), as FLV carries it."""
    return _visual_sample_entry(b"vp09", width, height, box(b"vpcC", vpcc))


def _audio_sample_entry(kind: bytes, channels: int, sample_rate: int, *children: bytes) -> bytes:
    # 12.2.3: SampleEntry, then AudioSampleEntry (version 0). samplerate is 16.16 fixed point;
    # rates above 65535 Hz do not fit and are written 0 (decoders take the rate from the config).
    rate = sample_rate << 16 if sample_rate <= 0xFFFF else 0
    fields = struct.pack(">6xH8xHHHHI", 1, channels, 16, 0, 0, rate)
    return box(kind, fields, *children)


def _descriptor(tag: int, *payload: bytes) -> bytes:
    # 14496-1 8.3.3: tag, then the size in 7-bit groups with a continuation bit.
    size = sum(len(p) for p in payload)
    length = bytearray((size & 0x7F,))
    size >>= 7
    while size:
        length.insert(0, 0x80 | (size & 0x7F))
        size >>= 7
    return b"".join((bytes((tag,)), bytes(length), *payload))


def esds_box(audio_specific_config: bytes, avg_bitrate: int = 0, max_bitrate: int = 0) -> bytes:
    """An esds box (14496-14 5.6): ES_Descriptor > DecoderConfigDescriptor (MPEG-4 audio) > the ASC."""
    decoder_config = _descriptor(
        0x04,
        struct.pack(">BB3sII", 0x40, (0x05 << 2) | 1, b"\x00\x00\x00", max_bitrate, avg_bitrate),
        _descriptor(0x05, audio_specific_config),
    )
    es = _descriptor(0x03, b"\x00\x00\x00", decoder_config, _descriptor(0x06, b"\x02"))
    return full_box(b"esds", 0, 0, es)


def mp4a_sample_entry(audio_specific_config: bytes, channels: int, sample_rate: int) -> bytes:
    """An mp4a sample entry for AAC, holding the AudioSpecificConfig in its esds box."""
    return _audio_sample_entry(b"mp4a", channels, sample_rate, esds_box(audio_specific_config))


def opus_sample_entry(dops: bytes, channels: int) -> bytes:
    """An Opus sample entry (Opus in ISOBMFF 4.3.1) with its dOps box; the rate is always 48 kHz."""
    return _audio_sample_entry(b"Opus", channels, 48000, box(b"dOps", dops))


# -- init segment ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitTrack:
    """What an init segment says about one track."""

    track_id: int
    handler: bytes
    """b"vide" or b"soun"."""
    timescale: int
    """Ticks per second of the track's media timeline (90000 for video, the sample rate for audio)."""
    sample_entry: bytes
    """A complete sample entry box (avc1_sample_entry(...), mp4a_sample_entry(...), ...)."""
    width: int = 0
    """Video: the presentation size for tkhd."""
    height: int = 0


def init_segment(tracks: Sequence[InitTrack], brands: Sequence[bytes] = DEFAULT_BRANDS) -> bytes:
    """ftyp + moov for `tracks` (one track, CMAF style, or several)."""
    if not tracks:
        raise UsageError("an init segment needs at least one track")
    ftyp = box(b"ftyp", brands[0], b"\x00\x00\x02\x00", *brands)
    next_id = max(t.track_id for t in tracks) + 1
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIIIIH10x", 0, 0, 1000, 0, 0x00010000, 0x0100), _MATRIX, bytes(24), next_id.to_bytes(4, "big"),
    )
    traks = [_trak(t) for t in tracks]
    trexs = [
        full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)) for t in tracks
    ]
    return ftyp + box(b"moov", mvhd, *traks, box(b"mvex", *trexs))


def _trak(track: InitTrack) -> bytes:
    video = track.handler == b"vide"
    tkhd = full_box(
        b"tkhd", 0, 0x000003,  # track enabled, in movie
        struct.pack(">IIIII8xHHH2x", 0, 0, track.track_id, 0, 0, 0, 0, 0 if video else 0x0100),
        _MATRIX,
        struct.pack(">II", track.width << 16, track.height << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, 0, _LANGUAGE_UND, 0))
    name = b"VideoHandler\x00" if video else b"SoundHandler\x00"
    hdlr = full_box(b"hdlr", 0, 0, b"\x00\x00\x00\x00", track.handler, bytes(12), name)
    media_header = full_box(b"vmhd", 0, 1, bytes(8)) if video else full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, b"\x00\x00\x00\x01", full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, b"\x00\x00\x00\x01", track.sample_entry),
        full_box(b"stts", 0, 0, bytes(4)),
        full_box(b"stsc", 0, 0, bytes(4)),
        full_box(b"stsz", 0, 0, bytes(8)),
        full_box(b"stco", 0, 0, bytes(4)),
    )
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl)))


def combined_init(inits: Sequence[bytes]) -> bytes:
    """One init segment (ftyp + moov) declaring the tracks of several single-track ones made by `init_segment`
    (their track IDs distinct): the first's ftyp and mvhd (next_track_ID raised), every trak, every trex."""
    if not inits:
        raise UsageError("a combined init segment needs at least one init segment")
    ftyp = mvhd = b""
    traks: list[bytes] = []
    trexs: list[bytes] = []
    for data in inits:
        top = dict(_boxes(data))
        if b"ftyp" not in top or b"moov" not in top:
            raise UsageError("an init segment to combine lacks its ftyp or moov box")
        ftyp = ftyp or top[b"ftyp"]
        for kind, child in _boxes(top[b"moov"][8:]):
            if kind == b"mvhd":
                mvhd = mvhd or child
            elif kind == b"trak":
                traks.append(child)
            elif kind == b"mvex":
                trexs.extend(trex for k, trex in _boxes(child[8:]) if k == b"trex")
    # track_ID is at byte 12 of a trex: the next free ID follows the largest.
    next_id = max(int.from_bytes(trex[12:16], "big") for trex in trexs) + 1
    mvhd = mvhd[:-4] + next_id.to_bytes(4, "big")
    return ftyp + box(b"moov", mvhd, *traks, box(b"mvex", *trexs))


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, whole box) of each box in `data`, in order; 32-bit sizes only (what this module writes)."""
    out = []
    at = 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        if size < 8 or at + size > len(data):
            raise UsageError(f"box at byte {at} has a size ({size}) that does not fit")
        out.append((data[at + 4:at + 8], data[at:at + size]))
        at += size
    return out


# -- fragments -------------------------------------------------------------------------------------

_FIELDS_PER_SAMPLE = {VIDEO_TRUN: 4, AUDIO_TRUN: 2}
_SAMPLE_FORMAT = {VIDEO_TRUN: "IIIi", AUDIO_TRUN: "II"}


@dataclass(frozen=True, slots=True)
class Pieces:
    """A fragment's bytes left in pieces, for one os.writev: `parts[0]` is every box header (the moof and
    the mdat's header), the rest the samples as given, so a GOP's payload is never copied in Python (a
    recording writes it straight from the frames; `fragment` joins the same parts)."""

    parts: tuple[bytes | memoryview, ...]
    size: int

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


def fragment(
    *,
    sequence_number: int,
    track_id: int,
    base_media_decode_time: int,
    trun_flags: int,
    entries: Sequence[int],
    payload: Sequence[bytes | memoryview],
    payload_size: int,
    default_sample_flags: int | None = None,
) -> bytes:
    """One moof + mdat as one bytes object: `fragment_pieces` joined, the samples copied into the mdat once
    (the live CMAF outputs keep and send these bytes)."""
    return b"".join(fragment_pieces(
        sequence_number=sequence_number, track_id=track_id, base_media_decode_time=base_media_decode_time,
        trun_flags=trun_flags, entries=entries, payload=payload, payload_size=payload_size,
        default_sample_flags=default_sample_flags).parts)


def fragment_pieces(
    *,
    sequence_number: int,
    track_id: int,
    base_media_decode_time: int,
    trun_flags: int,
    entries: Sequence[int],
    payload: Sequence[bytes | memoryview],
    payload_size: int,
    default_sample_flags: int | None = None,
) -> Pieces:
    """One moof + mdat, left in pieces (see Pieces).

    `entries` is the flat per-sample field list the trun layout asks for: VIDEO_TRUN takes
    (duration, size, flags, composition offset) per sample, AUDIO_TRUN (duration, size).
    `payload` is the samples' bytes in order and `payload_size` their total (the sum of sizes).
    `default_sample_flags` (e.g. SAMPLE_SYNC for audio) goes into tfhd for layouts without flags.
    """
    head = _fragment_head(sequence_number, track_id, base_media_decode_time, trun_flags, entries, payload_size,
                          default_sample_flags)
    return Pieces((head, *payload), len(head) + payload_size)


def _fragment_head(sequence_number: int, track_id: int, base_media_decode_time: int, trun_flags: int,
                   entries: Sequence[int], payload_size: int, default_sample_flags: int | None) -> bytes:
    """A fragment's moof and its mdat's 8-byte header."""
    per_sample = _FIELDS_PER_SAMPLE.get(trun_flags)
    if per_sample is None:
        raise UsageError(f"trun flags {trun_flags:#x} are not a layout this writer knows (VIDEO_TRUN, AUDIO_TRUN)")
    count, rest = divmod(len(entries), per_sample)
    if rest or not count:
        raise UsageError(f"{len(entries)} trun fields are not a whole, non-zero number of {per_sample}-field samples")
    trun_body = struct.pack(">" + _SAMPLE_FORMAT[trun_flags] * count, *entries)
    with_defaults = default_sample_flags is not None
    tfhd_size = 16 + (4 if with_defaults else 0)
    trun_size = 20 + len(trun_body)
    traf_size = 8 + tfhd_size + 20 + trun_size
    moof_size = 8 + 16 + traf_size
    mdat_size = 8 + payload_size
    if mdat_size > MAX_BOX_SIZE:
        raise UsageError(f"fragment payload of {payload_size} bytes does not fit a 32-bit mdat")
    tfhd_flags = _TFHD_DEFAULT_BASE_IS_MOOF | (_TFHD_DEFAULT_SAMPLE_FLAGS if with_defaults else 0)
    head = struct.pack(
        ">I4sI4sII I4s I4sII" + ("I" if with_defaults else ""),
        moof_size, b"moof",
        16, b"mfhd", 0, sequence_number,
        traf_size, b"traf",
        tfhd_size, b"tfhd", tfhd_flags, track_id,
        *((default_sample_flags,) if with_defaults else ()),
    )
    # tfdt version 1 (64-bit time); trun version 1 (signed composition offsets) when it has them.
    trun_version = 1 if trun_flags & TRUN_CTS else 0
    tail = struct.pack(
        ">I4sIQ I4sIIi",
        20, b"tfdt", 0x01000000, base_media_decode_time,
        trun_size, b"trun", (trun_version << 24) | trun_flags, count, moof_size + 8,
    )
    return b"".join((head, tail, trun_body, struct.pack(">I4s", mdat_size, b"mdat")))


@dataclass(frozen=True, slots=True)
class TrackRun:
    """One track's samples in a multi-track fragment: what `fragment` takes for one track."""

    track_id: int
    base_media_decode_time: int
    trun_flags: int
    entries: Sequence[int]
    payload: Sequence[bytes | memoryview]
    payload_size: int
    default_sample_flags: int | None = None


def multi_track_fragment(sequence_number: int, runs: Sequence[TrackRun]) -> bytes:
    """One moof with a traf per run (in order) + one mdat holding the runs' samples one after the other.

    Each trun's data offset counts from the moof's start (default-base-is-moof), so a player reads each
    track's samples where they are; a run without samples is left out.
    """
    runs = [run for run in runs if run.entries]
    if not runs:
        raise UsageError("a fragment needs at least one track with samples")
    bodies = []
    for run in runs:
        per_sample = _FIELDS_PER_SAMPLE.get(run.trun_flags)
        if per_sample is None:
            raise UsageError(f"trun flags {run.trun_flags:#x} are not a layout this writer knows (VIDEO_TRUN, AUDIO_TRUN)")
        count, rest = divmod(len(run.entries), per_sample)
        if rest:
            raise UsageError(f"{len(run.entries)} trun fields are not a whole number of {per_sample}-field samples")
        bodies.append((count, struct.pack(">" + _SAMPLE_FORMAT[run.trun_flags] * count, *run.entries)))
    traf_sizes = [
        8 + (20 if run.default_sample_flags is not None else 16) + 20 + 20 + len(body)
        for run, (_, body) in zip(runs, bodies)
    ]
    moof_size = 8 + 16 + sum(traf_sizes)
    payload_size = sum(run.payload_size for run in runs)
    if 8 + payload_size > MAX_BOX_SIZE:
        raise UsageError(f"fragment payload of {payload_size} bytes does not fit a 32-bit mdat")
    pieces = [struct.pack(">I4sI4sII", moof_size, b"moof", 16, b"mfhd", 0, sequence_number)]
    offset = moof_size + 8
    for run, traf_size, (count, body) in zip(runs, traf_sizes, bodies):
        with_defaults = run.default_sample_flags is not None
        tfhd_flags = _TFHD_DEFAULT_BASE_IS_MOOF | (_TFHD_DEFAULT_SAMPLE_FLAGS if with_defaults else 0)
        trun_version = 1 if run.trun_flags & TRUN_CTS else 0
        pieces.append(struct.pack(
            ">I4s I4sII" + ("I" if with_defaults else "") + " I4sIQ I4sIIi",
            traf_size, b"traf",
            20 if with_defaults else 16, b"tfhd", tfhd_flags, run.track_id,
            *((run.default_sample_flags,) if with_defaults else ()),
            20, b"tfdt", 0x01000000, run.base_media_decode_time,
            20 + len(body), b"trun", (trun_version << 24) | run.trun_flags, count, offset,
        ))
        pieces.append(body)
        offset += run.payload_size
    pieces.append(struct.pack(">I4s", 8 + payload_size, b"mdat"))
    for run in runs:
        pieces.extend(run.payload)
    return b"".join(pieces)
