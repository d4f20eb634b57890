"""The handshake: simple echo, the digest form Flash/librtmp/ffmpeg use, and garbage."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rtmp_peers import FLASH_PLAYER_KEY, FLASH_SERVER_KEY, digest_position, flash_c1, hmac256, seeded

from mediaserver.rtmp.errors import HandshakeError, RtmpProtocolError
from mediaserver.rtmp.handshake import PACKET_SIZE, ClientHandshake, ServerHandshake


def server_digest_at(s1: bytes, base: int) -> bytes | None:
    offset = digest_position(s1, base)
    digest = hmac256(FLASH_SERVER_KEY[:36], s1[:offset] + s1[offset + 32 :])
    return digest if digest == s1[offset : offset + 32] else None


def test_simple_handshake_echoes_c1_as_s2_and_finishes_on_c2() -> None:
    server = ServerHandshake(seeded(1))
    c1 = bytes(8) + random.Random(2).randbytes(PACKET_SIZE - 8)
    assert server.receive_data(b"\x03" + c1) == b""
    answer = server.data_to_send()
    assert len(answer) == 1 + 2 * PACKET_SIZE
    assert answer[0] == 3
    s1, s2 = answer[1 : 1 + PACKET_SIZE], answer[1 + PACKET_SIZE :]
    assert s1[4:8] == b"\x00\x00\x00\x00"  # no digest: a simple S1
    assert s2 == c1
    assert not server.done
    assert server.receive_data(s1) == b""
    assert server.done
    assert server.digest_schema is None


def test_bytes_after_c2_are_handed_back_for_the_chunk_stream() -> None:
    server = ServerHandshake(seeded(1))
    c1 = bytes(PACKET_SIZE)
    tail = b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00\x00\x00\x10\x00"
    rest = server.receive_data(b"\x03" + c1 + c1 + tail)
    assert server.done
    assert rest == tail
    assert server.receive_data(b"more") == b"more"


def test_handshake_fed_byte_by_byte_completes_at_the_last_byte() -> None:
    server = ServerHandshake(seeded(3))
    wire = b"\x03" + bytes(PACKET_SIZE) * 2
    for i, byte in enumerate(wire):
        assert server.receive_data(bytes([byte])) == b""
        assert server.done == (i == len(wire) - 1)
        if i < PACKET_SIZE:
            assert server.data_to_send() == b""
    assert len(server.data_to_send()) == 1 + 2 * PACKET_SIZE


@pytest.mark.parametrize("schema", [0, 1])
def test_digest_c1_gets_an_s1_and_s2_whose_digests_verify(schema: int) -> None:
    c1, client_digest = flash_c1(schema, version=bytes([10, 0, 32, 18]))
    server = ServerHandshake(seeded(4))
    server.receive_data(b"\x03" + c1)
    answer = server.data_to_send()
    s1, s2 = answer[1 : 1 + PACKET_SIZE], answer[1 + PACKET_SIZE :]
    assert server.digest_schema == schema
    assert s1[4:8] != b"\x00\x00\x00\x00"
    # S1 carries the server digest in the client's schema (what librtmp checks first).
    assert server_digest_at(s1, 772 if schema == 0 else 8) is not None
    # S2 ends in HMAC(HMAC(full server key, client digest), S2[:1504]) as ffmpeg and librtmp check.
    key = hmac256(FLASH_SERVER_KEY, client_digest)
    assert s2[-32:] == hmac256(key, s2[:-32])


def test_version_without_a_valid_digest_gets_the_simple_echo() -> None:
    c1 = bytearray(random.Random(5).randbytes(PACKET_SIZE))
    c1[4:8] = b"\x09\x00\x7c\x02"
    server = ServerHandshake(seeded(6))
    server.receive_data(b"\x03" + bytes(c1))
    answer = server.data_to_send()
    assert answer[1 + 4 : 1 + 8] == b"\x00\x00\x00\x00"
    assert answer[1 + PACKET_SIZE :] == bytes(c1)


@pytest.mark.parametrize(
    "garbage, message",
    [
        (b"GET /live/x.flv HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP request"),
        (b"POST / HTTP/1.1\r\n", "HTTP request"),
        (b"\x16\x03\x01\x02\x00", "TLS"),
        (b"\x06" + bytes(40), "RTMPE"),
        (b"\x00\x00\x00\x00", "version 0 .* must be 3"),
        (b"\xff", "version 255"),
    ],
)
def test_garbage_instead_of_a_handshake_is_rejected_at_once(garbage: bytes, message: str) -> None:
    server = ServerHandshake(seeded(1))
    with pytest.raises(HandshakeError, match=message):
        server.receive_data(garbage)
    assert issubclass(HandshakeError, RtmpProtocolError)


def test_simple_client_and_server_complete_back_to_back() -> None:
    client = ClientHandshake(seeded(8))
    server = ServerHandshake(seeded(9))
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert client.done
    assert not client.server_digest_verified
    c2 = client.data_to_send()
    assert len(c2) == PACKET_SIZE
    server.receive_data(c2)
    assert server.done


@pytest.mark.parametrize("schema", [0, 1])
def test_digest_client_verifies_our_server_and_answers_with_a_keyed_c2(schema: int) -> None:
    client = ClientHandshake(seeded(10), digest=True, schema=schema)
    server = ServerHandshake(seeded(11))
    server.receive_data(client.data_to_send())
    answer = server.data_to_send()
    client.receive_data(answer)
    assert client.done and client.server_digest_verified
    assert server.digest_schema == schema
    s1 = answer[1 : 1 + PACKET_SIZE]
    s1_digest = server_digest_at(s1, 772 if schema == 0 else 8)
    c2 = client.data_to_send()
    key = hmac256(FLASH_PLAYER_KEY, s1_digest)
    assert c2[-32:] == hmac256(key, c2[:-32])
    server.receive_data(c2)
    assert server.done


def test_digest_client_rejects_an_s2_that_does_not_answer_its_c1() -> None:
    client = ClientHandshake(seeded(12), digest=True)
    server = ServerHandshake(seeded(13))
    server.receive_data(client.data_to_send())
    answer = bytearray(server.data_to_send())
    answer[-1] ^= 0xFF
    with pytest.raises(HandshakeError, match="S2"):
        client.receive_data(bytes(answer))


def test_client_sends_c2_after_s1_without_waiting_for_s2() -> None:
    client = ClientHandshake(seeded(14))
    client.data_to_send()
    s0s1 = b"\x03" + bytes(PACKET_SIZE)
    client.receive_data(s0s1)
    assert client.data_to_send() == bytes(PACKET_SIZE)
    assert not client.done
    assert client.receive_data(bytes(PACKET_SIZE) + b"tail") == b"tail"
    assert client.done


def test_client_rejects_a_server_that_does_not_speak_rtmp() -> None:
    client = ClientHandshake(seeded(15))
    with pytest.raises(HandshakeError, match="version 72"):
        client.receive_data(b"HTTP/1.1 400 Bad Request\r\n")


@given(st.binary(max_size=4000), st.integers(1, 700))
@settings(max_examples=300)
def test_random_bytes_never_raise_anything_but_handshake_errors(data: bytes, step: int) -> None:
    server = ServerHandshake(seeded(16))
    try:
        for i in range(0, len(data), step):
            server.receive_data(data[i : i + step])
    except HandshakeError:
        return
    assert len(server.data_to_send()) in (0, 1 + 2 * PACKET_SIZE)


def test_digest_client_falls_back_to_the_echo_when_s1_has_a_version_but_no_digest() -> None:
    client = ClientHandshake(seeded(17), digest=True)
    client.data_to_send()
    s1 = bytes(4) + b"\x01\x02\x03\x04" + bytes(PACKET_SIZE - 8)
    client.receive_data(b"\x03" + s1)
    assert client.data_to_send() == s1
    client.receive_data(bytes(PACKET_SIZE))
    assert client.done and not client.server_digest_verified
