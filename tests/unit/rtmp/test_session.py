"""ServerSession: OBS's publish sequence byte for byte, play, rejections, control messages, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtmp_peers import (
    FLASH_SERVER_KEY,
    LARGE,
    MEDIUM,
    PACKET_SIZE,
    LibrtmpWriter,
    WireReader,
    flash_c1,
    flash_c2,
    hmac256,
    seeded,
    server_s1_digest,
    transfer,
)

from mediaserver.errors import UsageError
from mediaserver.media import amf0
from mediaserver.media.amf0 import UNDEFINED, EcmaArray
from mediaserver.rtmp.chunk import ChunkEncoder, chunk_message
from mediaserver.rtmp.client import ClientSession
from mediaserver.errors import PeerError
from mediaserver.rtmp.errors import RtmpProtocolError
from mediaserver.rtmp.events import (
    AcknowledgementReceived,
    AudioReceived,
    Connected,
    DataReceived,
    HandshakeCompleted,
    MetadataReceived,
    PlayFinished,
    PlayRequested,
    PublishFinished,
    PublishRequested,
    StatusReceived,
    VideoReceived,
)
from mediaserver.rtmp.messages import encode_aggregate
from mediaserver.rtmp.session import ServerSession, SessionPhase


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


OBS_CONNECT = {
    "app": "live",
    "type": "nonprivate",
    "flashVer": "FMLE/3.0 (compatible; FMSc/1.0)",
    "swfUrl": "rtmp://127.0.0.1:1935/live",
    "tcUrl": "rtmp://127.0.0.1:1935/live",
}
OBS_METADATA = EcmaArray(
    duration=0.0,
    fileSize=0.0,
    width=1280.0,
    height=720.0,
    videocodecid=7.0,
    videodatarate=2500.0,
    framerate=30.0,
    audiocodecid=10.0,
    audiodatarate=160.0,
    audiosamplerate=48000.0,
    audiosamplesize=16.0,
    audiochannels=2.0,
    stereo=True,
    encoder="obs-output module (libobs version 30.0.2)",
)
AVC_SEQUENCE_HEADER = h(
    "17 00 000000 | 01640028ffe1 0019 67640028acd940780227e5c04400000fa40003a9823c60c658 | 01 0005 68ebecb22c"
)
AAC_SEQUENCE_HEADER = h("af 00 1190")


class Obs:
    """The byte stream OBS 30 sends when publishing, built with librtmp's chunking rules."""

    def __init__(self, server: ServerSession, reader: WireReader) -> None:
        self.server = server
        self.reader = reader
        self.w = LibrtmpWriter()

    def send(self, data: bytes) -> list[tuple]:
        """Feed the server; return what it answered, decoded as OBS would."""
        self.server.receive_data(data)
        return self.reader.read(self.server.data_to_send())

    def handshake(self) -> None:
        c1, c1_digest = flash_c1(schema=1)
        self.server.receive_data(b"\x03" + c1)
        answer = self.server.data_to_send()
        assert answer[0] == 3 and len(answer) == 1 + 2 * PACKET_SIZE
        s1, s2 = answer[1 : 1 + PACKET_SIZE], answer[1 + PACKET_SIZE :]
        s1_digest = server_s1_digest(s1)
        assert s1_digest is not None  # librtmp: "Couldn't verify the server digest" otherwise
        assert s2[-32:] == hmac256(hmac256(FLASH_SERVER_KEY, c1_digest), s2[:-32])
        self.server.receive_data(flash_c2(s1_digest))
        assert self.server.data_to_send() == b""

    def set_chunk_size(self, size: int) -> list[tuple]:
        out = self.send(self.w.send(2, LARGE, 1, 0, 0, u32(size)))
        self.w.chunk_size = size
        return out


def start_obs(**server_args: object) -> tuple[ServerSession, Obs]:
    server = ServerSession(random_bytes=seeded(1), **server_args)
    obs = Obs(server, WireReader())
    obs.handshake()
    assert server.handshake_done
    assert server.events() == [HandshakeCompleted()]
    return server, obs


