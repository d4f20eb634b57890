"""The ingest shared by origin and relay pulls: RTMP messages and FLV bodies go in the same way, and a
pull stops reading once it no longer publishes the stream."""

from __future__ import annotations

from mediaserver.edge.flv_ingest import FlvIngest
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.media.flv_body import build_tag
from mediaserver.media.frames import FrameKind
from mediaserver.remux.flv import flv_header

AAC_CONFIG = b"\xaf\x00\x12\x10"
AAC_FRAME = b"\xaf\x01" + b"\x21" * 40


class Pull:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def close(self, reason: str) -> None:
        pass


class Sink:
    def __init__(self) -> None:
        self.frames = 0

    def on_frame(self, frame) -> None:
        self.frames += 1

    def on_discontinuity(self) -> None:
        pass

    def on_end(self) -> None:
        pass


def test_rtmp_messages_and_flv_tags_publish_alike_and_reach_the_sinks():
    registry = StreamRegistry()
    pull = Pull("pull:rtmp")
    stream = registry.claim_publisher(StreamKey("live", "cam"), pull)
    sink = Sink()
    stream.add_sink(sink)
    ingest = FlvIngest(stream)
    ingest.publish(FrameKind.AUDIO, 0, AAC_CONFIG, 0.0)
    for i in range(25):  # audio only: ready after enough frames
        ingest.publish(FrameKind.AUDIO, 23 * i, AAC_FRAME, 0.0)
    assert ingest.flush(pull) and ingest.ready
    assert sink.frames >= 25
    body = flv_header(True, False) + build_tag(FrameKind.AUDIO, 600, AAC_FRAME)
    assert ingest.relay(body, 0.0, pull)
    assert stream.info.audio_codec is not None


def test_a_pull_that_no_longer_publishes_the_stream_stops_reading():
    registry = StreamRegistry(call_later=lambda delay, fn: None)  # the grace never runs out here
    first, second = Pull("pull:a"), Pull("pull:b")
    key = StreamKey("live", "cam")
    stream = registry.claim_publisher(key, first)
    ingest = FlvIngest(stream)
    registry.release_publisher(stream, first)
    registry.claim_publisher(key, second)  # within the reconnect grace: the same stream, another publisher
    assert not ingest.relay(flv_header(True, False) + build_tag(FrameKind.AUDIO, 0, AAC_CONFIG), 0.0,
                            first)
