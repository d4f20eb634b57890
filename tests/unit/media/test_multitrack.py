"""Enhanced RTMP v2 multitrack messages split into single-track bodies, and hostile ones refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.errors import MediaError
from mediaserver.media import flv_body, multitrack


def _track_data(cts: int, payload: bytes) -> bytes:
    return cts.to_bytes(3, "big", signed=True) + payload


def test_many_tracks_split_into_bodies_the_single_track_parser_reads():
    body = multitrack.join_video(1, 1, b"avc1", [(0, _track_data(40, b"\x00\x00\x00\x02\x65\x88")),
                                                (1, _track_data(40, b"\x00\x00\x00\x02\x65\x99"))])
    assert multitrack.is_video_multitrack(body)
    tracks = multitrack.split_video(body)
    assert [t for t, _ in tracks] == [0, 1]
    for _, single in tracks:
        frame = flv_body.video_frame(single, 1000)
        assert frame is not None and frame.codec == "h264" and frame.keyframe and frame.cts_ms == 40
    assert bytes(flv_body.video_frame(tracks[1][1], 0).payload) == b"\x00\x00\x00\x02\x65\x99"


def test_one_track_and_many_codecs_forms():
    one = bytes((0x80 | 2 << 4 | 6, 0 << 4 | 3)) + b"av01" + bytes((5,)) + b"\x12\x00\x0a"
    [(track, single)] = multitrack.split_video(one)
    assert track == 5 and flv_body.video_frame(single, 0).codec == "av1"
    many = (bytes((0x80 | 1 << 4 | 6, 2 << 4 | 3)) + b"av01" + bytes((0,)) + (2).to_bytes(3, "big") + b"\x12\x00"
            + b"vp09" + bytes((1,)) + (1).to_bytes(3, "big") + b"\x82")
    out = multitrack.split_video(many)
    assert [(t, flv_body.video_frame(b, 0).codec) for t, b in out] == [(0, "av1"), (1, "vp9")]


def test_modex_prefix_is_dropped():
    # ModEx (7): size-1 = 2 (3 bytes of data), then modExType 0 / packet type 1 (coded frames).
    body = bytes((0x80 | 1 << 4 | 7, 2, 0, 0, 5, 0 << 4 | 1)) + b"avc1" + _track_data(0, b"\x00\x00\x00\x01\x65")
    [(track, single)] = multitrack.split_video(body)
    assert track == 0 and flv_body.video_frame(single, 0).keyframe


def test_audio_multitrack():
    body = bytes((0x90 | 5, 1 << 4 | 1)) + b"mp4a" + bytes((0,)) + (2).to_bytes(3, "big") + b"\x21\x10"
    assert multitrack.is_audio_multitrack(body)
    [(track, single)] = multitrack.split_audio(body)
    frame = flv_body.audio_frame(single, 0)
    assert track == 0 and frame.codec == "aac" and bytes(frame.payload) == b"\x21\x10"


@pytest.mark.parametrize("body, words", [
    (bytes((0x80 | 1 << 4 | 6,)), "track type"),
    (bytes((0x80 | 1 << 4 | 6, 1 << 4 | 1)) + b"av", "FourCC"),
    (bytes((0x80 | 1 << 4 | 6, 1 << 4 | 1)) + b"avc1" + bytes((0,)) + (100).to_bytes(3, "big") + b"xx", "runs past"),
    (bytes((0x80 | 1 << 4 | 6, 3 << 4 | 1)) + b"avc1", "unknown"),
    (bytes((0x80 | 1 << 4 | 6, 1 << 4 | 6)) + b"avc1", "nests"),
    (bytes((0x80 | 1 << 4 | 6, 1 << 4 | 1)) + b"avc1", "no track"),
    (bytes((0x80 | 1 << 4 | 7, 200)), "ModEx"),
    (bytes((0x80 | 1 << 4 | 6, 1 << 4 | 1)) + b"avc1" + b"".join(bytes((i,)) + b"\x00\x00\x00" for i in range(40)),
     "more than"),
])
def test_malformed_messages_are_refused_with_a_reason(body, words):
    with pytest.raises(MediaError, match=words):
        multitrack.split_video(body)


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_hostile_bytes_never_raise_anything_but_media_error(tail):
    body = bytes((0x80 | 1 << 4 | 6,)) + tail
    try:
        out = multitrack.split_video(body)
    except MediaError:
        return
    assert 1 <= len(out) <= multitrack.MAX_TRACKS
    assert sum(len(b) for _, b in out) <= len(body) + 8 * len(out)