def connect_answers(properties: dict) -> list[tuple]:
    return [
        (2, 5, 0, 0, u32(2_500_000)),
        (2, 6, 0, 0, u32(2_500_000) + b"\x02"),
        (2, 1, 0, 0, u32(4096)),
        (
            3, 20, 0, 0,
            [
                "_result", 1.0, properties,
                {"level": "status", "code": "NetConnection.Connect.Success",
                 "description": "Connection succeeded.", "objectEncoding": 0.0},
            ],
        ),
        (3, 20, 0, 0, ["onBWDone", 0.0, None]),
    ]  # fmt: skip


def test_obs_publish_sequence_is_answered_exactly() -> None:
    server, obs = start_obs()

    assert obs.set_chunk_size(4096) == []
    assert server.in_chunk_size == 4096

    connect = obs.w.invoke(3, LARGE, 0, "connect", 1.0, OBS_CONNECT)
    server.receive_data(connect)
    raw = server.data_to_send()
    # The three control messages, byte for byte: type 0, then type 1 as the length/type change.
    assert raw.startswith(
        h("02 000000 000004 05 00000000 002625a0 | 42 000000 000005 06 002625a0 02 | 42 000000 000004 01 00001000")
    )
    assert obs.reader.read(raw) == connect_answers({"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0})
    assert server.out_chunk_size == 4096
    assert server.events() == [Connected("live", "rtmp://127.0.0.1:1935/live", OBS_CONNECT)]

    # OBS answers _result with releaseStream, FCPublish, createStream (type-1 headers on csid 3)
    # and onBWDone with _checkbw.
    key = "name?token=abc"
    answers = obs.send(
        obs.w.invoke(3, MEDIUM, 0, "releaseStream", 2.0, None, key)
        + obs.w.invoke(3, MEDIUM, 0, "FCPublish", 3.0, None, key)
        + obs.w.invoke(3, MEDIUM, 0, "createStream", 4.0, None)
        + obs.w.invoke(3, LARGE, 0, "_checkbw", 5.0, None)
    )
    assert answers == [
        (3, 20, 0, 0, ["_result", 2.0, None, UNDEFINED]),
        (3, 20, 0, 0, ["onFCPublish", 0.0, None,
                       {"level": "status", "code": "NetStream.Publish.Start", "description": key}]),
        (3, 20, 0, 0, ["_result", 3.0, None, UNDEFINED]),
        (3, 20, 0, 0, ["_result", 4.0, None, 1.0]),
        (3, 20, 0, 0, ["_result", 5.0, None, UNDEFINED]),
    ]  # fmt: skip
    assert server.events() == []

    # publish goes out on csid 4 with the new stream id; nothing is answered until we decide.
    assert obs.send(obs.w.invoke(4, LARGE, 1, "publish", 6.0, None, key, "live")) == []
    (request,) = server.events()
    assert request == PublishRequested(request.request_id, 1, "live", "name", "token=abc", "live")

    assert server.accept_publish(request.request_id)
    assert obs.reader.read(server.data_to_send()) == [
        (2, 4, 0, 0, h("0000 00000001")),
        (5, 20, 1, 0, ["onStatus", 0.0, None,
                       {"level": "status", "code": "NetStream.Publish.Start",
                        "description": "name is now published.", "details": "name"}]),
    ]  # fmt: skip

    # Metadata, sequence headers, then frames, as RTMP_Write sends them on csid 4.
    metadata_body = amf0.encode("@setDataFrame", "onMetaData", OBS_METADATA)
    frames = [(9, 33 * i, h("27 01 000042") + bytes(900 + i)) for i in range(1, 4)]
    wire = obs.w.send(4, LARGE, 18, 0, 1, metadata_body)
    wire += obs.w.send(4, LARGE, 9, 0, 1, AVC_SEQUENCE_HEADER)
    wire += obs.w.send(4, LARGE, 8, 0, 1, AAC_SEQUENCE_HEADER)
    for type_id, ts, body in frames:
        wire += obs.w.send(4, MEDIUM, type_id, ts, 1, body)
        wire += obs.w.send(4, MEDIUM, 8, ts + 5, 1, h("af 01") + bytes(360))
    assert obs.send(wire) == []
    events = server.events()
    assert events[0] == MetadataReceived(1, 0, amf0.encode("onMetaData", OBS_METADATA), OBS_METADATA)
    assert events[1] == VideoReceived(1, 0, AVC_SEQUENCE_HEADER)
    assert events[2] == AudioReceived(1, 0, AAC_SEQUENCE_HEADER)
    assert events[3:] == [
        e
        for _, ts, body in frames
        for e in (VideoReceived(1, ts, body), AudioReceived(1, ts + 5, h("af 01") + bytes(360)))
    ]

    # Stopping: FCUnpublish then deleteStream; PublishFinished exactly once.
    answers = obs.send(
        obs.w.invoke(3, MEDIUM, 0, "FCUnpublish", 7.0, None, key)
        + obs.w.invoke(3, MEDIUM, 0, "deleteStream", 8.0, None, 1.0)
    )
    assert server.events() == [PublishFinished(1)]
    assert [a[4][0] for a in answers] == ["onFCUnpublish", "_result"]
    assert server.bytes_received > 3073 and server.bytes_sent > 3073


def test_enhanced_rtmp_connect_gets_the_supported_fourccs_back() -> None:
    server, obs = start_obs()
    obs.set_chunk_size(4096)
    props = dict(OBS_CONNECT, fourCcList=["av01", "vp09", "hvc1"])
    answers = obs.send(obs.w.invoke(3, LARGE, 0, "connect", 1.0, props))
    assert answers == connect_answers(
        {
            "fmsVer": "FMS/3,0,1,123",
            "capabilities": 31.0,
            "fourCcList": ["avc1", "hvc1", "av01", "mp4a", "Opus"],
            "videoFourCcInfoMap": {"avc1": 4.0, "hvc1": 4.0, "av01": 4.0},
            "audioFourCcInfoMap": {"mp4a": 4.0, "Opus": 4.0},
            "capsEx": 0.0,
        }
    )


def test_v2_fourcc_info_map_also_enables_the_enhanced_answer() -> None:
    server, obs = start_obs()
    props = dict(OBS_CONNECT, videoFourCcInfoMap={"hvc1": 1.0}, objectEncoding=0.0)
    (*_, result, _bw) = obs.send(obs.w.invoke(3, LARGE, 0, "connect", 1.0, props))
    assert "fourCcList" in result[4][2] and "videoFourCcInfoMap" in result[4][2]


def test_connect_echoes_the_object_encoding() -> None:
    server, obs = start_obs()
    (*_, result, _bw) = obs.send(obs.w.invoke(3, LARGE, 0, "connect", 1.0, dict(OBS_CONNECT, objectEncoding=3.0)))
    assert result[4][3]["objectEncoding"] == 3.0


def test_amf3_command_with_its_leading_zero_byte_is_understood() -> None:
    server, obs = start_obs()
    body = b"\x00" + amf0.encode("connect", 1.0, OBS_CONNECT)
    answers = obs.send(obs.w.send(3, LARGE, 17, 0, 0, body))
    assert answers[3][4][0] == "_result"


def published(**server_args: object) -> tuple[ServerSession, ClientSession]:
    """A server and a ClientSession publishing "cam?k=1", accepted."""
    server = ServerSession(random_bytes=seeded(2), **server_args)
    client = ClientSession(random_bytes=seeded(3))
    client.connect("live", "rtmp://h/live")
    client.publish("cam?k=1")
    transfer(client, server)
    request = server.events()[-1]
    assert isinstance(request, PublishRequested)
    server.accept_publish(request.request_id)
    transfer(client, server)
    assert client.events()[-1].code == "NetStream.Publish.Start"
    return server, client


def test_publish_rejected_gets_an_error_status_and_nothing_is_accepted() -> None:
    server = ServerSession(random_bytes=seeded(2))
    client = ClientSession(random_bytes=seeded(3))
    client.connect("live", "rtmp://h/live")
    client.publish("cam?token=bad")
    transfer(client, server)
    request = server.events()[-1]
    assert server.reject_publish(request.request_id, "NetStream.Publish.Unauthorized", "Bad token.")
    transfer(client, server)
    status = client.events()[-1]
    assert status == StatusReceived(
        1, "error", "NetStream.Publish.Unauthorized", "Bad token.",
        {"level": "error", "code": "NetStream.Publish.Unauthorized", "description": "Bad token.", "details": "cam"},
    )  # fmt: skip
    client.send_metadata({"width": 1.0})
    client.send_video(0, AVC_SEQUENCE_HEADER)
    transfer(client, server)
    assert server.events() == []
    assert server.dropped_messages == 2
    assert not server.accept_publish(request.request_id)  # already answered


def test_nothing_is_answered_to_publish_until_the_caller_decides() -> None:
    server = ServerSession(random_bytes=seeded(2))
    client = ClientSession(random_bytes=seeded(3))
    client.connect("live", "rtmp://h/live")
    client.publish("cam")
    transfer(client, server)
    client.events()
    transfer(client, server)
    assert client.events() == []


def test_media_before_accept_is_dropped() -> None:
    server = ServerSession(random_bytes=seeded(2))
    client = ClientSession(random_bytes=seeded(3))
    client.connect("live", "rtmp://h/live")
    client.publish("cam")
    transfer(client, server)
    server.events()
    client.send_video(0, AVC_SEQUENCE_HEADER)
    transfer(client, server)
    assert server.events() == []
    assert server.dropped_messages == 1


def test_plain_onmetadata_is_passed_through_unchanged() -> None:
    server, client = published()
    body = amf0.encode("onMetaData", {"width": 640.0})
    client.send_data(40, body)
    client.send_data(50, amf0.encode("@setDataFrame", "onTextData", {"text": "hi"}))
    transfer(client, server)
    assert server.events() == [
        MetadataReceived(1, 40, body, {"width": 640.0}),
        DataReceived(1, 50, "onTextData", amf0.encode("onTextData", {"text": "hi"})),
    ]


def test_malformed_metadata_values_do_not_close_the_connection() -> None:
    server, client = published()
    body = amf0.encode("onMetaData") + h("08 00000001 0001 61 ff")
    client.send_data(0, body)
    transfer(client, server)
    assert server.events() == [MetadataReceived(1, 0, body, {})]


def test_aggregate_messages_are_split_with_rebased_timestamps() -> None:
    server, client = published()
    payload = encode_aggregate([(9, 5000, b"\x17\x01v1"), (8, 5010, b"\xaf\x01a1"), (9, 5033, b"\x27\x01v2")])
    client._write(7, 22, client.stream_id, 1000, payload)
    transfer(client, server)
    assert server.events() == [
        VideoReceived(1, 1000, b"\x17\x01v1"),
        AudioReceived(1, 1010, b"\xaf\x01a1"),
        VideoReceived(1, 1033, b"\x27\x01v2"),
    ]


def test_truncated_aggregate_is_a_protocol_error() -> None:
    server, client = published()
    payload = encode_aggregate([(9, 0, b"\x17\x01v1")])[:-6]
    client._write(7, 22, client.stream_id, 0, payload)
    with pytest.raises(RtmpProtocolError, match="aggregate"):
        transfer(client, server)


def test_unpublish_by_close_stream_emits_publish_finished_once() -> None:
    server, client = published()
    client.close_stream()
    client.delete_stream(1)
    transfer(client, server)
    assert server.events() == [PublishFinished(1)]


# ------------------------------------------------------------------------------------------ play


def playing() -> tuple[ServerSession, ClientSession, WireReader]:
    server = ServerSession(random_bytes=seeded(4))
    client = ClientSession(random_bytes=seeded(5))
    client.connect("live", "rtmp://h/live")
    client.play("cam?token=t", start=-1000)
    transfer(client, server)
    events = server.events()
    request = events[-1]
    assert request == PlayRequested(request.request_id, 1, "live", "cam", "token=t", -1000.0)
    client.events()
    return server, client, WireReader()


def test_play_is_answered_with_stream_begin_reset_start_and_sample_access() -> None:
    server, client, reader = playing()
    # Decode the server's output with a fresh reader: it starts after connect, so replay the chunk size.
    reader.decoder.chunk_size = 4096
    assert server.accept_play(1)
    assert reader.read(server.data_to_send()) == [
        (2, 4, 0, 0, h("0000 00000001")),
        (5, 20, 1, 0, ["onStatus", 0.0, None, {"level": "status", "code": "NetStream.Play.Reset",
                                               "description": "Playing and resetting cam.", "details": "cam"}]),
        (5, 20, 1, 0, ["onStatus", 0.0, None, {"level": "status", "code": "NetStream.Play.Start",
                                               "description": "Started playing cam.", "details": "cam"}]),
        (5, 18, 1, 0, ["|RtmpSampleAccess", True, True]),
    ]  # fmt: skip


def test_played_media_reaches_the_client_with_compressed_headers() -> None:
    server, client, _ = playing()
    server.accept_play(1)
    transfer(client, server)
    client.events()
    metadata = amf0.encode("onMetaData", EcmaArray(width=1280.0))
    batch = [(18, 1, 0, metadata), (9, 1, 0, AVC_SEQUENCE_HEADER), (8, 1, 0, AAC_SEQUENCE_HEADER)]
    batch += [(9, 1, 33 * i, b"\x27\x01" + bytes(5000)) for i in range(1, 5)]
    server.send_media(batch)
    raw = server.data_to_send()
    client.receive_data(raw)
    events = client.events()
    assert events[0] == MetadataReceived(1, 0, metadata, EcmaArray(width=1280.0))
    assert events[1:] == [
        (VideoReceived if t == 9 else AudioReceived)(1, ts, body) for t, _, ts, body in batch[1:]
    ]
    # Video frames 2..4 of equal size and spacing go out as type-3 chunks on csid 7 only:
    # 1-byte header, 4096 bytes, 1-byte continuation header, 906 bytes.
    size = 1 + 4096 + 1 + 906
    tail = raw[-3 * size :]
    assert [tail[i * size + j] for i in range(3) for j in (0, 4097)] == [0xC7] * 6


def test_send_helpers_and_end_of_stream() -> None:
    server, client, _ = playing()
    server.accept_play(1)
    server.send_video(1, 0, AVC_SEQUENCE_HEADER)
    server.send_audio(1, 0, AAC_SEQUENCE_HEADER)
    server.send_data(1, 0, amf0.encode("onMetaData", {}))
    server.end_play(1)
    transfer(client, server)
    events = client.events()
    assert VideoReceived(1, 0, AVC_SEQUENCE_HEADER) in events
    assert AudioReceived(1, 0, AAC_SEQUENCE_HEADER) in events
    assert [e.code for e in events if isinstance(e, StatusReceived)][-1] == "NetStream.Play.UnpublishNotify"
    assert events[-1].event == 1 and events[-1].value == 1  # Stream EOF


def test_media_for_a_stream_that_is_not_playing_is_dropped() -> None:
    server, client, _ = playing()
    server.send_video(1, 0, b"x")
    server.send_media([(9, 1, 0, b"x"), (9, 7, 0, b"x")])
    assert server.data_to_send() == b""
    assert server.dropped_messages == 3
    with pytest.raises(UsageError, match="not type 20"):
        server.send_media([(20, 1, 0, b"x")])


def test_rejected_play_and_finished_play() -> None:
    server, client, _ = playing()
    assert server.reject_play(1, "NetStream.Play.StreamNotFound", "No such stream.")
    transfer(client, server)
    assert client.events()[-1].code == "NetStream.Play.StreamNotFound"
    client.play("other")
    transfer(client, server)
    request = server.events()[-1]
    server.accept_play(request.request_id)
    client.delete_stream(request.stream_id)
    transfer(client, server)
    assert server.events() == [PlayFinished(request.stream_id)]


def test_answer_after_the_client_deleted_the_stream_is_a_no_op() -> None:
    server, client, _ = playing()
    client.delete_stream(1)
    transfer(client, server)
    assert server.events() == []
    assert server.accept_play(1) is False
    assert server.data_to_send() == b""


def test_answering_a_request_that_was_never_issued_is_a_usage_error() -> None:
    server, _, _ = playing()
    with pytest.raises(UsageError, match="never issued"):
        server.accept_publish(99)
    with pytest.raises(UsageError, match="play request, not a publish request"):
        server.accept_publish(1)


# ----------------------------------------------------------------------------- control, errors


def connected() -> tuple[ServerSession, ClientSession]:
    server = ServerSession(random_bytes=seeded(6))
    client = ClientSession(random_bytes=seeded(7))
    client.connect("live", "rtmp://h/live")
    transfer(client, server)
    server.events()
    client.events()
    return server, client


def test_unknown_command_with_a_transaction_id_gets_an_error_answer() -> None:
    server, client = connected()
    txn = client.call("getMeSomething", None, "x")
    client.call("ignoredWithoutAnswer")  # gets _error too: it has a transaction id
    client._send_command(0, "fireAndForget", 0, None)
    transfer(client, server)
    events = client.events()
    assert len(events) == 2
    assert events[0].transaction_id == txn and not events[0].accepted
    assert events[0].arguments[1] == {
        "level": "error",
        "code": "NetConnection.Call.Failed",
        "description": "Method not found (getMeSomething).",
    }


def test_get_stream_length_is_answered() -> None:
    server, client = connected()
    client.call("getStreamLength", None, "cam")
    transfer(client, server)
    (event,) = client.events()
    assert event.accepted and event.arguments == (None, 0.0)


def test_ping_request_gets_a_ping_response() -> None:
    server, client = connected()
    reader = WireReader()
    reader.decoder.chunk_size = 4096
    encoder = ChunkEncoder(4096)
    server.receive_data(encoder.encode(2, 4, 0, 0, h("0006 00000d0f")))
    assert reader.read(server.data_to_send()) == [(2, 4, 0, 0, h("0007 00000d0f"))]


def test_acknowledgements_follow_the_peer_window() -> None:
    server, client = connected()
    encoder = ChunkEncoder(4096)
    reader = WireReader()
    reader.decoder.chunk_size = 4096
    # More than 1000 bytes (the handshake) arrived unacknowledged: the first ack is due at once.
    server.receive_data(encoder.encode(2, 5, 0, 0, u32(1000)))
    assert reader.read(server.data_to_send()) == [(2, 3, 0, 0, u32(server.bytes_received))]
    small = encoder.encode(3, 20, 0, 0, amf0.encode("x", 0.0, None, "y" * 400))
    server.receive_data(small)
    server.receive_data(small)
    assert server.data_to_send() == b""
    server.receive_data(small)
    assert reader.read(server.data_to_send()) == [(2, 3, 0, 0, u32(server.bytes_received))]


def test_acknowledgement_from_the_peer_is_an_event() -> None:
    server, client = connected()
    server.receive_data(ChunkEncoder(4096).encode(2, 3, 0, 0, u32(123456)))
    assert server.events() == [AcknowledgementReceived(123456)]


def test_command_before_connect_is_a_protocol_error() -> None:
    server = ServerSession(random_bytes=seeded(8))
    client = ClientSession(random_bytes=seeded(9))
    client.create_stream()
    with pytest.raises(RtmpProtocolError, match="before connect"):
        transfer(client, server)


def test_connect_twice_is_a_protocol_error() -> None:
    server, client = connected()
    client.connect("live", "rtmp://h/live")
    with pytest.raises(RtmpProtocolError, match="connect sent twice"):
        transfer(client, server)


def test_publish_on_a_stream_that_was_never_created_is_a_protocol_error() -> None:
    server, client = connected()
    client._send_command(5, "publish", 0, None, "cam", "live")
    with pytest.raises(RtmpProtocolError, match="message stream 5, which was not created"):
        transfer(client, server)


def test_too_many_streams_is_a_protocol_error() -> None:
    server = ServerSession(random_bytes=seeded(8), max_streams=2)
    client = ClientSession(random_bytes=seeded(9))
    client.connect("live", "rtmp://h/live")
    for _ in range(3):
        client.create_stream()
    with pytest.raises(RtmpProtocolError, match="more than 2 message streams"):
        transfer(client, server)


def test_command_that_is_not_a_command_is_a_protocol_error() -> None:
    server, client = connected()
    client._write(3, 20, 0, 0, amf0.encode(1.0, 2.0))
    with pytest.raises(RtmpProtocolError, match="name string"):
        transfer(client, server)


def test_http_request_instead_of_rtmp_is_a_clear_protocol_error() -> None:
    server = ServerSession()
    with pytest.raises(RtmpProtocolError, match="HTTP request"):
        server.receive_data(b"GET /live/cam.flv HTTP/1.1\r\n\r\n")


def test_handshake_and_byte_counters_are_exposed() -> None:
    server = ServerSession(random_bytes=seeded(1))
    assert not server.handshake_done
    server.receive_data(b"\x03" + bytes(PACKET_SIZE))
    assert not server.handshake_done
    assert server.bytes_received == 1 + PACKET_SIZE
    assert len(server.data_to_send()) == 1 + 2 * PACKET_SIZE
    assert server.bytes_sent == 1 + 2 * PACKET_SIZE


# ----------------------------------------------------------------------------------- fuzzing

amf_values = st.one_of(
    st.text(max_size=12), st.floats(), st.none(), st.dictionaries(st.text(max_size=5), st.text(max_size=5))
)
command_names = st.sampled_from(
    ["connect", "createStream", "publish", "play", "deleteStream", "FCUnpublish", "closeStream"]
)
command_args = st.lists(st.one_of(st.floats(0, 5), st.text(max_size=8), st.none()), max_size=4)
message_bodies = st.one_of(
    st.binary(max_size=300),
    st.lists(amf_values, max_size=5).map(lambda values: amf0.encode(*values)),
    st.tuples(command_names, command_args).map(lambda c: amf0.encode(c[0], *c[1])),
)
fuzz_messages = st.lists(
    st.tuples(
        st.sampled_from([2, 3, 4, 5, 8]),
        st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 17, 18, 20, 22, 99]),
        st.integers(0, 3),
        st.integers(0, 0xFFFFFFFF),
        message_bodies,
    ),
    max_size=12,
)


