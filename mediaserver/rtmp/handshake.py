"""The RTMP handshake: C0 C1 C2 from the client, S0 S1 S2 from the server (RTMP spec 5.2).

    client                                   server
      C0 (1 byte: version 3) + C1 (1536) ->
                                          <- S0 (version 3) + S1 (1536) + S2 (1536)
      C2 (1536)                          ->
      ... chunk stream ...

Two forms exist. In the *simple* handshake C1/S1 are time, zero and random bytes, and S2/C2 echo the
peer's C1/S1. Flash Player, librtmp (OBS) and ffmpeg send the *digest* ("complex") form instead: the
four bytes after the time carry a non-zero version, and C1 hides an HMAC-SHA256 digest of itself,
keyed with the first 30 bytes of the "Genuine Adobe Flash Player 001" key, at an offset derived from
the packet. Two layouts ("schemas") place it:

    schema 0: digest block second: offset = sum(C1[772:776]) % 728 + 776
    schema 1: digest block first:  offset = sum(C1[8:12]) % 728 + 12       (ffmpeg, librtmp)

A server that answers such a client with a non-zero S1 version must (ffmpeg and librtmp verify it):
  * put its own digest into S1 with the same schema, keyed with the first 36 bytes of the
    "Genuine Adobe Flash Media Server 001" key;
  * end S2 with HMAC(HMAC(full 68-byte server key, client digest), S2[:1504]).
C2 is built the same way with the client key and S1's digest. We do not check C2, as nginx-rtmp does
not: nothing in it protects us. Clients that send version 0 or no valid digest get the simple echo.
This follows the algorithm of librtmp `handshake.h` and nginx-rtmp `ngx_rtmp_handshake.c`; the RTMPE
(encrypted, C0 = 6) variant is not supported.

Both classes are sans-IO: `receive_data(data)` returns the bytes that came after the handshake (they
belong to the chunk stream), `data_to_send()` drains what to write, `done` tells when it is over.
Randomness is injected (`random_bytes`) so tests are deterministic.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from mediaserver.rtmp.errors import HandshakeError

RTMP_VERSION = 3
PACKET_SIZE = 1536
DIGEST_SIZE = 32

_SHARED_TAIL = bytes(
    [
        0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
        0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
    ]
)  # fmt: skip
CLIENT_KEY = b"Genuine Adobe Flash Player 001" + _SHARED_TAIL
"""62 bytes; the first 30 key the client's C1 digest."""
SERVER_KEY = b"Genuine Adobe Flash Media Server 001" + _SHARED_TAIL
"""68 bytes; the first 36 key the server's S1 digest."""
CLIENT_KEY_OPEN = CLIENT_KEY[:30]
SERVER_KEY_OPEN = SERVER_KEY[:36]

SERVER_VERSION = bytes([0x0D, 0x0E, 0x0A, 0x0D])
"""Version we put in a digest S1 (any non-zero value works; this is nginx-rtmp's)."""
CLIENT_VERSION = bytes([0x09, 0x00, 0x7C, 0x02])
"""Version of our digest C1: Flash Player 9.0.124.2, as ffmpeg sends."""

RandomBytes = Callable[[int], bytes]


def digest_offset(packet: bytes | bytearray, schema: int) -> int:
    """Where the 32-byte digest sits in a 1536-byte C1/S1 for the given schema (0 or 1)."""
    base = 772 if schema == 0 else 8
    return sum(packet[base : base + 4]) % 728 + base + 4


def packet_digest(packet: bytes | bytearray, offset: int, key: bytes) -> bytes:
    """HMAC-SHA256 over the packet without the 32 bytes at `offset`."""
    mac = hmac.new(key, packet[:offset], hashlib.sha256)
    mac.update(packet[offset + DIGEST_SIZE :])
    return mac.digest()


def find_digest(packet: bytes | bytearray, key: bytes) -> tuple[int, bytes] | None:
    """Return (schema, digest) if the packet carries a valid digest for `key`, else None.

    Schema 0 is tried first, as nginx-rtmp does.
    """
    for schema in (0, 1):
        offset = digest_offset(packet, schema)
        expected = packet_digest(packet, offset, key)
        if hmac.compare_digest(expected, bytes(packet[offset : offset + DIGEST_SIZE])):
            return schema, expected
    return None


def imprint_digest(packet: bytearray, schema: int, key: bytes) -> bytes:
    """Write a digest into `packet` (1536 bytes) at the schema's offset; return the digest."""
    offset = digest_offset(packet, schema)
    digest = packet_digest(packet, offset, key)
    packet[offset : offset + DIGEST_SIZE] = digest
    return digest


def response_packet(peer_digest: bytes, full_key: bytes, random_bytes: RandomBytes) -> bytes:
    """S2 (or C2) answering a digest handshake: random bytes ending in HMAC(HMAC(key, peer digest))."""
    body = random_bytes(PACKET_SIZE - DIGEST_SIZE)
    key = hmac.new(full_key, peer_digest, hashlib.sha256).digest()
    return body + hmac.new(key, body, hashlib.sha256).digest()


def verify_response(packet: bytes | bytearray, own_digest: bytes, full_key: bytes) -> bool:
    """Check that a S2 (or C2) ends in the HMAC keyed from our own C1 (or S1) digest."""
    key = hmac.new(full_key, own_digest, hashlib.sha256).digest()
    expected = hmac.new(key, packet[: PACKET_SIZE - DIGEST_SIZE], hashlib.sha256).digest()
    return hmac.compare_digest(expected, bytes(packet[PACKET_SIZE - DIGEST_SIZE :]))


