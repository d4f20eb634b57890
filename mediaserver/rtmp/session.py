"""The server side of an RTMP connection, sans-IO: bytes in, typed events and bytes out.

    session = ServerSession()
    session.receive_data(data)        # raises RtmpProtocolError on bad input: close the connection
    for event in session.events(): ...
    transport.write(session.data_to_send())

Flow (what the session answers by itself, and what waits for the caller):

    handshake (simple or digest)                  -> HandshakeCompleted
    connect            -> Window Ack Size, Set Peer Bandwidth, Set Chunk Size, _result, onBWDone
                                                  -> Connected(app, tc_url, properties)
    releaseStream      -> _result                   FCPublish -> onFCPublish, _result
    createStream       -> _result(stream id)        _checkbw, getStreamLength -> _result
    publish(name, type)                           -> PublishRequested; nothing is sent until the
        accept_publish(id) -> Stream Begin, onStatus NetStream.Publish.Start
        reject_publish(id, code, description) -> onStatus level "error" (then close the connection)
    @setDataFrame / onMetaData                    -> MetadataReceived;  audio, video -> Audio/VideoReceived
    FCUnpublish, closeStream, deleteStream        -> PublishFinished (once) or PlayFinished (once)
    connection_lost() (the caller saw the socket close) -> the same for every stream still active
    play(name, start, duration, reset)            -> PlayRequested; nothing is sent until the
        accept_play(id) -> Stream Begin, onStatus Play.Reset + Play.Start, |RtmpSampleAccess;
        then send_video/send_audio/send_data or send_media(batch)
        reject_play(id, code, description) -> onStatus level "error"
    unknown command with a transaction id         -> _error (NetConnection.Call.Failed)
    Ping Request -> Ping Response; Acknowledgement whenever the peer's window of bytes has arrived.

Enhanced RTMP: when connect carries fourCcList, videoFourCcInfoMap, audioFourCcInfoMap or capsEx,
_result's properties state what we can forward (fourCcList plus the two FourCcInfoMaps with
CanForward, capsEx 0), as the E-RTMP v2 "Enhancing NetConnection connect Command" section asks.

Requests are answered by id, possibly after an await: accept_*/reject_* return False and send nothing
when the client closed that stream in the meantime, and raise UsageError for an id never issued.
Media events carry the 32-bit message timestamp as delivered (unwrap it once, at ingest) and the raw
FLV tag body.

`SessionCore` holds what both ends share (handshake, chunking, acknowledgements, pings, dispatch);
`ClientSession` in client.py is the other end.

What callers must guarantee: feed every received byte, in order, to `receive_data`; write out
`data_to_send()` after each call that may produce output (receive_data, accept_*, reject_*, send_*);
close the connection after an RtmpProtocolError or after a reject. Timeouts are the caller's: this
module has no clock. `phase` says how far the connection got (handshake, connecting, connected,
publishing, playing) and `awaiting_answer` whether a publish/play request waits for the caller, so the
caller can hold the connection to deadlines (handshake, connect-to-publish/play, idle). `send_*` and `send_media` silently drop messages for a stream
that is not playing (the viewer may have closed it while a batch was being prepared); see
`dropped_messages`. Incoming media on a stream that is not publishing is likewise dropped and counted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mediaserver.errors import UsageError
from mediaserver.media import amf0
from mediaserver.media.amf0 import Amf0Error
from mediaserver.rtmp.chunk import (
    DEFAULT_MAX_COMMAND_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    MASK32,
    ChunkDecoder,
    ChunkEncoder,
    RtmpMessage,
)
from mediaserver.rtmp.errors import RtmpProtocolError
from mediaserver.rtmp.events import (
    AcknowledgementReceived,
    AudioReceived,
    Connected,
    DataReceived,
    Event,
    HandshakeCompleted,
    MetadataReceived,
    PlayFinished,
    PlayRequested,
    PublishFinished,
    PublishRequested,
    VideoReceived,
)
from mediaserver.rtmp.handshake import ServerHandshake
from mediaserver.rtmp.messages import (
    Command,
    MessageType,
    UserControlEvent,
    amf0_offset,
    decode_command,
    decode_u32,
    decode_user_control,
    encode_command,
    encode_data,
    encode_on_status,
    encode_set_chunk_size,
    encode_set_peer_bandwidth,
    encode_u32,
    encode_user_control,
    split_aggregate,
    status_info,
)

# Chunk stream ids we send on (nginx-rtmp's layout).
CSID_CONTROL = 2
"""Protocol control and User Control messages."""
CSID_COMMAND = 3
"""Commands and results on the NetConnection (message stream 0)."""
CSID_STREAM = 5
"""onStatus and data messages on a message stream."""
CSID_AUDIO = 6
CSID_VIDEO = 7

FMS_VERSION = "FMS/3,0,1,123"
CAPABILITIES = 31
CAN_FORWARD = 0x04
"""E-RTMP FourCcInfoMask.CanForward."""
ENHANCED_CONNECT_KEYS = ("fourCcList", "videoFourCcInfoMap", "audioFourCcInfoMap", "capsEx")

MEDIA_CSID = {MessageType.AUDIO: CSID_AUDIO, MessageType.VIDEO: CSID_VIDEO, MessageType.DATA_AMF0: CSID_STREAM}


def is_number(value: Any) -> bool:
    """An AMF0 number usable as an id: a finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def split_stream_key(key: str) -> tuple[str, str]:
    """Split "name?query" at the first '?'."""
    name, _, query = key.partition("?")
    return name, query