def handshaken_server() -> ServerSession:
    server = ServerSession(random_bytes=seeded(10), max_message_size=4096)
    server.receive_data(b"\x03" + bytes(PACKET_SIZE) * 2)
    server.data_to_send()
    return server


@given(fuzz_messages)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_messages_raise_only_protocol_errors(messages: list) -> None:
    server = handshaken_server()
    encoder = ChunkEncoder()
    try:
        for csid, type_id, stream_id, timestamp, body in messages:
            server.receive_data(encoder.encode(csid, type_id, stream_id, timestamp, body))
            for event in server.events():
                # Accept whatever is asked, so media, data and finishing paths get exercised too.
                if isinstance(event, PublishRequested):
                    server.accept_publish(event.request_id)
                elif isinstance(event, PlayRequested):
                    server.accept_play(event.request_id)
            server.data_to_send()
    except PeerError:  # RtmpProtocolError or Amf0Error: the server closes that connection
        pass


@given(st.binary(max_size=2000), st.integers(1, 300))
@settings(max_examples=500, deadline=None)
def test_random_bytes_after_the_handshake_raise_only_protocol_errors(data: bytes, step: int) -> None:
    server = handshaken_server()
    try:
        for i in range(0, len(data), step):
            server.receive_data(data[i : i + step])
    except PeerError:  # RtmpProtocolError or Amf0Error: the server closes that connection
        return
    assert server._decoder.buffered_bytes <= 18 + 4096 + 2 * 4096


