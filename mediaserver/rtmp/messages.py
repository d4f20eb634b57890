"""RTMP message types and the codecs of their payloads (RTMP spec 5.4, 6.2 and 7.1).

    1 Set Chunk Size       4 bytes, bit 31 zero          5 Window Acknowledgement Size  4 bytes
    2 Abort                4 bytes: chunk stream id      6 Set Peer Bandwidth  4 bytes + limit type
    3 Acknowledgement      4 bytes: bytes received       4 User Control  2-byte event + data
    8 audio, 9 video       FLV tag bodies, carried as they are
    15 AMF3 data, 18 AMF0 data            name + values (e.g. "@setDataFrame", "onMetaData", {...})
    17 AMF3 command, 20 AMF0 command      name, transaction id, command object, arguments
    22 aggregate           FLV-tag-framed sub-messages

AMF3 commands and data are accepted the way Flash sends them: a leading format byte 0x00 and then
AMF0 values; replies always go out as AMF0 (type 20). Shared objects (16, 19) are not supported.

This module only turns payloads into values and back; what a message means for a connection is the
session's business.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from mediaserver.media import amf0
from mediaserver.rtmp.errors import RtmpProtocolError

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_EVENT_U32 = struct.Struct(">HI")
_EVENT_U32X2 = struct.Struct(">HII")
MASK32 = 0xFFFFFFFF


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


class UserControlEvent(IntEnum):
    STREAM_BEGIN = 0
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


class PeerBandwidthLimit(IntEnum):
    HARD = 0
    SOFT = 1
    DYNAMIC = 2


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded command message: `name(transaction_id, command_object, *arguments)`."""

    name: str
    transaction_id: float
    command_object: Any
    """Usually a dict (connect) or None (most others)."""
    arguments: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class UserControl:
    """A decoded User Control message."""

    event: int
    value: int
    """The stream id for stream events, the timestamp for pings."""
    buffer_length_ms: int = 0
    """Only for Set Buffer Length."""


_KNOWN_EVENTS = frozenset(int(e) for e in UserControlEvent)

# ------------------------------------------------------------------------------- protocol control


def encode_u32(value: int) -> bytes:
    return _U32.pack(value & MASK32)


def decode_u32(payload: bytes, what: str) -> int:
    if len(payload) < 4:
        raise RtmpProtocolError(f"{what} message of {len(payload)} bytes; must be 4")
    return _U32.unpack_from(payload)[0]


def encode_set_chunk_size(size: int) -> bytes:
    return _U32.pack(size & 0x7FFFFFFF)


def encode_set_peer_bandwidth(size: int, limit: int = PeerBandwidthLimit.DYNAMIC) -> bytes:
    return _U32.pack(size & MASK32) + bytes([limit])


def decode_set_peer_bandwidth(payload: bytes) -> tuple[int, int]:
    if len(payload) < 5:
        raise RtmpProtocolError(f"Set Peer Bandwidth message of {len(payload)} bytes; must be 5")
    return _U32.unpack_from(payload)[0], payload[4]


def encode_user_control(event: int, value: int, buffer_length_ms: int | None = None) -> bytes:
    if buffer_length_ms is not None:
        return _EVENT_U32X2.pack(event, value & MASK32, buffer_length_ms & MASK32)
    return _EVENT_U32.pack(event, value & MASK32)


def decode_user_control(payload: bytes) -> UserControl:
    if len(payload) < 2:
        raise RtmpProtocolError(f"User Control message of {len(payload)} bytes; must be at least 6")
    event = _U16.unpack_from(payload)[0]
    if event == UserControlEvent.SET_BUFFER_LENGTH:
        if len(payload) < 10:
            raise RtmpProtocolError(f"Set Buffer Length event of {len(payload)} bytes; must be 10")
        _, stream_id, buffer_ms = _EVENT_U32X2.unpack_from(payload)
        return UserControl(event, stream_id, buffer_ms)
    if len(payload) < 6:
        # Unknown events may carry anything; known ones carry at least 4 bytes.
        if event in _KNOWN_EVENTS:
            raise RtmpProtocolError(f"User Control event {event} of {len(payload)} bytes; must be 6")
        return UserControl(event, 0)
    return UserControl(event, _U32.unpack_from(payload, 2)[0])


