"""GopFragmenter, the recorder's cutter for H.264/HEVC + AAC: one fragment per track per GOP with every frame,
the segmenter taking over for anything else, memory bounded when the video stops, bad frames refused."""

from __future__ import annotations

import dataclasses

import pytest

from mediaserver.errors import MediaError
from mediaserver.media import flv_body
from mediaserver.media.frames import FrameKind
from mediaserver.record.fragmenter import _MAX_GRID, GopFragmenter
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


@pytest.mark.parametrize("batch", [1, 5], ids=["push", "push_many"])
def test_audio_with_a_stalled_clock_is_bounded_by_bytes(clip, batch):
    start = [f for f in clip if f.dts_ms < 1000]
    first_audio = next(f for f in clip if f.kind == FrameKind.AUDIO and not f.is_config)
    big = flv_body.audio_frame(bytes(first_audio.body[:2]) + bytes(20_000), 1000)  # 20 kB, its clock stuck
    g = GopFragmenter(1.0, 10.0, max_bytes=200_000)
    out = []
    for f in start:
        out += g.push(f, 0.0)
    for _ in range(20):  # 2 MB of audio at one time, no video: the fragment never reaches max_fragment_s
        out += g.push_many([big] * batch, 0.0) if batch > 1 else g.push(big, 0.0)
        assert sum(len(f.tag) for f in g._a) <= 200_000, "what waits stays under max_bytes"
    assert sum(s.samples for s in out if s.track == AUDIO) >= 20 * batch - len(g._a), "cut alone, as it came"
    assert g.skipped == 0


def test_a_fragment_of_more_audio_frames_than_the_cheap_test_takes_is_timed_by_the_exact_rule(clip):
    """A stalled clock (or tiny frames) can put thousands of audio frames in one fragment: they go to the exact
    loop, and the grid the cheap test keeps per stream stays at its cap."""
    start = [f for f in clip if f.dts_ms < 1000]
    first_audio = next(f for f in clip if f.kind == FrameKind.AUDIO and not f.is_config)
    tiny = [flv_body.audio_frame(bytes(first_audio.body[:2]) + bytes(8), 1000) for _ in range(6000)]
    g = GopFragmenter(1.0, 10.0)
    out = []
    for f in start:
        out += g.push(f, 0.0)
    out += g.push_many(tiny, 0.0) + g.finish()
    audio = [s for s in out if s.track == AUDIO]
    assert audio[-1].samples > _MAX_GRID and len(g._grid) <= _MAX_GRID
    assert {e[0] for e in trun_samples(bytes(audio[-1].data))} == {1024}, "one time: overlapping, back to back"


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


def trun_samples(data: bytes) -> list[tuple[int, ...]]:
    """The trun entries of one of our moof+mdat fragments: (duration, size[, flags, composition offset])."""
    pos = data.index(b"trun") - 4
    flags = int.from_bytes(data[pos + 9:pos + 12], "big")
    count = int.from_bytes(data[pos + 12:pos + 16], "big")
    fields = bin(flags & 0xF00).count("1")
    out = []
    at = pos + 20
    for _ in range(count):
        out.append(tuple(int.from_bytes(data[at + 4 * i:at + 4 * i + 4], "big", signed=i == 3) for i in range(fields)))
        at += 4 * fields
    return out


@pytest.mark.parametrize("mid_gop", [False, True], ids=["from a keyframe", "from inside a GOP"])
def test_batches_of_frames_give_the_bytes_frames_one_by_one_give(clip, mid_gop):
    """push_many (a batch's common frames kept in a few operations) gives the bytes push gives. From inside a
    GOP, the audio before the first keyframe is dropped the same way, whatever batches it came in."""
    if mid_gop:
        video = [i for i, f in enumerate(clip) if f.kind == FrameKind.VIDEO and not f.is_config]
        configs = [f for f in clip[:video[0]] if f.is_config]
        frames = configs + clip[video[5]:]  # the configs, then media from a P-frame on
        assert not frames[len(configs)].keyframe and len(configs) == 3
    else:
        frames = clip
    _, one_by_one = cut(frames)
    first_key = next(f.dts_ms for f in frames if f.kind == FrameKind.VIDEO and f.keyframe and not f.is_config)
    kept = [f for f in media_frames(frames, FrameKind.AUDIO) if f.dts_ms >= first_key]
    assert sum(s.samples for s in one_by_one if s.track == AUDIO) == len(kept)
    assert (len(kept) < len(media_frames(frames, FrameKind.AUDIO))) == mid_gop  # audio before the keyframe: dropped
    for batch in (1, 7, 64, len(frames)):
        g = GopFragmenter(1.0, 10.0)
        segs = []
        for i in range(0, len(frames), batch):
            segs += g.push_many(frames[i:i + batch], 1_800_000_000.0)
        segs += g.finish()
        assert [(s.track, bytes(s.data)) for s in segs] == [(s.track, bytes(s.data)) for s in one_by_one], batch
        assert g.skipped == 0