@given(st.binary(max_size=5000))
@settings(max_examples=200, deadline=None)
def test_random_bytes_from_the_first_byte_raise_only_protocol_errors(data: bytes) -> None:
    server = ServerSession(random_bytes=seeded(11))
    try:
        server.receive_data(data)
    except PeerError:  # RtmpProtocolError or Amf0Error: the server closes that connection
        pass


publishing_messages = st.lists(
    st.tuples(
        st.sampled_from([3, 4, 5, 6, 7]),
        st.sampled_from([3, 4, 5, 6, 8, 9, 15, 17, 18, 20, 22]),
        st.sampled_from([0, 1, 1, 1, 2]),
        st.integers(0, 0xFFFFFFFF),
        st.one_of(
            message_bodies,
            st.lists(st.tuples(st.sampled_from([8, 9, 18, 20]), st.integers(0, 0xFFFFFFFF), st.binary(max_size=40)),
                     max_size=4).map(encode_aggregate),
            st.dictionaries(st.text(max_size=6), st.floats()).map(
                lambda d: amf0.encode("@setDataFrame", "onMetaData", EcmaArray(d))
            ),
        ),
    ),
    max_size=12,
)  # fmt: skip


@given(publishing_messages)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_messages_on_a_publishing_stream_raise_only_protocol_errors(messages: list) -> None:
    server, client = published()
    try:
        for csid, type_id, stream_id, timestamp, body in messages:
            client._write(csid, type_id, stream_id, timestamp, body)
            server.receive_data(client.data_to_send())
            for event in server.events():
                if isinstance(event, (VideoReceived, AudioReceived, MetadataReceived, DataReceived)):
                    assert event.stream_id == 1
    except PeerError:  # RtmpProtocolError or Amf0Error: the server closes that connection
        pass