class SessionPhase(StrEnum):
    """How far a server connection got; the caller's deadlines depend on it."""

    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    """Handshake done, no connect command yet."""
    CONNECTED = "connected"
    """Connected, no stream publishing or playing (a request may be waiting for the caller)."""
    PUBLISHING = "publishing"
    PLAYING = "playing"


class SessionCore:
    """What both ends of an RTMP connection share: handshake, chunking, acks, pings, dispatch.

    Subclasses implement `_on_command`, `_on_media`, `_on_data` and `_on_user_control`.
    """

    def __init__(
        self, handshake: Any, *, max_message_size: int, max_command_size: int = DEFAULT_MAX_COMMAND_SIZE
    ) -> None:
        self._handshake = handshake
        self._decoder = ChunkDecoder(max_message_size=max_message_size, max_command_size=max_command_size)
        self._encoder = ChunkEncoder()
        self._out = bytearray()
        self._parts: list[bytes] = []  # shared chunk bytes (send_shared), in order with what _out held before
        self._held = bytearray()  # chunk output produced before the handshake finished
        self._events: list[Event] = []
        self.bytes_received = 0
        """Every byte received, handshake included."""
        self.bytes_sent = 0
        """Every byte handed out by data_to_send, handshake included."""
        self.dropped_messages = 0
        """Messages dropped because their stream was not in a state to carry them."""
        self.peer_ack_window = 0
        """The peer's Window Acknowledgement Size: we acknowledge each time that many bytes arrived."""
        self._last_ack = 0
        self._out += handshake.data_to_send()

    @property
    def handshake_done(self) -> bool:
        return bool(self._handshake.done)

    @property
    def out_chunk_size(self) -> int:
        return self._encoder.chunk_size

    @property
    def in_chunk_size(self) -> int:
        return self._decoder.chunk_size

    def receive_data(self, data: bytes) -> None:
        """Consume bytes from the peer. Raises RtmpProtocolError (close the connection) on bad input."""
        self.bytes_received += len(data)
        if not self._handshake.done:
            data = self._handshake.receive_data(data)
            self._out += self._handshake.data_to_send()
            if not self._handshake.done:
                return
            self._events.append(HandshakeCompleted())
            self._out += self._held
            self._held = bytearray()
        if data or self._decoder.holding:
            for message in self._decoder.feed(data):
                self._dispatch(message)
        if self.peer_ack_window and self.bytes_received - self._last_ack >= self.peer_ack_window:
            self._last_ack = self.bytes_received
            self._send_control(MessageType.ACKNOWLEDGEMENT, encode_u32(self.bytes_received & MASK32))

    @property
    def decoder(self) -> ChunkDecoder:
        """The peer's chunk stream (its allowance, what it holds, the messages it completed)."""
        return self._decoder

    def events(self) -> list[Event]:
        """Drain the events produced so far."""
        events = self._events
        self._events = []
        return events

    def data_to_send(self) -> bytes:
        """Drain the bytes to write to the peer."""
        if self._parts:
            parts = self._parts
            self._parts = []
            if self._out:
                parts.append(bytes(self._out))
                self._out.clear()
            out = parts[0] if len(parts) == 1 else b"".join(parts)
        else:
            out = bytes(self._out)
            self._out.clear()
        self.bytes_sent += len(out)
        return out

    def send_ping(self, timestamp_ms: int) -> None:
        """Send a Ping Request; the peer answers with a Ping Response carrying the same value."""
        self._send_control(
            MessageType.USER_CONTROL, encode_user_control(UserControlEvent.PING_REQUEST, timestamp_ms)
        )

    # ----------------------------------------------------------------------------------- output

    def _write(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        target = self._out if self._handshake.done else self._held
        self._encoder.write(target, csid, type_id, stream_id, timestamp, payload)

    def _send_control(self, type_id: int, payload: bytes) -> None:
        self._write(CSID_CONTROL, type_id, 0, 0, payload)

    def _set_out_chunk_size(self, size: int) -> None:
        self._send_control(MessageType.SET_CHUNK_SIZE, encode_set_chunk_size(size))
        self._encoder.set_chunk_size(size)

    def _send_command(self, stream_id: int, name: str, txn: float, obj: Any = None, *args: Any) -> None:
        csid = CSID_COMMAND if stream_id == 0 else CSID_STREAM
        self._write(csid, MessageType.COMMAND_AMF0, stream_id, 0, encode_command(name, txn, obj, *args))

    def _send_status(self, stream_id: int, level: str, code: str, description: str, **extra: Any) -> None:
        payload = encode_on_status(level, code, description, **extra)
        self._write(CSID_STREAM, MessageType.COMMAND_AMF0, stream_id, 0, payload)

    def _send_user_control(self, event: int, value: int) -> None:
        self._send_control(MessageType.USER_CONTROL, encode_user_control(event, value))

    # ---------------------------------------------------------------------------------- dispatch

    def _dispatch(self, message: RtmpMessage) -> None:
        type_id = message.type_id
        if type_id == MessageType.VIDEO or type_id == MessageType.AUDIO:
            self._on_media(message.stream_id, type_id, message.timestamp, message.payload)
        elif type_id == MessageType.COMMAND_AMF0 or type_id == MessageType.COMMAND_AMF3:
            self._on_command(message.stream_id, decode_command(message.payload, type_id))
        elif type_id == MessageType.DATA_AMF0 or type_id == MessageType.DATA_AMF3:
            self._on_data(message.stream_id, message.timestamp, message.payload, amf0_offset(message.payload, type_id))
        elif type_id == MessageType.AGGREGATE:
            for sub_type, sub_ts, body in split_aggregate(message.payload, message.timestamp):
                if sub_type == MessageType.VIDEO or sub_type == MessageType.AUDIO:
                    self._on_media(message.stream_id, sub_type, sub_ts, body)
                elif sub_type == MessageType.DATA_AMF0:
                    if len(body) > self._decoder.max_command_size:
                        raise RtmpProtocolError(
                            f"data message of {len(body)} bytes inside an aggregate exceeds the "
                            f"{self._decoder.max_command_size}-byte limit for AMF messages"
                        )
                    self._on_data(message.stream_id, sub_ts, body, 0)
        elif type_id == MessageType.USER_CONTROL:
            control = decode_user_control(message.payload)
            if control.event == UserControlEvent.PING_REQUEST:
                self._send_user_control(UserControlEvent.PING_RESPONSE, control.value)
            else:
                self._on_user_control(control.event, control.value)
        elif type_id == MessageType.WINDOW_ACK_SIZE:
            self.peer_ack_window = decode_u32(message.payload, "Window Acknowledgement Size")
        elif type_id == MessageType.ACKNOWLEDGEMENT:
            self._events.append(AcknowledgementReceived(decode_u32(message.payload, "Acknowledgement")))
        elif type_id == MessageType.SET_PEER_BANDWIDTH:
            self._on_peer_bandwidth(message.payload)
        # Set Chunk Size and Abort were applied by the decoder; shared objects are not supported.

    def _on_media(self, stream_id: int, type_id: int, timestamp: int, body: bytes) -> None:
        raise NotImplementedError

    def _on_data(self, stream_id: int, timestamp: int, payload: bytes, offset: int) -> None:
        raise NotImplementedError

    def _on_command(self, stream_id: int, command: Command) -> None:
        raise NotImplementedError

    def _on_user_control(self, event: int, value: int) -> None:
        pass

    def _on_peer_bandwidth(self, payload: bytes) -> None:
        pass

    # ---------------------------------------------------------------------------- data messages

    def _parse_data(self, stream_id: int, timestamp: int, payload: bytes, offset: int) -> Event | None:
        """Turn a data message into MetadataReceived / DataReceived, or None to ignore it.

        Lenient on purpose: a malformed metadata object becomes empty values rather than a closed
        connection, since it only describes the stream.
        """
        try:
            name, after_name = amf0.decode(payload, offset)
        except Amf0Error:
            return None
        if not isinstance(name, str):
            return None
        body_start = offset
        if name == "@setDataFrame":
            try:
                name, _ = amf0.decode(payload, after_name)
            except Amf0Error:
                return None
            if not isinstance(name, str):
                return None
            body_start = after_name
        elif name == "@clearDataFrame":
            return None
        body = payload[body_start:] if body_start else payload
        if name != "onMetaData":
            return DataReceived(stream_id, timestamp, name, body)
        try:
            values = amf0.decode_all(body)
        except Amf0Error:
            values = []
        found = values[1] if len(values) > 1 and isinstance(values[1], dict) else {}
        return MetadataReceived(stream_id, timestamp, body, found)


@dataclass(slots=True)
class _MessageStream:
    """A message stream created by createStream, and what it is doing."""

    stream_id: int
    state: str = "idle"  # idle | publish-requested | publishing | play-requested | playing
    key: str = ""
    """The stream key as the client sent it (name?query)."""
    name: str = ""
    request_id: int = 0


class ServerSession(SessionCore):
    """One RTMP connection, seen from the server."""

    def __init__(
        self,
        *,
        chunk_size: int = 4096,
        window_ack_size: int = 2_500_000,
        peer_bandwidth: int = 2_500_000,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_command_size: int = DEFAULT_MAX_COMMAND_SIZE,
        max_streams: int = 16,
        video_fourccs: tuple[str, ...] = ("avc1", "hvc1", "av01"),
        audio_fourccs: tuple[str, ...] = ("mp4a", "Opus"),
        random_bytes: Any = os.urandom,
    ) -> None:
        super().__init__(
            ServerHandshake(random_bytes), max_message_size=max_message_size, max_command_size=max_command_size
        )
        self._chunk_size = chunk_size
        self._window_ack_size = window_ack_size
        self._peer_bandwidth = peer_bandwidth
        self._max_streams = max_streams
        self._video_fourccs = video_fourccs
        self._audio_fourccs = audio_fourccs
        self.connected = False
        self.app = ""
        """The connect "app" without surrounding slashes (may carry "?query")."""
        self.tc_url = ""
        self.connect_properties: dict[str, Any] = {}
        self._streams: dict[int, _MessageStream] = {}
        self._requests: dict[int, _MessageStream] = {}
        self._next_request_id = 1
        self._next_stream_id = 1

    # ------------------------------------------------------------------------------ caller's API

    @property
    def phase(self) -> SessionPhase:
        """How far the connection got: publishing/playing once any of its streams does."""
        if not self.handshake_done:
            return SessionPhase.HANDSHAKE
        if not self.connected:
            return SessionPhase.CONNECTING
        for stream in self._streams.values():
            if stream.state == "publishing":
                return SessionPhase.PUBLISHING
            if stream.state == "playing":
                return SessionPhase.PLAYING
        return SessionPhase.CONNECTED

    @property
    def awaiting_answer(self) -> bool:
        """A publish or play request waits for accept_*/reject_* (the caller's turn, not the peer's)."""
        return bool(self._requests)

    def accept_publish(self, request_id: int) -> bool:
        """Answer a PublishRequested with NetStream.Publish.Start.

        Returns False (and sends nothing) if the client closed that stream in the meantime.
        """
        stream = self._take_request(request_id, "publish")
        if stream is None:
            return False
        stream.state = "publishing"
        self._send_user_control(UserControlEvent.STREAM_BEGIN, stream.stream_id)
        self._send_status(
            stream.stream_id, "status", "NetStream.Publish.Start", f"{stream.name} is now published.",
            details=stream.name,
        )  # fmt: skip
        return True

    def reject_publish(
        self,
        request_id: int,
        code: str = "NetStream.Publish.BadName",
        description: str = "Publishing refused.",
    ) -> bool:
        """Answer a PublishRequested with an onStatus error; the caller should then close."""
        stream = self._take_request(request_id, "publish")
        if stream is None:
            return False
        stream.state = "idle"
        self._send_status(stream.stream_id, "error", code, description, details=stream.name)
        return True

    def accept_play(self, request_id: int) -> bool:
        """Answer a PlayRequested: Stream Begin, Play.Reset, Play.Start, |RtmpSampleAccess."""
        stream = self._take_request(request_id, "play")
        if stream is None:
            return False
        stream.state = "playing"
        sid = stream.stream_id
        self._send_user_control(UserControlEvent.STREAM_BEGIN, sid)
        self._send_status(sid, "status", "NetStream.Play.Reset", f"Playing and resetting {stream.name}.",
                          details=stream.name)  # fmt: skip
        self._send_status(sid, "status", "NetStream.Play.Start", f"Started playing {stream.name}.",
                          details=stream.name)  # fmt: skip
        self._write(CSID_STREAM, MessageType.DATA_AMF0, sid, 0, encode_data("|RtmpSampleAccess", True, True))
        return True

    def reject_play(
        self,
        request_id: int,
        code: str = "NetStream.Play.StreamNotFound",
        description: str = "Stream not found.",
    ) -> bool:
        stream = self._take_request(request_id, "play")
        if stream is None:
            return False
        stream.state = "idle"
        self._send_status(stream.stream_id, "error", code, description, details=stream.name)
        return True

    def connection_lost(self) -> None:
        """The connection closed: emit PublishFinished/PlayFinished for every stream still active."""
        for stream in self._streams.values():
            self._finish(stream)

    def end_play(self, stream_id: int, description: str = "The stream ended.") -> None:
        """Tell a player the publisher left: onStatus NetStream.Play.UnpublishNotify, then Stream EOF."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state != "playing":
            return
        self._send_status(stream_id, "status", "NetStream.Play.UnpublishNotify", description, details=stream.name)
        self._send_user_control(UserControlEvent.STREAM_EOF, stream_id)

    def send_video(self, stream_id: int, timestamp: int, body: bytes) -> None:
        self._send_media(MessageType.VIDEO, stream_id, timestamp, body)

    def send_audio(self, stream_id: int, timestamp: int, body: bytes) -> None:
        self._send_media(MessageType.AUDIO, stream_id, timestamp, body)

    def send_data(self, stream_id: int, timestamp: int, body: bytes) -> None:
        """Send an AMF0 data message (e.g. an FLV script tag body: "onMetaData" + values)."""
        self._send_media(MessageType.DATA_AMF0, stream_id, timestamp, body)

    def send_media(self, messages: Iterable[tuple[int, int, int, bytes]]) -> None:
        """Send many (type id 8/9/18, stream id, timestamp, body) messages at once."""
        streams = self._streams
        write = self._encoder.write
        out = self._out
        for type_id, stream_id, timestamp, body in messages:
            stream = streams.get(stream_id)
            csid = MEDIA_CSID.get(type_id)
            if csid is None:
                raise UsageError(f"send_media takes audio (8), video (9) or data (18) messages, not type {type_id}")
            if stream is None or stream.state != "playing":
                self.dropped_messages += 1
                continue
            write(out, csid, type_id, stream_id, timestamp, body)

    def send_shared(self, stream_id: int, data: bytes, headers: Iterable[tuple[int, int, int, int]]) -> None:
        """Send media messages already chunked under type-0 headers (`chunk.chunk_message`, made once and
        shared by every player with this chunk size and stream id): `data` goes out as it is, and the
        encoder notes `headers`, the last (csid, type id, timestamp, length) sent on each chunk stream, so
        what it writes next there (a status on the data chunk stream) is compressed correctly."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state != "playing":
            self.dropped_messages += 1
            return
        if self._out:
            self._parts.append(bytes(self._out))
            self._out.clear()
        self._parts.append(data)
        restate = self._encoder.restate
        for csid, type_id, timestamp, length in headers:
            restate(csid, type_id, stream_id, timestamp, length)

    def _send_media(self, type_id: int, stream_id: int, timestamp: int, body: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.state != "playing":
            self.dropped_messages += 1
            return
        self._encoder.write(self._out, MEDIA_CSID[type_id], type_id, stream_id, timestamp, body)

    def _take_request(self, request_id: int, kind: str) -> _MessageStream | None:
        if not 0 < request_id < self._next_request_id:
            raise UsageError(f"{kind} request id {request_id} was never issued by this session")
        stream = self._requests.get(request_id)
        if stream is None:
            return None  # answered already, or the client closed the stream meanwhile
        if stream.state != f"{kind}-requested":
            raise UsageError(f"request {request_id} is a {stream.state.split('-')[0]} request, not a {kind} request")
        del self._requests[request_id]
        stream.request_id = 0
        return stream

    # ------------------------------------------------------------------------------- commands

    def _on_command(self, stream_id: int, command: Command) -> None:
        name = command.name
        txn = command.transaction_id
        if name == "connect":
            self._on_connect(command)
            return
        if not self.connected:
            raise RtmpProtocolError(f"command {name!r} before connect; a client must connect first")
        args = command.arguments
        if name == "createStream":
            self._on_create_stream(txn)
        elif name == "publish":
            self._on_publish(stream_id, args)
        elif name == "play":
            self._on_play(stream_id, args)
        elif name == "releaseStream":
            if txn:
                self._send_command(0, "_result", txn, None, amf0.UNDEFINED)
        elif name == "FCPublish":
            key = args[0] if args and isinstance(args[0], str) else ""
            self._send_command(
                0, "onFCPublish", 0, None, status_info("status", "NetStream.Publish.Start", key)
            )
            if txn:
                self._send_command(0, "_result", txn, None, amf0.UNDEFINED)
        elif name == "FCUnpublish":
            key = args[0] if args and isinstance(args[0], str) else ""
            for stream in list(self._streams.values()):
                if stream.state == "publishing" and key in (stream.key, stream.name):
                    self._finish(stream)
            self._send_command(
                0, "onFCUnpublish", 0, None, status_info("status", "NetStream.Unpublish.Success", key)
            )
            if txn:
                self._send_command(0, "_result", txn, None, amf0.UNDEFINED)
        elif name == "deleteStream":
            target = args[0] if args else None
            stream = self._streams.pop(target, None) if is_number(target) else None
            if stream is not None:
                self._finish(stream)
        elif name == "closeStream":
            stream = self._streams.get(stream_id)
            if stream is not None:
                self._finish(stream)
        elif name == "getStreamLength":
            if txn:
                self._send_command(0, "_result", txn, None, 0)
        elif name in ("_checkbw", "FCSubscribe"):
            if name == "FCSubscribe":
                key = args[0] if args and isinstance(args[0], str) else ""
                self._send_command(0, "onFCSubscribe", 0, None, status_info("status", "NetStream.Play.Start", key))
            if txn:
                self._send_command(0, "_result", txn, None, amf0.UNDEFINED)
        elif name in ("_result", "_error", "onBWDone", "receiveAudio", "receiveVideo", "pause", "seek"):
            pass  # answers to us, or player hints a live server can ignore
        elif txn:
            self._send_command(
                stream_id, "_error", txn, None,
                status_info("error", "NetConnection.Call.Failed", f"Method not found ({name})."),
            )  # fmt: skip

    def _on_connect(self, command: Command) -> None:
        if self.connected:
            raise RtmpProtocolError("connect sent twice on one connection")
        props = command.command_object if isinstance(command.command_object, dict) else {}
        app = props.get("app", "")
        tc_url = props.get("tcUrl", "")
        self.app = app.strip("/") if isinstance(app, str) else ""
        self.tc_url = tc_url if isinstance(tc_url, str) else ""
        self.connect_properties = props
        encoding = props.get("objectEncoding", 0)
        if isinstance(encoding, bool) or not isinstance(encoding, (int, float)):
            encoding = 0
        self.connected = True

        self._send_control(MessageType.WINDOW_ACK_SIZE, encode_u32(self._window_ack_size))
        self._send_control(MessageType.SET_PEER_BANDWIDTH, encode_set_peer_bandwidth(self._peer_bandwidth))
        if self._chunk_size != self._encoder.chunk_size:
            self._set_out_chunk_size(self._chunk_size)
        properties: dict[str, Any] = {"fmsVer": FMS_VERSION, "capabilities": CAPABILITIES}
        if any(key in props for key in ENHANCED_CONNECT_KEYS):
            properties["fourCcList"] = list(self._video_fourccs + self._audio_fourccs)
            properties["videoFourCcInfoMap"] = {fourcc: CAN_FORWARD for fourcc in self._video_fourccs}
            properties["audioFourCcInfoMap"] = {fourcc: CAN_FORWARD for fourcc in self._audio_fourccs}
            properties["capsEx"] = 0
        info = status_info(
            "status", "NetConnection.Connect.Success", "Connection succeeded.", objectEncoding=encoding
        )
        self._send_command(0, "_result", command.transaction_id, properties, info)
        self._send_command(0, "onBWDone", 0, None)
        self._events.append(Connected(self.app, self.tc_url, props))

    def _on_create_stream(self, txn: float) -> None:
        if len(self._streams) >= self._max_streams:
            raise RtmpProtocolError(
                f"client created more than {self._max_streams} message streams on one connection"
            )
        stream_id = self._next_stream_id
        self._next_stream_id += 1
        self._streams[stream_id] = _MessageStream(stream_id)
        self._send_command(0, "_result", txn, None, stream_id)

    def _stream_for(self, stream_id: int, command: str) -> _MessageStream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise RtmpProtocolError(
                f"{command} on message stream {stream_id}, which was not created with createStream"
            )
        if stream.state != "idle":
            raise RtmpProtocolError(f"{command} on message stream {stream_id}, which is already {stream.state}")
        return stream

    def _new_request(self, stream: _MessageStream, state: str, key: str) -> int:
        request_id = self._next_request_id
        self._next_request_id += 1
        stream.state = state
        stream.key = key
        stream.name = split_stream_key(key)[0]
        stream.request_id = request_id
        self._requests[request_id] = stream
        return request_id

    def _on_publish(self, stream_id: int, args: tuple[Any, ...]) -> None:
        stream = self._stream_for(stream_id, "publish")
        key = args[0] if args else None
        if not isinstance(key, str):
            raise RtmpProtocolError(f"publish without a stream name (got {key!r})")
        publish_type = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
        request_id = self._new_request(stream, "publish-requested", key)
        name, query = split_stream_key(key)
        app = split_stream_key(self.app)[0]
        self._events.append(PublishRequested(request_id, stream_id, app, name, query, publish_type))

    def _on_play(self, stream_id: int, args: tuple[Any, ...]) -> None:
        stream = self._stream_for(stream_id, "play")
        key = args[0] if args else None
        if not isinstance(key, str):
            raise RtmpProtocolError(f"play without a stream name (got {key!r})")
        start = args[1] if len(args) > 1 else -2000
        if isinstance(start, bool) or not isinstance(start, (int, float)):
            start = -2000
        request_id = self._new_request(stream, "play-requested", key)
        name, query = split_stream_key(key)
        app = split_stream_key(self.app)[0]
        self._events.append(PlayRequested(request_id, stream_id, app, name, query, float(start)))

    def _finish(self, stream: _MessageStream) -> None:
        """End whatever the stream was doing; emit PublishFinished/PlayFinished once."""
        if stream.state == "publishing":
            self._events.append(PublishFinished(stream.stream_id))
        elif stream.state == "playing":
            self._events.append(PlayFinished(stream.stream_id))
        elif stream.request_id:
            self._requests.pop(stream.request_id, None)  # cancelled before it was answered
        stream.state = "idle"
        stream.request_id = 0

    # ---------------------------------------------------------------------------------- media

    def _on_media(self, stream_id: int, type_id: int, timestamp: int, body: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.state != "publishing":
            self.dropped_messages += 1
            return
        if type_id == MessageType.VIDEO:
            self._events.append(VideoReceived(stream_id, timestamp, body))
        else:
            self._events.append(AudioReceived(stream_id, timestamp, body))

    def _on_data(self, stream_id: int, timestamp: int, payload: bytes, offset: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.state != "publishing":
            self.dropped_messages += 1
            return
        event = self._parse_data(stream_id, timestamp, payload, offset)
        if event is not None:
            self._events.append(event)
