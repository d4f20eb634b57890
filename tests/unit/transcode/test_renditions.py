"""Renditions: a worker's TAG messages published into the hub as APP/STREAM@LABEL, without a process."""

from __future__ import annotations

import pytest

from mediaserver.config import RungConfig
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.media.flv_body import build_tag
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.transcode.ladder import plan_ladder
from mediaserver.transcode.renditions import Renditions
from mediaserver.transcode.wire import AUDIO_TRACK, WireError
from support.codec_clips import codec_clip

RUNGS = (RungConfig(label="240p", height=240, video_kbps=400), RungConfig(label="120p", height=120, video_kbps=150))


class Publisher:
    peer = "test"

    def close(self, reason: str) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.gaps = 0

    def on_frame(self, frame: Frame) -> None:
        self.frames.append(frame)

    def on_discontinuity(self) -> None:
        self.gaps += 1

    def on_end(self) -> None:
        pass


def tag(frame: Frame, ts: int | None = None) -> bytes:
    return build_tag(frame.kind, frame.dts_ms if ts is None else ts, bytes(frame.body))


@pytest.fixture
def setup():
    registry = StreamRegistry(call_later=lambda d, f: None)
    source = registry.claim_publisher(StreamKey("live", "cam"), Publisher())
    source.publish_metadata(b"", {"framerate": 25.0, "audiodatarate": 96.0}, 0.0)
    ended: list[str] = []
    renditions = Renditions(registry, source, plan_ladder(RUNGS, 640, 480), ended.append)
    return registry, renditions, ended


def test_tags_become_rendition_streams_with_metadata_and_audio_config_first(setup):
    registry, renditions, _ = setup
    frames = codec_clip("h264", "aac", width=320, height=240, seconds=1.0, gop_frames=10)
    renditions.begin_worker(restart=False)
    touched: set = set()
    for frame in frames:
        if frame.kind == FrameKind.AUDIO:
            renditions.publish_tag(AUDIO_TRACK, tag(frame), 0.0, touched)
        elif frame.kind == FrameKind.VIDEO:
            renditions.publish_tag(0, tag(frame), 0.0, touched)
    stream = registry.get(StreamKey("live", "cam@240p"))
    assert stream is not None and registry.get(StreamKey("live", "cam@120p")) is None  # no tag for track 1
    assert stream.info.metadata_values == {"width": 320.0, "height": 240.0, "videodatarate": 400.0,
                                           "encoder": "mediaserver transcoder (h264 veryfast)", "framerate": 25.0,
                                           "audiodatarate": 96.0}
    assert stream.info.audio_config is not None and stream.info.video_config is not None
    assert renditions.outs[0].ready.is_set() and not renditions.outs[1].ready.is_set()
    video = [f for f in frames if f.kind == FrameKind.VIDEO and not f.is_config]
    assert renditions.outs[0].last_video_ms == video[-1].dts_ms
    assert touched == {stream}


def test_a_restarted_worker_never_sends_a_rendition_back_in_time(setup):
    registry, renditions, _ = setup
    frames = [f for f in codec_clip("h264", None, width=320, height=240, seconds=2.0, gop_frames=10)
              if f.kind == FrameKind.VIDEO]
    renditions.begin_worker(restart=False)
    for frame in frames[:31]:
        renditions.publish_tag(0, tag(frame), 0.0, set())
    stream = registry.get(StreamKey("live", "cam@240p"))
    recorder = Recorder()
    stream.add_sink(recorder)
    renditions.begin_worker(restart=True)
    assert not renditions.caught_up()
    restart_at = next(i for i, f in enumerate(frames) if f.keyframe and not f.is_config and i >= 21)  # overlaps
    renditions.publish_tag(0, tag(frames[0]), 0.0, set())  # the new worker's config first
    for frame in frames[restart_at:]:
        renditions.publish_tag(0, tag(frame), 0.0, set())
        stream.flush_sinks()
    dts = [f.dts_ms for f in recorder.frames if not f.is_config]
    assert dts == sorted(set(dts)) and dts[0] > frames[30].dts_ms
    assert recorder.gaps == 1
    assert renditions.outs[0].caught_up and not renditions.outs[1].caught_up  # track 1 sent nothing yet


def test_anything_but_a_tag_of_this_job_is_a_wire_error(setup):
    _, renditions, _ = setup
    renditions.begin_worker(restart=False)
    frame = next(f for f in codec_clip("h264", None, width=320, height=240, seconds=1.0) if f.kind == FrameKind.VIDEO)
    good = tag(frame)
    for track, payload in ((0, good[:-1]), (0, b"\x09" * 14), (2, good), (AUDIO_TRACK, good)):
        with pytest.raises(WireError):
            renditions.publish_tag(track, payload, 0.0, set())


def test_kicking_every_rendition_tells_the_job(setup):
    registry, renditions, ended = setup
    frames = [f for f in codec_clip("h264", None, width=320, height=240, seconds=1.0, gop_frames=10)
              if f.kind == FrameKind.VIDEO]
    renditions.begin_worker(restart=False)
    for frame in frames[:3]:
        for track in (0, 1):
            renditions.publish_tag(track, tag(frame), 0.0, set())
    registry.kick(StreamKey("live", "cam@240p"))
    assert ended == []
    registry.kick(StreamKey("live", "cam@120p"))
    assert ended == ["kicked"]
    assert renditions.live() == []
