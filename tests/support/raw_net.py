"""Raw sockets for what an HTTP client library would refuse or tidy up: hostile request targets,
viewers that never read, garbage on the RTMP port, a minimal RTMP handshake."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class RawResponse:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


async def raw_http_get(port: int, target: bytes, *, timeout_s: float = 5.0, max_body: int = 65536) -> RawResponse:
    """Send `GET <target> HTTP/1.1` exactly as given (no normalising or quoting) and read the answer.

    Reads the head and at most max_body bytes of body, so a streaming answer cannot hold the test.
    """
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout_s)
    try:
        writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        length = headers.get("content-length")
        if length is not None:
            body = await asyncio.wait_for(reader.readexactly(min(int(length), max_body)), timeout_s)
        else:
            try:
                body = await asyncio.wait_for(reader.read(max_body), timeout_s)
            except asyncio.TimeoutError:
                pass
        return RawResponse(status, parts[2] if len(parts) > 2 else "", headers, body)
    finally:
        writer.close()


def stalled_viewer(port: int, path: str, rcvbuf: int = 4096, headers: str = "") -> socket.socket:
    """Open an HTTP request (HTTP-FLV, a VOD range: `headers`, each line ending in CRLF) from a socket with a
    tiny receive buffer, and never read from it.

    The caller keeps the socket open for as long as the stall should last, then closes it.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: it sets the window scale
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    return s


def closed_by_peer(s: socket.socket, timeout_s: float, max_bytes: int = 1 << 20) -> bool:
    """Read (and discard) until the peer closes: True on EOF or reset, False if still open at the timeout."""
    return received_until_closed(s, timeout_s, max_bytes + 1) >= 0  # a flood is not a close


def received_until_closed(s: socket.socket, timeout_s: float, limit: int) -> int:
    """Bytes read (and discarded) from `s` until the peer closed or reset it; -1 if it was still open at the
    timeout, or had sent `limit` bytes."""
    deadline = time.monotonic() + timeout_s
    received = 0
    while received < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            return -1
        s.settimeout(left)
        try:
            data = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return received
        except (socket.timeout, TimeoutError):
            return -1
        if not data:
            return received
        received += len(data)
    return -1


def rtmp_connect(port: int, timeout_s: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    s.settimeout(timeout_s)
    return s


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = s.recv(n - len(buf))
        if not data:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


def rtmp_handshake(s: socket.socket) -> None:
    """The simple RTMP handshake (C0 C1, read S0 S1 S2, C2 = echo of S1)."""
    c1 = b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00" + os.urandom(1528)
    s.sendall(b"\x03" + c1)
    s0s1s2 = _recv_exactly(s, 1 + 1536 + 1536)
    if s0s1s2[0] != 3:
        raise ConnectionError(f"server answered RTMP version {s0s1s2[0]}, expected 3")
    s.sendall(s0s1s2[1:1537])


def rtmp_chunk_type0(csid: int, type_id: int, payload: bytes, msid: int = 0, timestamp: int = 0,
                     declared_length: int | None = None) -> bytes:
    """One fmt-0 chunk (csid 2..63) carrying `payload`, which must fit in one 128-byte chunk.

    declared_length may claim more than the payload holds, to make a truncated message.
    """
    assert 2 <= csid <= 63 and len(payload) <= 128
    length = len(payload) if declared_length is None else declared_length
    return (
        bytes((csid,))
        + timestamp.to_bytes(3, "big")
        + length.to_bytes(3, "big")
        + bytes((type_id,))
        + msid.to_bytes(4, "little")
        + payload
    )
