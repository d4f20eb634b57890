"""The client side of an RTMP connection, sans-IO: publish or play against any RTMP server.

    client = ClientSession()
    client.connect("live", "rtmp://host/live")
    client.publish("name?token=abc")           # or client.play("name")
    transport.write(client.data_to_send())
    client.receive_data(data); for event in client.events(): ...

It behaves like OBS (librtmp) when publishing: Set Chunk Size before connect, then connect with
OBS's properties, and releaseStream, FCPublish and createStream; publish goes out on the new message
stream as soon as createStream's _result arrives. Playing is createStream, then play and Set Buffer
Length, as ffmpeg does. The caller sends media only after StatusReceived(NetStream.Publish.Start).

Commands may be queued before the handshake completes; their bytes are held until C2 has been sent.
The caller must feed every received byte in order and close after an RtmpProtocolError. Used by the
tests, and later by cluster pulls and benchmarks.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from mediaserver.errors import UsageError
from mediaserver.media import amf0
from mediaserver.rtmp.chunk import DEFAULT_MAX_MESSAGE_SIZE, EXTENDED, MASK32
from mediaserver.rtmp.errors import RtmpProtocolError
from mediaserver.rtmp.events import (
    AudioReceived,
    CommandReceived,
    CommandResultReceived,
    ConnectResult,
    StatusReceived,
    StreamCreated,
    UserControlReceived,
    VideoReceived,
)
from mediaserver.rtmp.handshake import ClientHandshake
from mediaserver.rtmp.messages import (
    Command,
    MessageType,
    UserControlEvent,
    decode_set_peer_bandwidth,
    encode_data,
    encode_u32,
    encode_user_control,
)
from mediaserver.rtmp.session import CSID_AUDIO, CSID_STREAM, CSID_VIDEO, SessionCore, is_number

DEFAULT_FLASH_VERSION = "FMLE/3.0 (compatible; FMSc/1.0)"
"""What OBS (librtmp) sends as flashVer when publishing."""
_MEDIA_CSID = {MessageType.AUDIO: CSID_AUDIO, MessageType.VIDEO: CSID_VIDEO, MessageType.DATA_AMF0: CSID_STREAM}
_U32 = struct.Struct(">I")
_U32LE = struct.Struct("<I")


def chunk_media(type_id: int, stream_id: int, timestamp: int, payload: bytes | memoryview, chunk_size: int) -> bytes:
    """One audio (8), video (9) or data (18) message as a self-contained run of chunks, on the chunk stream
    ClientSession's send_* use: a type 0 header (it needs no state of an earlier message), then type 3
    continuations. The same bytes suit every connection with that chunk size and message stream id, so
    they can be made once and written to many; a type 0 header costs at most 11 bytes more per message.
    A connection that writes these must send no compressed media of its own on those chunk streams."""
    csid = _MEDIA_CSID[type_id]
    length = len(payload)
    timestamp &= MASK32
    ext = timestamp >= EXTENDED
    ext_bytes = _U32.pack(timestamp) if ext else b""
    head = (bytes([csid]) + (EXTENDED if ext else timestamp).to_bytes(3, "big") + length.to_bytes(3, "big")
            + bytes([type_id]) + _U32LE.pack(stream_id) + ext_bytes)
    if length <= chunk_size:
        return head + payload
    view = memoryview(payload)
    continuation = bytes([0xC0 | csid]) + ext_bytes
    parts = [head, view[:chunk_size]]
    for offset in range(chunk_size, length, chunk_size):
        parts.append(continuation)
        parts.append(view[offset:offset + chunk_size])
    return b"".join(parts)


class ClientSession(SessionCore):
    """One RTMP connection, seen from the client."""

    def __init__(
        self,
        *,
        chunk_size: int = 4096,
        window_ack_size: int = 2_500_000,
        buffer_length_ms: int = 3000,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        digest_handshake: bool = False,
        random_bytes: Any = os.urandom,
    ) -> None:
        super().__init__(
            ClientHandshake(random_bytes, digest=digest_handshake), max_message_size=max_message_size
        )
        self._chunk_size = chunk_size
        self._window_ack_size = window_ack_size
        self._buffer_length_ms = buffer_length_ms
        self._last_txn = 0
        self._pending: dict[float, tuple[str, tuple[Any, ...]]] = {}
        self._sent_ack_window = 0
        self.connected = False
        self.stream_id = 0
        """The message stream that publish() or play() created (0 until createStream's answer)."""
        self.stream_key = ""

    # ---------------------------------------------------------------------------------- commands

    def connect(self, app: str, tc_url: str, properties: dict[str, Any] | None = None) -> float:
        """Send Set Chunk Size (if not 128) and connect; return connect's transaction id.

        `properties` are added to (or replace) OBS's connect properties: app, type, flashVer,
        swfUrl, tcUrl. Pass e.g. {"fourCcList": ["av01", "vp09", "hvc1"]} for Enhanced RTMP.
        """
        if self._chunk_size != self._encoder.chunk_size:
            self._set_out_chunk_size(self._chunk_size)
        props: dict[str, Any] = {
            "app": app,
            "type": "nonprivate",
            "flashVer": DEFAULT_FLASH_VERSION,
            "swfUrl": tc_url,
            "tcUrl": tc_url,
        }
        if properties:
            props.update(properties)
        return self.call("connect", props)

    def call(self, name: str, command_object: Any = None, *arguments: Any, stream_id: int = 0) -> float:
        """Send any command with a fresh transaction id; its answer becomes an event."""
        return self._invoke(stream_id, name, (), command_object, *arguments)

    def _invoke(
        self, stream_id: int, name: str, context: tuple[Any, ...], command_object: Any = None, *arguments: Any
    ) -> float:
        txn = self._next_txn()
        self._pending[txn] = (name, context)
        self._send_command(stream_id, name, txn, command_object, *arguments)
        return txn

    def create_stream(self) -> float:
        """createStream on its own; its answer is StreamCreated."""
        return self.call("createStream")

    def publish(self, key: str, publish_type: str = "live") -> None:
        """releaseStream, FCPublish, createStream; publish follows createStream's _result."""
        self.stream_key = key
        self._invoke(0, "releaseStream", (), None, key)
        self._invoke(0, "FCPublish", (), None, key)
        self._invoke(0, "createStream", ("publish", key, publish_type))

    def play(self, key: str, start: float = -2000, duration: float = -1, reset: bool = True) -> None:
        """createStream; play and Set Buffer Length follow createStream's _result."""
        self.stream_key = key
        self._invoke(0, "createStream", ("play", key, start, duration, reset))

    def unpublish(self) -> None:
        """FCUnpublish and deleteStream, as OBS does when it stops."""
        if not self.stream_id:
            raise UsageError("unpublish() before publish() created a stream")
        self._invoke(0, "FCUnpublish", (), None, self.stream_key)
        self.delete_stream(self.stream_id)

    def delete_stream(self, stream_id: int) -> None:
        self._send_command(0, "deleteStream", self._next_txn(), None, stream_id)
        if stream_id == self.stream_id:
            self.stream_id = 0

    def close_stream(self, stream_id: int | None = None) -> None:
        self._send_command(stream_id or self.stream_id, "closeStream", 0, None)

    # ------------------------------------------------------------------------------------ media

    def send_video(self, timestamp: int, body: bytes, stream_id: int | None = None) -> None:
        self._write(CSID_VIDEO, MessageType.VIDEO, self._media_stream(stream_id), timestamp, body)

    def send_audio(self, timestamp: int, body: bytes, stream_id: int | None = None) -> None:
        self._write(CSID_AUDIO, MessageType.AUDIO, self._media_stream(stream_id), timestamp, body)

    def send_data(self, timestamp: int, body: bytes, stream_id: int | None = None) -> None:
        """Send a raw AMF0 data message body."""
        self._write(CSID_STREAM, MessageType.DATA_AMF0, self._media_stream(stream_id), timestamp, body)

    def send_metadata(self, values: dict[str, Any], timestamp: int = 0, stream_id: int | None = None) -> None:
        """Send @setDataFrame("onMetaData", values) as an ECMA array, as OBS and ffmpeg do."""
        body = encode_data("@setDataFrame", "onMetaData", amf0.EcmaArray(values))
        self.send_data(timestamp, body, stream_id)

    def _media_stream(self, stream_id: int | None) -> int:
        sid = self.stream_id if stream_id is None else stream_id
        if not sid:
            raise UsageError("no message stream to send on: publish() and wait for StreamCreated first")
        return sid

    def _next_txn(self) -> float:
        self._last_txn += 1
        return float(self._last_txn)

    # ---------------------------------------------------------------------------------- incoming

    def _on_command(self, stream_id: int, command: Command) -> None:
        name = command.name
        if name in ("_result", "_error"):
            self._on_result(command, name == "_result")
        elif name == "onStatus":
            info = command.arguments[0] if command.arguments and isinstance(command.arguments[0], dict) else {}
            self._events.append(
                StatusReceived(
                    stream_id,
                    str(info.get("level", "")),
                    str(info.get("code", "")),
                    str(info.get("description", "")),
                    info,
                )
            )
        else:
            self._events.append(
                CommandReceived(
                    stream_id, name, command.transaction_id, (command.command_object, *command.arguments)
                )
            )

    def _on_result(self, command: Command, accepted: bool) -> None:
        method, context = self._pending.pop(command.transaction_id, ("", ()))
        if method == "connect":
            self.connected = accepted
            info = command.arguments[0] if command.arguments else None
            self._events.append(ConnectResult(accepted, command.command_object, info))
            return
        if method == "createStream" and accepted and command.arguments:
            stream_id = command.arguments[0]
            if is_number(stream_id):
                if not (stream_id == int(stream_id) and 1 <= stream_id <= MASK32):  # a message stream id is a u32
                    raise RtmpProtocolError(f"createStream was answered with stream id {stream_id!r}; must be "
                                            f"1..{MASK32}")
                self._on_stream_created(command.transaction_id, int(stream_id), context)
                return
        self._events.append(
            CommandResultReceived(
                command.transaction_id, method, accepted, (command.command_object, *command.arguments)
            )
        )

    def _on_stream_created(self, txn: float, stream_id: int, context: tuple[Any, ...]) -> None:
        self._events.append(StreamCreated(txn, stream_id))
        if not context:
            return
        self.stream_id = stream_id
        if context[0] == "publish":
            _, key, publish_type = context
            self._send_command(stream_id, "publish", self._next_txn(), None, key, publish_type)
        else:
            _, key, start, duration, reset = context
            self._send_command(stream_id, "play", self._next_txn(), None, key, start, duration, reset)
            self._send_control(
                MessageType.USER_CONTROL,
                encode_user_control(UserControlEvent.SET_BUFFER_LENGTH, stream_id, self._buffer_length_ms),
            )

    def _on_user_control(self, event: int, value: int) -> None:
        if event != UserControlEvent.PING_RESPONSE:
            self._events.append(UserControlReceived(event, value))

    def _on_peer_bandwidth(self, payload: bytes) -> None:
        # librtmp answers Set Peer Bandwidth with its own Window Acknowledgement Size.
        decode_set_peer_bandwidth(payload)
        if self._sent_ack_window != self._window_ack_size:
            self._sent_ack_window = self._window_ack_size
            self._send_control(MessageType.WINDOW_ACK_SIZE, encode_u32(self._window_ack_size))

    def _on_media(self, stream_id: int, type_id: int, timestamp: int, body: bytes) -> None:
        if type_id == MessageType.VIDEO:
            self._events.append(VideoReceived(stream_id, timestamp, body))
        else:
            self._events.append(AudioReceived(stream_id, timestamp, body))

    def _on_data(self, stream_id: int, timestamp: int, payload: bytes, offset: int) -> None:
        event = self._parse_data(stream_id, timestamp, payload, offset)
        if event is not None:
            self._events.append(event)
