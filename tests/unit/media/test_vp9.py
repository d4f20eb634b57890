"""VP9 configuration records and keyframe headers."""

from __future__ import annotations

import pytest

from mediaserver.errors import MediaError
from mediaserver.media.vp9 import build_vpcc, keyframe_size, level_for, parse_vpcc


def test_built_record_parses_back() -> None:
    config = parse_vpcc(build_vpcc(1280, 720, 30))
    assert (config.profile, config.level, config.bit_depth, config.chroma_subsampling) == (0, 31, 8, 1)
    assert not config.full_range
    assert config.codec_string == "vp09.00.31.08"


def test_levels_follow_picture_size_and_rate() -> None:
    assert level_for(160, 120, 30) == 10
    assert level_for(426, 240, 30) == 20
    assert level_for(640, 360, 30) == 21
    assert level_for(854, 480, 30) == 30
    assert level_for(1920, 1080, 30) == 40
    assert level_for(1920, 1080, 60) == 41
    assert level_for(3840, 2160, 30) == 50


def test_bad_records_are_refused() -> None:
    with pytest.raises(MediaError, match="truncated"):
        parse_vpcc(b"\x01\x00\x00\x00\x00")
    with pytest.raises(MediaError, match="version"):
        parse_vpcc(b"\x00" + build_vpcc(64, 64, 30)[1:])
    with pytest.raises(MediaError, match="bit depth"):
        parse_vpcc(build_vpcc(64, 64, 30)[:6] + b"\x92" + build_vpcc(64, 64, 30)[7:])


def test_keyframe_size_from_the_uncompressed_header() -> None:
    # frame_marker 2, profile 0, show_existing 0, key frame, show, not error resilient, sync code,
    # colour space 2 (BT.601), limited range, width-1 = 319, height-1 = 239.
    bits = "10" + "00" + "0" + "0" + "1" + "0" + f"{0x498342:024b}" + "010" + "0" + f"{319:016b}" + f"{239:016b}"
    bits += "0" * (-len(bits) % 8)
    header = int(bits, 2).to_bytes(len(bits) // 8, "big")
    assert keyframe_size(header) == (320, 240)
    inter = int("10" + "00" + "0" + "1" + "1" + "0" + "0" * 8, 2).to_bytes(2, "big")
    assert keyframe_size(inter) is None
    with pytest.raises(MediaError, match="marker"):
        keyframe_size(b"\x00\x00")
    with pytest.raises(MediaError, match="truncated"):
        keyframe_size(header[:5])
