"""HEVC (H.265) helpers: the decoder configuration record, the SPS picture size, Annex B for MPEG-TS.

Enhanced RTMP carries HEVC the MP4 way, as H.264 is carried: a sequence header holding an
HEVCDecoderConfigurationRecord ("hvcC", ISO/IEC 14496-15 8.3.3.1) with arrays of VPS, SPS and PPS
NAL units, then access units of length-prefixed NAL units. fMP4 uses both as they are (the record
becomes the hvcC box of an hvc1 sample entry). MPEG-TS wants Annex B instead (ITU-T H.265 annex B,
7.4.2.4.4): an access unit delimiter (NAL type 35) first, the VPS, SPS and PPS again before every
IRAP picture, NAL units behind start codes.

What differs from H.264: NAL unit headers are two bytes (type in bits 1-6 of the first), the record
has a 23-byte fixed part and typed arrays, and the codec string (RFC 6381 via ISO/IEC 14496-15
annex E) spells out profile space, compatibility flags, tier, level and constraint bytes:
"hvc1.1.6.L93.B0" is Main profile, level 3.1, Main tier, progressive frame-only source.

Parsers take bytes from a publisher: they check every length before slicing and raise MediaError
naming the field, never IndexError; loops have spec bounds. NAL framing and the exp-Golomb bit
reader are shared with h264.py (same length-prefix framing, same RBSP syntax).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import MediaError
from .h264 import START_CODE, _BitReader, iter_nal_units, unescape_rbsp

# NAL unit types (ITU-T H.265 table 7-1) the server looks at.
NAL_IRAP_FIRST = 16  # BLA_W_LP; IRAP pictures are types 16..23 (IDR 19, 20; CRA 21)
NAL_IRAP_LAST = 23
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35

# An access unit delimiter: NAL header type 35, layer 0, temporal id 1; pic_type 2 (I, P and B
# slices may follow) and the RBSP stop bit.
AUD_NAL = b"\x46\x01\x50"
ANNEXB_AUD = START_CODE + AUD_NAL

HVCC_FIXED_SIZE = 23
# Level 6.2 allows 35 651 584 luma samples; sqrt(8 * MaxLumaPs) bounds either side (A.4.1).
MAX_PICTURE_SIDE = 16888
_PROFILE_SPACE = ("", "A", "B", "C")
# (SubWidthC, SubHeightC) by chroma_format_idc (table 6-1).
_CHROMA_SUBSAMPLING = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}


def nal_type(nal: bytes | memoryview) -> int:
    """The nal_unit_type of a NAL unit (its first header byte, bits 1-6)."""
    return (nal[0] >> 1) & 0x3F


@dataclass(frozen=True, slots=True)
class HevcConfig:
    """An HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1), as an RTMP sequence header carries it."""

    profile_space: int
    """general_profile_space: 0 for every profile in use."""
    tier: int
    """general_tier_flag: 0 Main tier, 1 High tier."""
    profile_idc: int
    """general_profile_idc: 1 Main, 2 Main 10, 3 Main Still Picture, 4 range extensions."""
    compat_flags: int
    """general_profile_compatibility_flags, 32 bits, flag 0 first (most significant)."""
    constraint_flags: bytes
    """general_constraint_indicator_flags: the 6 bytes starting with progressive_source_flag."""
    level_idc: int
    """general_level_idc: 30 x the level, e.g. 93 for level 3.1."""
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    nal_length_size: int
    """Bytes in each NAL unit length prefix of the access units: 1, 2 or 4."""
    vps: tuple[bytes, ...]
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]

    @property
    def codec_string(self) -> str:
        """The RFC 6381 codecs parameter for an hvc1 track, e.g. "hvc1.1.6.L93.B0" (14496-15 E.3)."""
        compat = int(f"{self.compat_flags:032b}"[::-1], 2)  # written bit-reversed
        tier = "H" if self.tier else "L"
        text = f"hvc1.{_PROFILE_SPACE[self.profile_space]}{self.profile_idc}.{compat:X}.{tier}{self.level_idc}"
        # Constraint bytes in hex, trailing zero bytes left out.
        return "".join([text, *(f".{b:X}" for b in self.constraint_flags.rstrip(b"\x00"))])

    def annexb_parameter_sets(self) -> bytes:
        """VPS, SPS and PPS behind start codes, ready to put before an IRAP picture."""
        return b"".join(START_CODE + nal for nal in (*self.vps, *self.sps, *self.pps))


@dataclass(frozen=True, slots=True)
class HevcSpsInfo:
    """What an HEVC sequence parameter set says about the pictures (ITU-T H.265 7.3.2.2)."""

    width: int
    """Displayed width in luma samples, after the conformance window."""
    height: int
    profile_idc: int
    tier: int
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    coded_width: int
    """pic_width_in_luma_samples, before the conformance window."""
    coded_height: int


# -- HEVCDecoderConfigurationRecord ----------------------------------------------------------------


def parse_hevc_config(record: bytes | memoryview) -> HevcConfig:
    """Parse an HEVCDecoderConfigurationRecord (an HEVC RTMP sequence header's payload).

    NAL unit arrays of types other than VPS, SPS and PPS (SEI) are skipped; trailing bytes after
    the last array are ignored, as decoders ignore them.
    """
    data = bytes(record)
    n = len(data)
    if n < HVCC_FIXED_SIZE:
        raise MediaError(
            f"HEVC decoder configuration record of {n} bytes is truncated; its fixed part is {HVCC_FIXED_SIZE}"
        )
    if data[0] != 1:
        raise MediaError(f"HEVC decoder configuration record version {data[0]} is unknown; only 1 exists")
    length_size = (data[21] & 0x03) + 1
    if length_size == 3:
        raise MediaError("HEVC decoder configuration record has lengthSizeMinusOne 2; it must be 0, 1 or 3")
    arrays: dict[int, list[bytes]] = {NAL_VPS: [], NAL_SPS: [], NAL_PPS: []}
    pos = HVCC_FIXED_SIZE
    for index in range(data[22]):
        if pos + 3 > n:
            raise MediaError(
                f"HEVC decoder configuration record is truncated in the header of NAL array {index + 1} of {data[22]}"
            )
        kind = data[pos] & 0x3F
        count = (data[pos + 1] << 8) | data[pos + 2]
        pos += 3
        for unit in range(count):
            if pos + 2 > n:
                raise MediaError(
                    f"HEVC decoder configuration record is truncated in the length of NAL unit {unit + 1} "
                    f"of {count} in array {index + 1}"
                )
            size = (data[pos] << 8) | data[pos + 1]
            pos += 2
            if size < 2 or pos + size > n:
                raise MediaError(
                    f"HEVC decoder configuration record: NAL unit {unit + 1} of array {index + 1} claims "
                    f"{size} bytes but {n - pos} remain (a NAL unit has at least its 2-byte header)"
                )
            if kind in arrays:
                arrays[kind].append(data[pos : pos + size])
            pos += size
    for kind, name in ((NAL_VPS, "VPS"), (NAL_SPS, "SPS"), (NAL_PPS, "PPS")):
        if not arrays[kind]:
            raise MediaError(f"HEVC decoder configuration record holds no {name}; the decoder cannot start")
    return HevcConfig(
        profile_space=data[1] >> 6,
        tier=(data[1] >> 5) & 1,
        profile_idc=data[1] & 0x1F,
        compat_flags=int.from_bytes(data[2:6], "big"),
        constraint_flags=data[6:12],
        level_idc=data[12],
        chroma_format_idc=data[16] & 0x03,
        bit_depth_luma=(data[17] & 0x07) + 8,
        bit_depth_chroma=(data[18] & 0x07) + 8,
        nal_length_size=length_size,
        vps=tuple(arrays[NAL_VPS]),
        sps=tuple(arrays[NAL_SPS]),
        pps=tuple(arrays[NAL_PPS]),
    )


def build_hevc_config(
    vps: Sequence[bytes], sps: Sequence[bytes], pps: Sequence[bytes], nal_length_size: int = 4
) -> bytes:
    """Build an HEVCDecoderConfigurationRecord from parameter set NAL units (headers included).

    Profile, tier, level, chroma format and bit depths come from the first SPS. The arrays are
    marked complete (every parameter set is in the record), as an hvc1 sample entry requires.
    """
    if not vps or not sps or not pps:
        raise MediaError("an HEVC decoder configuration record needs at least one VPS, SPS and PPS")
    if nal_length_size not in (1, 2, 4):
        raise MediaError(f"NAL length size {nal_length_size} is invalid; hvcC allows 1, 2 or 4")
    info = parse_hevc_sps(sps[0])
    r = _BitReader(unescape_rbsp(sps[0][2:]), "SPS")
    r.u(8, "sps_video_parameter_set_id and sps_max_sub_layers_minus1")
    general = r.u(8, "general profile")
    compat = r.u(32, "general_profile_compatibility_flags")
    constraints = r.u(48, "general constraint flags")
    out = bytearray((1, general))
    out += compat.to_bytes(4, "big") + constraints.to_bytes(6, "big")
    out += bytes(
        (
            info.level_idc,
            0xF0, 0x00,  # min_spatial_segmentation_idc 0
            0xFC,  # parallelismType 0 (unknown)
            0xFC | info.chroma_format_idc,
            0xF8 | (info.bit_depth_luma - 8),
            0xF8 | (info.bit_depth_chroma - 8),
            0, 0,  # avgFrameRate unspecified
            0x0C | (nal_length_size - 1),  # constantFrameRate 0, numTemporalLayers 1, temporalIdNested 1
            3,
        )
    )
    for kind, units in ((NAL_VPS, vps), (NAL_SPS, sps), (NAL_PPS, pps)):
        if len(units) > 0xFFFF:
            raise MediaError(f"{len(units)} NAL units of type {kind} do not fit one hvcC array")
        out += bytes((0x80 | kind,)) + len(units).to_bytes(2, "big")
        for nal in units:
            if len(nal) > 0xFFFF:
                raise MediaError(f"NAL unit of {len(nal)} bytes does not fit hvcC's 16-bit length")
            out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


# -- Sequence parameter set ------------------------------------------------------------------------


def parse_hevc_sps(sps: bytes | memoryview) -> HevcSpsInfo:
    """Parse an HEVC SPS NAL unit (2-byte header included) up to its bit depths (7.3.2.2.1)."""
    if len(sps) < 4:
        raise MediaError(f"HEVC SPS of {len(sps)} bytes is truncated; it needs at least 4")
    kind = nal_type(sps)
    if kind != NAL_SPS:
        raise MediaError(f"NAL unit type {kind} is not an HEVC SPS (33)")
    r = _BitReader(unescape_rbsp(sps[2:]), "HEVC SPS")
    r.u(4, "sps_video_parameter_set_id")
    max_sub_layers_minus1 = r.u(3, "sps_max_sub_layers_minus1")
    if max_sub_layers_minus1 > 6:
        raise MediaError(
            f"HEVC SPS: sps_max_sub_layers_minus1 is {max_sub_layers_minus1}; the largest valid value is 6"
        )
    r.flag("sps_temporal_id_nesting_flag")
    # profile_tier_level(1, sps_max_sub_layers_minus1), 7.3.3
    r.u(2, "general_profile_space")
    tier = r.u(1, "general_tier_flag")
    profile_idc = r.u(5, "general_profile_idc")
    r.u(32, "general_profile_compatibility_flags")
    r.u(48, "general constraint flags")
    level_idc = r.u(8, "general_level_idc")
    present = [(r.flag("sub_layer_profile_present_flag"), r.flag("sub_layer_level_present_flag"))
               for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1:
        r.u(2 * (8 - max_sub_layers_minus1), "reserved_zero_2bits")
    for profile_present, level_present in present:
        if profile_present:
            r.u(88, "sub-layer profile")
        if level_present:
            r.u(8, "sub_layer_level_idc")
    r.ue("sps_seq_parameter_set_id", 15)
    chroma_format_idc = r.ue("chroma_format_idc", 3)
    separate_colour_plane = chroma_format_idc == 3 and r.flag("separate_colour_plane_flag")
    coded_width = r.ue("pic_width_in_luma_samples", MAX_PICTURE_SIDE)
    coded_height = r.ue("pic_height_in_luma_samples", MAX_PICTURE_SIDE)
    left = right = top = bottom = 0
    if r.flag("conformance_window_flag"):
        left = r.ue("conf_win_left_offset", MAX_PICTURE_SIDE)
        right = r.ue("conf_win_right_offset", MAX_PICTURE_SIDE)
        top = r.ue("conf_win_top_offset", MAX_PICTURE_SIDE)
        bottom = r.ue("conf_win_bottom_offset", MAX_PICTURE_SIDE)
    bit_depth_luma = 8 + r.ue("bit_depth_luma_minus8", 8)
    bit_depth_chroma = 8 + r.ue("bit_depth_chroma_minus8", 8)
    # Conformance window offsets count chroma samples (7-1, 7-2; ChromaArrayType 0 when separate planes).
    sub_width, sub_height = _CHROMA_SUBSAMPLING[0 if separate_colour_plane else chroma_format_idc]
    width = coded_width - sub_width * (left + right)
    height = coded_height - sub_height * (top + bottom)
    if not (0 < width <= MAX_PICTURE_SIDE and 0 < height <= MAX_PICTURE_SIDE):
        raise MediaError(
            f"HEVC SPS conformance window leaves a {width}x{height} picture out of {coded_width}x{coded_height}; "
            "the SPS is corrupt"
        )
    return HevcSpsInfo(
        width=width, height=height, profile_idc=profile_idc, tier=tier, level_idc=level_idc,
        chroma_format_idc=chroma_format_idc, bit_depth_luma=bit_depth_luma, bit_depth_chroma=bit_depth_chroma,
        coded_width=coded_width, coded_height=coded_height,
    )


# -- Annex B for MPEG-TS ---------------------------------------------------------------------------


def access_unit_to_annexb(
    payload: bytes | memoryview,
    nal_length_size: int,
    parameter_sets: bytes = b"",
    keyframe: bool = False,
) -> list[bytes | memoryview]:
    """One length-prefixed HEVC access unit as Annex B pieces the way MPEG-TS wants it, for the caller to join.

    The result starts with an access unit delimiter (any the publisher sent is dropped: there must
    be exactly one, first). For a keyframe, `parameter_sets` (HevcConfig.annexb_parameter_sets)
    follows the AUD unless the access unit carries its own VPS, SPS and PPS.
    """
    nals = list(iter_nal_units(payload, nal_length_size))
    pieces: list[bytes | memoryview] = [ANNEXB_AUD]
    if keyframe and parameter_sets:
        types = {nal_type(nal) for nal in nals}
        if not {NAL_VPS, NAL_SPS, NAL_PPS} <= types:
            pieces.append(parameter_sets)
    for nal in nals:
        if nal_type(nal) == NAL_AUD:
            continue
        pieces.append(START_CODE)
        pieces.append(nal)
    return pieces
