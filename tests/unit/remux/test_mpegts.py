"""The TS muxer, read back with a strict test-side demuxer (tsprobe) packet by packet."""

from __future__ import annotations

import pytest
from tsprobe import (
    check_continuity,
    crc32_mpeg2_bitwise,
    parse_packets,
    parse_pat,
    parse_pmt,
    pes_units,
    read_section,
    read_timestamp,
)

from mediaserver.errors import MediaError, UsageError
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.remux.hls import TsSegmenter
from mediaserver.remux.mpegts import (
    PCR_LEAD_90K,
    PID_AUDIO,
    PID_PAT,
    PID_PMT,
    PID_VIDEO,
    PTS_MASK,
    STREAM_TYPE_AAC_ADTS,
    STREAM_TYPE_H264,
    STREAM_TYPE_HEVC,
    TIMESTAMP_OFFSET_90K,
    TsMuxer,
    crc32_mpeg2,
    encode_pcr,
    encode_timestamp,
    pes_header,
    to_90k,
    ts_time_90k,
)

# -- field encoders --------------------------------------------------------------------------------


def test_crc32_mpeg2_matches_the_catalogue_check_value_and_a_bitwise_implementation() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7
    for data in (b"", b"\x00", bytes(range(256)), b"\xff" * 40):
        assert crc32_mpeg2(data) == crc32_mpeg2_bitwise(data)


@pytest.mark.parametrize("ts", [0, 1, 90_000, 2**32, 2**33 - 1, 0x1_2345_6789])
@pytest.mark.parametrize("prefix", [1, 2, 3])
def test_pts_and_dts_fields_round_trip(ts: int, prefix: int) -> None:
    assert read_timestamp(encode_timestamp(prefix, ts), prefix) == ts


@pytest.mark.parametrize("pcr", [0, 1, 126_000, 2**33 - 1])
def test_pcr_field_round_trips_with_reserved_bits_set(pcr: int) -> None:
    raw = int.from_bytes(encode_pcr(pcr), "big")
    assert raw >> 15 == pcr
    assert (raw >> 9) & 0x3F == 0x3F
    assert raw & 0x1FF == 0


def test_stream_ms_map_to_90k_with_a_constant_offset_and_33_bit_wrap() -> None:
    assert to_90k(1000) == 90_000
    assert ts_time_90k(0) == TIMESTAMP_OFFSET_90K
    assert ts_time_90k(40) - ts_time_90k(0) == 3600
    wrap_ms = (2**33 - TIMESTAMP_OFFSET_90K) // 90 + 1
    assert ts_time_90k(wrap_ms) < ts_time_90k(wrap_ms - 1)
    assert 0 <= ts_time_90k(wrap_ms) <= PTS_MASK


def test_pes_header_omits_dts_when_it_equals_pts() -> None:
    assert len(pes_header(0xE0, 100, 9000, 9000)) == 14
    assert len(pes_header(0xE0, 100, 12600, 9000)) == 19


def test_oversized_video_pes_is_unbounded_and_oversized_audio_pes_is_an_error() -> None:
    header = pes_header(0xE0, 70_000, 9000, 9000)
    assert header[4:6] == b"\x00\x00"
    with pytest.raises(MediaError, match="audio PES"):
        pes_header(0xC0, 70_000, 9000)


# -- packetizing at every boundary -----------------------------------------------------------------

# Payload sizes around the places where a PES stops fitting: the first packet holds 184 bytes
# minus the PES header minus the adaptation field (PCR: 8 bytes), later packets 184.
SIZES = [
    0, 1, 2, 100, 155, 156, 157, 160, 161, 162, 165, 166, 167, 168, 169, 170, 171, 183, 184, 185,
    339, 340, 341, 352, 353, 354, 1000, 5000, 65_600,
]


