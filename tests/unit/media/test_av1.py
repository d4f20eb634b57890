"""AV1 helpers: av1C records, OBU framing, sequence headers, codec strings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.codec_clips import codec_clip, config_frame, media_frames

from mediaserver.errors import MediaError
from mediaserver.media.av1 import (
    OBU_FRAME,
    OBU_SEQUENCE_HEADER,
    OBU_TEMPORAL_DELIMITER,
    Av1Config,
    build_av1_config,
    iter_obus,
    parse_av1_config,
    parse_sequence_header_obu,
    read_leb128,
    sequence_header_of,
    strip_temporal_delimiter,
)
from mediaserver.media.frames import FrameKind


class BitWriter:
    """MSB-first bits, for building sequence headers by hand (AV1 5.5)."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def put(self, value: int, width: int) -> BitWriter:
        self.bits += [(value >> (width - 1 - i)) & 1 for i in range(width)]
        return self

    def uvlc(self, value: int) -> BitWriter:
        zeros = (value + 1).bit_length() - 1
        return self.put(0, zeros).put(1, 1).put(value + 1 - (1 << zeros), zeros)

    def bytes(self) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def obu(kind: int, payload: bytes, *, sized: bool = True, extension: int | None = None) -> bytes:
    header = (kind << 3) | (0x04 if extension is not None else 0) | (0x02 if sized else 0)
    out = bytes((header,)) + (bytes((extension,)) if extension is not None else b"")
    return out + (leb128(len(payload)) if sized else b"") + payload


def sequence_header(width: int, height: int, *, profile: int = 0, level: int = 8, tier: int = 0,
                    timing: tuple[int, int, int] | None = None, decoder_model: bool = False) -> bytes:
    w = BitWriter().put(profile, 3).put(0, 1).put(0, 1)  # still_picture, reduced_still_picture_header
    w.put(1 if timing else 0, 1)
    if timing:
        units, scale, ticks = timing
        w.put(units, 32).put(scale, 32).put(1, 1).uvlc(ticks - 1)
        w.put(1 if decoder_model else 0, 1)
        if decoder_model:
            w.put(9, 5).put(1, 32).put(0, 5).put(0, 5)  # buffer_delay_length_minus_1 = 9
    w.put(1, 1)  # initial_display_delay_present_flag
    w.put(1, 5)  # two operating points
    for index in range(2):
        w.put(0x101 if index == 0 else 0, 12).put(level if index == 0 else 31, 5)
        if (level if index == 0 else 31) > 7:
            w.put(tier if index == 0 else 0, 1)
        if timing and decoder_model:
            w.put(1, 1).put(0, 10).put(0, 10).put(0, 1)
        w.put(1, 1).put(3, 4)
    bits = max(width - 1, height - 1).bit_length()
    w.put(bits - 1, 4).put(bits - 1, 4).put(width - 1, bits).put(height - 1, bits)
    w.put(0, 20)  # the rest of the header, not read
    return obu(OBU_SEQUENCE_HEADER, w.bytes())


# -- real clip -------------------------------------------------------------------------------------


def test_real_record_from_svt_av1_gives_codec_string_and_picture_size() -> None:
    frames = codec_clip("av1", None, seconds=1.0)
    config = parse_av1_config(config_frame(frames, FrameKind.VIDEO).payload)
    assert config.codec_string == "av01.0.00M.08"
    assert (config.chroma_subsampling_x, config.chroma_subsampling_y, config.monochrome) == (1, 1, False)
    header = sequence_header_of(config)
    assert header is not None and (header.max_width, header.max_height) == (320, 240)
    first = media_frames(frames, FrameKind.VIDEO)[0]
    kinds = [kind for kind, _, _ in iter_obus(first.payload)]
    assert kinds[0] == OBU_TEMPORAL_DELIMITER and OBU_SEQUENCE_HEADER in kinds
    stripped = strip_temporal_delimiter(first.payload)
    assert [kind for kind, _, _ in iter_obus(stripped)] == kinds[1:]
    assert stripped.obj is first.payload.obj  # a view into the frame's bytes, not a copy


# -- codec strings and records ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ((0, 8, 0, False, False), "av01.0.08M.08"),
        ((0, 12, 1, True, False), "av01.0.12H.10"),
        ((2, 13, 0, True, True), "av01.2.13M.12"),
        ((1, 31, 0, False, False), "av01.1.31M.08"),
    ],
)
def test_codec_string_spells_profile_level_tier_and_depth(fields: tuple, expected: str) -> None:
    profile, level, tier, high, twelve = fields
    assert Av1Config(profile, level, tier, high, twelve, False, 1, 1, 0, b"").codec_string == expected