@pytest.mark.parametrize("fragment_s, max_fragment_s", [(1.0, 10.0), (2.5, 10.0), (0.8, 0.9)],
                         ids=["a GOP a fragment", "keyframes inside fragments", "fragments cut between keyframes"])
def test_each_sample_entry_says_its_frame_duration_size_and_offset(clip, fragment_s, max_fragment_s):
    _, segs = cut(clip, GopFragmenter(fragment_s, max_fragment_s))
    video_segs = [s for s in segs if s.track == VIDEO]
    assert len(video_segs) == {1.0: 4, 2.5: 2, 0.8: 5}[fragment_s]
    video = [f for f in media_frames(clip, FrameKind.VIDEO)]
    entries = [e for s in segs if s.track == VIDEO for e in trun_samples(bytes(s.data))]
    assert [e[1] for e in entries] == [len(f.payload) for f in video]
    assert [e[3] for e in entries] == [f.cts_ms * 90 for f in video], "pts - dts in 90 kHz ticks"
    assert [e[0] for e in entries[:-1]] == [(b.dts_ms - a.dts_ms) * 90 for a, b in zip(video, video[1:])]
    assert [e[2] == 0x02000000 for e in entries] == [f.keyframe for f in video], "sync flags on keyframes"
    audio = [e for s in segs if s.track == AUDIO for e in trun_samples(bytes(s.data))]
    assert audio == [(1024, len(f.payload)) for f in media_frames(clip, FrameKind.AUDIO)]


def test_an_audio_gap_lengthens_the_frame_before_it(clip):
    audio = media_frames(clip, FrameKind.AUDIO)
    gone = set(map(id, audio[30:35]))  # ~107 ms of audio missing inside the second GOP
    _, segs = cut([f for f in clip if id(f) not in gone])
    entries = [e for s in segs if s.track == AUDIO for e in trun_samples(bytes(s.data))]
    assert len(entries) == len(audio) - 5
    assert abs(entries[29][0] - 6 * 1024) <= 48, "the frame before the gap lasts until the next one (to 1 ms)"
    assert {e[0] for i, e in enumerate(entries) if i != 29} == {1024}
    mine = [s for s in segs if s.track == AUDIO]
    assert all(a.start + a.duration == b.start for a, b in zip(mine, mine[1:]))


def exact_audio_timing(counts: list[int], dts_ms: list[int], scale: int = 48_000, samples: int = 1024):
    """Each audio fragment's (start, durations) by the rule, frame by frame: a frame within half a frame of
    back to back (or overlapping) is placed back to back; one later than that starts where it is, and the
    frame before it in its fragment lasts until it."""
    out, last, i = [], None, 0
    for count in counts:
        start, durations = None, []
        for k, ms in enumerate(dts_ms[i:i + count]):
            tick = (ms * scale + 500) // 1000
            if last is not None:
                if tick - (last + samples) <= samples // 2:
                    tick = last + samples
                elif k:
                    durations[-1] = tick - last
            start = tick if k == 0 else start
            durations.append(samples)
            last = tick
        out.append((start, durations))
        i += count
    return out


