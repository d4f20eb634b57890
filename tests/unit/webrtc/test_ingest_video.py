"""H.264 from WebRTC to FLV: Annex B access units split into parameter sets and AVCC, sequence headers built
from in-band SPS/PPS, nothing published before an IDR picture."""

from __future__ import annotations

import pytest

from mediaserver.errors import MediaError
from mediaserver.media import flv_body, h264
from mediaserver.webrtc.ingest_video import AvcFromAnnexB

# A real 320x240 Constrained Baseline SPS and its PPS (libx264), NAL header byte included.
SPS = bytes.fromhex("6742c00d8c8d40a0fd00f08846a0")
PPS = bytes.fromhex("68ce3c80")
IDR = bytes.fromhex("65888040") + b"\x11" * 20
SLICE = bytes.fromhex("41e12345") + b"\x22" * 10
SEI = bytes.fromhex("0605ff") + b"\x33" * 5
AUD = bytes.fromhex("09f0")


def annexb(*nals: bytes, three_byte: bool = False) -> bytes:
    code = b"\x00\x00\x01" if three_byte else b"\x00\x00\x00\x01"
    return b"".join(code + nal for nal in nals)


def avcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def test_an_access_unit_is_split_into_parameter_sets_and_length_prefixed_nal_units():
    unit = h264.split_annexb_access_unit(annexb(AUD, SPS, PPS, SEI, IDR))
    assert unit.sps == (SPS,) and unit.pps == (PPS,)
    assert unit.avcc == avcc(SEI, IDR)  # the AUD is dropped: FLV/MP4 samples carry none
    assert unit.idr


def test_three_byte_start_codes_and_trailing_zeros_are_read_as_a_decoder_would():
    unit = h264.split_annexb_access_unit(annexb(SLICE, three_byte=True) + b"\x00\x00")
    assert unit.avcc == avcc(SLICE) and not unit.idr and unit.sps == ()


def test_nothing_is_published_before_an_idr_picture_with_its_parameter_sets():
    video = AvcFromAnnexB()
    out = video.push(annexb(SLICE))
    assert out.frame is None and out.config is None and video.needs_keyframe and video.frames_dropped == 1
    out = video.push(annexb(IDR))  # an IDR without SPS/PPS ever seen: a decoder could not start
    assert out.frame is None and video.needs_keyframe


def test_the_first_keyframe_brings_a_sequence_header_then_frames_follow_without_one():
    video = AvcFromAnnexB()
    out = video.push(annexb(SPS, PPS, IDR))
    config = flv_body.video_frame(out.config, 0)
    assert config.is_config and config.codec == "h264"
    record = h264.parse_avc_config(config.payload)
    assert record.sps == (SPS,) and record.pps == (PPS,) and record.nal_length_size == 4
    assert h264.parse_sps(record.sps[0]).width == 320
    frame = flv_body.video_frame(out.frame, 40)
    assert frame.keyframe and not frame.is_config and frame.cts_ms == 0 and bytes(frame.payload) == avcc(IDR)
    out = video.push(annexb(SLICE))
    assert out.config is None and not out.keyframe
    assert not flv_body.video_frame(out.frame, 80).keyframe
    out = video.push(annexb(SPS, PPS, IDR))  # the same parameter sets again (every IDR from WebRTC encoders)
    assert out.config is None and out.keyframe


def test_parameter_sets_in_a_packet_of_their_own_and_a_changed_sps_give_a_new_sequence_header():
    video = AvcFromAnnexB()
    out = video.push(annexb(SPS, PPS))
    assert out.config is not None and out.frame is None
    assert video.push(annexb(IDR)).keyframe
    other = SPS[:-1] + b"\x41"
    out = video.push(annexb(other, PPS, IDR))
    assert out.config is not None and h264.parse_avc_config(flv_body.video_frame(out.config, 0).payload).sps == (other,)


def test_a_parameter_set_too_short_for_a_record_is_an_error_and_waits_for_a_keyframe():
    video = AvcFromAnnexB()
    with pytest.raises(MediaError):
        video.push(annexb(b"\x67\x42", PPS, IDR))
    assert video.needs_keyframe
