"""AV1 helpers: the av1C configuration record, OBU framing, and the sequence header's picture size.

Enhanced RTMP carries AV1 as the AV1 ISOBMFF binding stores it: the sequence header message holds
an AV1CodecConfigurationRecord ("av1C", AV1-ISOBMFF 2.3.3: four bytes of profile, level, tier,
bit depth and chroma fields, then configOBUs, normally the sequence header OBU), and each coded
frame is one temporal unit of OBUs in the low-overhead format (every OBU with its size field).

An fMP4 sample is that temporal unit minus its temporal delimiter OBU, which the binding says
samples should not carry (AV1-ISOBMFF 2.4); `strip_temporal_delimiter` drops a leading one
without copying.

The codec string (AV1 codec string spec, "av01.P.LLT.DD") is "av01.0.08M.08": profile 0,
seq_level_idx 8 (level 4.0), Main tier, 8-bit.

Parsers take bytes from a publisher and raise MediaError naming the field, never IndexError. OBU
sizes are LEB128 (at most 8 bytes, values below 2^32, AV1 4.10.5).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import MediaError
from .h264 import _BitReader

OBU_SEQUENCE_HEADER = 1
OBU_TEMPORAL_DELIMITER = 2
OBU_FRAME_HEADER = 3
OBU_TILE_GROUP = 4
OBU_METADATA = 5
OBU_FRAME = 6
OBU_PADDING = 15

AV1C_FIXED_SIZE = 4
MAX_LEB128_BYTES = 8


@dataclass(frozen=True, slots=True)
class Av1Config:
    """An AV1CodecConfigurationRecord (AV1-ISOBMFF 2.3.3)."""

    seq_profile: int
    """0 Main, 1 High, 2 Professional."""
    seq_level_idx: int
    """seq_level_idx[0]: 0 is level 2.0, 8 is 4.0, 31 means no level constraint."""
    seq_tier: int
    high_bitdepth: bool
    twelve_bit: bool
    monochrome: bool
    chroma_subsampling_x: int
    chroma_subsampling_y: int
    chroma_sample_position: int
    config_obus: bytes
    """The configOBUs: normally the sequence header OBU (with its size field)."""

    @property
    def bit_depth(self) -> int:
        if self.twelve_bit:
            return 12
        return 10 if self.high_bitdepth else 8

    @property
    def codec_string(self) -> str:
        """The codecs parameter, e.g. "av01.0.08M.08"."""
        tier = "H" if self.seq_tier else "M"
        return f"av01.{self.seq_profile}.{self.seq_level_idx:02d}{tier}.{self.bit_depth:02d}"


@dataclass(frozen=True, slots=True)
class Av1SequenceHeader:
    """The start of a sequence header OBU (AV1 5.5): profile, levels and the largest picture size."""

    seq_profile: int
    still_picture: bool
    seq_level_idx: int
    """seq_level_idx of operating point 0."""
    seq_tier: int
    max_width: int
    """max_frame_width_minus_1 + 1: the picture width when the size never changes."""
    max_height: int
    frame_rate: float | None = None
    """From timing_info when the stream signals a constant picture interval."""


def read_leb128(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """A LEB128 value at `pos` (AV1 4.10.5); returns (value, position after it)."""
    value = 0
    for i in range(MAX_LEB128_BYTES):
        if pos + i >= len(data):
            raise MediaError(f"AV1 OBU size field is truncated at byte {pos + i} of {len(data)}")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value > 0xFFFFFFFF:
                raise MediaError(f"AV1 OBU size {value} is larger than 2^32 - 1, which the format forbids")
            return value, pos + i + 1
    raise MediaError(f"AV1 OBU size field at byte {pos} runs past {MAX_LEB128_BYTES} bytes")


def iter_obus(data: bytes | memoryview) -> Iterator[tuple[int, memoryview, memoryview]]:
    """(obu_type, whole OBU, OBU payload) for each OBU of a low-overhead temporal unit; zero-copy.

    Every OBU must carry its size field except the last, which may run to the end (AV1-ISOBMFF
    2.4 allows that for the last OBU of a sample).
    """
    view = data if isinstance(data, memoryview) else memoryview(data)
    end = len(view)
    pos = 0
    while pos < end:
        header = view[pos]
        if header & 0x80:
            raise MediaError(f"AV1 OBU at byte {pos} has its forbidden bit set; the data is not AV1")
        kind = (header >> 3) & 0x0F
        body = pos + 1 + ((header >> 2) & 1)  # obu_extension_flag adds a byte
        if body > end:
            raise MediaError(f"AV1 OBU header at byte {pos} is truncated")
        if header & 0x02:  # obu_has_size_field
            size, body = read_leb128(view, body)
            if size > end - body:
                raise MediaError(f"AV1 OBU at byte {pos} claims {size} bytes but {end - body} remain")
        else:
            size = end - body
        yield kind, view[pos : body + size], view[body : body + size]
        pos = body + size


def strip_temporal_delimiter(sample: memoryview) -> memoryview:
    """The temporal unit without its leading temporal delimiter OBU, if it has one; zero-copy."""
    if len(sample) < 2 or (sample[0] >> 3) & 0x0F != OBU_TEMPORAL_DELIMITER or not sample[0] & 0x02:
        return sample
    if sample[0] & 0x04 == 0 and sample[1] == 0:  # the usual 12 00: no extension, size 0
        return sample[2:]
    size, body = read_leb128(sample, 2 if sample[0] & 0x04 else 1)
    if size > len(sample) - body:
        raise MediaError(f"AV1 temporal delimiter claims {size} bytes but {len(sample) - body} remain")
    return sample[body + size :]


# -- AV1CodecConfigurationRecord -------------------------------------------------------------------


def parse_av1_config(record: bytes | memoryview) -> Av1Config:
    """Parse an AV1CodecConfigurationRecord (an AV1 Enhanced RTMP sequence start's payload)."""
    data = bytes(record)
    n = len(data)
    if n < AV1C_FIXED_SIZE:
        raise MediaError(f"AV1 codec configuration record of {n} bytes is truncated; it needs at least 4")
    if data[0] != 0x81:
        raise MediaError(
            f"AV1 codec configuration record starts with {data[0]:#04x}; it must be 0x81 (marker 1, version 1)"
        )
    profile = data[1] >> 5
    if profile > 2:
        raise MediaError(f"AV1 codec configuration record has seq_profile {profile}; valid profiles are 0-2")
    b2 = data[2]
    config = Av1Config(
        seq_profile=profile,
        seq_level_idx=data[1] & 0x1F,
        seq_tier=b2 >> 7,
        high_bitdepth=bool(b2 & 0x40),
        twelve_bit=bool(b2 & 0x20),
        monochrome=bool(b2 & 0x10),
        chroma_subsampling_x=(b2 >> 3) & 1,
        chroma_subsampling_y=(b2 >> 2) & 1,
        chroma_sample_position=b2 & 0x03,
        config_obus=data[4:],
    )
    for _ in iter_obus(config.config_obus):  # the configOBUs must at least be well framed
        pass
    return config


def build_av1_config(sequence_header_obu: bytes, *, bit_depth: int = 8, monochrome: bool = False) -> bytes:
    """An AV1CodecConfigurationRecord around a sequence header OBU (4:2:0 chroma).

    Profile, level and tier come from the sequence header; bit depth and chroma, which sit after
    the part of the header this module reads, are the caller's.
    """
    header = parse_sequence_header_obu(sequence_header_obu)
    if bit_depth not in (8, 10, 12):
        raise MediaError(f"AV1 bit depth {bit_depth} is invalid; it must be 8, 10 or 12")
    b1 = (header.seq_profile << 5) | header.seq_level_idx
    b2 = (
        (header.seq_tier << 7) | (0x40 if bit_depth > 8 else 0) | (0x20 if bit_depth == 12 else 0)
        | (0x10 if monochrome else 0) | 0x0C
    )
    return bytes((0x81, b1, b2, 0)) + sequence_header_obu


# -- Sequence header -------------------------------------------------------------------------------


def sequence_header_of(config: Av1Config) -> Av1SequenceHeader | None:
    """The sequence header in the record's configOBUs, parsed; None when it holds none."""
    for kind, obu, _ in iter_obus(config.config_obus):
        if kind == OBU_SEQUENCE_HEADER:
            return parse_sequence_header_obu(obu)
    return None


def parse_sequence_header_obu(obu: bytes | memoryview) -> Av1SequenceHeader:
    """Parse a sequence header OBU (its header and size field included) up to the maximum frame size."""
    for kind, _, payload in iter_obus(obu):
        if kind != OBU_SEQUENCE_HEADER:
            raise MediaError(f"AV1 OBU type {kind} is not a sequence header (1)")
        return _parse_sequence_header(bytes(payload))
    raise MediaError("AV1 sequence header OBU is empty")


def _parse_sequence_header(payload: bytes) -> Av1SequenceHeader:
    # AV1 5.5.1 sequence_header_obu(), up to max_frame_height_minus_1.
    r = _BitReader(payload, "AV1 sequence header")
    profile = r.u(3, "seq_profile")
    if profile > 2:
        raise MediaError(f"AV1 sequence header has seq_profile {profile}; valid profiles are 0-2")
    still_picture = r.flag("still_picture")
    frame_rate = None
    if r.flag("reduced_still_picture_header"):
        level = r.u(5, "seq_level_idx")
        tier = 0
    else:
        decoder_model_info = False
        buffer_delay_bits = 0
        if r.flag("timing_info_present_flag"):
            units = r.u(32, "num_units_in_display_tick")
            scale = r.u(32, "time_scale")
            if r.flag("equal_picture_interval"):
                ticks = _uvlc(r) + 1
                if units and scale:
                    frame_rate = scale / (units * ticks)
            decoder_model_info = r.flag("decoder_model_info_present_flag")
            if decoder_model_info:
                buffer_delay_bits = r.u(5, "buffer_delay_length_minus_1") + 1
                r.u(32, "num_units_in_decoding_tick")
                r.u(10, "buffer_removal_time_length_minus_1 and frame_presentation_time_length_minus_1")
        initial_display_delay = r.flag("initial_display_delay_present_flag")
        level = tier = 0
        for index in range(r.u(5, "operating_points_cnt_minus_1") + 1):
            r.u(12, "operating_point_idc")
            op_level = r.u(5, "seq_level_idx")
            op_tier = r.u(1, "seq_tier") if op_level > 7 else 0
            if index == 0:
                level, tier = op_level, op_tier
            if decoder_model_info and r.flag("decoder_model_present_for_this_op"):
                r.u(2 * buffer_delay_bits + 1, "operating_parameters_info")
            if initial_display_delay and r.flag("initial_display_delay_present_for_this_op"):
                r.u(4, "initial_display_delay_minus_1")
    width_bits = r.u(4, "frame_width_bits_minus_1") + 1
    height_bits = r.u(4, "frame_height_bits_minus_1") + 1
    width = r.u(width_bits, "max_frame_width_minus_1") + 1
    height = r.u(height_bits, "max_frame_height_minus_1") + 1
    return Av1SequenceHeader(
        seq_profile=profile, still_picture=still_picture, seq_level_idx=level, seq_tier=tier,
        max_width=width, max_height=height, frame_rate=frame_rate,
    )


def _uvlc(r: _BitReader) -> int:
    # 4.10.3: leading zeros, a one, then as many value bits; 32 or more zeros means 2^32 - 1.
    zeros = 0
    while not r.flag("uvlc leading zero"):
        zeros += 1  # bounded: the reader raises at the end of the payload
    if zeros >= 32:
        return 0xFFFFFFFF
    return (1 << zeros) - 1 + (r.u(zeros, "uvlc value") if zeros else 0)
