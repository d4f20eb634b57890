"""Message payload codecs: protocol control, User Control, commands and aggregates."""

from __future__ import annotations

import pytest

from mediaserver.media import amf0
from mediaserver.rtmp.errors import RtmpProtocolError
from mediaserver.rtmp.messages import (
    Command,
    MessageType,
    UserControl,
    UserControlEvent,
    decode_command,
    decode_set_peer_bandwidth,
    decode_u32,
    decode_user_control,
    encode_aggregate,
    encode_command,
    encode_on_status,
    encode_set_chunk_size,
    encode_set_peer_bandwidth,
    encode_user_control,
    split_aggregate,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


USER_CONTROL = [
    ("stream begin", h("0000 00000001"), UserControl(UserControlEvent.STREAM_BEGIN, 1)),
    ("stream EOF", h("0001 00000002"), UserControl(UserControlEvent.STREAM_EOF, 2)),
    ("stream dry", h("0002 00000001"), UserControl(UserControlEvent.STREAM_DRY, 1)),
    ("set buffer length", h("0003 00000001 00000bb8"), UserControl(UserControlEvent.SET_BUFFER_LENGTH, 1, 3000)),
    ("stream is recorded", h("0004 00000001"), UserControl(UserControlEvent.STREAM_IS_RECORDED, 1)),
    ("ping request", h("0006 00000d0f"), UserControl(UserControlEvent.PING_REQUEST, 0xD0F)),
    ("ping response", h("0007 00000d0f"), UserControl(UserControlEvent.PING_RESPONSE, 0xD0F)),
]


@pytest.mark.parametrize("name, wire, value", USER_CONTROL, ids=[u[0] for u in USER_CONTROL])
def test_user_control_round_trips(name: str, wire: bytes, value: UserControl) -> None:
    assert decode_user_control(wire) == value
    extra = value.buffer_length_ms if value.event == UserControlEvent.SET_BUFFER_LENGTH else None
    assert encode_user_control(value.event, value.value, extra) == wire


def test_unknown_user_control_events_are_tolerated() -> None:
    assert decode_user_control(h("001f")) == UserControl(31, 0)
    assert decode_user_control(h("001a 00000005 0000")) == UserControl(26, 5)


@pytest.mark.parametrize("wire", [h(""), h("00"), h("0000 0000"), h("0003 00000001")])
def test_short_user_control_is_rejected(wire: bytes) -> None:
    with pytest.raises(RtmpProtocolError, match="User Control|Set Buffer Length"):
        decode_user_control(wire)


def test_protocol_control_payloads() -> None:
    assert encode_set_chunk_size(4096) == h("00001000")
    assert encode_set_peer_bandwidth(2_500_000) == h("002625a0 02")
    assert decode_set_peer_bandwidth(h("002625a0 01")) == (2_500_000, 1)
    assert decode_u32(h("00001000"), "Window Acknowledgement Size") == 4096
    with pytest.raises(RtmpProtocolError, match="Window Acknowledgement Size message of 3 bytes; must be 4"):
        decode_u32(h("000010"), "Window Acknowledgement Size")
    with pytest.raises(RtmpProtocolError, match="Set Peer Bandwidth message of 4 bytes"):
        decode_set_peer_bandwidth(h("002625a0"))


def test_commands_decode_and_encode() -> None:
    body = encode_command("connect", 1, {"app": "live"})
    assert decode_command(body) == Command("connect", 1.0, {"app": "live"}, ())
    assert decode_command(amf0.encode("publish", 5.0, None, "cam", "live")) == Command(
        "publish", 5.0, None, ("cam", "live")
    )
    assert decode_command(amf0.encode("onBWDone")) == Command("onBWDone", 0.0, None, ())


def test_amf3_command_skips_its_format_byte() -> None:
    body = b"\x00" + amf0.encode("createStream", 2.0, None)
    assert decode_command(body, MessageType.COMMAND_AMF3) == Command("createStream", 2.0, None, ())


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "does not start with a name"),
        (amf0.encode(3.0), "does not start with a name"),
        (amf0.encode("connect", "one"), "transaction id 'one'"),
        (amf0.encode("connect", True), "transaction id True"),
    ],
)
def test_malformed_commands_are_rejected(body: bytes, message: str) -> None:
    with pytest.raises(RtmpProtocolError, match=message):
        decode_command(body)


def test_on_status_body() -> None:
    assert amf0.decode_all(encode_on_status("status", "NetStream.Publish.Start", "ok", details="cam")) == [
        "onStatus",
        0.0,
        None,
        {"level": "status", "code": "NetStream.Publish.Start", "description": "ok", "details": "cam"},
    ]


# ------------------------------------------------------------------------------------ aggregate

AGGREGATE = h(
    "09 000002 000064 00 000000 | 1701 | 0000000d"  # video, 2 bytes, ts 100
    "08 000001 00006e 00 000000 | af | 0000000c"  # audio, 1 byte, ts 110
    "09 000000 ffffff 01 000000 | | 0000000b"  # video, empty, ts 0x01ffffff (extension byte)
)


def test_aggregate_is_split_and_rebased_to_the_aggregate_timestamp() -> None:
    assert split_aggregate(AGGREGATE, 1000) == [
        (9, 1000, h("1701")),
        (8, 1010, h("af")),
        (9, (0x01FFFFFF - 100 + 1000) & 0xFFFFFFFF, b""),
    ]


def test_aggregate_rebasing_wraps_modulo_2_32() -> None:
    parts = split_aggregate(encode_aggregate([(9, 100, b"a"), (9, 140, b"b")]), 0xFFFFFFF0)
    assert [ts for _, ts, _ in parts] == [0xFFFFFFF0, (0xFFFFFFF0 + 40) & 0xFFFFFFFF]


def test_encode_aggregate_builds_the_same_framing() -> None:
    assert encode_aggregate([(9, 100, h("1701")), (8, 110, h("af")), (9, 0x01FFFFFF, b"")]) == AGGREGATE


@pytest.mark.parametrize("cut", [1, 10, 12, len(AGGREGATE) - 1])
def test_truncated_aggregate_is_rejected(cut: int) -> None:
    with pytest.raises(RtmpProtocolError, match="aggregate message"):
        split_aggregate(AGGREGATE[:cut], 0)


def test_empty_aggregate_has_no_sub_messages() -> None:
    assert split_aggregate(b"", 5) == []
