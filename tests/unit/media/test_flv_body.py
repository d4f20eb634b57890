"""FLV tag bodies into Frames: legacy and Enhanced RTMP headers, the FLV tag built once, bad bodies refused."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from mediaserver.errors import MediaError
from mediaserver.media import flv_body
from mediaserver.media.frames import FrameKind


@pytest.mark.parametrize(
    "body, codec, keyframe, is_config, cts, payload",
    [
        (b"\x17\x00\x00\x00\x00\x01\x64", "h264", False, True, 0, b"\x01\x64"),
        (b"\x17\x01\x00\x00\x21NALU", "h264", True, False, 33, b"NALU"),
        (b"\x27\x01\xff\xff\xdfNALU", "h264", False, False, -33, b"NALU"),
        (b"\x1c\x01\x00\x00\x00HEVC", "hevc", True, False, 0, b"HEVC"),
        (b"\x90hvc1\x01\x02\x03", "hevc", False, True, 0, b"\x01\x02\x03"),  # enhanced SequenceStart
        (b"\x91hvc1\x00\x00\x10data", "hevc", True, False, 16, b"data"),  # CodedFrames with cts
        (b"\xa3av01data", "av1", False, False, 0, b"data"),  # CodedFramesX, inter
    ],
)
def test_video_bodies_parse(body, codec, keyframe, is_config, cts, payload):
    f = flv_body.video_frame(body, 1000)
    assert (f.kind, f.codec, f.keyframe, f.is_config, f.cts_ms) == (FrameKind.VIDEO, codec, keyframe, is_config, cts)
    assert bytes(f.payload) == payload and bytes(f.body) == body


@pytest.mark.parametrize(
    "body, codec, is_config, payload",
    [
        (b"\xaf\x00\x12\x10", "aac", True, b"\x12\x10"),
        (b"\xaf\x01raw", "aac", False, b"raw"),
        (b"\x2fmp3", "mp3", False, b"mp3"),
        (b"\x90Opus\x01\x02", "opus", True, b"\x01\x02"),
        (b"\x91Opusframe", "opus", False, b"frame"),
    ],
)
def test_audio_bodies_parse(body, codec, is_config, payload):
    f = flv_body.audio_frame(body, 5)
    assert (f.kind, f.codec, f.is_config) == (FrameKind.AUDIO, codec, is_config)
    assert bytes(f.payload) == payload


def test_tag_has_header_body_and_previous_tag_size():
    f = flv_body.video_frame(b"\x17\x01\x00\x00\x00abc", 0x12345678)
    tag = f.tag
    assert tag[0] == 9 and int.from_bytes(tag[1:4], "big") == 8
    assert tag[4:7] == bytes([0x34, 0x56, 0x78]) and tag[7] == 0x12  # lower 24 bits, then the extended byte
    assert int.from_bytes(tag[-4:], "big") == 8 + 11


@pytest.mark.parametrize(
    "body",
    [b"", b"\x17", b"\x17\x01\x00", b"\x17\x05\x00\x00\x00x", b"\x17\x00\x00\x00\x00", b"\x90hv", b"\x91hvc1\x00", b"\x96hvc1"],
)
def test_malformed_video_bodies_are_refused(body):
    with pytest.raises(MediaError):
        flv_body.video_frame(body, 0)


@pytest.mark.parametrize("body", [b"", b"\xaf", b"\xaf\x07x", b"\xaf\x00", b"\x90Op"])
def test_malformed_audio_bodies_are_refused(body):
    with pytest.raises(MediaError):
        flv_body.audio_frame(body, 0)


def test_video_info_frames_carry_nothing():
    assert flv_body.video_frame(b"\x57\x01\x00\x00\x00", 0) is None


def test_bodies_that_signal_but_carry_no_media_are_skipped():
    assert flv_body.audio_frame(b"\x94Opus\x00\x02", 0) is None  # MultichannelConfig after an Opus start
    assert flv_body.video_frame(b"\x90av01", 0) is None  # an empty AV1 sequence start


@given(st.binary(max_size=64), st.integers(0, 2**40))
def test_any_body_parses_or_is_refused_clearly(body, ts):
    for parse in (flv_body.video_frame, flv_body.audio_frame):
        try:
            f = parse(body, ts)
        except MediaError:
            continue
        if f is not None:
            assert f.tag[11:-4] == body