def test_connection_lost_finishes_every_active_stream_once() -> None:
    server, client = published()
    server.connection_lost()
    assert server.events() == [PublishFinished(1)]
    server.connection_lost()
    assert server.events() == []


def test_delete_stream_with_a_nonsense_id_is_ignored() -> None:
    server, client = published()
    for target in (float("nan"), float("inf"), "1", None, 1.5):
        client._send_command(0, "deleteStream", 0, None, target)
    transfer(client, server)
    assert server.events() == []


def test_send_media_takes_memoryview_bodies_shared_with_other_viewers() -> None:
    server, client, _ = playing()
    server.accept_play(1)
    transfer(client, server)
    client.events()
    tag = b"\x09" + bytes(10) + b"\x27\x01" + bytes(6000) + bytes(4)
    body = memoryview(tag)[11:-4]
    server.send_media([(9, 1, 40, body)])
    transfer(client, server)
    assert client.events() == [VideoReceived(1, 40, bytes(body))]


def test_phase_tells_the_caller_how_far_the_connection_got() -> None:
    server = ServerSession(random_bytes=seeded(2))
    assert server.phase is SessionPhase.HANDSHAKE
    server.receive_data(b"\x03" + bytes(PACKET_SIZE) * 2)
    assert server.phase is SessionPhase.CONNECTING
    client = ClientSession(random_bytes=seeded(3))
    client.connect("live", "rtmp://h/live")
    server2 = ServerSession(random_bytes=seeded(4))
    transfer(client, server2)
    assert server2.phase is SessionPhase.CONNECTED and not server2.awaiting_answer
    client.publish("cam")
    transfer(client, server2)
    request = server2.events()[-1]
    assert server2.phase is SessionPhase.CONNECTED and server2.awaiting_answer  # the caller's turn
    server2.accept_publish(request.request_id)
    assert server2.phase is SessionPhase.PUBLISHING and not server2.awaiting_answer
    client.call("FCUnpublish", None, "cam")
    transfer(client, server2)
    assert server2.phase is SessionPhase.CONNECTED


