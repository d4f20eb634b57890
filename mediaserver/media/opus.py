"""Opus helpers: the OpusHead an Enhanced RTMP sequence start carries, its dOps form, packet durations.

Enhanced RTMP sends Opus with an "OpusHead" identification header (RFC 7845 5.1, little-endian)
as the sequence start, then raw Opus packets. ISOBMFF stores the same facts in an Opus sample
entry's "dOps" box (Opus in ISOBMFF, "Encapsulation of Opus in ISO Base Media File Format" 4.3.2),
big-endian and with version 0. Opus always decodes at 48 kHz, so an Opus track's timescale is
48000 whatever rate the encoder's input had (InputSampleRate is informative only).

A packet's duration is in its TOC byte (RFC 6716 3.1): the configuration gives the frame size
(2.5 to 60 ms), the frame count code says one, two, or a count in the next byte; one packet holds
at most 120 ms. `packet_samples` reads that in a couple of byte operations, so a remuxer can time
every packet exactly rather than trusting millisecond timestamps.

Parsers raise MediaError naming the field that is wrong, never IndexError.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MediaError

SAMPLE_RATE = 48000
OPUS_HEAD_MAGIC = b"OpusHead"
OPUS_HEAD_SIZE = 19
MAX_PACKET_SAMPLES = 5760  # 120 ms at 48 kHz (RFC 6716 3.2.5)

# Samples per frame at 48 kHz by TOC config (RFC 6716 table 2): SILK 10/20/40/60 ms for
# configs 0-11, Hybrid 10/20 ms for 12-15, CELT 2.5/5/10/20 ms for 16-31.
_FRAME_SAMPLES = (
    *(480, 960, 1920, 2880) * 3,
    *(480, 960) * 2,
    *(120, 240, 480, 960) * 4,
)


@dataclass(frozen=True, slots=True)
class OpusConfig:
    """The fields of an OpusHead identification header (RFC 7845 5.1)."""

    channels: int
    """Output channel count."""
    pre_skip: int
    """Samples (at 48 kHz) to discard from the decoder output at the start."""
    input_sample_rate: int
    """The encoder's input rate in Hz; informative, playback is at 48 kHz."""
    output_gain: int
    """Q7.8 dB gain to apply to the output (signed)."""
    mapping_family: int
    """0: mono or stereo; 1: Vorbis channel order (up to 8); 255: unspecified."""
    stream_count: int = 1
    coupled_count: int = 0
    channel_mapping: bytes = b""
    """One byte per output channel; empty for family 0."""

    codec_string = "opus"
    """The codecs parameter for an Opus track in MP4 (HLS CODECS, DASH @codecs)."""

    def dops(self) -> bytes:
        """The OpusSpecificBox payload (dOps, without its box header): version 0, big-endian."""
        out = bytearray((0, self.channels))
        out += self.pre_skip.to_bytes(2, "big")
        out += self.input_sample_rate.to_bytes(4, "big")
        out += self.output_gain.to_bytes(2, "big", signed=True)
        out.append(self.mapping_family)
        if self.mapping_family:
            out += bytes((self.stream_count, self.coupled_count)) + self.channel_mapping
        return bytes(out)


def parse_opus_head(data: bytes | memoryview) -> OpusConfig:
    """Parse an OpusHead identification header, checking what RFC 7845 5.1 requires."""
    raw = bytes(data)
    n = len(raw)
    if n < OPUS_HEAD_SIZE:
        raise MediaError(f"OpusHead of {n} bytes is truncated; it needs at least {OPUS_HEAD_SIZE}")
    if raw[:8] != OPUS_HEAD_MAGIC:
        raise MediaError(f"Opus sequence header starts with {raw[:8]!r}; an OpusHead starts with b'OpusHead'")
    version = raw[8]
    if version >> 4:
        raise MediaError(f"OpusHead version {version} has major version {version >> 4}; only 0 (versions 0-15) exists")
    channels = raw[9]
    if channels == 0:
        raise MediaError("OpusHead has 0 output channels; it needs at least 1")
    family = raw[18]
    if family == 0:
        if channels > 2:
            raise MediaError(f"OpusHead mapping family 0 allows 1 or 2 channels, not {channels}")
        return OpusConfig(
            channels=channels,
            pre_skip=int.from_bytes(raw[10:12], "little"),
            input_sample_rate=int.from_bytes(raw[12:16], "little"),
            output_gain=int.from_bytes(raw[16:18], "little", signed=True),
            mapping_family=0,
            stream_count=1,
            coupled_count=channels - 1,
        )
    if family == 1 and channels > 8:
        raise MediaError(f"OpusHead mapping family 1 allows 1 to 8 channels, not {channels}")
    if n < OPUS_HEAD_SIZE + 2 + channels:
        raise MediaError(
            f"OpusHead of {n} bytes is truncated; mapping family {family} with {channels} channels needs "
            f"{OPUS_HEAD_SIZE + 2 + channels}"
        )
    streams, coupled = raw[19], raw[20]
    if streams == 0 or coupled > streams or streams + coupled > 255:
        raise MediaError(
            f"OpusHead stream count {streams} and coupled count {coupled} are invalid; "
            "need 1 <= streams, coupled <= streams, streams + coupled <= 255"
        )
    mapping = raw[21 : 21 + channels]
    for channel, index in enumerate(mapping):
        if index != 255 and index >= streams + coupled:
            raise MediaError(
                f"OpusHead maps channel {channel} to stream channel {index}; only {streams + coupled} exist"
            )
    return OpusConfig(
        channels=channels,
        pre_skip=int.from_bytes(raw[10:12], "little"),
        input_sample_rate=int.from_bytes(raw[12:16], "little"),
        output_gain=int.from_bytes(raw[16:18], "little", signed=True),
        mapping_family=family,
        stream_count=streams,
        coupled_count=coupled,
        channel_mapping=mapping,
    )


def build_opus_head(config: OpusConfig) -> bytes:
    """The OpusHead (version 1) for `config`; parse_opus_head(build_opus_head(c)) == c."""
    out = bytearray(OPUS_HEAD_MAGIC)
    out += bytes((1, config.channels))
    out += config.pre_skip.to_bytes(2, "little")
    out += config.input_sample_rate.to_bytes(4, "little")
    out += config.output_gain.to_bytes(2, "little", signed=True)
    out.append(config.mapping_family)
    if config.mapping_family:
        out += bytes((config.stream_count, config.coupled_count)) + config.channel_mapping
    return bytes(out)


def packet_samples(packet: bytes | memoryview) -> int:
    """Samples at 48 kHz in one Opus packet, from its TOC byte (RFC 6716 3.1)."""
    if not packet:
        raise MediaError("empty Opus packet; a packet has at least its TOC byte")
    toc = packet[0]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code < 3:
        frames = 2
    else:
        if len(packet) < 2:
            raise MediaError("Opus packet with frame count code 3 lacks its frame count byte")
        frames = packet[1] & 0x3F
        if frames == 0:
            raise MediaError("Opus packet with frame count code 3 holds 0 frames; it needs at least 1")
    samples = frames * _FRAME_SAMPLES[toc >> 3]
    if samples > MAX_PACKET_SAMPLES:
        raise MediaError(f"Opus packet of {frames} frames lasts {samples / 48} ms; a packet holds at most 120 ms")
    return samples
