"""VP9: the VPCodecConfigurationRecord (vpcC) an Enhanced RTMP vp09 sequence start carries, and the picture
size read from a keyframe's uncompressed header. Pure.

The record in FLV is the vpcC box's payload, version and flags first (as ffmpeg's FLV and MP4 muxers write
it), so an fMP4 sample entry wraps it in a box unchanged:

    version (8) = 1 | flags (24) = 0 | profile (8) | level (8)
    | bitDepth (4) chromaSubsampling (3) videoFullRangeFlag (1)
    | colourPrimaries (8) | transferCharacteristics (8) | matrixCoefficients (8)
    | codecInitializationDataSize (16) = 0

References: VP Codec ISO Media File Format Binding v1.0 (vpcC, the "vp09.PP.LL.DD" codecs string);
VP9 Bitstream Specification v0.6, 6.2 (uncompressed header: frame marker, profile, sync code, colour
config, frame size).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MediaError

# (level, max luma picture size, max luma sample rate), Annex A.
_LEVELS = (
    (10, 36864, 829440), (11, 73728, 2764800), (20, 122880, 4608000), (21, 245760, 9216000),
    (30, 552960, 20736000), (31, 983040, 36864000), (40, 2228224, 83558400), (41, 2228224, 160432128),
    (50, 8912896, 311951360), (51, 8912896, 588251136), (52, 8912896, 1176502272),
    (60, 35651584, 1176502272), (61, 35651584, 2353004544), (62, 35651584, 4706009088),
)
_SYNC_CODE = 0x498342
_CS_RGB = 7
CHROMA_420_COLOCATED = 1


@dataclass(frozen=True, slots=True)
class Vp9Config:
    profile: int
    level: int
    bit_depth: int
    chroma_subsampling: int
    full_range: bool
    colour_primaries: int
    transfer_characteristics: int
    matrix_coefficients: int

    @property
    def codec_string(self) -> str:
        """RFC 6381 codecs parameter in its short form: vp09.PP.LL.DD."""
        return f"vp09.{self.profile:02d}.{self.level:02d}.{self.bit_depth:02d}"


def level_for(width: int, height: int, fps: float) -> int:
    """The lowest level whose picture size and sample rate hold this picture at this rate."""
    size = width * height
    for level, max_size, max_rate in _LEVELS:
        if size <= max_size and size * fps <= max_rate:
            return level
    return _LEVELS[-1][0]


def build_vpcc(width: int, height: int, fps: float, bit_depth: int = 8) -> bytes:
    """A record for profile 0 4:2:0 (chroma co-sited with luma), limited range, colours unspecified (2)."""
    return bytes((
        1, 0, 0, 0, 0, level_for(width, height, fps), (bit_depth << 4) | (CHROMA_420_COLOCATED << 1), 2, 2, 2, 0, 0,
    ))


def parse_vpcc(record: bytes | memoryview) -> Vp9Config:
    """Parse a vpcC record (version 1, flags first). Raises MediaError when it is not one."""
    data = bytes(record)
    if len(data) < 12:
        raise MediaError(f"VP9 configuration record of {len(data)} bytes is truncated; it needs 12")
    if data[0] != 1:
        raise MediaError(f"VP9 configuration record version {data[0]} is unknown; only 1 exists")
    bit_depth = data[6] >> 4
    if bit_depth not in (8, 10, 12) or data[4] > 3:
        raise MediaError(f"VP9 configuration record: profile {data[4]}, bit depth {bit_depth} are invalid")
    return Vp9Config(
        profile=data[4], level=data[5], bit_depth=bit_depth, chroma_subsampling=(data[6] >> 1) & 0x07,
        full_range=bool(data[6] & 1), colour_primaries=data[7], transfer_characteristics=data[8],
        matrix_coefficients=data[9],
    )


def keyframe_size(frame: bytes | memoryview) -> tuple[int, int] | None:
    """The picture size a VP9 keyframe declares, or None for a frame that is not a keyframe.

    Raises MediaError for data that is not a VP9 frame.
    """
    bits = _Bits(frame)
    if bits.u(2) != 2:
        raise MediaError("not a VP9 frame: its frame marker is not 2")
    profile = bits.u(1) | (bits.u(1) << 1)
    if profile == 3:
        bits.u(1)
    if bits.u(1):  # show_existing_frame
        return None
    if bits.u(1) != 0:  # frame_type: 0 is a keyframe
        return None
    bits.u(2)  # show_frame, error_resilient_mode
    if bits.u(24) != _SYNC_CODE:
        raise MediaError("VP9 keyframe without its sync code")
    if profile >= 2:
        bits.u(1)  # ten_or_twelve_bit
    if bits.u(3) != _CS_RGB:
        bits.u(1)  # color_range
        if profile in (1, 3):
            bits.u(3)  # subsampling_x, subsampling_y, reserved
    elif profile in (1, 3):
        bits.u(1)
    return bits.u(16) + 1, bits.u(16) + 1


class _Bits:
    def __init__(self, data: bytes | memoryview) -> None:
        self._data = data
        self._pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self._pos >> 3
            if byte >= len(self._data):
                raise MediaError("VP9 frame header is truncated")
            value = (value << 1) | ((self._data[byte] >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value
