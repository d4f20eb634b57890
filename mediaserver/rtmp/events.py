"""Events the sessions emit: what happened on the connection, in the order it happened.

`ServerSession.events()` and `ClientSession.events()` return them. Media events carry the raw message
payload (an FLV tag body) and the 32-bit message timestamp as delivered; the caller unwraps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all session events."""


# --------------------------------------------------------------------------------- both sides


@dataclass(frozen=True, slots=True)
class HandshakeCompleted(Event):
    """C0-C2/S0-S2 are done; the chunk stream starts."""


@dataclass(frozen=True, slots=True)
class AudioReceived(Event):
    stream_id: int
    timestamp: int
    """32-bit message timestamp in ms, as on the wire."""
    body: bytes
    """The FLV audio tag body."""


@dataclass(frozen=True, slots=True)
class VideoReceived(Event):
    stream_id: int
    timestamp: int
    """32-bit message timestamp in ms, as on the wire."""
    body: bytes
    """The FLV video tag body."""


@dataclass(frozen=True, slots=True)
class MetadataReceived(Event):
    """onMetaData, sent as `@setDataFrame("onMetaData", values)` or as a plain onMetaData message."""

    stream_id: int
    timestamp: int
    body: bytes
    """AMF0 "onMetaData" + the values, without any "@setDataFrame": what an FLV script tag holds."""
    values: dict[str, Any]
    """The decoded properties (an `amf0.EcmaArray` or a dict); empty if they were not an object."""


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """Any other AMF data message on a media stream (onTextData, onCuePoint, ...)."""

    stream_id: int
    timestamp: int
    name: str
    body: bytes
    """AMF0 body as an FLV script tag would hold it (without "@setDataFrame")."""


@dataclass(frozen=True, slots=True)
class AcknowledgementReceived(Event):
    """The peer acknowledged having received `sequence_number` bytes (mod 2^32) from us."""

    sequence_number: int


# --------------------------------------------------------------------------------- server side


@dataclass(frozen=True, slots=True)
class Connected(Event):
    """The client's connect was answered with NetConnection.Connect.Success."""

    app: str
    """The connect "app" property without surrounding slashes (it may still carry "?query")."""
    tc_url: str
    properties: dict[str, Any]
    """The whole connect command object."""


@dataclass(frozen=True, slots=True)
class PublishRequested(Event):
    """The client wants to publish. Nothing is answered until `accept_publish` or `reject_publish`."""

    request_id: int
    stream_id: int
    app: str
    """The connection's app without its query string."""
    name: str
    """The stream key before the first '?'."""
    query: str
    """What followed the first '?' of the stream key ("" if none), e.g. "token=abc"."""
    publish_type: str
    """"live", "record" or "append", as the client sent it."""


@dataclass(frozen=True, slots=True)
class PlayRequested(Event):
    """The client wants to play. Nothing is answered until `accept_play` or `reject_play`."""

    request_id: int
    stream_id: int
    app: str
    name: str
    query: str
    start: float
    """The play command's start argument as sent (-2000/-2: live or recorded, -1000/-1: live only)."""


@dataclass(frozen=True, slots=True)
class PublishFinished(Event):
    """An accepted publish ended (FCUnpublish, closeStream or deleteStream); emitted once per publish."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PlayFinished(Event):
    """An accepted play ended (closeStream or deleteStream); emitted once per play."""

    stream_id: int


# --------------------------------------------------------------------------------- client side


@dataclass(frozen=True, slots=True)
class ConnectResult(Event):
    """The server's answer to connect."""

    accepted: bool
    properties: Any
    """The first object of _result/_error (fmsVer, capabilities, E-RTMP properties...)."""
    info: Any
    """The second object (level, code, description, objectEncoding)."""


@dataclass(frozen=True, slots=True)
class StreamCreated(Event):
    transaction_id: float
    stream_id: int


@dataclass(frozen=True, slots=True)
class StatusReceived(Event):
    """onStatus from the server."""

    stream_id: int
    level: str
    code: str
    description: str
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommandResultReceived(Event):
    """_result or _error for a command other than connect and createStream."""

    transaction_id: float
    method: str
    """The command it answers ("" if the transaction id was not ours)."""
    accepted: bool
    """True for _result, False for _error."""
    arguments: tuple[Any, ...]
    """The command object followed by the other arguments."""


@dataclass(frozen=True, slots=True)
class CommandReceived(Event):
    """Any other command from the server (onBWDone, onFCPublish, ...)."""

    stream_id: int
    name: str
    transaction_id: float
    arguments: tuple[Any, ...]
    """The command object followed by the other arguments."""


@dataclass(frozen=True, slots=True)
class UserControlReceived(Event):
    """A User Control event from the server other than ping (Stream Begin, Stream EOF, ...)."""

    event: int
    value: int
