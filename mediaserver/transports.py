"""Ending a connection at once: the one way every server side drops a peer that is stuck or slow.

`transport.abort()` alone closes the socket, yet the kernel goes on trying to deliver what the send queue
holds (megabytes for a media viewer) to a peer that does not read, and the peer's end stays ESTABLISHED for
minutes (issue 9, defect 4). With SO_LINGER set to zero, closing sends a TCP reset and frees the queue.
"""

from __future__ import annotations

import asyncio
import socket
import struct

_LINGER_OFF_AT_ONCE = struct.pack("ii", 1, 0)


def reset(transport: asyncio.BaseTransport | None, closing_too: bool = False) -> None:
    """Close `transport` with a TCP reset, dropping unsent data. Safe on a closed or closing transport,
    which is left alone unless `closing_too` (one closing gracefully stays open until its peer has read
    what is queued: for a peer that reads nothing, that is never)."""
    if transport is None or (transport.is_closing() and not closing_too):
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_OFF_AT_ONCE)
        except OSError:
            pass  # not a TCP socket (a pipe in a test): a plain abort is all there is
    transport.abort()  # type: ignore[attr-defined]
