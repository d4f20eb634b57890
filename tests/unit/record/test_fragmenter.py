"""GopFragmenter, the recorder's cutter for H.264/HEVC + AAC: one fragment per track per GOP with every frame,
the segmenter taking over for anything else, memory bounded when the video stops, bad frames refused."""

from __future__ import annotations

import dataclasses

import pytest

from mediaserver.errors import MediaError
from mediaserver.media.frames import FrameKind
from mediaserver.record.fragmenter import GopFragmenter
from mediaserver.remux.cmaf import AUDIO, VIDEO

from support.codec_clips import codec_clip, media_frames


@pytest.fixture(scope="module")
def clip():
    return codec_clip("h264", "aac", seconds=4.0, gop_frames=25)


def cut(frames, fragmenter=None):
    g = fragmenter or GopFragmenter(1.0, 10.0)
    out = []
    for f in frames:
        out += g.push(f, 1_800_000_000.0)
    return g, out + g.finish()


def test_every_frame_lands_in_one_fragment_per_track_per_gop_back_to_back(clip):
    g, segs = cut(clip)
    assert g.general is None
    for track, kind, scale in ((VIDEO, FrameKind.VIDEO, 90_000), (AUDIO, FrameKind.AUDIO, 48_000)):
        mine = [s for s in segs if s.track == track]
        assert sum(s.samples for s in mine) == len(media_frames(clip, kind))
        assert all(a.start + a.duration == b.start for a, b in zip(mine, mine[1:])), "no hole, no overlap"
        assert {s.timescale for s in mine} == {scale}
    video = [s for s in segs if s.track == VIDEO]
    assert len(video) == 4 and all(s.independent for s in video) and video[0].start == 0
    assert [s.track for s in segs] == [VIDEO, AUDIO] * 4, "each GOP's audio right after its video"
    assert g.init(VIDEO) is video[0].init and g.init(AUDIO).codec == "aac"


def test_a_new_config_after_media_hands_the_stream_to_the_cmaf_segmenter(clip):
    g = GopFragmenter(1.0, 10.0)
    for f in clip[: len(clip) // 2]:
        g.push(f, 0.0)
    other = codec_clip("h264", "aac", width=352, height=288, seconds=2.0, gop_frames=25)
    g, segs = cut(other, g)
    assert g.general is not None
    video = [s for s in segs if s.track == VIDEO]
    assert {s.init.width for s in video} == {320, 352}, "the open GOP is cut first, then the new init"


def test_audio_is_cut_alone_when_the_video_stops(clip):
    config_and_first_gop = [f for f in clip if f.kind != FrameKind.VIDEO or f.dts_ms < 1000]
    audio = [f for f in clip if f.kind == FrameKind.AUDIO and not f.is_config]
    later = [dataclasses.replace(f, dts_ms=f.dts_ms + 4000 * k) for k in range(1, 4) for f in audio]
    g = GopFragmenter(1.0, 3.0)
    out = []
    for f in config_and_first_gop + later:
        out += g.push(f, 0.0)
        assert len(g._a) <= 200, "audio waiting for video stays bounded"
    assert sum(s.samples for s in out if s.track == AUDIO) > len(audio)


def test_a_frame_whose_nal_lengths_overrun_it_is_refused(clip):
    g = GopFragmenter(1.0, 10.0)
    first_key = next(i for i, f in enumerate(clip) if f.kind == FrameKind.VIDEO and f.keyframe and not f.is_config)
    for f in clip[:first_key]:
        g.push(f, 0.0)
    frame = clip[first_key]
    tag = bytearray(frame.tag)
    tag[frame.payload_start:frame.payload_start + 4] = (0xFFFFFF00).to_bytes(4, "big")
    with pytest.raises(MediaError):
        g.push(dataclasses.replace(frame, tag=bytes(tag)), 0.0)
    assert not g._v, "nothing kept of it"
