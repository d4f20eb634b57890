"""ClientSession: what it puts on the wire, and the flows it drives against ServerSession."""

from __future__ import annotations

import pytest
from rtmp_peers import WireReader, names, seeded, transfer

from mediaserver.errors import UsageError
from mediaserver.media import amf0
from mediaserver.rtmp.chunk import ChunkEncoder
from mediaserver.rtmp.client import ClientSession
from mediaserver.rtmp.events import (
    AudioReceived,
    CommandReceived,
    CommandResultReceived,
    Connected,
    ConnectResult,
    HandshakeCompleted,
    MetadataReceived,
    PublishRequested,
    StatusReceived,
    StreamCreated,
    UserControlReceived,
    VideoReceived,
)
from mediaserver.rtmp.handshake import PACKET_SIZE
from mediaserver.rtmp.session import ServerSession


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def client_wire(client: ClientSession) -> list[tuple]:
    """Complete a simple handshake by hand and decode what the client sends after it."""
    c0c1 = client.data_to_send()
    assert c0c1[0] == 3 and len(c0c1) == 1 + PACKET_SIZE
    s1 = bytes(PACKET_SIZE)
    client.receive_data(b"\x03" + s1 + c0c1[1:])
    out = client.data_to_send()
    assert out[:PACKET_SIZE] == s1  # C2 echoes S1
    assert client.events() == [HandshakeCompleted()]
    return WireReader().read(out[PACKET_SIZE:])


def test_connect_is_preceded_by_set_chunk_size_and_carries_obs_properties() -> None:
    client = ClientSession(random_bytes=seeded(1))
    client.connect("live", "rtmp://h/live", {"fourCcList": ["hvc1"]})
    assert client_wire(client) == [
        (2, 1, 0, 0, h("00001000")),
        (3, 20, 0, 0, ["connect", 1.0, {
            "app": "live", "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; FMSc/1.0)",
            "swfUrl": "rtmp://h/live", "tcUrl": "rtmp://h/live", "fourCcList": ["hvc1"],
        }]),
    ]  # fmt: skip


def test_publish_sends_release_fcpublish_and_create_stream_like_obs() -> None:
    client = ClientSession(random_bytes=seeded(1), chunk_size=128)
    client.connect("live", "rtmp://h/live")
    client.publish("cam?k=1")
    assert [m[4][:2] + m[4][3:] for m in client_wire(client)] == [
        ["connect", 1.0],
        ["releaseStream", 2.0, "cam?k=1"],
        ["FCPublish", 3.0, "cam?k=1"],
        ["createStream", 4.0],
    ]


def test_commands_queued_before_the_handshake_wait_for_c2() -> None:
    client = ClientSession(random_bytes=seeded(1))
    client.connect("live", "rtmp://h/live")
    assert len(client.data_to_send()) == 1 + PACKET_SIZE  # C0 + C1 only
    assert client.data_to_send() == b""


