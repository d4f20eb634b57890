"""Test helpers for the RTMP core: moving bytes between peers and mirroring what real clients send.

`LibrtmpWriter` chunks packets as librtmp's RTMP_SendPacket does (the code OBS ships), including its
header "compression" rules, so tests can feed the server the bytes OBS would put on the wire.
`flash_c1`/`flash_c2` build digest-handshake packets independently of mediaserver.rtmp.handshake.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from typing import Any

from mediaserver.media import amf0
from mediaserver.rtmp.chunk import ChunkDecoder

PACKET_SIZE = 1536
FLASH_PLAYER_KEY = b"Genuine Adobe Flash Player 001" + bytes.fromhex(
    "f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae"
)
FLASH_SERVER_KEY = b"Genuine Adobe Flash Media Server 001" + FLASH_PLAYER_KEY[30:]

LARGE, MEDIUM, SMALL, MINIMUM = 0, 1, 2, 3  # librtmp's header types (= chunk formats 0..3)


def seeded(seed: int):
    return random.Random(seed).randbytes


def hmac256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def digest_position(packet: bytes, base: int) -> int:
    return sum(packet[base : base + 4]) % 728 + base + 4


def flash_c1(schema: int = 1, seed: int = 7, version: bytes = bytes([128, 0, 3, 2])) -> tuple[bytes, bytes]:
    """A C1 as Flash Player/librtmp build it: returns (c1, its digest)."""
    c1 = bytearray(random.Random(seed).randbytes(PACKET_SIZE))
    c1[0:4] = b"\x00\x00\x00\x00"
    c1[4:8] = version
    offset = digest_position(bytes(c1), 772 if schema == 0 else 8)
    digest = hmac256(FLASH_PLAYER_KEY[:30], bytes(c1[:offset] + c1[offset + 32 :]))
    c1[offset : offset + 32] = digest
    return bytes(c1), digest


def server_s1_digest(s1: bytes) -> bytes | None:
    """The digest a server put in S1, found the way librtmp looks for it (either schema)."""
    for base in (8, 772):
        offset = digest_position(s1, base)
        digest = hmac256(FLASH_SERVER_KEY[:36], s1[:offset] + s1[offset + 32 :])
        if digest == s1[offset : offset + 32]:
            return digest
    return None


def flash_c2(s1_digest: bytes, seed: int = 8) -> bytes:
    body = random.Random(seed).randbytes(PACKET_SIZE - 32)
    return body + hmac256(hmac256(FLASH_PLAYER_KEY, s1_digest), body)


class LibrtmpWriter:
    """Chunks packets exactly as librtmp's RTMP_SendPacket does."""

    def __init__(self) -> None:
        self.chunk_size = 128
        self._prev: dict[int, tuple[int, int, int]] = {}  # csid -> (size, type, absolute timestamp)

    def send(self, csid: int, header_type: int, type_id: int, timestamp: int, stream_id: int, body: bytes) -> bytes:
        prev = self._prev.get(csid)
        last = 0
        if prev is not None and header_type != LARGE:
            if prev[0] == len(body) and prev[1] == type_id and header_type == MEDIUM:
                header_type = SMALL
            if prev[2] == timestamp and header_type == SMALL:
                header_type = MINIMUM
            last = prev[2]
        t = (timestamp - last) & 0xFFFFFFFF
        assert csid < 64
        header = bytes([(header_type << 6) | csid])
        if header_type <= SMALL:
            header += min(t, 0xFFFFFF).to_bytes(3, "big")
        if header_type <= MEDIUM:
            header += len(body).to_bytes(3, "big") + bytes([type_id])
        if header_type == LARGE:
            header += stream_id.to_bytes(4, "little")
        ext = b""
        if header_type <= SMALL and t >= 0xFFFFFF:
            ext = t.to_bytes(4, "big")
        out = bytearray(header + ext + body[: self.chunk_size])
        for offset in range(self.chunk_size, len(body), self.chunk_size):
            out += bytes([0xC0 | csid]) + ext + body[offset : offset + self.chunk_size]
        self._prev[csid] = (len(body), type_id, timestamp)
        return bytes(out)

    def invoke(self, csid: int, header_type: int, stream_id: int, *values: Any) -> bytes:
        return self.send(csid, header_type, 20, 0, stream_id, amf0.encode(*values))


class WireReader:
    """Decodes what a session sends, the way its peer would: messages with their AMF values."""

    def __init__(self) -> None:
        self.decoder = ChunkDecoder()

    def read(self, data: bytes) -> list[tuple[int, int, int, int, Any]]:
        """(csid, type id, stream id, timestamp, decoded) where decoded is AMF values or raw bytes."""
        out = []
        for m in self.decoder.feed(data):
            decoded: Any = m.payload
            if m.type_id in (18, 20):
                decoded = amf0.decode_all(m.payload)
            out.append((m.csid, m.type_id, m.stream_id, m.timestamp, decoded))
        return out


def transfer(a: Any, b: Any, rounds: int = 20) -> None:
    """Move bytes between two sessions until both are quiet."""
    for _ in range(rounds):
        out_a = a.data_to_send()
        out_b = b.data_to_send()
        if not out_a and not out_b:
            return
        if out_a:
            b.receive_data(out_a)
        if out_b:
            a.receive_data(out_b)
    raise AssertionError(f"peers still talking after {rounds} rounds")


def names(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]