def test_phase_is_playing_once_play_is_accepted() -> None:
    server = ServerSession(random_bytes=seeded(2))
    client = ClientSession(random_bytes=seeded(3))
    client.connect("live", "rtmp://h/live")
    client.play("cam")
    transfer(client, server)
    server.accept_play(server.events()[-1].request_id)
    assert server.phase is SessionPhase.PLAYING


def test_a_command_over_the_command_limit_closes_the_connection() -> None:
    server = ServerSession(random_bytes=seeded(2), max_command_size=4096)
    client = ClientSession(random_bytes=seeded(3))
    client.connect("live", "rtmp://h/live")
    transfer(client, server)
    client.call("FCPublish", None, "x" * 5000)
    with pytest.raises(RtmpProtocolError, match="5.* bytes \\(type 20\\).*4096-byte limit"):
        transfer(client, server)


def test_a_data_message_over_the_command_limit_inside_an_aggregate_closes_the_connection() -> None:
    server, client = published(max_command_size=4096)
    metadata = amf0.encode("onMetaData", {"k": "x" * 5000})
    client._write(7, 22, client.stream_id, 0, encode_aggregate([(18, 0, metadata)]))
    with pytest.raises(RtmpProtocolError, match="inside an aggregate exceeds the 4096-byte limit"):
        transfer(client, server)


