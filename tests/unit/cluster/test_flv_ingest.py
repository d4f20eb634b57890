"""FlvIngest: a pull's FLV bytes published into the hub as RTMP ingest publishes them (timestamps
unwrapped once, onMetaData read by the one AMF0 parser)."""

from __future__ import annotations

import pytest

from mediaserver.edge.flv_ingest import FlvIngest, read_metadata
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.media import amf0
from mediaserver.media.flv_body import build_tag
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.remux.flv import flv_header

AAC_CONFIG = b"\xaf\x00\x12\x10"  # AAC-LC, 44.1 kHz, stereo
AAC_FRAME = b"\xaf\x01" + b"\x21" * 40


class RecordingSink:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.discontinuities = 0

    def on_frame(self, frame: Frame) -> None:
        self.frames.append(frame)

    def on_discontinuity(self) -> None:
        self.discontinuities += 1

    def on_end(self) -> None:
        pass


class Relay:
    peer = "pull:test"

    def close(self, reason: str) -> None:
        pass


def _stream():
    registry = StreamRegistry()
    return registry.claim_publisher(StreamKey("live", "x"), Relay())


def test_audio_timestamps_crossing_the_32_bit_wrap_continue_without_a_discontinuity():
    stream = _stream()
    sink = RecordingSink()
    stream.add_sink(sink)
    ingest = FlvIngest(stream)
    start = 0xFFFFFFFF - 10 * 23
    data = flv_header(has_audio=True, has_video=False) + build_tag(FrameKind.AUDIO, start, AAC_CONFIG)
    data += b"".join(build_tag(FrameKind.AUDIO, (start + i * 23) & 0xFFFFFFFF, AAC_FRAME) for i in range(30))
    ingest.feed(data, now=1.0)
    stream.flush_sinks()
    media = [f.dts_ms for f in sink.frames if not f.is_config]
    assert len(media) == 30
    assert [b - a for a, b in zip(media, media[1:])] == [23] * 29
    assert sink.discontinuities == 0
    assert ingest.ready  # audio-only: ready after enough frames


def _metadata_body(values: dict, set_data_frame: bool = False) -> bytes:
    head = amf0.encode("@setDataFrame") if set_data_frame else b""
    return head + amf0.encode("onMetaData", amf0.EcmaArray(values))


@pytest.mark.parametrize("set_data_frame", [False, True])
def test_onmetadata_values_are_read_and_the_kept_body_starts_with_onmetadata(set_data_frame):
    values = {"width": 1280.0, "videocodecid": 7.0, "stereo": True, "encoder": "Lavf", "nested": {"a": 1.0}}
    body, read = read_metadata(_metadata_body(values, set_data_frame))
    assert read == values
    assert body == _metadata_body(values)


def test_metadata_reaches_the_stream_info():
    stream = _stream()
    data = flv_header(True, False) + build_tag(FrameKind.DATA, 0, _metadata_body({"width": 640.0}, True))
    FlvIngest(stream).feed(data, now=1.0)
    assert stream.info.metadata_values == {"width": 640.0}
    assert stream.info.metadata is not None and bytes(stream.info.metadata.body).startswith(amf0.encode("onMetaData"))


@pytest.mark.parametrize("body", [
    amf0.encode("onMetaData") + b"\x08\x00\x00\x00\x01\x00\x05wid",  # truncated values
    amf0.encode("onMetaData") + b"\x07\x00\x01",  # a reference: not accepted
    amf0.encode("onMetaData", 5.0),
])
def test_unreadable_metadata_values_are_empty_and_never_raise(body):
    assert read_metadata(body) == (body, {})


@pytest.mark.parametrize("body", [b"", b"\x02", b"\x02\x00\x0aonMeta", b"\x05", b"\xff" * 64,
                                  amf0.encode("onCuePoint", {"name": "x"}), amf0.encode("@setDataFrame")])
def test_script_tags_that_are_not_metadata_are_skipped(body):
    assert read_metadata(body) is None
