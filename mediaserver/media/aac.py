"""AAC helpers: the AudioSpecificConfig an RTMP sequence header carries, and ADTS framing.

RTMP and FLV carry AAC the MP4 way: one AudioSpecificConfig ("ASC", ISO/IEC 14496-3 1.6.2.1) in the
sequence header, then raw access units with no framing at all. MPEG-TS carries AAC as ADTS instead
(ISO/IEC 13818-7 6.2 / 14496-3 1.A.2): each raw frame behind a 7-byte header that repeats the
profile, sample rate and channel configuration, so a player can join anywhere.

ADTS can say less than an ASC can: a 2-bit profile (object types 1 to 4), one of the 13 table sample
rates, and channel configurations 1 to 7 (0, a program config element inside the frame, is not
supported here). HE-AAC (SBR) and HE-AACv2 (PS) are written as their AAC-LC core at the core sample
rate, which is how ADTS signals them implicitly; decoders find the SBR data inside the frames.

Parsers raise MediaError naming the field that is wrong, never IndexError.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MediaError

# samplingFrequencyIndex -> Hz (ISO/IEC 14496-3 table 1.18); 13 and 14 are reserved, 15 is "explicit".
SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
EXPLICIT_SAMPLE_RATE = 15
# channelConfiguration -> channel count (table 1.19); 0 means "defined in a program config element".
_CHANNELS = (0, 1, 2, 3, 4, 5, 6, 8)

AOT_AAC_MAIN = 1
AOT_AAC_LC = 2
AOT_SBR = 5
AOT_ER_AAC_LD = 23
AOT_PS = 29
AOT_ER_AAC_ELD = 39
# Object types whose ASC continues with a GASpecificConfig (table 1.15, 4.4.1).
_GA_OBJECT_TYPES = frozenset({1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23})

ADTS_HEADER_SIZE = 7
MAX_ADTS_FRAME = 0x1FFF  # frame_length is 13 bits and counts the header


@dataclass(frozen=True, slots=True)
class AacConfig:
    """The parts of an AudioSpecificConfig a remuxer needs.

    For HE-AAC (explicit SBR/PS signalling) `object_type`, `sample_rate` and `sample_rate_index`
    describe the AAC core, as ADTS wants them; `output_sample_rate` is what the listener hears.
    """

    object_type: int
    """Audio object type of the AAC core: 2 for AAC-LC (also the core of HE-AAC)."""
    sample_rate: int
    """Core sample rate in Hz."""
    sample_rate_index: int
    """Index into SAMPLE_RATES, or 15 when the rate was written out explicitly."""
    channels: int
    """Channel count (8 for 7.1); 0 when a program config element defines the layout."""
    channel_config: int
    """channelConfiguration as written: 0 to 7."""
    frame_samples: int = 1024
    """Samples per channel in one access unit of the core (960 when frameLengthFlag is set)."""
    sbr: bool = False
    ps: bool = False
    output_sample_rate: int = 0
    """Sample rate after SBR; equal to sample_rate without SBR, 0 when not known."""

    @property
    def codec_string(self) -> str:
        """The RFC 6381 codecs parameter, e.g. "mp4a.40.2" (HE-AAC: .5, HE-AACv2: .29)."""
        return f"mp4a.40.{AOT_PS if self.ps else AOT_SBR if self.sbr else self.object_type}"

    @property
    def frame_duration_s(self) -> float:
        """Duration of one access unit in seconds."""
        return self.frame_samples / self.sample_rate


class _Bits:
    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data) * 8

    def u(self, bits: int, field: str) -> int:
        if self._pos + bits > self._end:
            raise MediaError(
                f"AudioSpecificConfig of {self._end // 8} bytes is truncated: it ends while reading {field}"
            )
        value = 0
        data = self._data
        for p in range(self._pos, self._pos + bits):
            value = (value << 1) | ((data[p >> 3] >> (7 - (p & 7))) & 1)
        self._pos += bits
        return value

    def object_type(self) -> int:
        aot = self.u(5, "audioObjectType")
        return 32 + self.u(6, "audioObjectTypeExt") if aot == 31 else aot

    def sample_rate(self, field: str) -> tuple[int, int]:
        index = self.u(4, field)
        if index == EXPLICIT_SAMPLE_RATE:
            rate = self.u(24, "samplingFrequency")
        elif index < len(SAMPLE_RATES):
            rate = SAMPLE_RATES[index]
        else:
            raise MediaError(f"AudioSpecificConfig {field} {index} is reserved; valid values are 0-12 and 15")
        if rate == 0:
            raise MediaError("AudioSpecificConfig gives a sample rate of 0 Hz")
        return index, rate


def parse_audio_specific_config(data: bytes | memoryview) -> AacConfig:
    """Parse an AudioSpecificConfig (an AAC RTMP sequence header's payload)."""
    raw = bytes(data)
    if len(raw) < 2:
        raise MediaError(f"AudioSpecificConfig of {len(raw)} bytes is truncated; it needs at least 2")
    bits = _Bits(raw)
    aot = bits.object_type()
    if aot == 0:
        raise MediaError("AudioSpecificConfig has audio object type 0 (null); the encoder sent no codec")
    index, rate = bits.sample_rate("samplingFrequencyIndex")
    channel_config = bits.u(4, "channelConfiguration")
    if channel_config >= len(_CHANNELS):
        raise MediaError(f"AudioSpecificConfig channelConfiguration {channel_config} is reserved; valid values are 0-7")
    sbr = ps = False
    output_rate = rate
    if aot in (AOT_SBR, AOT_PS):
        # Explicit hierarchical signalling (1.6.5.2): the core follows the SBR extension rate.
        sbr, ps = True, aot == AOT_PS
        _, output_rate = bits.sample_rate("extensionSamplingFrequencyIndex")
        aot = bits.object_type()
    frame_samples = 1024
    if aot in _GA_OBJECT_TYPES or aot == AOT_ER_AAC_ELD:
        short = bits.u(1, "frameLengthFlag")
        if aot in (AOT_ER_AAC_LD, AOT_ER_AAC_ELD):  # low delay: 512 or 480 samples
            frame_samples = 480 if short else 512
        else:
            frame_samples = 960 if short else 1024
    return AacConfig(
        object_type=aot,
        sample_rate=rate,
        sample_rate_index=index,
        channels=_CHANNELS[channel_config],
        channel_config=channel_config,
        frame_samples=frame_samples,
        sbr=sbr,
        ps=ps,
        output_sample_rate=output_rate,
    )


def build_audio_specific_config(config: AacConfig) -> bytes:
    """A minimal AudioSpecificConfig for `config` (core only, with its GASpecificConfig).

    SBR/PS are left implicit, as ADTS leaves them; use the publisher's own bytes where the exact
    signalling matters.
    """
    if not 1 <= config.object_type < 31:
        raise MediaError(f"audio object type {config.object_type} cannot be written by this builder; use 1-30")
    fields: list[tuple[int, int]] = [(config.object_type, 5), (config.sample_rate_index, 4)]
    if config.sample_rate_index == EXPLICIT_SAMPLE_RATE:
        fields.append((config.sample_rate, 24))
    fields.append((config.channel_config, 4))
    if config.object_type in _GA_OBJECT_TYPES:
        # frameLengthFlag, dependsOnCoreCoder 0, extensionFlag 0
        fields.append((1 if config.frame_samples in (960, 480) else 0, 1))
        fields.append((0, 2))
    value = 0
    count = 0
    for field, width in fields:
        value = (value << width) | field
        count += width
    pad = -count % 8
    return (value << pad).to_bytes((count + pad) // 8, "big")


def _check_adts(config: AacConfig) -> None:
    if not 1 <= config.object_type <= 4:
        raise MediaError(
            f"AAC object type {config.object_type} cannot be carried in ADTS, which allows 1-4 "
            "(Main, LC, SSR, LTP; HE-AAC as its LC core)"
        )
    if config.sample_rate_index >= len(SAMPLE_RATES):
        raise MediaError(f"AAC sample rate {config.sample_rate} Hz is not in the table ADTS can signal")
    if config.channel_config == 0:
        raise MediaError("AAC with a program config element (channelConfiguration 0) cannot be written as ADTS here")


def adts_header(config: AacConfig, raw_frame_len: int) -> bytes:
    """The 7-byte ADTS header (no CRC) to put before one raw AAC frame of `raw_frame_len` bytes."""
    _check_adts(config)
    frame_length = raw_frame_len + ADTS_HEADER_SIZE
    if not ADTS_HEADER_SIZE < frame_length <= MAX_ADTS_FRAME:
        raise MediaError(
            f"raw AAC frame of {raw_frame_len} bytes does not fit ADTS; it must be 1..{MAX_ADTS_FRAME - ADTS_HEADER_SIZE}"
        )
    return bytes(
        (
            0xFF,
            0xF1,  # syncword, MPEG-4, layer 0, protection_absent
            ((config.object_type - 1) << 6) | (config.sample_rate_index << 2) | (config.channel_config >> 2),
            ((config.channel_config & 3) << 6) | (frame_length >> 11),
            (frame_length >> 3) & 0xFF,
            ((frame_length & 7) << 5) | 0x1F,  # buffer fullness 0x7FF: variable bit rate
            0xFC,  # one raw data block
        )
    )


@dataclass(frozen=True, slots=True)
class AdtsHeader:
    """A parsed ADTS header."""

    config: AacConfig
    frame_length: int
    """Bytes in the whole ADTS frame, header included."""
    header_size: int
    """7, or 9 when a CRC follows the fixed header."""


def parse_adts_header(data: bytes | memoryview) -> AdtsHeader:
    """Parse the ADTS header at the start of `data`."""
    if len(data) < ADTS_HEADER_SIZE:
        raise MediaError(f"ADTS header of {len(data)} bytes is truncated; it needs 7")
    b = bytes(data[:ADTS_HEADER_SIZE])
    if b[0] != 0xFF or b[1] & 0xF6 != 0xF0:
        raise MediaError(f"bytes {b[:2].hex()} are not an ADTS syncword (fff, layer 0)")
    profile = b[2] >> 6
    index = (b[2] >> 2) & 0x0F
    if index >= len(SAMPLE_RATES):
        raise MediaError(f"ADTS sampling_frequency_index {index} is invalid; it must be 0-12")
    channel_config = ((b[2] & 1) << 2) | (b[3] >> 6)
    frame_length = ((b[3] & 3) << 11) | (b[4] << 3) | (b[5] >> 5)
    header_size = ADTS_HEADER_SIZE if b[1] & 1 else ADTS_HEADER_SIZE + 2
    if frame_length < header_size:
        raise MediaError(f"ADTS frame_length {frame_length} is shorter than its own {header_size}-byte header")
    config = AacConfig(
        object_type=profile + 1,
        sample_rate=SAMPLE_RATES[index],
        sample_rate_index=index,
        channels=_CHANNELS[channel_config],
        channel_config=channel_config,
        output_sample_rate=SAMPLE_RATES[index],
    )
    return AdtsHeader(config=config, frame_length=frame_length, header_size=header_size)