@pytest.mark.parametrize("size", SIZES)
def test_video_pes_of_any_size_packetizes_and_reassembles_exactly(size: int) -> None:
    muxer = TsMuxer()
    payload = bytes(i % 251 for i in range(size))
    muxer.write_video([payload[: size // 2], memoryview(payload)[size // 2 :]], 200_000, 190_000, keyframe=True)
    data = muxer.take()
    packets = parse_packets(data)
    check_continuity(packets)
    (pes,) = pes_units(packets, PID_VIDEO)
    assert pes.payload == payload
    assert (pes.stream_id, pes.pts, pes.dts) == (0xE0, 200_000, 190_000)
    first = pes.first_packet
    assert first.random_access and first.pcr == 190_000 - PCR_LEAD_90K
    assert muxer.continuity_counters[PID_VIDEO] == len(packets) % 16


@pytest.mark.parametrize("size", SIZES[:-1])
def test_audio_pes_of_any_size_packetizes_and_reassembles_exactly(size: int) -> None:
    muxer = TsMuxer()  # video present: audio carries no PCR and no adaptation field in its first packet
    payload = bytes(i % 253 for i in range(size))
    muxer.write_audio([payload], 300_000)
    packets = parse_packets(muxer.take())
    (pes,) = pes_units(packets, PID_AUDIO)
    assert pes.payload == payload and pes.pts == 300_000
    assert pes.packet_length == len(payload) + 8
    assert pes.first_packet.pcr is None and not pes.first_packet.random_access


def test_packet_needing_one_byte_of_stuffing_gets_an_empty_adaptation_field() -> None:
    muxer = TsMuxer()
    muxer.write_audio([bytes(183 - 14)], 300_000)  # PES of 183 bytes in one packet
    data = muxer.take()
    assert len(data) == 188
    assert data[3] >> 4 == 3 and data[4] == 0  # adaptation field present, length 0
    (pes,) = pes_units(parse_packets(data), PID_AUDIO)
    assert len(pes.payload) == 169


def test_non_keyframe_video_carries_pcr_but_no_random_access_flag() -> None:
    muxer = TsMuxer()
    muxer.write_video([b"\x00\x00\x00\x01\x09\xf0"], 200_000, 200_000, keyframe=False)
    (pes,) = pes_units(parse_packets(muxer.take()), PID_VIDEO)
    assert pes.first_packet.pcr is not None and not pes.first_packet.random_access


# -- program tables --------------------------------------------------------------------------------


def test_tables_list_program_streams_with_valid_crcs() -> None:
    muxer = TsMuxer()
    muxer.write_tables()
    pat, pmt = parse_packets(muxer.take())
    assert pat.pid == PID_PAT and pmt.pid == PID_PMT
    assert parse_pat(read_section(pat)) == {1: PID_PMT}
    table = parse_pmt(read_section(pmt))
    assert table.streams == {PID_VIDEO: STREAM_TYPE_H264, PID_AUDIO: STREAM_TYPE_AAC_ADTS}
    assert table.pcr_pid == PID_VIDEO


def test_audio_only_program_puts_the_pcr_on_the_audio_pid() -> None:
    muxer = TsMuxer(video_stream_type=None)
    muxer.write_tables()
    muxer.write_audio([bytes(300)], 500_000)
    packets = parse_packets(muxer.take())
    table = parse_pmt(read_section(packets[1]))
    assert table.streams == {PID_AUDIO: STREAM_TYPE_AAC_ADTS} and table.pcr_pid == PID_AUDIO
    (pes,) = pes_units(packets, PID_AUDIO)
    assert pes.first_packet.pcr == 500_000 - PCR_LEAD_90K and pes.first_packet.random_access
    with pytest.raises(UsageError):
        muxer.write_video([b"x"], 0, 0, keyframe=True)


def test_changing_the_streams_bumps_the_pmt_version() -> None:
    muxer = TsMuxer(audio_stream_type=None)
    muxer.write_tables()
    muxer.set_streams(STREAM_TYPE_H264, None)  # unchanged: same version
    muxer.write_tables()
    muxer.set_streams(STREAM_TYPE_HEVC, STREAM_TYPE_AAC_ADTS)
    muxer.write_tables()
    packets = parse_packets(muxer.take())
    versions = [parse_pmt(read_section(p)).version for p in packets if p.pid == PID_PMT]
    assert versions == [0, 0, 1]
    assert parse_pmt(read_section(packets[-1])).streams[PID_VIDEO] == STREAM_TYPE_HEVC
    check_continuity(packets)


def test_a_program_without_streams_is_refused() -> None:
    with pytest.raises(UsageError):
        TsMuxer(video_stream_type=None, audio_stream_type=None)


def test_continuity_counters_carry_over_between_takes() -> None:
    muxer = TsMuxer()
    last: dict[int, int] = {}
    for round_ in range(5):
        muxer.write_tables()
        for i in range(7):
            muxer.write_video([bytes(1000 + 37 * i)], 200_000 + i, 200_000 + i, keyframe=i == 0)
            muxer.write_audio([bytes(400)], 200_000 + i)
        assert muxer.pending_bytes > 0
        last = check_continuity(parse_packets(muxer.take()), last)
        assert muxer.pending_bytes == 0


# -- segments of a real clip -----------------------------------------------------------------------


def segment_clip(frames: list[Frame], **options: object) -> list:
    segmenter = TsSegmenter(**options)  # type: ignore[arg-type]
    segments = []
    for frame in frames:
        segments += segmenter.push(frame, 1_700_000_000.0)
    last = segmenter.finish()
    if last is not None:
        segments.append(last)
    return segments


def test_real_clip_segments_are_well_formed_transport_streams(av_clip: list[Frame]) -> None:
    segments = segment_clip(av_clip)
    assert len(segments) == 3
    counters: dict[int, int] = {}
    keyframes = sum(1 for f in av_clip if f.kind == FrameKind.VIDEO and f.keyframe and not f.is_end)
    seen_keyframes = 0
    for segment in segments:
        packets = parse_packets(segment.data)
        # Each segment starts with PAT then PMT (RFC 8216 3.2), continuity running on from the last.
        assert [p.pid for p in packets[:2]] == [PID_PAT, PID_PMT]
        assert parse_pat(read_section(packets[0])) == {1: PID_PMT}
        table = parse_pmt(read_section(packets[1]))
        assert table.streams == {PID_VIDEO: STREAM_TYPE_H264, PID_AUDIO: STREAM_TYPE_AAC_ADTS}
        counters = check_continuity(packets, counters)

        video = pes_units(packets, PID_VIDEO)
        audio = pes_units(packets, PID_AUDIO)
        # The first PES after the tables is the keyframe, with the PCR and the random access flag.
        assert packets[2].pid == PID_VIDEO and packets[2].pusi
        assert video[0].first_packet.random_access
        assert video[0].payload.startswith(b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x67")
        for pes in video:
            assert pes.stream_id == 0xE0
            assert pes.first_packet.pcr == pes.dts - PCR_LEAD_90K
            assert pes.pts >= pes.dts
            assert pes.payload.startswith(b"\x00\x00\x00\x01\x09\xf0")
            seen_keyframes += pes.first_packet.random_access
        assert [p.dts for p in video] == sorted(p.dts for p in video)
        for pes in audio:
            assert pes.stream_id == 0xC0 and pes.packet_length and pes.first_packet.pcr is None
            assert pes.payload[:2] == b"\xff\xf1"
        assert [p.pts for p in audio] == sorted(p.pts for p in audio)
    assert seen_keyframes == keyframes


def test_b_frames_give_pts_after_dts_and_no_timestamp_below_the_offset(av_clip: list[Frame]) -> None:
    segments = segment_clip(av_clip)
    video = [pes for s in segments for pes in pes_units(parse_packets(s.data), PID_VIDEO)]
    assert any(p.pts > p.dts for p in video)
    assert min(p.dts for p in video) == TIMESTAMP_OFFSET_90K
    first_video = next(f for f in av_clip if f.kind == FrameKind.VIDEO and not f.is_config)
    assert video[0].pts == ts_time_90k(first_video.pts_ms)
