"""Errors of the RTMP core.

Everything the peer can cause raises a subclass of `RtmpProtocolError` (itself a `PeerError`): the
caller logs it and closes that one connection. Calling the core wrong (answering a request id that was
never issued, sending on a stream that does not exist) raises `mediaserver.errors.UsageError` instead,
because that is our bug, not the peer's.
"""

from __future__ import annotations

from mediaserver.errors import PeerError


class RtmpProtocolError(PeerError):
    """The peer broke RTMP; the connection should be closed."""


class HandshakeError(RtmpProtocolError):
    """The bytes before the chunk stream were not a valid RTMP handshake."""


class ChunkError(RtmpProtocolError):
    """The chunk stream is malformed or exceeds a limit."""

