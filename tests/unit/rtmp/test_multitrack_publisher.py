"""A multitrack publisher (Enhanced RTMP v2) through the server's own connection object: legacy FLV video after
a multitrack message is still the source's (an encoder may send its first track so), an empty video message is
a protocol error and not a crash, and the renditions end with a publisher the hub closes (takeover, kick)."""

from __future__ import annotations

import asyncio

from mediaserver.cli import build_registry
from mediaserver.config import Config, RtmpConfig
from mediaserver.hub.stream import StreamKey
from mediaserver.media import multitrack
from mediaserver.media.frames import FrameKind
from mediaserver.rtmp.server import RtmpConnection, RtmpServer
from support.codec_clips import codec_clip, config_frame, media_frames
from support.rtmp_bytes import StubTransport, published, publishing_client


class Transport(StubTransport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0


async def _multitrack_publisher(name: str):
    frames = codec_clip("h264", None, seconds=1.0)
    config = config_frame(frames, FrameKind.VIDEO)
    video = media_frames(frames, FrameKind.VIDEO)
    server = RtmpServer(RtmpConfig(), build_registry(Config()))
    conn = RtmpConnection(server, 1)
    transport = Transport()
    client, setup = publishing_client("live", name)
    await published(conn, transport, setup)
    avcc = bytes(config.body[5:])
    # Both tracks' sequence headers in one ManyTracks message: track 1 becomes the rendition NAME@LABEL.
    client.send_video(0, multitrack.join_video(1, 0, b"avc1", [(0, avcc), (1, avcc)]))
    conn.data_received(client.data_to_send())
    return server, conn, transport, client, video


async def test_legacy_video_after_a_multitrack_message_is_the_sources():
    server, conn, transport, client, video = await _multitrack_publisher("mt-legacy")
    assert conn.tracks is not None and len(conn.tracks.renditions) == 1
    stream = conn.stream
    before = stream.frames_in
    for frame in video[:10]:
        client.send_video(frame.dts_ms, bytes(frame.body))  # plain FLV AVC tags (0x17 / 0x27 ...)
    conn.data_received(client.data_to_send())
    assert stream.frames_in == before + 10
    assert stream.gop.newest_keyframe is not None


async def test_an_empty_video_message_is_a_protocol_error():
    server, conn, transport, client, _ = await _multitrack_publisher("mt-empty")
    client.send_video(40, b"")
    conn.data_received(client.data_to_send())
    assert transport.closing  # the connection ends with a protocol error; nothing raised out of data_received


async def test_the_renditions_end_with_a_publisher_the_hub_closes():
    server, conn, transport, client, _ = await _multitrack_publisher("mt-kick")
    (rendition,) = conn.tracks.renditions
    assert rendition.publisher is not None
    conn.close("kicked")  # the hub's handle: a kick, a takeover, a shutdown
    await asyncio.sleep(0)
    assert conn.tracks is None
    assert rendition.publisher is None  # released: it ends after the reconnect grace, as its source does
    assert server.registry.get(StreamKey("live", "mt-kick")) is not None  # the hub decides its source's fate