@pytest.mark.parametrize("depth", [8, 10, 12])
def test_built_record_round_trips(depth: int) -> None:
    header = sequence_header(1920, 1080, profile=2 if depth == 12 else 0, level=12, tier=1)
    config = parse_av1_config(build_av1_config(header, bit_depth=depth))
    assert (config.seq_profile, config.seq_level_idx, config.seq_tier, config.bit_depth) == (
        2 if depth == 12 else 0, 12, 1, depth,
    )
    assert config.config_obus == header


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x81\x00", "truncated"),
        (b"\x01\x00\x0c\x00", "must be 0x81"),
        (b"\x82\x00\x0c\x00", "must be 0x81"),
        (b"\x81\x60\x0c\x00", "seq_profile 3"),
        (b"\x81\x00\x0c\x00\x0a\x20\x00", "claims 32 bytes"),
        (b"\x81\x00\x0c\x00\x8a\x00", "forbidden bit"),
    ],
)
def test_malformed_records_raise_media_error(data: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        parse_av1_config(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_as_a_record_give_a_config_or_media_error(data: bytes) -> None:
    try:
        config = parse_av1_config(data)
        sequence_header_of(config)
    except MediaError:
        pass


# -- sequence headers ------------------------------------------------------------------------------


def test_sequence_header_with_timing_info_gives_the_frame_rate() -> None:
    header = parse_sequence_header_obu(sequence_header(1280, 720, timing=(1001, 60000, 2), decoder_model=True))
    assert (header.max_width, header.max_height, header.seq_level_idx) == (1280, 720, 8)
    assert header.frame_rate == pytest.approx(29.97, abs=0.01)


def test_reduced_still_picture_header_is_read() -> None:
    w = BitWriter().put(0, 3).put(1, 1).put(1, 1).put(5, 5)  # still picture, reduced header, level 5
    w.put(9, 4).put(9, 4).put(639, 10).put(479, 10).put(0, 8)
    header = parse_sequence_header_obu(obu(OBU_SEQUENCE_HEADER, w.bytes()))
    assert (header.still_picture, header.seq_level_idx, header.max_width, header.max_height) == (True, 5, 640, 480)


def test_sequence_header_errors_name_the_field() -> None:
    with pytest.raises(MediaError, match="not a sequence header"):
        parse_sequence_header_obu(obu(OBU_FRAME, b"\x00"))
    with pytest.raises(MediaError, match="truncated"):
        parse_sequence_header_obu(obu(OBU_SEQUENCE_HEADER, b"\x00"))
    with pytest.raises(MediaError, match="empty"):
        parse_sequence_header_obu(b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_random_sequence_headers_give_a_size_or_media_error(payload: bytes) -> None:
    try:
        header = parse_sequence_header_obu(obu(OBU_SEQUENCE_HEADER, payload))
    except MediaError:
        return
    assert header.max_width >= 1 and header.max_height >= 1


# -- OBU framing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**32 - 1])
def test_leb128_round_trips(value: int) -> None:
    encoded = leb128(value)
    assert read_leb128(b"x" + encoded, 1) == (value, 1 + len(encoded))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x80", "truncated"),
        (b"\x80" * 8 + b"\x01", "past 8 bytes"),
        (leb128(2**32), r"larger than 2\^32 - 1"),
    ],
)
def test_bad_leb128_raises_media_error(data: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        read_leb128(data, 0)


def test_obus_are_split_with_extensions_and_an_unsized_last_one() -> None:
    data = obu(OBU_TEMPORAL_DELIMITER, b"") + obu(OBU_FRAME, b"abc", extension=0x28) + obu(OBU_FRAME, b"tail", sized=False)
    found = [(kind, bytes(whole), bytes(payload)) for kind, whole, payload in iter_obus(data)]
    assert found == [
        (OBU_TEMPORAL_DELIMITER, b"\x12\x00", b""),
        (OBU_FRAME, b"\x36\x28\x03abc", b"abc"),
        (OBU_FRAME, b"\x30tail", b"tail"),
    ]


def test_temporal_delimiters_are_stripped_only_at_the_start() -> None:
    frame = obu(OBU_FRAME, b"xyz")
    assert bytes(strip_temporal_delimiter(memoryview(obu(OBU_TEMPORAL_DELIMITER, b"") + frame))) == frame
    with_extension = obu(OBU_TEMPORAL_DELIMITER, b"", extension=0) + frame
    assert bytes(strip_temporal_delimiter(memoryview(with_extension))) == frame
    assert bytes(strip_temporal_delimiter(memoryview(frame))) == frame
    with pytest.raises(MediaError, match="temporal delimiter claims"):
        strip_temporal_delimiter(memoryview(b"\x12\x05\x00"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_temporal_units_split_or_raise_media_error(data: bytes) -> None:
    try:
        total = sum(len(whole) for _, whole, _ in iter_obus(data))
    except MediaError:
        return
    assert total == len(data)
