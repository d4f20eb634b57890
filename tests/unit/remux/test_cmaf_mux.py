"""The muxed CMAF rendition (cmaf_mux.py): video and audio in one moof per part, for HLS players."""

from __future__ import annotations

import io
import struct

import av
import pytest
from support.codec_clips import codec_clip, media_frames

from mediaserver.media.flv_body import audio_frame, video_frame
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.remux import llhls
from mediaserver.remux.cmaf import AUDIO, MUXED, VIDEO, CmafPart, CmafSegment, CmafSegmenter, parse_cmaf_name
from mediaserver.remux.cmaf_mux import CmafMuxer
from mediaserver.remux.cmaf_window import CmafWindow
from mediaserver.remux.multivariant import Variant
from mediaserver.remux.fmp4 import AUDIO_TRUN, VIDEO_TRUN, TrackRun, multi_track_fragment

NOW = 1_700_000_000.0
Item = CmafPart | CmafSegment


def run(frames: list[Frame], segmenter: CmafSegmenter, finish: bool = True) -> list[Item]:
    items: list[Item] = []
    for frame in frames:
        items += segmenter.push(frame, NOW + frame.dts_ms / 1000)
    if finish:
        items += segmenter.finish()
    return items


def of(items: list[Item], track: str, kind: type) -> list:
    return [i for i in items if isinstance(i, kind) and i.track == track]


def moof_of(data: bytes) -> bytes:
    return boxes(data)[0][1]


def boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    out, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        out.append((data[at + 4:at + 8], data[at + 8:at + size]))
        at += size
    return out


@pytest.fixture(scope="module")
def clip() -> list[Frame]:
    return codec_clip("h264", "aac", seconds=4.0)


@pytest.fixture(scope="module")
def muxed_items(clip: list[Frame]) -> list[Item]:
    return run(clip, CmafSegmenter(target_duration_s=1.0, part_target_s=0.2, muxer=CmafMuxer()))


def test_the_split_tracks_are_unchanged_by_the_muxed_rendition(clip: list[Frame], muxed_items: list[Item]) -> None:
    split = run(clip, CmafSegmenter(target_duration_s=1.0, part_target_s=0.2))
    assert not of(split, MUXED, CmafPart)
    for track in (VIDEO, AUDIO):
        for kind in (CmafPart, CmafSegment):
            assert [i.data for i in of(split, track, kind)] == [i.data for i in of(muxed_items, track, kind)]


def test_muxed_parts_and_segments_are_the_videos_with_the_audio_of_the_same_span(muxed_items: list[Item]) -> None:
    video_parts, parts = of(muxed_items, VIDEO, CmafPart), of(muxed_items, MUXED, CmafPart)
    assert [(p.sequence, p.index, p.start, p.duration, p.independent) for p in parts] == [
        (p.sequence, p.index, p.start, p.duration, p.independent) for p in video_parts]
    segments = of(muxed_items, MUXED, CmafSegment)
    assert [s.sequence for s in segments] == [s.sequence for s in of(muxed_items, VIDEO, CmafSegment)]
    for segment in segments:
        assert segment.data == b"".join(p.data for p in parts if p.sequence == segment.sequence)
    audio_at = 0
    for part in parts:
        (moof, _), (mdat, mdat_body) = boxes(part.data)
        trafs = [body for kind, body in boxes(boxes(part.data)[0][1]) if kind == b"traf"]
        assert (moof, mdat) == (b"moof", b"mdat") and len(trafs) == 2
        ids = [int.from_bytes(t[12:16], "big") for t in trafs]  # tfhd's track_ID
        assert ids == [1, 2]
        audio_tfdt = int.from_bytes(dict(boxes(trafs[1]))[b"tfdt"][4:12], "big")
        # The audio of a part starts where the last part's ended, within the video part's span.
        assert audio_at == 0 or audio_tfdt == audio_at
        assert part.start <= audio_tfdt * 90_000 // 48_000 < part.start + part.duration
        trun = dict(boxes(trafs[1]))[b"trun"]
        count = int.from_bytes(trun[4:8], "big")
        durations = struct.unpack(">" + "II" * count, trun[12:12 + 8 * count])[::2]
        audio_at = audio_tfdt + sum(durations)
        offsets = [int.from_bytes(dict(boxes(t))[b"trun"][8:12], "big") for t in trafs]
        audio_size = sum(struct.unpack(">" + "II" * count, trun[12:12 + 8 * count])[1::2])
        moof_size = 8 + len(moof_of(part.data))
        # Video first, right after the mdat's header; the audio ends the mdat.
        assert offsets == [moof_size + 8, moof_size + 8 + len(mdat_body) - audio_size]
    init = parts[0].init
    assert init.track == MUXED and init.codec_string.startswith("avc1.") and init.codec_string.endswith(",mp4a.40.2")
    kinds = [kind for kind, _ in boxes(init.data)]
    assert kinds == [b"ftyp", b"moov"]
    moov = dict((k, b) for k, b in boxes(boxes(init.data)[1][1]) if k != b"trak")
    assert len([k for k, _ in boxes(boxes(init.data)[1][1]) if k == b"trak"]) == 2
    assert int.from_bytes(moov[b"mvhd"][-4:], "big") == 3  # next_track_ID


