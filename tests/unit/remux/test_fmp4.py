"""fMP4 box writer: init segments and fragments, read back with an independent box reader and with PyAV."""

from __future__ import annotations

import io
import struct

import av
import pytest
from mp4probe import (
    esds_audio_specific_config,
    fragments,
    full_header,
    parse_boxes,
    sample_entry,
    top,
)

from support.codec_clips import codec_clip, config_frame, media_frames

from mediaserver.errors import UsageError
from mediaserver.media.frames import FrameKind
from mediaserver.remux.fmp4 import (
    AUDIO_TRUN,
    SAMPLE_NON_SYNC,
    SAMPLE_SYNC,
    VIDEO_TRUN,
    InitTrack,
    av01_sample_entry,
    avc1_sample_entry,
    box,
    esds_box,
    fragment,
    full_box,
    hvc1_sample_entry,
    init_segment,
    mp4a_sample_entry,
    opus_sample_entry,
)

AVCC = bytes.fromhex("01640016ffe1001b6764001facd94050045a1000000300100000030320f18319600100056beecb22c0")
ASC = bytes.fromhex("1190")  # AAC-LC, 48 kHz, stereo


def video_track(entry: bytes | None = None) -> InitTrack:
    return InitTrack(1, b"vide", 90000, entry or avc1_sample_entry(AVCC, 640, 360), 640, 360)


def audio_track() -> InitTrack:
    return InitTrack(2, b"soun", 48000, mp4a_sample_entry(ASC, 2, 48000))


# -- boxes -----------------------------------------------------------------------------------------


def test_box_and_full_box_have_size_type_version_and_flags() -> None:
    assert box(b"free", b"ab") == b"\x00\x00\x00\x0afreeab"
    assert full_box(b"url ", 0, 1) == b"\x00\x00\x00\x0curl \x00\x00\x00\x01"
    assert full_box(b"tfdt", 1, 0, bytes(8))[8:12] == b"\x01\x00\x00\x00"


# -- init segments ---------------------------------------------------------------------------------


def test_video_init_segment_describes_one_track_with_empty_sample_tables() -> None:
    data = init_segment([video_track()])
    boxes = top(data)
    assert list(boxes) == [b"ftyp", b"moov"]
    ftyp = boxes[b"ftyp"][0].payload
    assert ftyp[:4] == b"iso6" and {ftyp[i : i + 4] for i in range(8, len(ftyp), 4)} == {b"iso6", b"cmfc", b"mp41"}
    moov = boxes[b"moov"][0]
    _, _, mvhd = full_header(moov.find(b"mvhd"))
    assert int.from_bytes(mvhd[8:12], "big") == 1000 and int.from_bytes(mvhd[-4:], "big") == 2  # next_track_ID
    trak = moov.find(b"trak")
    _, flags, tkhd = full_header(trak.find(b"tkhd"))
    assert flags & 3 == 3 and int.from_bytes(tkhd[8:12], "big") == 1
    assert struct.unpack(">II", tkhd[-8:]) == (640 << 16, 360 << 16)
    _, _, mdhd = full_header(trak.find(b"mdia", b"mdhd"))
    assert int.from_bytes(mdhd[8:12], "big") == 90000
    assert full_header(trak.find(b"mdia", b"hdlr"))[2][4:8] == b"vide"
    stbl = trak.find(b"mdia", b"minf", b"stbl")
    assert trak.find(b"mdia", b"minf", b"vmhd").payload[:4] == b"\x00\x00\x00\x01"
    for kind in (b"stts", b"stsc", b"stco"):
        assert full_header(stbl.find(kind))[2] == bytes(4), f"{kind!r} must be empty"
    assert full_header(stbl.find(b"stsz"))[2] == bytes(8)
    entry = sample_entry(stbl.find(b"stsd"))
    assert (entry.kind, entry.width, entry.height, entry.config_kind, entry.config) == (b"avc1", 640, 360, b"avcC", AVCC)
    _, _, trex = full_header(moov.find(b"mvex", b"trex"))
    assert struct.unpack(">IIIII", trex) == (1, 1, 0, 0, 0)
    dref = trak.find(b"mdia", b"minf", b"dinf", b"dref")
    assert dref.children[0].kind == b"url " and full_header(dref.children[0])[1] == 1  # media in this file


