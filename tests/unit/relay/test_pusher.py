"""The pusher against an in-process RTMP target (our sans-IO ServerSession on a loopback socket): what a
target receives first (metadata, sequence headers, a keyframe at 0), a publisher reconnecting within the
grace, the stream's end, and a target that refuses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl

import pytest

from mediaserver.hub.registry import RegistryPolicy, StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.media import amf0
from mediaserver.relay.pusher import Pusher, PushSettings
from mediaserver.relay.state import RelayState
from mediaserver.relay.target import parse_push_url
from mediaserver.rtmp import events as ev
from mediaserver.rtmp import session as session_module
from support.certs import make_cert
from support.hostile_rtmp import BAD_AMF_COMMAND, Peer as HostilePeer
from support.rtmp_target import Publisher, Target, until

KEY = StreamKey("live", "cam")


def video_body(keyframe: bool, config: bool = False) -> bytes:
    return bytes([0x17 if keyframe or config else 0x27, 0 if config else 1, 0, 0, 0]) + b"\x00" * 50


def audio_body(config: bool = False) -> bytes:
    return bytes([0xAF, 0 if config else 1]) + (b"\x12\x10" if config else b"\x00" * 20)


def live_stream(registry: StreamRegistry):
    stream = registry.claim_publisher(KEY, Publisher())
    stream.publish_metadata(amf0.encode("onMetaData", amf0.EcmaArray({"width": 64})), {"width": 64}, 0.0)
    stream.publish_video(5000, video_body(True, config=True), 0.0)
    stream.publish_audio(5000, audio_body(config=True), 0.0)
    for i in range(10):  # a GOP whose keyframe is at 5000 ms, then P-frames
        stream.publish_video(5000 + 40 * i, video_body(i == 0), 0.0)
        stream.publish_audio(5000 + 40 * i, audio_body(), 0.0)
    return stream


async def test_a_push_starts_with_metadata_and_headers_then_the_keyframe_at_0_and_ends_with_the_stream():
    target = Target()
    port = await target.start()
    registry = StreamRegistry(policy=RegistryPolicy(reconnect_grace=5.0))
    stream = live_stream(registry)
    changes: list[str] = []
    pusher = Pusher("r1", stream, parse_push_url(f"rtmp://127.0.0.1:{port}/app/secret-key?t=1"), registry,
                    PushSettings(retry_min=0.05, retry_max=0.1), on_change=lambda p: changes.append(p.status.state.value))
    pusher.start()
    try:
        await until(lambda: len(target.media()) >= 23)
        assert target.keys == ["secret-key?t=1"] and pusher.status.state is RelayState.LIVE
        first = target.media()
        assert isinstance(first[0], ev.MetadataReceived) and first[0].values["width"] == 64
        assert [type(e) for e in first[1:3]] == [ev.VideoReceived, ev.AudioReceived]
        assert first[1].body[1] == 0 and first[2].body[1] == 0  # the sequence headers
        assert isinstance(first[3], ev.VideoReceived) and first[3].body[0] == 0x17 and first[3].timestamp == 0
        assert max(e.timestamp for e in first) == 360  # rebased: the keyframe at 5000 ms is 0 here

        # The publisher leaves and comes back within the grace: the same push carries on.
        registry.release_publisher(stream, stream.publisher)
        again = registry.claim_publisher(KEY, Publisher())
        assert again is stream
        stream.publish_video(0, video_body(True), 0.0)
        await until(lambda: len(target.media()) >= 24)
        assert target.connections == 1 and pusher.status.state is RelayState.LIVE and pusher.bytes_sent > 0

        registry.kick(KEY, "test over")  # the stream ends: the target is told, the push stops
        await until(lambda: pusher.done)
        await until(lambda: any(isinstance(e, ev.PublishFinished) for e in target.received))
        assert pusher.status.error == "the stream ended" and changes == ["live", "stopped"]
    finally:
        await pusher.stop()
        await target.close()


async def test_a_refusing_target_is_retried_with_its_reason_and_the_key_never_shown():
    target = Target(refuse="stream live/secret-key is taken")
    port = await target.start()
    registry = StreamRegistry()
    stream = live_stream(registry)
    pusher = Pusher("r1", stream, parse_push_url(f"rtmp://127.0.0.1:{port}/live/secret-key"), registry,
                    PushSettings(retry_min=0.05, retry_max=0.1))
    pusher.start()
    try:
        await until(lambda: pusher.status.reconnects >= 2)
        info = pusher.describe()
        assert info["state"] in ("retrying", "connecting") and info["url"] == f"rtmp://127.0.0.1:{port}/live/***"
        assert info["error"] == "NetStream.Publish.BadName: stream live/*** is taken", info
        assert not target.media()
        await pusher.stop("removed")
        assert pusher.describe()["state"] == "stopped" and pusher.status.error == "removed"
    finally:
        await target.close()


async def test_an_unreachable_target_retries_and_the_stream_end_stops_it():
    registry = StreamRegistry(policy=RegistryPolicy(reconnect_grace=0))
    stream = live_stream(registry)
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    pusher = Pusher("r1", stream, parse_push_url(f"rtmp://127.0.0.1:{port}/live/k"), registry,
                    PushSettings(retry_min=0.05, retry_max=0.1))
    pusher.start()
    await until(lambda: pusher.status.state is RelayState.RETRYING)
    assert "connection refused" in pusher.status.error
    registry.kick(KEY)
    pusher.stream_ended()
    await until(lambda: pusher.done)
    assert pusher.status.error == "the stream ended"


@pytest.mark.parametrize("announces", [True, False])
async def test_hevc_goes_out_as_enhanced_rtmp_unchanged_and_a_target_without_it_is_noted(announces, monkeypatch):
    if not announces:  # a target that does not know Enhanced RTMP: no fourCcList in its connect answer
        monkeypatch.setattr(session_module, "ENHANCED_CONNECT_KEYS", ())
    hevc_config = bytes([0x90]) + b"hvc1" + b"\x01" + b"\x00" * 30  # SequenceStart (a stub record)
    hevc_key = bytes([0x93]) + b"hvc1" + b"\x00\x00\x00\x05\x26\x01\xaf\x00\x00"  # CodedFramesX, keyframe
    target = Target()
    port = await target.start()
    registry = StreamRegistry()
    stream = registry.claim_publisher(KEY, Publisher())
    stream.publish_video(0, hevc_config, 0.0)
    stream.publish_video(0, hevc_key, 0.0)
    assert stream.info.video_codec == "hevc"
    pusher = Pusher("r1", stream, parse_push_url(f"rtmp://127.0.0.1:{port}/live/k"), registry, PushSettings())
    pusher.start()
    try:
        await until(lambda: len(target.media()) >= 2)
        assert [bytes(e.body) for e in target.media()[:2]] == [hevc_config, hevc_key]
        if announces:
            assert pusher.note is None
        else:
            assert "did not announce Enhanced RTMP" in pusher.note and "hevc" in pusher.note
    finally:
        await pusher.stop()
        await target.close()


async def test_an_rtmps_target_is_verified_and_an_untrusted_certificate_is_the_reason(tmp_path):
    cert = make_cert(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert.cert_file, cert.key_file)
    target = Target()
    target.server = await asyncio.start_server(target._serve, "127.0.0.1", 0, ssl=server_side)
    port = target.server.sockets[0].getsockname()[1]
    registry = StreamRegistry()
    stream = live_stream(registry)
    url = parse_push_url(f"rtmps://127.0.0.1:{port}/live/k")
    untrusted = Pusher("r1", stream, url, registry, PushSettings(retry_min=0.05, retry_max=0.1))
    trusted = Pusher("r2", stream, url, registry, PushSettings(ssl_context=cert.client_context()))
    untrusted.start()
    trusted.start()
    try:
        await until(lambda: untrusted.status.state is RelayState.RETRYING and trusted.status.state is RelayState.LIVE)
        assert "TLS certificate not trusted" in untrusted.status.error, untrusted.status.error
        await until(lambda: len(target.media()) >= 3)
    finally:
        await untrusted.stop()
        await trusted.stop()
        await target.close()


@contextlib.asynccontextmanager
async def pushing_to(handler):
    """A quickly retrying push of a live stream to a HostilePeer running `handler`: (target, pusher)."""
    target = HostilePeer(handler)
    port = await target.start()
    registry = StreamRegistry()
    pusher = Pusher("r1", live_stream(registry), parse_push_url(f"rtmp://127.0.0.1:{port}/live/k"), registry,
                    PushSettings(retry_min=0.05, retry_max=0.1))
    try:
        yield target, pusher
    finally:
        await pusher.stop("removed")
        await target.close()


async def test_a_target_whose_answer_cannot_be_read_is_retried_not_stopped():
    async def bad_amf(reader, writer) -> None:
        await reader.read(65536)  # connect
        writer.write(BAD_AMF_COMMAND)
        await reader.read(65536)

    async with pushing_to(bad_amf) as (target, pusher):
        pusher.start()
        await until(lambda: target.connections >= 2)
        assert pusher.status.state in (RelayState.RETRYING, RelayState.CONNECTING), pusher.describe()
        assert "RTMP protocol error" in pusher.status.error


async def test_a_target_answering_different_garbage_each_time_is_reported_retrying_once(caplog):
    async def noise(reader, writer) -> None:
        await reader.read(65536)
        writer.write(os.urandom(1537 + 1536))
        await reader.read(65536)

    caplog.set_level("WARNING", logger="mediaserver.relay.pusher")
    async with pushing_to(noise) as (target, pusher):
        pusher.start()
        await until(lambda: target.connections >= 4)
        retrying = [r for r in caplog.records if "relay_retrying" in r.getMessage()]
        assert len(retrying) == 1, [r.getMessage() for r in retrying]