def test_the_muxed_rendition_decodes_with_both_streams_in_sync(clip: list[Frame], muxed_items: list[Item]) -> None:
    segments = of(muxed_items, MUXED, CmafSegment)
    data = segments[0].init.data + b"".join(s.data for s in segments)
    start = media_frames(clip, FrameKind.VIDEO)[0].dts_ms
    sent = {kind: [f for f in media_frames(clip, kind) if f.dts_ms >= start] for kind in (FrameKind.VIDEO, FrameKind.AUDIO)}
    with av.open(io.BytesIO(data), format="mp4") as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        got: dict[str, list[float]] = {"video": [], "audio": []}
        decoded = 0
        for packet in container.demux(video, audio):
            if packet.size:
                got[packet.stream.type].append(float(packet.pts * packet.time_base))
                decoded += len(packet.decode())
    end_ms = (segments[-1].start + segments[-1].duration) / 90
    sent[FrameKind.AUDIO] = [f for f in sent[FrameKind.AUDIO] if f.dts_ms < end_ms]  # audio past the video's end waits
    assert len(got["video"]) == len(sent[FrameKind.VIDEO]) and len(got["audio"]) == len(sent[FrameKind.AUDIO])
    assert decoded >= len(got["video"]) + len(got["audio"]) - 2  # (the AAC decoder's priming frame)
    # Same clock: each stream's times are its frames' own, within a millisecond (one frame is far more).
    assert all(abs(t * 1000 - f.pts_ms) <= 1 for t, f in zip(got["video"], sent[FrameKind.VIDEO]))
    assert all(abs(t * 1000 - f.dts_ms) <= 1 for t, f in zip(got["audio"], sent[FrameKind.AUDIO]))


def test_a_muxed_part_waits_only_for_the_audio_that_ends_it(clip: list[Frame]) -> None:
    segmenter = CmafSegmenter(target_duration_s=1.0, part_target_s=0.2, muxer=CmafMuxer())
    video_out: dict[tuple[int, int], int] = {}
    lag = []
    for i, frame in enumerate(clip):
        for item in segmenter.push(frame, NOW):
            if isinstance(item, CmafPart):
                key = (item.sequence, item.index)
                if item.track == VIDEO:
                    video_out[key] = frame.dts_ms
                elif item.track == MUXED:
                    lag.append(frame.dts_ms - video_out[key])
    assert lag and max(lag) <= 25  # at most an audio frame after the video frame that closed the part


def test_video_only_and_audio_only_streams_have_no_muxed_rendition() -> None:
    for video, audio in (("h264", None), (None, "aac")):
        items = run(codec_clip(video, audio, seconds=2.0), CmafSegmenter(muxer=CmafMuxer()))
        assert items and not [i for i in items if i.track == MUXED]


