"""Hub frames as WebRTC units: Annex B with in-band parameter sets, B-frame detection, the first GOP restamped."""

from __future__ import annotations

import dataclasses

import pytest

from mediaserver.errors import MediaError
from mediaserver.media import av1, flv_body, h264, hevc
from mediaserver.media.frames import FrameKind
from mediaserver.webrtc.units import (
    CATCH_UP_STEP, H264Units, av1_profile, carried_problem, catch_up_times, hevc_profile, reorders, video_time,
)
from support.codec_clips import codec_clip, config_frame

SPS = bytes([0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80, 0xBF, 0xE5, 0xC0, 0x44, 0x00])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = bytes([0x65, 0x88, 0x84, 0x00, 0x33])
SLICE = bytes([0x41, 0x9A, 0x02])
AUD = bytes([0x09, 0xF0])


def avcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def video(payload: bytes, dts: int, key: bool, cts: int = 0, config: bool = False):
    header = bytes([(0x10 if key else 0x20) | 7, 0 if config else 1]) + cts.to_bytes(3, "big")
    return flv_body.video_frame(header + payload, dts)


def test_an_idr_gets_the_sequence_headers_parameter_sets_in_band_and_loses_its_aud():
    units = H264Units()
    units.configure(video(h264.build_avc_config([SPS], [PPS]), 0, True, config=True))
    out = units.access_unit(video(avcc(AUD, IDR), 0, True))
    assert out == h264.START_CODE + SPS + h264.START_CODE + PPS + h264.START_CODE + IDR


def test_an_idr_that_carries_its_own_parameter_sets_is_left_as_it_is():
    units = H264Units()
    units.configure(video(h264.build_avc_config([SPS], [PPS]), 0, True, config=True))
    out = units.access_unit(video(avcc(SPS, PPS, IDR), 0, True))
    assert out.count(SPS) == 1 and out.endswith(IDR)


def test_a_p_frame_is_its_nal_units_behind_start_codes_and_an_aud_alone_is_nothing():
    units = H264Units()
    assert units.access_unit(video(avcc(SLICE), 40, False)) == h264.START_CODE + SLICE
    assert units.access_unit(video(avcc(AUD), 40, False)) == b""


def test_a_nal_length_that_overruns_the_frame_is_a_media_error_and_a_bad_config_changes_nothing():
    units = H264Units()
    with pytest.raises(MediaError):
        units.access_unit(video(b"\x00\x00\x01\x00" + SLICE, 0, False))
    units.configure(video(b"\x01\x02", 0, True, config=True))
    assert units.parameter_sets == b""


def test_b_frames_are_told_by_presentation_times_going_back_in_decode_order():
    plain = [video(avcc(SLICE), t, t == 0) for t in (0, 40, 80, 120)]
    assert not reorders(plain)
    constant_offset = [video(avcc(SLICE), t, t == 0, cts=80) for t in (0, 40, 80)]
    assert not reorders(constant_offset)
    # I(pts 80) P(pts 200) B(pts 120) B(pts 160): shown out of decode order
    bframes = [video(avcc(SLICE), dts, dts == 0, cts=cts) for dts, cts in ((0, 80), (40, 160), (80, 40), (120, 40))]
    assert reorders(bframes)


def test_the_first_gop_is_restamped_one_ms_apart_ending_at_its_newest_picture():
    times = [video_time(video(avcc(SLICE), t, False)) for t in (0, 40, 80, 2000)]
    assert catch_up_times(times) == [times[-1] - 3 * CATCH_UP_STEP, times[-1] - 2 * CATCH_UP_STEP,
                                     times[-1] - CATCH_UP_STEP, times[-1]]
    assert catch_up_times([]) == []
    assert video_time(video(avcc(SLICE), 1000, False, cts=40)) == 1040 * 90


def test_which_video_is_carried_depends_on_what_the_viewer_receives():
    plain = [video(avcc(SLICE), t, t == 0) for t in (0, 40, 80)]
    assert carried_problem("h264", "aac", plain) is None
    assert carried_problem("av1", "opus", plain) is None, "a viewer not known yet: every codec passed through"
    assert "AV1, which the offer does not receive" in carried_problem("av1", "opus", plain, frozenset({"h264"}))
    assert carried_problem("hevc", "aac", plain) is None
    assert "HEVC, which the offer does not receive" in carried_problem("hevc", "aac", plain, frozenset({"h264", "av1"}))
    assert "VP9; WebRTC playback here carries H.264, and AV1 or HEVC" in carried_problem("vp9", "aac", plain)
    bframes = [video(avcc(SLICE), dts, dts == 0, cts=cts) for dts, cts in ((0, 80), (40, 160), (80, 40))]
    assert "B-frames" in carried_problem("av1", None, bframes)
    assert "B-frames" in carried_problem("hevc", "aac", bframes)
    assert "no track" in carried_problem(None, "mp3", [])


def test_an_av1_profile_comes_from_the_av1c_and_a_bad_one_is_the_main_profile():
    config = config_frame(codec_clip("av1", None, seconds=0.5, gop_frames=10), FrameKind.VIDEO)
    assert av1_profile(config) == av1.parse_av1_config(config.payload).seq_profile == 0
    assert av1_profile(None) == 0
    assert av1_profile(video(b"\x01\x02", 0, True, config=True)) == 0


def test_an_hevc_profile_comes_from_the_hvcc_and_a_missing_or_bad_one_is_main():
    config = config_frame(codec_clip("hevc", None, seconds=0.5, gop_frames=10), FrameKind.VIDEO)
    assert hevc_profile(config) == hevc.parse_hevc_config(config.payload).profile_idc == 1
    main10 = bytes(config.payload)
    main10 = main10[:1] + bytes(((main10[1] & 0xE0) | 2,)) + main10[2:]  # general_profile_idc 2: Main 10
    def record(payload: bytes):
        return dataclasses.replace(config, tag=config.tag[:config.payload_start] + payload + b"\0" * 4)

    assert hevc_profile(record(main10)) == 2
    assert hevc_profile(None) == 1
    assert hevc_profile(record(b"\x01\x02")) == 1
    avc = video(h264.build_avc_config([SPS], [PPS]), 0, True, config=True)
    assert hevc_profile(avc) == 1, "not an hvcC: the default"