@pytest.mark.parametrize(
    ("entry", "kind", "config_kind"),
    [
        (hvc1_sample_entry(b"\x01hvcC-record", 1920, 1080), b"hvc1", b"hvcC"),
        (av01_sample_entry(b"\x81\x00\x0c\x00", 1920, 1080), b"av01", b"av1C"),
    ],
)
def test_hevc_and_av1_sample_entries_carry_their_records_as_is(entry: bytes, kind: bytes, config_kind: bytes) -> None:
    data = init_segment([video_track(entry)])
    parsed = sample_entry(top(data)[b"moov"][0].find(b"trak", b"mdia", b"minf", b"stbl", b"stsd"))
    assert (parsed.kind, parsed.width, parsed.height, parsed.config_kind) == (kind, 1920, 1080, config_kind)
    assert parsed.config == (b"\x01hvcC-record" if kind == b"hvc1" else b"\x81\x00\x0c\x00")


def test_aac_sample_entry_carries_the_audio_specific_config_in_esds() -> None:
    data = init_segment([audio_track()])
    trak = top(data)[b"moov"][0].find(b"trak")
    _, _, tkhd = full_header(trak.find(b"tkhd"))
    assert int.from_bytes(tkhd[32:34], "big") == 0x0100  # audio tracks have full volume
    assert trak.find(b"mdia", b"minf", b"smhd")
    entry = sample_entry(trak.find(b"mdia", b"minf", b"stbl", b"stsd"))
    assert (entry.kind, entry.channels, entry.sample_rate, entry.config_kind) == (b"mp4a", 2, 48000, b"esds")
    assert esds_audio_specific_config(entry.config) == ASC


def test_a_long_decoder_specific_info_gets_a_multi_byte_descriptor_length() -> None:
    config = bytes(range(200))
    assert esds_audio_specific_config(esds_box(config)[8:]) == config


def test_opus_sample_entry_carries_dops_at_48_khz() -> None:
    dops = bytes.fromhex("0002013800007d000000" + "00")
    data = init_segment([InitTrack(2, b"soun", 48000, opus_sample_entry(dops, 2))])
    entry = sample_entry(top(data)[b"moov"][0].find(b"trak", b"mdia", b"minf", b"stbl", b"stsd"))
    assert (entry.kind, entry.channels, entry.sample_rate, entry.config_kind, entry.config) == (
        b"Opus", 2, 48000, b"dOps", dops,
    )


def test_two_tracks_share_one_init_segment_when_asked() -> None:
    moov = top(init_segment([video_track(), audio_track()]))[b"moov"][0]
    assert [c.kind for c in moov.children] == [b"mvhd", b"trak", b"trak", b"mvex"]
    assert len(moov.find(b"mvex").children) == 2


def test_init_segment_needs_a_track_and_sizes_must_fit() -> None:
    with pytest.raises(UsageError, match="at least one track"):
        init_segment([])
    with pytest.raises(UsageError, match="does not fit"):
        avc1_sample_entry(AVCC, 70000, 10)


# -- fragments -------------------------------------------------------------------------------------


def test_video_fragment_has_64_bit_decode_time_signed_offsets_and_a_data_offset_into_mdat() -> None:
    base = (1 << 33) + 12345  # beyond 32 bits: tfdt must be version 1
    samples = [b"\x00" * 10, b"\x01" * 20, b"\x02" * 5]
    entries = [3000, 10, SAMPLE_SYNC, 6000, 3000, 20, SAMPLE_NON_SYNC, -3000, 3000, 5, SAMPLE_NON_SYNC, 0]
    data = fragment(
        sequence_number=7, track_id=1, base_media_decode_time=base, trun_flags=VIDEO_TRUN,
        entries=entries, payload=samples, payload_size=35,
    )
    (frag,) = fragments(data)
    assert (frag.sequence_number, frag.track_id, frag.base_media_decode_time) == (7, 1, base)
    assert frag.tfhd_flags & 0x020000 and frag.default_sample_flags is None  # default-base-is-moof
    assert frag.trun_version == 1
    assert [(s["duration"], s["size"], s["flags"], s["cts"]) for s in frag.samples] == [
        tuple(entries[i : i + 4]) for i in range(0, 12, 4)
    ]
    assert frag.moof_offset + frag.data_offset == frag.mdat_offset + 8
    assert frag.mdat_payload == b"".join(samples)


