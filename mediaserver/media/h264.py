"""H.264 (AVC) helpers: decoder configuration records, SPS, and NAL unit framing.

RTMP and FLV carry H.264 the MP4 way: a sequence header holding an AVCDecoderConfigurationRecord
("avcC", ISO/IEC 14496-15 5.3.3.1) and access units made of length-prefixed NAL units ("AVCC").
MPEG-TS and raw elementary streams want Annex B instead: NAL units behind 00 00 00 01 start codes,
with an access unit delimiter (AUD) first and the SPS/PPS repeated before each IDR picture
(ITU-T H.264 annex B, 7.4.1.2.3). This module converts between the two and reads the few SPS fields
the server reports (size, profile, level, frame rate).

Every parser here takes bytes from a publisher, so every parser is bounded: it reads only what the
syntax allows, checks lengths before slicing, and raises MediaError naming the field that is wrong,
never IndexError. The SPS reader does bounded work whatever its input: each syntax element has a
maximum size and the loops have spec limits.

Nothing here copies NAL unit payloads more than once: iteration yields memoryviews, and the Annex B
writers return lists of pieces for the caller to join once with its own headers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import MediaError

# NAL unit types (ITU-T H.264 table 7-1) the server looks at.
NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_END_OF_SEQUENCE = 10
NAL_SPS_EXT = 13

START_CODE = b"\x00\x00\x00\x01"
# An access unit delimiter with primary_pic_type 7 ("any slice type"), as x264 and ffmpeg write it.
AUD_NAL = b"\x09\xf0"
ANNEXB_AUD = START_CODE + AUD_NAL

# profile_idc values whose SPS carries chroma_format_idc, bit depths and scaling lists (7.3.2.1.1).
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# (SubWidthC, SubHeightC) by chroma_format_idc (table 6-1); 0 is monochrome.
_CHROMA_SUBSAMPLING = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}
# Sample aspect ratios by aspect_ratio_idc (table E-1); 255 is Extended_SAR.
_SAR_TABLE = (
    (0, 0), (1, 1), (12, 11), (10, 11), (16, 11), (40, 33), (24, 11), (20, 11), (32, 11),
    (80, 33), (18, 11), (15, 11), (64, 33), (160, 99), (4, 3), (3, 2), (2, 1),
)
# The largest picture side any H.264 level allows: sqrt(8 * MaxFS) = 1055 macroblocks at level 6.2
# (A.3.1 f, table A-1). Anything bigger is a corrupt SPS, not a picture.
MAX_PICTURE_SIDE = 1055 * 16


@dataclass(frozen=True, slots=True)
class AvcConfig:
    """An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1), as an RTMP sequence header carries it."""

    profile: int
    """AVCProfileIndication (profile_idc of the SPS)."""
    compat: int
    """profile_compatibility (the constraint_set flags byte)."""
    level: int
    """AVCLevelIndication (level_idc, e.g. 31 for level 3.1)."""
    nal_length_size: int
    """Bytes in each NAL unit length prefix of the access units: 1, 2 or 4."""
    sps: tuple[bytes, ...]
    """Sequence parameter set NAL units, header byte included."""
    pps: tuple[bytes, ...]
    """Picture parameter set NAL units, header byte included."""

    @property
    def codec_string(self) -> str:
        """The RFC 6381 codecs parameter, e.g. "avc1.64001f", for HLS CODECS and DASH @codecs."""
        return f"avc1.{self.profile:02x}{self.compat:02x}{self.level:02x}"

    def annexb_parameter_sets(self) -> bytes:
        """SPS and PPS behind start codes, ready to put before an IDR picture."""
        return b"".join(START_CODE + nal for nal in (*self.sps, *self.pps))


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """What a sequence parameter set says about the pictures (ITU-T H.264 7.3.2.1.1 and annex E)."""

    width: int
    """Displayed width in pixels, after frame cropping."""
    height: int
    """Displayed height in pixels, after frame cropping (both fields of an interlaced frame)."""
    profile_idc: int
    constraint_flags: int
    """The byte holding constraint_set0..5_flag."""
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    """0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4."""
    bit_depth_luma: int
    bit_depth_chroma: int
    frame_mbs_only: bool
    """False when the stream may code fields (interlaced)."""
    coded_width: int
    """Width in pixels before cropping (a multiple of 16)."""
    coded_height: int
    """Height in pixels before cropping."""
    sar: tuple[int, int] = (1, 1)
    """Sample (pixel) aspect ratio from the VUI; (1, 1) when not signalled, (0, 0) when unspecified."""
    frame_rate: float | None = None
    """Frames per second from the VUI timing info (time_scale / (2 * num_units_in_tick)), if present."""


# -- NAL unit framing ------------------------------------------------------------------------------


def iter_nal_units(payload: bytes | memoryview, nal_length_size: int = 4) -> Iterator[memoryview]:
    """The NAL units of one AVCC access unit, as zero-copy views (header byte included).

    Zero-length NAL units are skipped. Raises MediaError when a length prefix is cut short or claims
    more bytes than the payload holds.
    """
    if nal_length_size not in (1, 2, 4):
        raise MediaError(f"NAL length size {nal_length_size} is invalid; avcC allows 1, 2 or 4")
    view = payload if isinstance(payload, memoryview) else memoryview(payload)
    end = len(view)
    pos = 0
    while pos < end:
        if pos + nal_length_size > end:
            raise MediaError(
                f"AVCC access unit ends inside a NAL length prefix at byte {pos} of {end}; "
                "the frame is truncated or the NAL length size is wrong"
            )
        size = int.from_bytes(view[pos : pos + nal_length_size], "big")
        pos += nal_length_size
        if size > end - pos:
            raise MediaError(
                f"AVCC NAL unit at byte {pos - nal_length_size} claims {size} bytes but only "
                f"{end - pos} remain in the {end}-byte access unit"
            )
        if size:
            yield view[pos : pos + size]
        pos += size


def avcc_to_annexb(payload: bytes | memoryview, nal_length_size: int = 4) -> bytes:
    """Convert one AVCC access unit to Annex B, NAL unit for NAL unit (nothing added or dropped)."""
    pieces: list[bytes | memoryview] = []
    for nal in iter_nal_units(payload, nal_length_size):
        pieces.append(START_CODE)
        pieces.append(nal)
    return b"".join(pieces)


def access_unit_to_annexb(
    payload: bytes | memoryview,
    nal_length_size: int,
    parameter_sets: bytes = b"",
    keyframe: bool = False,
) -> list[bytes | memoryview]:
    """One AVCC access unit as Annex B pieces the way MPEG-TS wants it, for the caller to join.

    The result starts with an access unit delimiter (any AUD the publisher sent is dropped, since
    there must be exactly one, first). For a keyframe, `parameter_sets` (from
    AvcConfig.annexb_parameter_sets) follows the AUD, unless the access unit already carries its
    own SPS and PPS: RTMP sends them once in the sequence header, but a player joining at this IDR
    needs them in band.
    """
    nals = list(iter_nal_units(payload, nal_length_size))
    pieces: list[bytes | memoryview] = [ANNEXB_AUD]
    if keyframe and parameter_sets:
        types = {nal[0] & 0x1F for nal in nals}
        if NAL_SPS not in types or NAL_PPS not in types:
            pieces.append(parameter_sets)
    for nal in nals:
        if nal[0] & 0x1F == NAL_AUD:
            continue
        pieces.append(START_CODE)
        pieces.append(nal)
    return pieces


def iter_annexb_nal_units(data: bytes | memoryview) -> Iterator[memoryview]:
    """The NAL units of an Annex B byte stream (3- or 4-byte start codes), as views into one copy.

    Bytes before the first start code are ignored, as a decoder would (B.2). Trailing zero bytes
    of a NAL unit belong to the next start code and are stripped.
    """
    raw = bytes(data)
    view = memoryview(raw)
    start = raw.find(b"\x00\x00\x01")
    while start != -1:
        nal_start = start + 3
        nxt = raw.find(b"\x00\x00\x01", nal_start)
        nal_end = len(raw) if nxt == -1 else nxt
        while nal_end > nal_start and raw[nal_end - 1] == 0:
            nal_end -= 1
        if nal_end > nal_start:
            yield view[nal_start:nal_end]
        start = nxt


def annexb_to_avcc(data: bytes | memoryview, nal_length_size: int = 4) -> bytes:
    """Convert an Annex B access unit to AVCC with `nal_length_size`-byte length prefixes."""
    if nal_length_size not in (1, 2, 4):
        raise MediaError(f"NAL length size {nal_length_size} is invalid; avcC allows 1, 2 or 4")
    limit = 1 << (8 * nal_length_size)
    pieces: list[bytes | memoryview] = []
    for nal in iter_annexb_nal_units(data):
        if len(nal) >= limit:
            raise MediaError(f"NAL unit of {len(nal)} bytes does not fit a {nal_length_size}-byte length prefix")
        pieces.append(len(nal).to_bytes(nal_length_size, "big"))
        pieces.append(nal)
    return b"".join(pieces)


# -- AVCDecoderConfigurationRecord -----------------------------------------------------------------


def parse_avc_config(record: bytes | memoryview) -> AvcConfig:
    """Parse an AVCDecoderConfigurationRecord (an H.264 RTMP sequence header's payload).

    The High-profile extension after the PPS list (chroma format, bit depths, SPS extensions) is
    not needed to remux and is ignored, as is any trailing padding.
    """
    data = bytes(record)
    n = len(data)
    if n < 7:
        raise MediaError(f"AVC decoder configuration record of {n} bytes is truncated; it needs at least 7")
    if data[0] != 1:
        raise MediaError(f"AVC decoder configuration record version {data[0]} is unknown; only 1 exists")
    nal_length_size = (data[4] & 0x03) + 1
    if nal_length_size == 3:
        raise MediaError("AVC decoder configuration record has lengthSizeMinusOne 2; it must be 0, 1 or 3")
    sps, pos = _read_parameter_sets(data, 6, data[5] & 0x1F, "SPS")
    if pos >= n:
        raise MediaError("AVC decoder configuration record is truncated before its PPS count")
    pps, pos = _read_parameter_sets(data, pos + 1, data[pos], "PPS")
    if not sps:
        raise MediaError("AVC decoder configuration record holds no SPS; the decoder cannot start")
    if not pps:
        raise MediaError("AVC decoder configuration record holds no PPS; the decoder cannot start")
    return AvcConfig(
        profile=data[1], compat=data[2], level=data[3], nal_length_size=nal_length_size, sps=sps, pps=pps
    )


def _read_parameter_sets(data: bytes, pos: int, count: int, what: str) -> tuple[tuple[bytes, ...], int]:
    # `pos` points just after the count byte; each entry is a 16-bit length and a NAL unit.
    found: list[bytes] = []
    n = len(data)
    for index in range(count):
        if pos + 2 > n:
            raise MediaError(f"AVC decoder configuration record is truncated in the length of {what} {index + 1} of {count}")
        size = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if size == 0 or pos + size > n:
            raise MediaError(
                f"AVC decoder configuration record: {what} {index + 1} of {count} claims {size} bytes "
                f"but {n - pos} remain"
            )
        found.append(data[pos : pos + size])
        pos += size
    return tuple(found), pos


def build_avc_config(sps: Sequence[bytes], pps: Sequence[bytes], nal_length_size: int = 4) -> bytes:
    """Build an AVCDecoderConfigurationRecord from parameter set NAL units (header byte included).

    Profile, compatibility and level come from the first SPS. The High-profile extension is left
    out, as most encoders do; decoders read those fields from the SPS itself.
    """
    if not sps or not pps:
        raise MediaError("an AVC decoder configuration record needs at least one SPS and one PPS")
    if nal_length_size not in (1, 2, 4):
        raise MediaError(f"NAL length size {nal_length_size} is invalid; avcC allows 1, 2 or 4")
    if len(sps) > 31 or len(pps) > 255:
        raise MediaError(f"{len(sps)} SPS and {len(pps)} PPS do not fit; avcC allows 31 and 255")
    first = sps[0]
    if len(first) < 4:
        raise MediaError(f"SPS of {len(first)} bytes is too short to hold profile and level")
    out = bytearray((1, first[1], first[2], first[3], 0xFC | (nal_length_size - 1), 0xE0 | len(sps)))
    for nal in sps:
        out += len(nal).to_bytes(2, "big") + nal
    out.append(len(pps))
    for nal in pps:
        out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


# -- Sequence parameter set ------------------------------------------------------------------------


class _BitReader:
    """MSB-first bit reader over an RBSP with exp-Golomb codes (ITU-T H.264 7.2, 9.1)."""

    __slots__ = ("_data", "_pos", "_end", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data) * 8
        self._what = what

    def _truncated(self, field: str) -> MediaError:
        return MediaError(f"{self._what} is truncated: it ends at bit {self._end} while reading {field}")

    def u(self, bits: int, field: str) -> int:
        pos = self._pos
        if pos + bits > self._end:
            raise self._truncated(field)
        value = 0
        data = self._data
        for p in range(pos, pos + bits):
            value = (value << 1) | ((data[p >> 3] >> (7 - (p & 7))) & 1)
        self._pos = pos + bits
        return value

    def flag(self, field: str) -> bool:
        return self.u(1, field) == 1

    def ue(self, field: str, maximum: int = 0xFFFFFFFE) -> int:
        zeros = 0
        while self.u(1, field) == 0:
            zeros += 1
            if zeros > 31:
                raise MediaError(f"{self._what}: {field} has an exp-Golomb code longer than 32 bits")
        value = (1 << zeros) - 1 + (self.u(zeros, field) if zeros else 0)
        if value > maximum:
            raise MediaError(f"{self._what}: {field} is {value}; the largest valid value is {maximum}")
        return value

    def se(self, field: str) -> int:
        k = self.ue(field)
        return (k + 1) // 2 if k & 1 else -(k // 2)


def unescape_rbsp(nal: bytes | memoryview) -> bytes:
    """Remove emulation prevention bytes (00 00 03 -> 00 00, ITU-T H.264 7.4.1)."""
    return bytes(nal).replace(b"\x00\x00\x03", b"\x00\x00")


def parse_sps(sps: bytes | memoryview) -> SpsInfo:
    """Parse a sequence parameter set NAL unit (header byte included) up to the VUI timing info.

    Handles the High profiles' chroma format, bit depths and scaling lists, all three picture order
    count types, field coding (frame_mbs_only_flag 0) and frame cropping.
    """
    if len(sps) < 4:
        raise MediaError(f"SPS of {len(sps)} bytes is truncated; it needs at least 4")
    nal_type = sps[0] & 0x1F
    if nal_type != NAL_SPS:
        raise MediaError(f"NAL unit type {nal_type} is not an SPS (7)")
    r = _BitReader(unescape_rbsp(sps[1:]), "SPS")
    profile_idc = r.u(8, "profile_idc")
    constraint_flags = r.u(8, "constraint flags")
    level_idc = r.u(8, "level_idc")
    sps_id = r.ue("seq_parameter_set_id", 31)
    chroma_format_idc = 1
    separate_colour_plane = False
    bit_depth_luma = bit_depth_chroma = 8
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue("chroma_format_idc", 3)
        if chroma_format_idc == 3:
            separate_colour_plane = r.flag("separate_colour_plane_flag")
        bit_depth_luma = 8 + r.ue("bit_depth_luma_minus8", 6)
        bit_depth_chroma = 8 + r.ue("bit_depth_chroma_minus8", 6)
        r.flag("qpprime_y_zero_transform_bypass_flag")
        if r.flag("seq_scaling_matrix_present_flag"):
            for index in range(8 if chroma_format_idc != 3 else 12):
                if r.flag("seq_scaling_list_present_flag"):
                    _skip_scaling_list(r, 16 if index < 6 else 64)
    r.ue("log2_max_frame_num_minus4", 12)
    poc_type = r.ue("pic_order_cnt_type", 2)
    if poc_type == 0:
        r.ue("log2_max_pic_order_cnt_lsb_minus4", 12)
    elif poc_type == 1:
        r.flag("delta_pic_order_always_zero_flag")
        r.se("offset_for_non_ref_pic")
        r.se("offset_for_top_to_bottom_field")
        for _ in range(r.ue("num_ref_frames_in_pic_order_cnt_cycle", 255)):
            r.se("offset_for_ref_frame")
    r.ue("max_num_ref_frames")
    r.flag("gaps_in_frame_num_value_allowed_flag")
    width_mbs = r.ue("pic_width_in_mbs_minus1", MAX_PICTURE_SIDE // 16 - 1) + 1
    height_map_units = r.ue("pic_height_in_map_units_minus1", MAX_PICTURE_SIDE // 16 - 1) + 1
    frame_mbs_only = r.flag("frame_mbs_only_flag")
    if not frame_mbs_only:
        r.flag("mb_adaptive_frame_field_flag")
    r.flag("direct_8x8_inference_flag")
    coded_width = width_mbs * 16
    coded_height = (2 - frame_mbs_only) * height_map_units * 16
    crop_left = crop_right = crop_top = crop_bottom = 0
    if r.flag("frame_cropping_flag"):
        crop_left = r.ue("frame_crop_left_offset", MAX_PICTURE_SIDE)
        crop_right = r.ue("frame_crop_right_offset", MAX_PICTURE_SIDE)
        crop_top = r.ue("frame_crop_top_offset", MAX_PICTURE_SIDE)
        crop_bottom = r.ue("frame_crop_bottom_offset", MAX_PICTURE_SIDE)
    # Crop offsets count chroma samples (7.4.2.1.1, equations 7-19 to 7-22).
    chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
    if chroma_array_type == 0:
        crop_unit_x, crop_unit_y = 1, 2 - frame_mbs_only
    else:
        sub_width, sub_height = _CHROMA_SUBSAMPLING[chroma_array_type]
        crop_unit_x, crop_unit_y = sub_width, sub_height * (2 - frame_mbs_only)
    width = coded_width - crop_unit_x * (crop_left + crop_right)
    height = coded_height - crop_unit_y * (crop_top + crop_bottom)
    if not (0 < width <= MAX_PICTURE_SIDE and 0 < height <= MAX_PICTURE_SIDE):
        raise MediaError(
            f"SPS frame cropping leaves a {width}x{height} picture out of {coded_width}x{coded_height}; "
            "the SPS is corrupt"
        )
    sar = (1, 1)
    frame_rate = None
    if r.flag("vui_parameters_present_flag"):
        sar, frame_rate = _read_vui_start(r)
    return SpsInfo(
        width=width, height=height, profile_idc=profile_idc, constraint_flags=constraint_flags,
        level_idc=level_idc, sps_id=sps_id, chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma, bit_depth_chroma=bit_depth_chroma, frame_mbs_only=frame_mbs_only,
        coded_width=coded_width, coded_height=coded_height, sar=sar, frame_rate=frame_rate,
    )


def _skip_scaling_list(r: _BitReader, size: int) -> None:
    # 7.3.2.1.1.1: delta-coded until next_scale hits 0 (then the rest repeat the last value).
    last_scale = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            delta = r.se("delta_scale")
            if not -128 <= delta <= 127:
                raise MediaError(f"SPS: delta_scale {delta} is outside -128..127")
            next_scale = (last_scale + delta + 256) % 256
        last_scale = next_scale or last_scale


def _read_vui_start(r: _BitReader) -> tuple[tuple[int, int], float | None]:
    # E.1.1, up to timing_info; the HRD and bitstream restriction fields after it are not needed.
    sar = (1, 1)
    if r.flag("aspect_ratio_info_present_flag"):
        idc = r.u(8, "aspect_ratio_idc")
        if idc == 255:
            sar = (r.u(16, "sar_width"), r.u(16, "sar_height"))
        elif idc < len(_SAR_TABLE):
            sar = _SAR_TABLE[idc]
        else:
            sar = (0, 0)  # reserved values mean "unspecified"
    if r.flag("overscan_info_present_flag"):
        r.flag("overscan_appropriate_flag")
    if r.flag("video_signal_type_present_flag"):
        r.u(4, "video_format and video_full_range_flag")
        if r.flag("colour_description_present_flag"):
            r.u(24, "colour description")
    if r.flag("chroma_loc_info_present_flag"):
        r.ue("chroma_sample_loc_type_top_field", 5)
        r.ue("chroma_sample_loc_type_bottom_field", 5)
    frame_rate = None
    if r.flag("timing_info_present_flag"):
        units = r.u(32, "num_units_in_tick")
        scale = r.u(32, "time_scale")
        r.flag("fixed_frame_rate_flag")
        if units and scale:
            frame_rate = scale / (2 * units)
    return sar, frame_rate


# -- Annex B access units from RTP (WHIP ingest) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnnexBAccessUnit:
    """One Annex B access unit (as an RTP depacketizer yields it) taken apart the way FLV wants it:
    the parameter sets it carries in band apart, the rest as AVCC."""

    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    avcc: bytes
    """The other NAL units (slices, SEI), 4-byte length prefixed; AUDs and end-of-stream markers dropped."""
    idr: bool
    """Holds an IDR slice: a random access point."""


def split_annexb_access_unit(data: bytes | memoryview) -> AnnexBAccessUnit:
    """Split an Annex B access unit into its SPS, PPS and the AVCC of its other NAL units.

    SPS and PPS go into an AVCDecoderConfigurationRecord (a sequence header), not into the frame:
    FLV and MP4 readers expect them there. Raises MediaError for a NAL unit too large for a 4-byte
    length (it cannot be: 4 GiB), never IndexError.
    """
    sps: list[bytes] = []
    pps: list[bytes] = []
    pieces: list[bytes | memoryview] = []
    idr = False
    for nal in iter_annexb_nal_units(data):
        nal_type = nal[0] & 0x1F
        if nal_type == NAL_SPS:
            sps.append(bytes(nal))
        elif nal_type == NAL_PPS:
            pps.append(bytes(nal))
        elif nal_type in (NAL_AUD, NAL_END_OF_SEQUENCE, 11):  # 11: end of stream
            continue
        else:
            if nal_type == NAL_IDR:
                idr = True
            pieces.append(len(nal).to_bytes(4, "big"))
            pieces.append(nal)
    return AnnexBAccessUnit(tuple(sps), tuple(pps), b"".join(pieces), idr)