def test_llhls_lists_the_muxed_rendition_alone_with_both_codecs(muxed_items: list[Item]) -> None:
    window = CmafWindow(target_duration_s=1.0, part_target_s=0.2)
    window.extend(muxed_items[:-12])
    text = llhls.render_multivariant_playlist(window, video_uri="v.m3u8", audio_uri="a.m3u8", muxed_uri="m.m3u8")
    assert "#EXT-X-MEDIA" not in text and "AUDIO=" not in text
    assert 'CODECS="avc1.' in text and ",mp4a.40.2" in text and text.rstrip().endswith("m.m3u8")
    playlist = llhls.render_media_playlist(window, MUXED, prefix="x-")
    assert "#EXT-X-PART:" in playlist and "#EXT-X-PRELOAD-HINT" in playlist and 'x-muxed-init-1.mp4' in playlist
    assert "INDEPENDENT=YES" in playlist
    assert llhls.playlist_request(window, MUXED, window.track(MUXED).last_sequence, 0) is llhls.Readiness.READY
    # With ABR renditions that are split, the split layout stays: every variant shares the audio group.
    ladder = [Variant("../s@240p/cmaf-video.m3u8", 1000, ("avc1.42c00d", "mp4a.40.2"), 320, 240)]
    text = llhls.render_multivariant_playlist(window, video_uri="v.m3u8", audio_uri="a.m3u8", muxed_uri="m.m3u8",
                                              renditions=ladder)
    assert "#EXT-X-MEDIA:TYPE=AUDIO" in text and "m.m3u8" not in text
    # Muxed renditions go with the muxed variant, no audio group; without the source's, they are refused.
    muxed_ladder = [Variant("../s@240p/cmaf-muxed.m3u8", 1000, ("avc1.42c00d", "mp4a.40.2"), 320, 240)]
    text = llhls.render_multivariant_playlist(window, video_uri="v.m3u8", audio_uri="a.m3u8", muxed_uri="m.m3u8",
                                              renditions=muxed_ladder, renditions_muxed=True)
    assert "#EXT-X-MEDIA" not in text and "AUDIO=" not in text
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["m.m3u8", "../s@240p/cmaf-muxed.m3u8"]
    text = llhls.render_multivariant_playlist(window, video_uri="v.m3u8", audio_uri="a.m3u8", muxed_uri="m.m3u8",
                                              renditions=muxed_ladder, renditions_muxed=True, source_video=False)
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["../s@240p/cmaf-muxed.m3u8"]
    with pytest.raises(ValueError):
        llhls.render_multivariant_playlist(CmafWindow(target_duration_s=1.0, part_target_s=0.2), muxed_uri="m.m3u8",
                                           renditions=muxed_ladder, renditions_muxed=True)


def test_muxed_file_names_parse() -> None:
    name = parse_cmaf_name("muxed-12.3.m4s")
    assert name is not None and (name.kind, name.track, name.number, name.part) == ("part", MUXED, 12, 3)
    init = parse_cmaf_name("muxed-init-2.mp4")
    assert init is not None and (init.kind, init.track, init.number) == ("init", MUXED, 2)


def test_a_multi_track_fragment_points_each_trun_at_its_own_samples() -> None:
    data = multi_track_fragment(7, [
        TrackRun(1, 900, VIDEO_TRUN, [3000, 3, 0, 0], [b"vvv"], 3),
        TrackRun(2, 480, AUDIO_TRUN, [1024, 2, 1024, 2], [b"aa", b"bb"], 4, 0x02000000),
        TrackRun(3, 0, AUDIO_TRUN, [], [], 0),
    ])
    (_, moof), (_, mdat) = boxes(data)
    assert mdat == b"vvvaabb"
    trafs = [body for kind, body in boxes(moof) if kind == b"traf"]
    assert len(trafs) == 2
    offsets = [int.from_bytes(dict(boxes(t))[b"trun"][8:12], "big") for t in trafs]
    moof_size = len(moof) + 8
    assert [data[o:o + n] for o, n in zip(offsets, (3, 4))] == [b"vvv", b"aabb"]
    assert offsets[0] == moof_size + 8


def retime(frame: Frame, offset_ms: int) -> Frame:
    rebuilt = (audio_frame if frame.kind == FrameKind.AUDIO else video_frame)(bytes(frame.body), frame.dts_ms + offset_ms)
    assert rebuilt is not None
    return rebuilt


def window_of(items: list[Item]) -> CmafWindow:
    window = CmafWindow(target_duration_s=1.0, part_target_s=0.2)
    window.extend(items)  # refuses parts out of order and sequence numbers that step back
    return window