def test_audio_fragment_marks_every_sample_sync_through_tfhd() -> None:
    data = fragment(
        sequence_number=1, track_id=2, base_media_decode_time=0, trun_flags=AUDIO_TRUN,
        entries=[1024, 3, 1024, 4], payload=[b"abc", memoryview(b"defg")], payload_size=7,
        default_sample_flags=SAMPLE_SYNC,
    )
    (frag,) = fragments(data)
    assert frag.default_sample_flags == SAMPLE_SYNC and frag.trun_version == 0
    assert frag.samples == [{"duration": 1024, "size": 3}, {"duration": 1024, "size": 4}]
    assert frag.mdat_payload == b"abcdefg"


def test_fragments_concatenate_into_one_valid_stream() -> None:
    parts = [
        fragment(sequence_number=n, track_id=2, base_media_decode_time=n * 2048, trun_flags=AUDIO_TRUN,
                 entries=[1024, 1, 1024, 1], payload=[b"x", b"y"], payload_size=2, default_sample_flags=SAMPLE_SYNC)
        for n in range(3)
    ]
    found = fragments(b"".join(parts))
    assert [f.base_media_decode_time for f in found] == [0, 2048, 4096]
    assert all(f.moof_offset + f.data_offset == f.mdat_offset + 8 for f in found)


@pytest.mark.parametrize(
    ("flags", "entries", "message"),
    [
        (0x999, [1, 2], "layout"),
        (VIDEO_TRUN, [1, 2, 3], "whole"),
        (AUDIO_TRUN, [], "whole"),
    ],
)
def test_fragment_refuses_entries_that_do_not_fit_the_layout(flags: int, entries: list[int], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        fragment(sequence_number=1, track_id=1, base_media_decode_time=0, trun_flags=flags,
                 entries=entries, payload=[], payload_size=0)


def test_pyav_reads_an_init_and_fragments_written_here() -> None:
    # A real encode: H.264 access units from ffmpeg, put into our boxes by hand, read back.
    frames = codec_clip("h264", None, seconds=1.0)
    config = config_frame(frames, FrameKind.VIDEO)
    video = media_frames(frames, FrameKind.VIDEO)
    init = init_segment([InitTrack(1, b"vide", 90000, avc1_sample_entry(bytes(config.payload), 320, 240), 320, 240)])
    entries: list[int] = []
    for i, f in enumerate(video):
        duration = (video[i + 1].dts_ms - f.dts_ms) * 90 if i + 1 < len(video) else 3600
        entries += (duration, len(f.payload), SAMPLE_SYNC if f.keyframe else SAMPLE_NON_SYNC, f.cts_ms * 90)
    data = init + fragment(
        sequence_number=1, track_id=1, base_media_decode_time=0, trun_flags=VIDEO_TRUN, entries=entries,
        payload=[f.payload for f in video], payload_size=sum(len(f.payload) for f in video),
    )
    with av.open(io.BytesIO(data), format="mp4") as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.width) == ("h264", 320)
        packets = [p for p in container.demux(stream) if p.size]
        assert [p.pts for p in packets] == [f.pts_ms * 90 for f in video]
        assert sum(len(p.decode()) for p in packets) + len(stream.codec_context.decode(None)) == len(video)


def test_parse_boxes_of_a_fragment_sees_moof_then_mdat() -> None:
    data = fragment(sequence_number=1, track_id=1, base_media_decode_time=0, trun_flags=AUDIO_TRUN,
                    entries=[1, 1], payload=[b"z"], payload_size=1)
    assert [b.kind for b in parse_boxes(data)] == [b"moof", b"mdat"]
