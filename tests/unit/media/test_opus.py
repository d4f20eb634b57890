"""Opus helpers: OpusHead parsing and building, the dOps form, packet durations from the TOC byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.codec_clips import codec_clip, config_frame, media_frames

from mediaserver.errors import MediaError
from mediaserver.media.frames import FrameKind
from mediaserver.media.opus import OpusConfig, build_opus_head, packet_samples, parse_opus_head


def test_real_opus_head_from_ffmpeg_gives_channels_pre_skip_and_dops() -> None:
    frames = codec_clip(None, "opus", seconds=1.0)
    head = bytes(config_frame(frames, FrameKind.AUDIO).payload)
    config = parse_opus_head(head)
    assert (config.channels, config.pre_skip, config.input_sample_rate, config.mapping_family) == (2, 312, 48000, 0)
    # dOps: version 0, then the same fields big-endian.
    assert config.dops() == bytes.fromhex("00 02 0138 0000bb80 0000 00")
    assert config.codec_string == "opus"
    assert all(packet_samples(f.payload) == 960 for f in media_frames(frames, FrameKind.AUDIO))  # 20 ms packets


ROUND_TRIPS = [
    OpusConfig(1, 0, 0, 0, 0, 1, 0),
    OpusConfig(2, 3840, 44100, -256, 0, 1, 1),
    OpusConfig(6, 312, 48000, 0, 1, 4, 2, bytes((0, 4, 1, 2, 3, 5))),
    OpusConfig(3, 312, 48000, 0, 255, 3, 0, bytes((0, 1, 255))),
]


@pytest.mark.parametrize("config", ROUND_TRIPS)
def test_opus_head_round_trips(config: OpusConfig) -> None:
    head = build_opus_head(config)
    assert head[:9] == b"OpusHead\x01" and parse_opus_head(head) == config
    dops = config.dops()
    assert dops[0] == 0 and dops[1] == config.channels
    assert int.from_bytes(dops[2:4], "big") == config.pre_skip
    assert int.from_bytes(dops[8:10], "big", signed=True) == config.output_gain
    assert len(dops) == 11 + (2 + config.channels if config.mapping_family else 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"OpusHead\x01\x02", "truncated"),
        (b"OpusTags" + bytes(11), "OpusHead starts"),
        (b"OpusHead\x10\x02" + bytes(9), "major version 1"),
        (b"OpusHead\x01\x00" + bytes(9), "0 output channels"),
        (b"OpusHead\x01\x03" + bytes(9), "family 0 allows 1 or 2 channels"),
        (b"OpusHead\x01\x09" + bytes(8) + b"\x01" + bytes(11), "family 1 allows 1 to 8"),
        (b"OpusHead\x01\x02" + bytes(8) + b"\x01\x01\x01\x00", "truncated"),
        (b"OpusHead\x01\x02" + bytes(8) + b"\x01\x00\x00\x00\x00", "stream count 0"),
        (b"OpusHead\x01\x02" + bytes(8) + b"\x01\x01\x02\x00\x01", "coupled count 2"),
        (b"OpusHead\x01\x02" + bytes(8) + b"\x01\x01\x00\x00\x01", "channel 1 to stream channel 1"),
    ],
)
def test_malformed_opus_heads_raise_media_error(data: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        parse_opus_head(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_random_bytes_after_the_magic_give_a_config_or_media_error(tail: bytes) -> None:
    try:
        config = parse_opus_head(b"OpusHead" + tail)
    except MediaError:
        return
    assert parse_opus_head(build_opus_head(config)) == config


@pytest.mark.parametrize(
    ("packet", "samples"),
    [
        (bytes((0 << 3 | 0,)), 480),  # SILK 10 ms, one frame
        (bytes((3 << 3 | 0,)), 2880),  # SILK 60 ms
        (bytes((13 << 3 | 1,)), 1920),  # Hybrid 20 ms, two frames
        (bytes((16 << 3 | 0,)), 120),  # CELT 2.5 ms
        (bytes((31 << 3 | 2,)), 1920),  # CELT 20 ms, two frames of different sizes
        (bytes((31 << 3 | 3, 6)), 5760),  # CELT 20 ms x 6 = 120 ms, the most a packet holds
        (bytes((17 << 3 | 3, 0x83)), 720),  # CELT 5 ms x 3, padding flag set
    ],
)
def test_packet_duration_comes_from_the_toc_byte(packet: bytes, samples: int) -> None:
    assert packet_samples(packet) == samples


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"", "empty"),
        (bytes((31 << 3 | 3,)), "lacks its frame count"),
        (bytes((31 << 3 | 3, 0)), "holds 0 frames"),
        (bytes((3 << 3 | 3, 3)), "at most 120 ms"),
    ],
)
def test_malformed_packets_raise_media_error(packet: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        packet_samples(packet)