def _describe_bad_version(first: bytes) -> str:
    version = first[0]
    if version in (6, 8, 9):
        return f"RTMP handshake version {version} is encrypted RTMPE, which is not supported; use plain rtmp://"
    text = bytes(first[:8])
    if text[:4] in (b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI", b"CONN"):
        return (
            f"peer sent an HTTP request ({text!r}...) to the RTMP port; "
            "HTTP-FLV and HLS are served on the HTTP port"
        )
    if version == 0x16:
        return ("peer started a TLS handshake on the plain RTMP port; use rtmp:// here, or rtmps:// on the "
                "[rtmps] port when the server has one")
    return f"RTMP handshake version {version} (0x{version:02x}) is not supported; must be 3"


class ServerHandshake:
    """The server side: waits for C0+C1, answers S0+S1+S2, waits for C2."""

    def __init__(self, random_bytes: RandomBytes = os.urandom) -> None:
        self._random = random_bytes
        self._buf = bytearray()
        self._out = bytearray()
        self._answered = False
        self.done = False
        self.client_version: bytes = b""
        """The four version bytes of C1 (zero for a simple handshake)."""
        self.digest_schema: int | None = None
        """The schema of the client's C1 digest, or None when the simple handshake was used."""

    def receive_data(self, data: bytes) -> bytes:
        """Consume handshake bytes; return whatever followed C2 (the start of the chunk stream)."""
        if self.done:
            return data
        buf = self._buf
        if not self._answered and not buf and data and data[0] != RTMP_VERSION:
            raise HandshakeError(_describe_bad_version(data))
        buf += data
        if not self._answered:
            if len(buf) < 1 + PACKET_SIZE:
                return b""
            c1 = bytes(buf[1 : 1 + PACKET_SIZE])
            del buf[: 1 + PACKET_SIZE]
            self._answer(c1)
            self._answered = True
        if len(buf) < PACKET_SIZE:
            return b""
        rest = bytes(buf[PACKET_SIZE:])
        self._buf = bytearray()
        self.done = True
        return rest

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _answer(self, c1: bytes) -> None:
        self.client_version = c1[4:8]
        found = find_digest(c1, CLIENT_KEY_OPEN) if c1[4:8] != b"\x00\x00\x00\x00" else None
        out = self._out
        out.append(RTMP_VERSION)
        if found is None:
            # Simple handshake: S1 = time 0, zero, random; S2 = echo of C1.
            out += b"\x00\x00\x00\x00\x00\x00\x00\x00"
            out += self._random(PACKET_SIZE - 8)
            out += c1
            return
        schema, client_digest = found
        self.digest_schema = schema
        s1 = bytearray(b"\x00\x00\x00\x00" + SERVER_VERSION)
        s1 += self._random(PACKET_SIZE - 8)
        imprint_digest(s1, schema, SERVER_KEY_OPEN)
        out += s1
        out += response_packet(client_digest, SERVER_KEY, self._random)


class ClientHandshake:
    """The client side: sends C0+C1 at once, C2 after S1, and is done after S2.

    With `digest=True` it sends a Flash-style C1 (schema `schema`) and checks the server's S2 when the
    server answered in kind; otherwise it does the simple handshake.
    """

    def __init__(
        self, random_bytes: RandomBytes = os.urandom, *, digest: bool = False, schema: int = 1
    ) -> None:
        self._random = random_bytes
        self._buf = bytearray()
        self._out = bytearray()
        self._sent_c2 = False
        self.done = False
        self._c1_digest: bytes | None = None
        self._s1_digest: bytes | None = None
        c1 = bytearray(8)
        if digest:
            c1[4:8] = CLIENT_VERSION
        c1 += random_bytes(PACKET_SIZE - 8)
        if digest:
            self._c1_digest = imprint_digest(c1, schema, CLIENT_KEY_OPEN)
        self.c1 = bytes(c1)
        self._out.append(RTMP_VERSION)
        self._out += c1
        self.server_digest_verified = False
        """True when the server answered the digest handshake and its S1 and S2 checked out."""

    def receive_data(self, data: bytes) -> bytes:
        if self.done:
            return data
        buf = self._buf
        if not buf and data and not self._sent_c2 and data[0] != RTMP_VERSION:
            raise HandshakeError(
                f"server answered with RTMP version {data[0]}; expected 3 (is this an RTMP server?)"
            )
        buf += data
        if not self._sent_c2:
            if len(buf) < 1 + PACKET_SIZE:
                return b""
            s1 = bytes(buf[1 : 1 + PACKET_SIZE])
            del buf[: 1 + PACKET_SIZE]
            self._answer(s1)
            self._sent_c2 = True
        if len(buf) < PACKET_SIZE:
            return b""
        s2 = bytes(buf[:PACKET_SIZE])
        rest = bytes(buf[PACKET_SIZE:])
        self._buf = bytearray()
        if self._s1_digest is not None and self._c1_digest is not None:
            if not verify_response(s2, self._c1_digest, SERVER_KEY):
                raise HandshakeError("server's S2 does not carry the digest of our C1; not a genuine RTMP server")
            self.server_digest_verified = True
        self.done = True
        return rest

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _answer(self, s1: bytes) -> None:
        found = None
        if self._c1_digest is not None and s1[4:8] != b"\x00\x00\x00\x00":
            # A server that announces a version but carries no digest gets the simple echo.
            found = find_digest(s1, SERVER_KEY_OPEN)
        if found is None:
            self._out += s1  # simple handshake: C2 echoes S1
            return
        self._s1_digest = found[1]
        self._out += response_packet(found[1], CLIENT_KEY, self._random)