def test_a_discontinuity_and_a_new_audio_config_keep_the_muxed_segments_whole_and_decodable() -> None:
    first = [f for f in codec_clip("h264", "aac", seconds=2.0) if f.kind != FrameKind.DATA and f.dts_ms < 2000]
    second = [retime(f, 2000) for f in codec_clip("h264", "aac", seconds=2.0, sample_rate=44100, channels=1)
              if f.kind != FrameKind.DATA]
    segmenter = CmafSegmenter(target_duration_s=1.0, part_target_s=0.2, muxer=CmafMuxer())
    items = run(first, segmenter, finish=False)
    segmenter.discontinuity()
    items += run([retime(f, 0) for f in first] + second, segmenter)  # a new publisher from 0, then a new config
    window_of(items)
    segments = of(items, MUXED, CmafSegment)
    video = of(items, VIDEO, CmafSegment)
    assert [s.sequence for s in segments] == [s.sequence for s in video] == list(range(len(video)))
    assert [s.discontinuity for s in segments] == [s.discontinuity for s in video]
    assert [s.part_count for s in segments] == [s.part_count for s in video]
    versions = sorted({s.init.version for s in segments})
    assert versions == [1, 2]
    for segment in segments:
        times = {}
        with av.open(io.BytesIO(segment.init.data + segment.data), format="mp4") as container:
            for stream in container.streams:
                times[stream.type] = stream.codec_context.sample_rate if stream.type == "audio" else 0
            assert sum(1 for p in container.demux() if p.size) > 10
        assert times["audio"] == (44100 if segment.init.version == 2 else 48000)


def test_when_the_audio_stops_muxed_parts_go_out_with_the_video_alone_after_a_bounded_wait() -> None:
    frames = [f for f in codec_clip("h264", "aac", seconds=4.0) if f.kind != FrameKind.DATA]
    frames = [f for f in frames if f.kind != FrameKind.AUDIO or f.is_config or f.dts_ms < 1500]
    segmenter = CmafSegmenter(target_duration_s=1.0, part_target_s=0.2, muxer=CmafMuxer())
    video_out: dict[tuple[int, int], int] = {}
    lag = []
    for frame in frames:
        for item in segmenter.push(frame, NOW):
            if isinstance(item, CmafPart) and item.track == VIDEO:
                video_out[(item.sequence, item.index)] = frame.dts_ms
            elif isinstance(item, CmafPart) and item.track == MUXED:
                lag.append(frame.dts_ms - video_out[(item.sequence, item.index)])
    items = segmenter.finish()
    assert lag and max(lag) <= 500 + 250  # the audio wait, and a part's worth of video to notice it
    assert of(items, MUXED, CmafPart)  # the last parts come out at the end
    video = sorted([*video_out, *((p.sequence, p.index) for p in of(items, VIDEO, CmafPart))])
    muxed = [(p.sequence, p.index) for p in of(items, MUXED, CmafPart)]
    assert video[-len(muxed):] == muxed and len(video) == len(lag) + len(muxed)  # every video part, muxed
    assert segmenter.muxer.parts_without_audio >= 10  # type: ignore[union-attr]


@pytest.mark.parametrize("fixture", ["av_clip", "audio_clip", "video_clip"])
def test_no_frame_before_next_output_ms_completes_a_part(fixture: str, request: pytest.FixtureRequest) -> None:
    """What lets a publisher's reads merge while only the CMAF packager consumes: each part and segment
    end is named in advance, and the frames read before it change nothing (muxed parts included)."""
    frames: list[Frame] = request.getfixturevalue(fixture)
    segmenter = CmafSegmenter(muxer=CmafMuxer())
    assert segmenter.next_output_ms() == float("-inf")  # nothing open yet: any frame may matter
    outputs = early = named = counted = 0
    for frame in frames:
        due = segmenter.next_output_ms()
        if outputs:  # (an audio-only stream is told from one with late video after a second)
            counted += 1
            named += due > float("-inf")
        items = segmenter.push(frame, 1_700_000_000 + frame.dts_ms / 1000)
        if items:
            outputs += 1
            assert frame.dts_ms >= due, (frame, due, items)
        elif frame.dts_ms >= due and counted:
            early += 1  # read for nothing: the due frame came later than named
    assert outputs >= len(frames) / 30  # parts of a third of a second came out all along
    assert named >= counted * 0.9  # the end was named for most frames, not "read everything"
    assert early <= 2 * outputs  # audio read before the video that lets it through, at most
