"""H.264 helpers: avcC, SPS and NAL framing, checked against real libx264 output and hand-built bitstreams."""

from __future__ import annotations

import fractions

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.errors import MediaError
from mediaserver.media.h264 import (
    ANNEXB_AUD,
    START_CODE,
    AvcConfig,
    access_unit_to_annexb,
    annexb_to_avcc,
    avcc_to_annexb,
    build_avc_config,
    iter_annexb_nal_units,
    iter_nal_units,
    parse_avc_config,
    parse_sps,
)

# -- SPS from real encodes -------------------------------------------------------------------------

# SPS NAL units written by libx264 (ffmpeg 9 through PyAV 18), with the picture each encode had.
# (name, sps hex, width, height, profile_idc, level_idc, chroma_format_idc, bit depth, frame_mbs_only)
REAL_SPS = [
    ("1080p high, 8 lines cropped", "67640028acd940780227e584000003000400000300c83c60c658", 1920, 1080, 100, 40, 1, 8, True),
    ("720p main", "674d401feca02802dd080000030008000003019078c18cb0", 1280, 720, 77, 31, 1, 8, True),
    ("240p baseline", "6742c00dd90141fa1000000300100000030320f142a480", 320, 240, 66, 13, 1, 8, True),
    ("odd size 4:4:4 predictive", "67f4000d919b282a10f08421080000030008000003019078a14cb0", 321, 241, 244, 13, 3, 8, True),
    ("360p high 4:2:2", "677a001ebcd940a02ff89840000003004000000c83c58b6580", 640, 360, 122, 30, 2, 8, True),
    ("1080i interlaced", "67640028acd94078044fdc20000003002000000643e2c5b2c0", 1920, 1080, 100, 40, 1, 8, False),
    ("854x480 high 10", "676e001ea6cd940d83de6e1000000300100000030320f162d960", 854, 480, 110, 30, 1, 10, True),
]


@pytest.mark.parametrize(
    "sps_hex, width, height, profile, level, chroma, depth, progressive",
    [case[1:] for case in REAL_SPS],
    ids=[case[0] for case in REAL_SPS],
)
def test_sps_of_real_encodes_gives_picture_size_profile_and_level(
    sps_hex: str, width: int, height: int, profile: int, level: int, chroma: int, depth: int, progressive: bool
) -> None:
    info = parse_sps(bytes.fromhex(sps_hex))
    assert (info.width, info.height) == (width, height)
    assert (info.profile_idc, info.level_idc) == (profile, level)
    assert info.chroma_format_idc == chroma
    assert info.bit_depth_luma == info.bit_depth_chroma == depth
    assert info.frame_mbs_only is progressive
    assert info.coded_width % 16 == 0 and info.coded_width >= width
    assert info.frame_rate == 25.0


def test_sps_reports_the_sample_aspect_ratio_from_the_vui() -> None:
    # 176x144 encoded with a 12:11 sample aspect ratio (table E-1 index 2).
    info = parse_sps(bytes.fromhex("6764000bacd942c4ec0840000003004000000c83c50a6580"))
    assert (info.width, info.height, info.sar) == (176, 144, (12, 11))


def _encode_parameter_sets(width: int, height: int, pix_fmt: str, options: dict[str, str]) -> tuple[bytes, bytes]:
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, pix_fmt
    codec.time_base = fractions.Fraction(1, 30)
    codec.framerate = fractions.Fraction(30)
    codec.options = options
    codec.open()
    picture = av.VideoFrame(width, height, pix_fmt)
    picture.pts = 0
    data = b"".join(bytes(p) for p in codec.encode(picture)) + b"".join(bytes(p) for p in codec.encode(None))
    nals = [bytes(n) for n in iter_annexb_nal_units(data)]
    return next(n for n in nals if n[0] & 0x1F == 7), next(n for n in nals if n[0] & 0x1F == 8)


