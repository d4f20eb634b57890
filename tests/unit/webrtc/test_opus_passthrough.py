"""A WHIP publisher's Opus handed to its stream's WebRTC viewers as it came: on the hub's timeline (the video's),
never stepping back, and chosen over the AAC -> Opus transcoder while that publisher is the stream's."""

from __future__ import annotations

from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.media import h264
from mediaserver.webrtc.feeds import StreamFeed
from mediaserver.webrtc.opus_source import OpusSource, opus_source_of
from mediaserver.webrtc.units import video_time

SPS = bytes([0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80, 0xBF, 0xE5, 0xC0, 0x44, 0x00])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = bytes([0x65, 0x88, 0x84])


class WhipLike:
    """A publisher with an Opus source, as WhipPublisher is."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.opus_source = OpusSource()

    def close(self, reason: str) -> None:
        pass


def publish_idr(stream, ts_ms: int):
    stream.publish_video(ts_ms, bytes([0x17, 0, 0, 0, 0]) + h264.build_avc_config([SPS], [PPS]), 0.0)
    return stream.publish_video(ts_ms, bytes([0x17, 1, 0, 0, 0]) + len(IDR).to_bytes(4, "big") + IDR, 0.0)


def test_packets_go_out_on_the_hub_timeline_once_placed_and_never_step_back():
    source = OpusSource()
    got = []
    source.packet(0, b"\x01")  # nobody listens: nothing is made
    source.listeners.add(got.append)
    source.packet(20, b"\x02")  # the hub has not placed this session yet
    assert got == []
    source.placed(40, 10_040)
    for ms in (40, 60, 50, 60, 80):  # the sender reports moved audio back 10 ms: 50 and 60 again are dropped
        source.packet(ms, bytes([ms]))
    assert [(f.time, f.payloads) for f in got] == [(10_040 * 48, (b"\x28",)), (10_060 * 48, (b"\x3c",)),
                                                   (10_080 * 48, (b"\x50",))]
    assert source.passed == 3 and source.dropped_back == 2
    source.close()
    source.packet(100, b"\x03")
    assert len(got) == 3 and not source.listeners


async def test_a_second_session_s_opus_lands_on_the_same_time_as_its_video():
    registry = StreamRegistry()
    first = WhipLike("first")
    stream = registry.claim_publisher(StreamKey("live", "s"), first)
    publish_idr(stream, 0)
    publish_idr(stream, 5000)
    registry.release_publisher(stream, first)  # within the reconnect grace: the stream goes on
    second = WhipLike("second")
    assert registry.claim_publisher(StreamKey("live", "s"), second) is stream
    frame = publish_idr(stream, 0)  # the new session starts at 0 again; the hub moves it after the first's end
    assert frame.dts_ms > 5000
    second.opus_source.placed(0, frame.dts_ms)
    got = []
    second.opus_source.listeners.add(got.append)
    second.opus_source.packet(0, b"\x01")
    assert got[0].time / 48_000 == video_time(frame) / 90_000, "audio and video of one instant at one time"


async def test_the_feed_takes_the_whip_publisher_s_opus_and_follows_a_change_of_publisher():
    registry = StreamRegistry()
    first = WhipLike("first")
    stream = registry.claim_publisher(StreamKey("live", "s"), first)
    feed = StreamFeed(stream)
    heard = []
    feed.listen_opus(heard.append)
    assert feed.source is first.opus_source and feed.opus is None, "no transcoder for a WHIP publisher's audio"
    first.opus_source.placed(0, 0)
    first.opus_source.packet(0, b"\x01")
    assert len(heard) == 1

    first.opus_source.close()  # the session ended; nobody publishes (reconnect grace)
    registry.release_publisher(stream, first)
    feed.follow_audio()
    assert feed.source is None and feed.opus is None, "nothing to transcode while nobody publishes"

    second = WhipLike("second")
    registry.claim_publisher(StreamKey("live", "s"), second)
    feed.follow_audio()  # the next AAC frame a viewer passes
    assert feed.source is second.opus_source
    second.opus_source.placed(0, 0)
    second.opus_source.packet(20, b"\x02")
    assert len(heard) == 2

    feed.unlisten_opus(heard.append)
    assert feed.source is None and not second.opus_source.listeners
    feed.close()
    assert opus_source_of(stream) is second.opus_source
