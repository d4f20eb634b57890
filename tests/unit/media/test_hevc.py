"""HEVC helpers: hvcC parsing and building, the SPS picture size, codec strings, Annex B for MPEG-TS."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.codec_clips import codec_clip, config_frame

from mediaserver.errors import MediaError
from mediaserver.media.frames import FrameKind
from mediaserver.media.h264 import START_CODE
from mediaserver.media.hevc import (
    ANNEXB_AUD,
    HevcConfig,
    access_unit_to_annexb,
    build_hevc_config,
    nal_type,
    parse_hevc_config,
    parse_hevc_sps,
)


@pytest.fixture(scope="module")
def record() -> bytes:
    """The hvcC libx265 writes for a 320x180 picture (coded 320x192, with a conformance window)."""
    return bytes(config_frame(codec_clip("hevc", None, seconds=1.0, width=320, height=180), FrameKind.VIDEO).payload)


# -- the record from a real encoder ----------------------------------------------------------------


def test_real_record_gives_parameter_sets_codec_string_and_picture_size(record: bytes) -> None:
    config = parse_hevc_config(record)
    assert (config.profile_idc, config.tier, config.level_idc, config.nal_length_size) == (1, 0, 60, 4)
    assert config.codec_string == "hvc1.1.6.L60.90"
    assert [nal_type(n) for n in (*config.vps, *config.sps, *config.pps)] == [32, 33, 34]
    info = parse_hevc_sps(config.sps[0])
    assert (info.width, info.height, info.coded_width, info.coded_height) == (320, 180, 320, 192)
    assert (info.chroma_format_idc, info.bit_depth_luma, info.bit_depth_chroma) == (1, 8, 8)
    assert config.annexb_parameter_sets() == b"".join(START_CODE + n for n in (*config.vps, *config.sps, *config.pps))


@pytest.mark.parametrize("length_size", [1, 2, 4])
def test_built_record_round_trips_through_parse(record: bytes, length_size: int) -> None:
    config = parse_hevc_config(record)
    built = parse_hevc_config(build_hevc_config(config.vps, config.sps, config.pps, length_size))
    assert built.vps == config.vps and built.sps == config.sps and built.pps == config.pps
    assert built.nal_length_size == length_size
    assert (built.profile_idc, built.compat_flags, built.constraint_flags, built.level_idc) == (
        config.profile_idc, config.compat_flags, config.constraint_flags, config.level_idc,
    )
    assert built.codec_string == config.codec_string


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ((0, 0, 1, 0x60000000, b"\xb0" + bytes(5), 93), "hvc1.1.6.L93.B0"),  # Main, level 3.1
        ((0, 0, 2, 0x20000000, b"\xb0" + bytes(5), 120), "hvc1.2.4.L120.B0"),  # Main 10, level 4
        ((0, 1, 1, 0x60000000, b"\x90" + bytes(5), 150), "hvc1.1.6.H150.90"),  # High tier
        ((1, 1, 4, 0x08000000, b"\x90\x00\x00\x00\x00\x01", 153), "hvc1.A4.10.H153.90.0.0.0.0.1"),
        ((0, 0, 1, 0x60000000, bytes(6), 93), "hvc1.1.6.L93"),  # no constraint bytes at all
    ],
)
def test_codec_string_follows_iso_14496_15_annex_e(fields: tuple, expected: str) -> None:
    space, tier, profile, compat, constraints, level = fields
    config = HevcConfig(space, tier, profile, compat, constraints, level, 1, 8, 8, 4, (b"",), (b"",), (b"",))
    assert config.codec_string == expected


# -- bad records -----------------------------------------------------------------------------------


def test_every_truncation_of_a_real_record_is_rejected(record: bytes) -> None:
    for cut in range(len(record)):
        with pytest.raises(MediaError):
            parse_hevc_config(record[:cut])


def _arrays(*arrays: tuple[int, list[bytes]]) -> bytes:
    out = bytearray((len(arrays),))
    for kind, nals in arrays:
        out += bytes((0x80 | kind,)) + len(nals).to_bytes(2, "big")
        for nal in nals:
            out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


HEADER = bytes.fromhex("01016000000090000000000000f000fcfdf8f800000f")  # 22 bytes: all but numOfArrays
VPS, SPS, PPS = b"\x40\x01\x0c", b"\x42\x01\x01", b"\x44\x01\xc0"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (HEADER, "truncated"),
        (b"\x00" + HEADER[1:] + _arrays((32, [VPS]), (33, [SPS]), (34, [PPS])), "version 0"),
        (HEADER[:21] + b"\x0e" + _arrays((32, [VPS]), (33, [SPS]), (34, [PPS])), "lengthSizeMinusOne 2"),
        (HEADER + _arrays((32, [VPS]), (33, [SPS])), "no PPS"),
        (HEADER + _arrays((33, [SPS]), (34, [PPS])), "no VPS"),
        (HEADER + _arrays((32, [VPS]), (34, [PPS]), (39, [b"\x4e\x01\x05"])), "no SPS"),
        (HEADER + _arrays((32, [VPS]), (33, [b"\x42"]), (34, [PPS])), "at least its 2-byte header"),
        (HEADER + b"\x03\xa0\x00\x01\xff\xff" + VPS, "claims 65535 bytes"),
        (HEADER + b"\x05" + _arrays((32, [VPS]), (33, [SPS]), (34, [PPS]))[1:], "header of NAL array 4"),
    ],
)
def test_malformed_records_raise_media_error_naming_the_fault(data: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        parse_hevc_config(data)


def test_a_hand_made_record_with_sei_and_trailing_bytes_parses() -> None:
    data = HEADER + _arrays((32, [VPS]), (33, [SPS, SPS + b"\x01"]), (34, [PPS]), (39, [b"\x4e\x01\x05"])) + b"\x00\x00"
    config = parse_hevc_config(data)
    assert config.sps == (SPS, SPS + b"\x01") and config.nal_length_size == 4


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_as_a_record_give_a_config_or_media_error(data: bytes) -> None:
    try:
        config = parse_hevc_config(data)
    except MediaError:
        return
    assert config.vps and config.sps and config.pps


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_real_record_with_random_bytes_changed_gives_a_config_or_media_error(record: bytes, data: st.DataObject) -> None:
    mutated = bytearray(record)
    for _ in range(data.draw(st.integers(1, 8))):
        mutated[data.draw(st.integers(0, len(record) - 1))] = data.draw(st.integers(0, 255))
    try:
        config = parse_hevc_config(bytes(mutated))
        parse_hevc_sps(config.sps[0])
    except MediaError:
        pass


# -- SPS -------------------------------------------------------------------------------------------


def test_sps_of_other_type_or_too_short_is_refused(record: bytes) -> None:
    config = parse_hevc_config(record)
    with pytest.raises(MediaError, match="not an HEVC SPS"):
        parse_hevc_sps(config.pps[0] + bytes(10))
    with pytest.raises(MediaError, match="truncated"):
        parse_hevc_sps(b"\x42\x01")
    for cut in range(2, 12):
        with pytest.raises(MediaError):
            parse_hevc_sps(config.sps[0][:cut])


def test_sps_with_too_many_sub_layers_is_refused() -> None:
    with pytest.raises(MediaError, match="sps_max_sub_layers_minus1 is 7"):
        parse_hevc_sps(b"\x42\x01" + bytes((0x0E,)) + bytes(40))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_random_sps_payloads_give_a_size_or_media_error(payload: bytes) -> None:
    try:
        info = parse_hevc_sps(b"\x42\x01" + payload)
    except MediaError:
        return
    assert 0 < info.width <= 16888 and 0 < info.height <= 16888


# -- Annex B for MPEG-TS ---------------------------------------------------------------------------

IDR = b"\x26\x01\xaf\x00\x01"
TRAIL = b"\x02\x01\xd0\x00"
PREFIX_SEI = b"\x4e\x01\x05\x01\x02"
AUD = b"\x46\x01\x50"
PARAMETER_SETS = b"".join(START_CODE + n for n in (VPS, SPS, PPS))


def _hvcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def test_keyframe_gets_aud_then_parameter_sets_then_its_nal_units() -> None:
    out = b"".join(access_unit_to_annexb(_hvcc(PREFIX_SEI, IDR), 4, PARAMETER_SETS, keyframe=True))
    assert out == ANNEXB_AUD + PARAMETER_SETS + START_CODE + PREFIX_SEI + START_CODE + IDR
    assert ANNEXB_AUD == b"\x00\x00\x00\x01\x46\x01\x50"


def test_other_pictures_get_only_the_aud() -> None:
    out = b"".join(access_unit_to_annexb(_hvcc(TRAIL), 4, PARAMETER_SETS, keyframe=False))
    assert out == ANNEXB_AUD + START_CODE + TRAIL


def test_in_band_parameter_sets_are_not_repeated_and_in_band_auds_are_dropped() -> None:
    out = b"".join(access_unit_to_annexb(_hvcc(AUD, VPS, SPS, PPS, IDR), 4, PARAMETER_SETS, keyframe=True))
    assert out == ANNEXB_AUD + b"".join(START_CODE + n for n in (VPS, SPS, PPS, IDR))
    assert out.count(b"\x46\x01\x50") == 1


def test_bad_framing_in_an_access_unit_raises_media_error() -> None:
    with pytest.raises(MediaError, match="claims"):
        access_unit_to_annexb(b"\x00\x00\x01\x00" + IDR, 4)