def test_shared_chunks_reach_a_player_between_status_messages() -> None:
    """RTMP play sends each frame as type-0 chunks made once for every player (send_shared); the session's
    own messages before and after keep their order and their compressed headers stay readable."""
    server, client, _ = playing()
    server.accept_play(1)
    transfer(client, server)
    client.events()
    frames = [(9, 0x1000000 + 33 * i, b"\x27\x01" + bytes(5000 + i)) for i in range(3)]
    frames.append((8, 0x1000010, AAC_SEQUENCE_HEADER))
    csids = {9: 7, 8: 6}
    data = b"".join(chunk_message(csids[t], t, 1, ts, body, 4096) for t, ts, body in frames)
    server.send_shared(1, data, [(7, 9, frames[2][1], len(frames[2][2])), (6, 8, frames[3][1], len(frames[3][2]))])
    server.end_play(1)
    transfer(client, server)
    events = client.events()
    assert events[:4] == [(VideoReceived if t == 9 else AudioReceived)(1, ts, body) for t, ts, body in frames]
    assert [e.code for e in events if isinstance(e, StatusReceived)] == ["NetStream.Play.UnpublishNotify"]
    server.send_shared(7, b"x", [(7, 9, 0, 1)])  # not playing: dropped
    assert server.data_to_send() == b"" and server.dropped_messages == 1