@pytest.mark.parametrize(
    "width, height, pix_fmt, options",
    [
        (1280, 720, "yuv420p", {"profile": "high"}),
        (426, 240, "yuv420p", {"profile": "main"}),
        (1918, 1078, "yuv420p", {}),
        (99, 77, "yuv444p", {}),
        (720, 576, "yuv420p", {"x264-params": "interlaced=1"}),
    ],
)
def test_sps_of_a_fresh_libx264_encode_matches_the_encoded_size(
    width: int, height: int, pix_fmt: str, options: dict[str, str]
) -> None:
    sps, pps = _encode_parameter_sets(width, height, pix_fmt, options)
    info = parse_sps(sps)
    assert (info.width, info.height) == (width, height)
    assert info.frame_rate == 30.0
    config = parse_avc_config(build_avc_config([sps], [pps]))
    assert config.sps == (sps,) and config.pps == (pps,)
    assert (config.profile, config.level) == (info.profile_idc, info.level_idc)


# -- SPS from a hand-built bitstream (paths libx264 never writes) -----------------------------------


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, value: int, width: int) -> BitWriter:
        self.bits += [(value >> (width - 1 - i)) & 1 for i in range(width)]
        return self

    def ue(self, value: int) -> BitWriter:
        code = value + 1
        return self.u(0, code.bit_length() - 1).u(code, code.bit_length())

    def se(self, value: int) -> BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = self.bits + [1]  # rbsp_stop_one_bit
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def escape_rbsp(rbsp: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def build_sps(
    *,
    profile: int = 100,
    chroma: int = 1,
    scaling_lists: list[list[int] | None] | None = None,
    poc_type: int = 0,
    width_mbs: int = 20,
    height_map_units: int = 15,
    frame_mbs_only: bool = True,
    crop: tuple[int, int, int, int] | None = None,
    vui: bool = False,
) -> bytes:
    w = BitWriter().u(profile, 8).u(0, 8).u(30, 8).ue(0)
    if profile in (100, 110, 122, 244):
        w.ue(chroma)
        if chroma == 3:
            w.u(0, 1)  # separate_colour_plane_flag
        w.ue(0).ue(0).u(0, 1)
        w.u(scaling_lists is not None, 1)
        if scaling_lists is not None:
            for scaling_list in scaling_lists:
                w.u(scaling_list is not None, 1)
                last = 8
                for value in scaling_list or []:
                    w.se((value - last + 128) % 256 - 128)
                    last = value
                    if value == 0:
                        break
    w.ue(0).ue(poc_type)
    if poc_type == 0:
        w.ue(2)
    elif poc_type == 1:
        w.u(0, 1).se(-1).se(2).ue(3).se(1).se(-2).se(5)
    w.ue(4).u(0, 1).ue(width_mbs - 1).ue(height_map_units - 1).u(frame_mbs_only, 1)
    if not frame_mbs_only:
        w.u(1, 1)
    w.u(1, 1).u(crop is not None, 1)
    if crop is not None:
        for offset in crop:
            w.ue(offset)
    w.u(vui, 1)
    if vui:
        w.u(1, 1).u(255, 8).u(4, 16).u(3, 16)  # Extended_SAR 4:3
        w.u(0, 1).u(0, 1).u(0, 1)
        w.u(1, 1).u(1001, 32).u(60000, 32).u(1, 1)
    return b"\x67" + escape_rbsp(w.rbsp())


FLAT_16 = [16] * 16
FLAT_64 = [16] * 64
DEFAULT_SIGNAL = [0]  # a first delta that makes next_scale 0: "use the default matrix"

HAND_BUILT = [
    (
        "scaling lists, 4:2:0",
        dict(scaling_lists=[FLAT_16, None, DEFAULT_SIGNAL, FLAT_16, None, None, FLAT_64, DEFAULT_SIGNAL]),
        320,
        240,
    ),
    ("scaling lists, 4:4:4 has twelve", dict(chroma=3, scaling_lists=[FLAT_16] * 6 + [FLAT_64] * 6, crop=(1, 2, 3, 4)), 317, 233),
    ("varying scaling list values", dict(scaling_lists=[list(range(4, 20))] * 6 + [list(range(1, 65))] * 2), 320, 240),
    ("poc type 1 with a cycle", dict(profile=77, poc_type=1), 320, 240),
    ("poc type 2", dict(profile=66, poc_type=2), 320, 240),
    ("field coding crops in pairs of lines", dict(frame_mbs_only=False, height_map_units=34, crop=(0, 0, 0, 2)), 320, 1080),
    ("monochrome crops by single samples", dict(chroma=0, crop=(1, 2, 3, 4)), 317, 233),
    ("4:2:2 crops columns in pairs", dict(chroma=2, crop=(1, 1, 1, 1)), 316, 238),
    ("largest picture level 6.2 allows", dict(profile=66, width_mbs=1055, height_map_units=1055), 16880, 16880),
]


@pytest.mark.parametrize("kwargs, width, height", [c[1:] for c in HAND_BUILT], ids=[c[0] for c in HAND_BUILT])
def test_hand_built_sps_gives_the_cropped_picture_size(kwargs: dict, width: int, height: int) -> None:
    info = parse_sps(build_sps(**kwargs))
    assert (info.width, info.height) == (width, height)


def test_sps_vui_extended_sar_and_ntsc_frame_rate_are_read() -> None:
    info = parse_sps(build_sps(vui=True))
    assert info.sar == (4, 3)
    assert info.frame_rate == pytest.approx(29.97, abs=0.01)


def test_sps_emulation_prevention_bytes_are_removed_before_parsing() -> None:
    sps = build_sps(profile=66, crop=(0, 0, 0, 0))
    assert parse_sps(sps).width == 320
    # A real SPS with 00 00 03 sequences (in its VUI) parses to the same values as its unescaped form would.
    real = bytes.fromhex(REAL_SPS[0][1])
    assert b"\x00\x00\x03" in real
    assert parse_sps(real).frame_rate == 25.0


# -- SPS: bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("sps_hex", [c[1] for c in REAL_SPS], ids=[c[0] for c in REAL_SPS])
def test_every_truncation_of_a_real_sps_is_rejected_or_still_exact(sps_hex: str) -> None:
    sps = bytes.fromhex(sps_hex)
    full = parse_sps(sps)
    for cut in range(len(sps)):
        try:
            info = parse_sps(sps[:cut])
        except MediaError:
            continue
        # Cut inside the VUI fields after the timing info, which the parser does not read.
        assert (info.width, info.height, info.frame_rate) == (full.width, full.height, full.frame_rate)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "truncated"),
        (b"\x67\x64\x00", "truncated"),
        (b"\x68\x64\x00\x1f\xff", "not an SPS"),
        (b"\x67\x42\x00\x1e" + b"\x00" * 8 + b"\x01", "longer than 32 bits"),
    ],
    ids=["empty", "three bytes", "a PPS", "exp-Golomb code of 64 zeros"],
)
def test_malformed_sps_raises_media_error(data: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        parse_sps(data)


def test_sps_with_absurd_picture_size_is_rejected() -> None:
    with pytest.raises(MediaError, match="pic_width_in_mbs_minus1"):
        parse_sps(build_sps(profile=66, width_mbs=1056))


def test_sps_cropping_away_the_whole_picture_is_rejected() -> None:
    with pytest.raises(MediaError, match="cropping"):
        parse_sps(build_sps(profile=66, width_mbs=1, crop=(4, 4, 0, 0)))


def test_sps_with_an_invalid_chroma_format_is_rejected() -> None:
    with pytest.raises(MediaError, match="chroma_format_idc is 5"):
        parse_sps(build_sps(chroma=5))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_as_sps_give_info_or_media_error(tail: bytes) -> None:
    try:
        info = parse_sps(b"\x67" + tail)
    except MediaError:
        return
    assert 0 < info.width <= 16880 and 0 < info.height <= 16880


# -- avcC ------------------------------------------------------------------------------------------

SPS_720P = bytes.fromhex(REAL_SPS[1][1])
PPS = bytes.fromhex("68ebecb22c")

AVCC_TABLE = [
    (
        "one SPS, one PPS, 4-byte lengths",
        bytes.fromhex("01 64001f ff e1 0004 6764001f 01 0004 68ee3c80"),
        AvcConfig(0x64, 0x00, 0x1F, 4, (bytes.fromhex("6764001f"),), (bytes.fromhex("68ee3c80"),)),
    ),
    (
        "two PPS, 2-byte lengths",
        bytes.fromhex("01 4d401f fd e1 0004 674d401f 02 0002 68aa 0003 68bbcc"),
        AvcConfig(0x4D, 0x40, 0x1F, 2, (bytes.fromhex("674d401f"),), (bytes.fromhex("68aa"), bytes.fromhex("68bbcc"))),
    ),
    (
        "1-byte lengths",
        bytes.fromhex("01 42c00d fc e1 0004 6742c00d 01 0002 68ce"),
        AvcConfig(0x42, 0xC0, 0x0D, 1, (bytes.fromhex("6742c00d"),), (bytes.fromhex("68ce"),)),
    ),
]


@pytest.mark.parametrize("record, config", [c[1:] for c in AVCC_TABLE], ids=[c[0] for c in AVCC_TABLE])
def test_avc_config_round_trips_through_parse_and_build(record: bytes, config: AvcConfig) -> None:
    assert parse_avc_config(record) == config
    assert build_avc_config(config.sps, config.pps, config.nal_length_size) == record


def test_avc_config_ignores_the_high_profile_extension_and_padding() -> None:
    record = AVCC_TABLE[0][1] + bytes.fromhex("fdf8f800") + b"\x00\x00"
    assert parse_avc_config(record) == AVCC_TABLE[0][2]


def test_avc_config_codec_string_and_annexb_parameter_sets() -> None:
    config = parse_avc_config(build_avc_config([SPS_720P], [PPS]))
    assert config.codec_string == "avc1.4d401f"
    assert config.annexb_parameter_sets() == START_CODE + SPS_720P + START_CODE + PPS


def test_every_truncation_of_an_avc_config_is_rejected() -> None:
    record = build_avc_config([SPS_720P], [PPS])
    for cut in range(len(record)):
        with pytest.raises(MediaError):
            parse_avc_config(record[:cut])


@pytest.mark.parametrize(
    "record, message",
    [
        (bytes.fromhex("00 64001f ff e1 0004 6764001f 01 0004 68ee3c80"), "version 0"),
        (bytes.fromhex("01 64001f fe e1 0004 6764001f 01 0004 68ee3c80"), "lengthSizeMinusOne 2"),
        (bytes.fromhex("01 64001f ff e0 01 0004 68ee3c80"), "no SPS"),
        (bytes.fromhex("01 64001f ff e1 0004 6764001f 00"), "no PPS"),
        (bytes.fromhex("01 64001f ff e1 ffff 6764001f 01 0004 68ee3c80"), "SPS 1 of 1 claims 65535 bytes"),
        (bytes.fromhex("01 64001f ff e1 0000 01 0004 68ee3c80"), "claims 0 bytes"),
    ],
    ids=["version", "3-byte lengths", "no SPS", "no PPS", "SPS overruns", "empty SPS"],
)
def test_malformed_avc_config_raises_media_error(record: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        parse_avc_config(record)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_as_avc_config_give_a_config_or_media_error(data: bytes) -> None:
    try:
        config = parse_avc_config(data)
    except MediaError:
        return
    assert config.sps and config.pps
    assert parse_avc_config(build_avc_config(config.sps, config.pps, config.nal_length_size)) == config


# -- NAL framing -----------------------------------------------------------------------------------

IDR = bytes.fromhex("6588840021ffff")
SEI = bytes.fromhex("0605ffee")
P_SLICE = bytes.fromhex("419a21")

NAL_TABLE = [
    ("4-byte lengths", 4, b"\x00\x00\x00\x04" + SEI + b"\x00\x00\x00\x07" + IDR, [SEI, IDR]),
    ("2-byte lengths", 2, b"\x00\x03" + P_SLICE, [P_SLICE]),
    ("1-byte lengths", 1, b"\x04" + SEI + b"\x03" + P_SLICE, [SEI, P_SLICE]),
    ("empty access unit", 4, b"", []),
]


@pytest.mark.parametrize("size, avcc, nals", [c[1:] for c in NAL_TABLE], ids=[c[0] for c in NAL_TABLE])
def test_avcc_nal_units_are_split_and_round_trip_through_annexb(size: int, avcc: bytes, nals: list[bytes]) -> None:
    assert [bytes(n) for n in iter_nal_units(avcc, size)] == nals
    annexb = avcc_to_annexb(avcc, size)
    assert annexb == b"".join(START_CODE + n for n in nals)
    assert [bytes(n) for n in iter_annexb_nal_units(annexb)] == nals
    assert annexb_to_avcc(annexb, size) == avcc


def test_nal_units_are_zero_copy_views_and_empty_ones_are_skipped() -> None:
    avcc = b"\x00\x00\x00\x00" + b"\x00\x00\x00\x03" + P_SLICE
    views = list(iter_nal_units(memoryview(avcc), 4))
    assert [bytes(v) for v in views] == [P_SLICE]
    assert isinstance(views[0], memoryview) and views[0].obj is avcc


def test_annexb_reader_accepts_three_byte_start_codes_and_trailing_zeros() -> None:
    stream = b"\x00\x00\x01" + SEI + b"\x00\x00\x00\x00\x01" + IDR + b"\x00\x00"
    assert [bytes(n) for n in iter_annexb_nal_units(stream)] == [SEI, IDR]


@pytest.mark.parametrize(
    "avcc, size, message",
    [
        (b"\x00\x00\x00\x09" + IDR, 4, "claims 9 bytes but only 7 remain"),
        (b"\x00\x00\x00\x07" + IDR + b"\x00\x00", 4, "ends inside a NAL length prefix"),
        (b"\xff\xff\xff\xff", 4, "claims 4294967295 bytes"),
        (b"\x07" + IDR, 3, "NAL length size 3"),
    ],
    ids=["length beyond the payload", "cut inside a length", "hostile length", "invalid length size"],
)
def test_bad_avcc_framing_raises_media_error(avcc: bytes, size: int, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        list(iter_nal_units(avcc, size))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256), st.sampled_from([1, 2, 4]))
def test_random_bytes_as_avcc_give_nal_units_or_media_error(data: bytes, size: int) -> None:
    try:
        nals = list(iter_nal_units(data, size))
    except MediaError:
        return
    assert sum(len(n) for n in nals) <= len(data)


# -- Access units for MPEG-TS ----------------------------------------------------------------------

PARAMETER_SETS = START_CODE + SPS_720P + START_CODE + PPS


def _avcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def test_keyframe_access_unit_gets_aud_then_parameter_sets_then_its_nal_units() -> None:
    out = b"".join(access_unit_to_annexb(_avcc(SEI, IDR), 4, PARAMETER_SETS, keyframe=True))
    assert out == ANNEXB_AUD + PARAMETER_SETS + START_CODE + SEI + START_CODE + IDR


def test_non_keyframe_gets_only_the_aud() -> None:
    out = b"".join(access_unit_to_annexb(_avcc(P_SLICE), 4, PARAMETER_SETS, keyframe=False))
    assert out == ANNEXB_AUD + START_CODE + P_SLICE


def test_publisher_aud_is_replaced_and_in_band_parameter_sets_are_not_doubled() -> None:
    aud = b"\x09\x10"
    out = b"".join(access_unit_to_annexb(_avcc(aud, SPS_720P, PPS, IDR), 4, PARAMETER_SETS, keyframe=True))
    assert out == ANNEXB_AUD + START_CODE + SPS_720P + START_CODE + PPS + START_CODE + IDR


def test_access_unit_with_a_bad_length_raises_media_error() -> None:
    with pytest.raises(MediaError):
        access_unit_to_annexb(b"\x00\x00\x01\x00" + IDR, 4, PARAMETER_SETS, keyframe=True)