def test_publish_flow_against_the_server_with_a_digest_handshake() -> None:
    server = ServerSession(random_bytes=seeded(2))
    client = ClientSession(random_bytes=seeded(3), digest_handshake=True)
    client.connect("live", "rtmp://h/live")
    transfer(client, server)
    assert client._handshake.server_digest_verified
    events = client.events()
    assert names(events) == ["HandshakeCompleted", "ConnectResult", "CommandReceived"]
    assert events[1] == ConnectResult(
        True,
        {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
        {"level": "status", "code": "NetConnection.Connect.Success",
         "description": "Connection succeeded.", "objectEncoding": 0.0},
    )  # fmt: skip
    assert events[2].name == "onBWDone"
    assert names(server.events()) == ["HandshakeCompleted", "Connected"]
    # The client answered Set Peer Bandwidth with its Window Acknowledgement Size, as librtmp does.
    assert server.peer_ack_window == 2_500_000

    client.publish("cam")
    transfer(client, server)
    events = client.events()
    assert [(e.method, e.accepted) for e in events if isinstance(e, CommandResultReceived)] == [
        ("releaseStream", True),
        ("FCPublish", True),
    ]
    assert StreamCreated(4.0, 1) in events
    assert client.stream_id == 1
    (request,) = server.events()
    server.accept_publish(request.request_id)
    transfer(client, server)
    assert client.events() == [
        UserControlReceived(0, 1),
        StatusReceived(1, "status", "NetStream.Publish.Start", "cam is now published.",
                       {"level": "status", "code": "NetStream.Publish.Start",
                        "description": "cam is now published.", "details": "cam"}),
    ]  # fmt: skip

    client.send_metadata({"width": 640.0}, timestamp=0)
    client.send_video(0, b"\x17\x00\x00\x00\x00")
    client.send_audio(3, b"\xaf\x00\x12\x10")
    transfer(client, server)
    assert server.events() == [
        MetadataReceived(1, 0, amf0.encode("onMetaData", amf0.EcmaArray(width=640.0)), {"width": 640.0}),
        VideoReceived(1, 0, b"\x17\x00\x00\x00\x00"),
        AudioReceived(1, 3, b"\xaf\x00\x12\x10"),
    ]


def test_play_flow_delivers_media_to_the_client() -> None:
    server = ServerSession(random_bytes=seeded(4))
    client = ClientSession(random_bytes=seeded(5))
    client.connect("live", "rtmp://h/live")
    client.play("cam")
    transfer(client, server)
    request = server.events()[-1]
    server.accept_play(request.request_id)
    server.send_media([(9, request.stream_id, 0, b"\x17\x00"), (8, request.stream_id, 21, b"\xaf\x01")])
    transfer(client, server)
    events = client.events()
    codes = [e.code for e in events if isinstance(e, StatusReceived)]
    assert codes == ["NetStream.Play.Reset", "NetStream.Play.Start"]
    assert events[-3:] == [
        events[-3],
        VideoReceived(1, 0, b"\x17\x00"),
        AudioReceived(1, 21, b"\xaf\x01"),
    ]
    assert events[-3].name == "|RtmpSampleAccess"


def test_client_sends_play_and_set_buffer_length_after_create_stream() -> None:
    client = ClientSession(random_bytes=seeded(6), chunk_size=128, buffer_length_ms=1000)
    client.play("cam", start=-1000)
    client_wire(client)
    reply = ChunkEncoder().encode(3, 20, 0, 0, amf0.encode("_result", 1.0, None, 7.0))
    client.receive_data(reply)
    assert client.events() == [StreamCreated(1.0, 7)]
    assert WireReader().read(client.data_to_send()) == [
        (5, 20, 7, 0, ["play", 2.0, None, "cam", -1000.0, -1.0, True]),
        (2, 4, 0, 0, h("0003 00000007 000003e8")),
    ]


def test_client_answers_ping_and_reports_other_commands() -> None:
    client = ClientSession(random_bytes=seeded(7), chunk_size=128)
    client_wire(client)
    encoder = ChunkEncoder()
    client.receive_data(encoder.encode(2, 4, 0, 0, h("0006 00000001")))
    client.receive_data(encoder.encode(3, 20, 0, 0, amf0.encode("onFCPublish", 0.0, None, {"code": "x"})))
    assert WireReader().read(client.data_to_send()) == [(2, 4, 0, 0, h("0007 00000001"))]
    assert client.events() == [CommandReceived(0, "onFCPublish", 0.0, (None, {"code": "x"}))]


def test_rejected_connect_is_reported() -> None:
    client = ClientSession(random_bytes=seeded(8), chunk_size=128)
    client.connect("live", "rtmp://h/live")
    client_wire(client)
    info = {"level": "error", "code": "NetConnection.Connect.Rejected", "description": "no"}
    client.receive_data(ChunkEncoder().encode(3, 20, 0, 0, amf0.encode("_error", 1.0, None, info)))
    assert client.events() == [ConnectResult(False, None, info)]
    assert not client.connected


def test_media_before_a_stream_exists_is_a_usage_error() -> None:
    client = ClientSession(random_bytes=seeded(9))
    with pytest.raises(UsageError, match="no message stream"):
        client.send_video(0, b"")
    with pytest.raises(UsageError, match="unpublish"):
        client.unpublish()


def test_events_include_the_handshake_and_connected_on_both_sides() -> None:
    server = ServerSession(random_bytes=seeded(10))
    client = ClientSession(random_bytes=seeded(11))
    client.connect("app/", "rtmp://h/app/")
    transfer(client, server)
    assert server.events() == [HandshakeCompleted(), Connected("app", "rtmp://h/app/", server.connect_properties)]
    assert isinstance(client.events()[0], HandshakeCompleted)


def test_publish_request_splits_the_app_query_off() -> None:
    server = ServerSession(random_bytes=seeded(12))
    client = ClientSession(random_bytes=seeded(13))
    client.connect("live?vhost=a", "rtmp://h/live?vhost=a")
    client.publish("cam")
    transfer(client, server)
    request = server.events()[-1]
    assert isinstance(request, PublishRequested)
    assert (request.app, request.name, request.query) == ("live", "cam", "")
    assert server.app == "live?vhost=a"