# ----------------------------------------------------------------------------------- commands, data


def amf0_offset(payload: bytes, type_id: int) -> int:
    """Offset of the first AMF0 value: the AMF3 variants (15, 17) start with a 0x00 format byte."""
    if type_id in (MessageType.COMMAND_AMF3, MessageType.DATA_AMF3) and payload[:1] == b"\x00":
        return 1
    return 0


def decode_command(payload: bytes, type_id: int = MessageType.COMMAND_AMF0) -> Command:
    values = amf0.decode_all(payload, amf0_offset(payload, type_id))
    if not values or not isinstance(values[0], str):
        raise RtmpProtocolError(f"command message does not start with a name string: {values[:1]!r}")
    name = values[0]
    txn = values[1] if len(values) > 1 else 0.0
    if isinstance(txn, bool) or not isinstance(txn, (int, float)):
        raise RtmpProtocolError(f"command {name!r} has transaction id {txn!r}; must be a number")
    command_object = values[2] if len(values) > 2 else None
    return Command(name, float(txn), command_object, tuple(values[3:]))


def encode_command(name: str, transaction_id: float, command_object: Any = None, *arguments: Any) -> bytes:
    return amf0.encode(name, transaction_id, command_object, *arguments)


def status_info(level: str, code: str, description: str, **extra: Any) -> dict[str, Any]:
    """The info object of onStatus and of connect's _result/_error."""
    info: dict[str, Any] = {"level": level, "code": code, "description": description}
    info.update(extra)
    return info


def encode_on_status(level: str, code: str, description: str, **extra: Any) -> bytes:
    return amf0.encode("onStatus", 0, None, status_info(level, code, description, **extra))


def encode_data(*values: Any) -> bytes:
    return amf0.encode(*values)


# ------------------------------------------------------------------------------------- aggregate


def split_aggregate(payload: bytes, timestamp: int) -> list[tuple[int, int, bytes]]:
    """Split an aggregate message into (type id, timestamp, body) sub-messages (spec 7.1.6).

    Each sub-message is framed like an FLV tag: type (1), size (3), timestamp (3 + 1 extension byte),
    stream id (3, ignored: the aggregate's own message stream id applies), body, back pointer (4).
    Sub-message timestamps are rebased so the first one equals the aggregate's timestamp.
    """
    out: list[tuple[int, int, bytes]] = []
    n = len(payload)
    pos = 0
    offset: int | None = None
    while pos < n:
        if pos + 11 > n:
            raise RtmpProtocolError(
                f"aggregate message: sub-message header at offset {pos} is truncated ({n - pos} of 11 bytes)"
            )
        type_id = payload[pos]
        size = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(payload[pos + 4 : pos + 7], "big") | (payload[pos + 7] << 24)
        body_start = pos + 11
        body_end = body_start + size
        if body_end + 4 > n:
            raise RtmpProtocolError(
                f"aggregate message: sub-message at offset {pos} declares {size} bytes but only "
                f"{max(n - body_start - 4, 0)} remain before its back pointer"
            )
        if offset is None:
            offset = (timestamp - ts) & MASK32
        out.append((type_id, (ts + offset) & MASK32, payload[body_start:body_end]))
        pos = body_end + 4
    return out


def encode_aggregate(parts: list[tuple[int, int, bytes]]) -> bytes:
    """Build an aggregate payload from (type id, timestamp, body) parts (for tests and relays)."""
    out = bytearray()
    for type_id, ts, body in parts:
        out.append(type_id)
        out += len(body).to_bytes(3, "big")
        out += (ts & 0xFFFFFF).to_bytes(3, "big")
        out.append((ts >> 24) & 0xFF)
        out += b"\x00\x00\x00"
        out += body
        out += _U32.pack(11 + len(body))
    return bytes(out)