@pytest.mark.parametrize("batch", [1, 7], ids=["push", "push_many"])
@pytest.mark.parametrize("late_ms", [5, 9, 10, 11, 12])
@pytest.mark.parametrize("index", [10, 30, 42])
def test_audio_near_the_back_to_back_bound_is_timed_as_the_exact_rule_times_it(clip, batch, late_ms, index):
    """Most fragments' audio is found back to back from its decode times alone, with no tick computed (the
    common case); the rest go through the rule frame by frame. Either way the outcome is the rule's, for a
    frame of the first fragment late by 5 ms (back to back), 9 or 10 (within half an AAC frame at 48 kHz,
    10.67 ms, by less than the cheap test's margin) or 11 or 12 (a gap, unless rounding makes it exactly half),
    early, mid-way or late in the fragment."""
    audio = media_frames(clip, FrameKind.AUDIO)
    first = audio[0].dts_ms
    times = [first + i * 1024 * 1000 // 48_000 + (late_ms if i == index else 0) for i in range(len(audio))]
    moved = dict(zip(map(id, audio), times))
    frames = [dataclasses.replace(f, dts_ms=moved[id(f)]) if id(f) in moved else f for f in clip]
    g, segs = GopFragmenter(1.0, 10.0), []
    for i in range(0, len(frames), batch):
        segs += g.push_many(frames[i:i + batch], 1_800_000_000.0)
    segs += g.finish()
    mine = [s for s in segs if s.track == AUDIO]
    assert mine[0].samples > index
    got = [(s.start, [e[0] for e in trun_samples(bytes(s.data))]) for s in mine]
    assert got == exact_audio_timing([s.samples for s in mine], times)


def test_video_decode_times_that_do_not_grow_are_set_a_tick_apart(clip):
    video = media_frames(clip, FrameKind.VIDEO)
    same = {id(video[3]): video[2].dts_ms, id(video[4]): video[2].dts_ms}  # three frames at one decode time
    frames = [dataclasses.replace(f, dts_ms=same[id(f)], cts_ms=f.cts_ms + f.dts_ms - same[id(f)])
              if id(f) in same else f for f in clip]
    _, segs = cut(frames)
    entries = [e for s in segs if s.track == VIDEO for e in trun_samples(bytes(s.data))]
    assert len(entries) == len(video)
    assert all(e[0] > 0 for e in entries), "every sample lasts at least a tick"
    assert entries[2][0] == 1 and entries[3][0] == 1
    pts = []
    for seg in (s for s in segs if s.track == VIDEO):
        tick = seg.start
        for duration, _, _, offset in trun_samples(bytes(seg.data)):
            pts.append(tick + offset)
            tick += duration
    assert pts == [(f.dts_ms + f.cts_ms) * 90 for f in video], "each frame keeps its presentation time"
    first = next(s for s in segs if s.track == VIDEO)
    assert sum(e[0] for e in trun_samples(bytes(first.data))) == first.duration


def test_a_bad_frame_in_a_batch_is_skipped_and_the_rest_kept(clip):
    video = media_frames(clip, FrameKind.VIDEO)
    bad = video[5]
    tag = bytearray(bad.tag)
    tag[bad.payload_start:bad.payload_start + 4] = (0xFFFFFF00).to_bytes(4, "big")
    frames = [dataclasses.replace(f, tag=bytes(tag)) if f is bad else f for f in clip]
    g = GopFragmenter(1.0, 10.0)
    segs = g.push_many(frames, 0.0) + g.finish()
    assert g.skipped == 1
    assert sum(s.samples for s in segs if s.track == VIDEO) == len(video) - 1


def test_a_fragment_leaves_the_frames_payloads_in_place_as_views_after_one_head(clip):
    _, segs = cut(clip)
    video = next(s for s in segs if s.track == VIDEO)
    head, *samples = video.data.parts
    assert head[4:8] == b"moof" and len(head) == int.from_bytes(head[:4], "big") + 8  # the moof, then mdat's header
    assert len(samples) == video.samples and all(isinstance(p, memoryview) for p in samples)
    frames = [f for f in media_frames(clip, FrameKind.VIDEO)][:video.samples]
    assert all(p.obj is f.tag for p, f in zip(samples, frames)), "views of the frames' own bytes: no copy"
    assert len(video.data) == len(bytes(video.data)) == sum(map(len, video.data.parts))


@pytest.mark.parametrize("batch", [None, 7], ids=["push", "push_many"])
def test_a_fragments_audio_goes_out_as_one_part_its_frames_payloads_back_to_back(clip, batch):
    if batch is None:
        _, segs = cut(clip)
    else:
        g, segs = GopFragmenter(1.0, 10.0), []
        for i in range(0, len(clip), batch):
            segs += g.push_many(clip[i:i + batch], 1_800_000_000.0)
        segs += g.finish()
    audio = [s for s in segs if s.track == AUDIO]
    joined = []
    for seg in audio:
        head, payload = seg.data.parts  # the moof and mdat's header, then every sample in one part
        assert head[4:8] == b"moof" and len(seg.data) == len(head) + len(payload)
        sizes = [size for _, size in trun_samples(bytes(seg.data))]
        assert len(sizes) == seg.samples and sum(sizes) == len(payload)
        joined.append(bytes(payload))
    frames = media_frames(clip, FrameKind.AUDIO)
    assert b"".join(joined) == b"".join(bytes(f.payload) for f in frames), "each frame's payload, in order, once"
