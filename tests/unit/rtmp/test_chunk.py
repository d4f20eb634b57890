"""The chunk layer: round-trip tables, the decoder's tolerance rules, limits and fuzzing.

Wire bytes are annotated: `|` separates chunks, spaces separate header fields
(basic header, timestamp, length, type id, message stream id (LE), extended timestamp, payload).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.errors import UsageError
from mediaserver.rtmp.chunk import ChunkDecoder, ChunkEncoder, RtmpMessage, SharedChunks, chunk_message
from mediaserver.rtmp.errors import ChunkError, RtmpProtocolError
from mediaserver.rtmp.messages import encode_set_chunk_size

Msg = tuple[int, int, int, int, bytes]  # csid, type id, message stream id, timestamp, payload


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


def as_tuples(messages: list[RtmpMessage]) -> list[Msg]:
    return [(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in messages]


def encode_all(messages: list[Msg], chunk_size: int) -> bytes:
    encoder = ChunkEncoder(chunk_size)
    out = bytearray()
    for csid, type_id, stream_id, timestamp, payload in messages:
        encoder.write(out, csid, type_id, stream_id, timestamp, payload)
    return bytes(out)


def decode_all(wire: bytes, chunk_size: int, step: int | None = None) -> list[Msg]:
    decoder = ChunkDecoder()
    decoder.chunk_size = chunk_size
    step = step or len(wire) or 1
    out: list[RtmpMessage] = []
    for i in range(0, len(wire), step):
        out += decoder.feed(wire[i : i + step])
    return as_tuples(out)


# (name, chunk size, messages, wire): drives both the encoder and the decoder.
ROUND_TRIP: list[tuple[str, int, list[Msg], bytes]] = [
    (
        "type 0 in one chunk",
        128,
        [(3, 20, 0, 0, b"abc")],
        h("03 000000 000003 14 00000000 616263"),
    ),
    (
        "type 1 when the length changes",
        128,
        [(4, 9, 1, 0, b"\x01\x02"), (4, 9, 1, 40, b"\x03")],
        h("04 000000 000002 09 01000000 0102 | 44 000028 000001 09 03"),
    ),
    (
        "type 2 after type 0, then type 3 when the delta repeats",
        128,
        [(6, 8, 1, 100, b"aa"), (6, 8, 1, 123, b"bb"), (6, 8, 1, 146, b"cc")],
        h("06 000064 000002 08 01000000 6161 | 86 000017 6262 | c6 6363"),
    ),
    (
        "type 0 when the message stream changes",
        128,
        [(5, 18, 1, 0, b"x"), (5, 18, 2, 0, b"x")],
        h("05 000000 000001 12 01000000 78 | 05 000000 000001 12 02000000 78"),
    ),
    (
        "type 0 when the timestamp goes backwards",
        128,
        [(7, 9, 1, 1000, b"x"), (7, 9, 1, 500, b"x")],
        h("07 0003e8 000001 09 01000000 78 | 07 0001f4 000001 09 01000000 78"),
    ),
    (
        "split at the chunk size with type-3 continuations",
        4,
        [(4, 9, 1, 0, b"0123456789")],
        h("04 000000 00000a 09 01000000 30313233 | c4 34353637 | c4 3839"),
    ),
    (
        "extended timestamp on type 0, repeated on the continuation",
        2,
        [(4, 8, 1, 0x01000000, b"abcd")],
        h("04 ffffff 000004 08 01000000 01000000 6162 | c4 01000000 6364"),
    ),
    (
        "extended delta on type 2",
        128,
        [(4, 8, 1, 0, b"a"), (4, 8, 1, 0x01000005, b"b")],
        h("04 000000 000001 08 01000000 61 | 84 ffffff 01000005 62"),
    ),
    (
        "extended delta repeated on a type-3 new message",
        128,
        [(4, 8, 1, 0, b"a"), (4, 8, 1, 0x01000000, b"b"), (4, 8, 1, 0x02000000, b"c")],
        h("04 000000 000001 08 01000000 61 | 84 ffffff 01000000 62 | c4 01000000 63"),
    ),
    (
        "timestamp delta wraps modulo 2^32",
        128,
        [(4, 9, 1, 0xFFFFFFF0, b"a"), (4, 9, 1, 0x10, b"b")],
        h("04 ffffff 000001 09 01000000 fffffff0 61 | 84 000020 62"),
    ),
    (
        "2-byte chunk stream ids 64 and 319",
        128,
        [(64, 20, 0, 0, b"a"), (319, 20, 0, 0, b"b")],
        h("00 00 000000 000001 14 00000000 61 | 00 ff 000000 000001 14 00000000 62"),
    ),
    (
        "3-byte chunk stream ids 320 and 65599, continuation keeps the long form",
        1,
        [(320, 20, 0, 0, b"a"), (65599, 20, 0, 0, b"bc")],
        h("01 0001 000000 000001 14 00000000 61 | 01 ffff 000000 000002 14 00000000 62 | c1 ffff 63"),
    ),
    (
        "empty message",
        128,
        [(3, 20, 0, 0, b"")],
        h("03 000000 000000 14 00000000"),
    ),
]


@pytest.mark.parametrize("name, chunk_size, messages, wire", ROUND_TRIP, ids=[r[0] for r in ROUND_TRIP])
def test_encoder_produces_the_table_bytes(name: str, chunk_size: int, messages: list[Msg], wire: bytes) -> None:
    assert encode_all(messages, chunk_size).hex(" ") == wire.hex(" ")


@pytest.mark.parametrize("name, chunk_size, messages, wire", ROUND_TRIP, ids=[r[0] for r in ROUND_TRIP])
def test_decoder_reads_the_table_bytes(name: str, chunk_size: int, messages: list[Msg], wire: bytes) -> None:
    assert decode_all(wire, chunk_size) == messages
    assert decode_all(wire, chunk_size, step=1) == messages
    assert decode_all(wire, chunk_size, step=5) == messages


# Decode-only: what other peers send that our encoder never writes.
DECODE_ONLY: list[tuple[str, int, bytes, list[Msg]]] = [
    (
        "messages interleaved across chunk streams",
        2,
        h("04 000000 000004 09 01000000 6162 | 06 000000 000004 08 01000000 7778 | c4 6364 | c6 797a"),
        [(4, 9, 1, 0, b"abcd"), (6, 8, 1, 0, b"wxyz")],
    ),
    (
        "type-3 continuation without the repeated extended timestamp (some librtmp builds)",
        2,
        h("04 ffffff 000004 08 01000000 01000000 6162 | c4 6364"),
        [(4, 8, 1, 0x01000000, b"abcd")],
    ),
    (
        "type 1 opening a fresh chunk stream, as librtmp sends its first ping",
        128,
        h("42 000000 000006 04 | 0006 00000d0f"),
        [(2, 4, 0, 0, h("0006 00000d0f"))],
    ),
    (
        "type 3 starting a message after type 0 adds the type-0 timestamp field (librtmp, ffmpeg)",
        128,
        h("04 000064 000001 09 01000000 61 | c4 62"),
        [(4, 9, 1, 100, b"a"), (4, 9, 1, 200, b"b")],
    ),
    (
        "3-byte form of a 2-byte chunk stream id",
        128,
        h("01 0000 000000 000001 14 00000000 61"),
        [(64, 20, 0, 0, b"a")],
    ),
    (
        "Set Chunk Size applies to the very next chunk",
        128,
        h("02 000000 000004 01 00000000 00000002 | 04 000000 000004 09 01000000 6162 | c4 6364"),
        [(2, 1, 0, 0, h("00000002")), (4, 9, 1, 0, b"abcd")],
    ),
    (
        "Abort drops the partial message of its chunk stream",
        4,
        h(
            "04 000000 000008 09 01000000 61626364 | 02 000000 000004 02 00000000 00000004"
            " | 04 000000 000002 09 01000000 7879"
        ),
        [(2, 2, 0, 0, h("00000004")), (4, 9, 1, 0, b"xy")],
    ),
]


@pytest.mark.parametrize("name, chunk_size, wire, messages", DECODE_ONLY, ids=[r[0] for r in DECODE_ONLY])
def test_decoder_accepts_what_real_peers_send(name: str, chunk_size: int, wire: bytes, messages: list[Msg]) -> None:
    assert decode_all(wire, chunk_size) == messages
    assert decode_all(wire, chunk_size, step=1) == messages


def media_messages(seed: int) -> list[Msg]:
    rng = random.Random(seed)
    messages: list[Msg] = []
    for i in range(40):
        if i % 4 == 0:
            messages.append((6, 8, 1, i * 23, rng.randbytes(rng.randint(0, 400))))
        else:
            messages.append((7, 9, 1, i * 33, rng.randbytes(rng.randint(1, 12000))))
    messages.append((4, 18, 1, 0xFFFFFF + 5, rng.randbytes(300)))
    return messages


@pytest.mark.parametrize("chunk_size", [1, 128, 4096, 65536])
def test_every_chunk_size_round_trips(chunk_size: int) -> None:
    messages = media_messages(chunk_size) if chunk_size > 1 else media_messages(1)[:6]
    wire = encode_all(messages, chunk_size)
    assert decode_all(wire, chunk_size) == messages
    assert decode_all(wire, chunk_size, step=997) == messages


def test_encoder_headers_are_compressed_like_a_good_server() -> None:
    encoder = ChunkEncoder(4096)
    formats = []
    for i, size in enumerate([100, 100, 100, 200, 200, 200]):
        formats.append(encoder.encode(7, 9, 1, i * 40, bytes(size))[0] >> 6)
    assert formats == [0, 2, 3, 1, 3, 3]


def test_feeding_byte_by_byte_yields_nothing_until_the_message_is_complete() -> None:
    wire = encode_all([(7, 9, 1, 5, bytes(range(256)) * 2)], 100)
    decoder = ChunkDecoder()
    decoder.chunk_size = 100
    for byte in wire[:-1]:
        assert decoder.feed(bytes([byte])) == []
    (message,) = decoder.feed(wire[-1:])
    assert message.payload == bytes(range(256)) * 2


def test_truncated_chunks_wait_without_error() -> None:
    for cut in (1, 5, 12, 14):
        decoder = ChunkDecoder()
        assert decoder.feed(h("04 000000 000004 09 01000000 6162636465")[:cut]) == []


# --------------------------------------------------------------------------------------- errors


def test_chunk_size_zero_is_rejected_naming_the_value_and_range() -> None:
    with pytest.raises(ChunkError, match=r"chunk size 0 is invalid; must be 1\.\.2147483647"):
        ChunkDecoder().feed(h("02 000000 000004 01 00000000 00000000"))


def test_chunk_size_with_bit_31_set_is_rejected() -> None:
    with pytest.raises(ChunkError, match=r"chunk size 2147483648 is invalid"):
        ChunkDecoder().feed(h("02 000000 000004 01 00000000 80000000"))


def test_largest_chunk_size_is_accepted() -> None:
    decoder = ChunkDecoder()
    decoder.feed(h("02 000000 000004 01 00000000 7fffffff"))
    assert decoder.chunk_size == 0x7FFFFFFF


def test_message_longer_than_the_limit_is_rejected_from_its_header() -> None:
    decoder = ChunkDecoder(max_message_size=1000)
    with pytest.raises(ChunkError, match="1001 bytes .* exceeds the 1000-byte limit"):
        decoder.feed(h("04 000000 0003e9 09 01000000"))


def test_default_limit_is_16_mib() -> None:
    decoder = ChunkDecoder()
    decoder.feed(h("04 000000 ffffff 09 01000000")[:12])  # 16 MiB - 1 declared: accepted, waits
    with pytest.raises(ChunkError, match="exceeds"):
        ChunkDecoder(max_message_size=16 * 1024 * 1024 - 2).feed(h("04 000000 ffffff 09 01000000"))


@pytest.mark.parametrize("first", ["c5", "85 000000"])
def test_type_3_or_2_on_a_never_headed_chunk_stream_is_rejected(first: str) -> None:
    with pytest.raises(ChunkError, match="chunk stream 5, which never had a message header"):
        ChunkDecoder().feed(h(first + " 616263"))


def test_a_new_header_in_the_middle_of_a_message_is_rejected() -> None:
    decoder = ChunkDecoder()
    decoder.chunk_size = 2
    with pytest.raises(ChunkError, match="while its message is incomplete .2 of 4 bytes"):
        decoder.feed(h("04 000000 000004 09 01000000 6162 | 44 000000 000002 09 6162"))


def test_too_many_partial_messages_are_rejected() -> None:
    decoder = ChunkDecoder(max_partial_streams=2)
    decoder.chunk_size = 1
    wire = b"".join(h(f"{csid:02x} 000000 000004 09 01000000 61") for csid in (4, 5, 6))
    with pytest.raises(ChunkError, match="more than 2 chunk streams"):
        decoder.feed(wire)


def test_too_many_pending_bytes_are_rejected() -> None:
    decoder = ChunkDecoder(max_message_size=1000, max_pending_bytes=1500)
    decoder.chunk_size = 1
    wire = h("04 000000 0003e8 09 01000000 61 | 05 000000 0003e8 09 01000000 61")
    with pytest.raises(ChunkError, match="2000 bytes, over the 1500-byte limit"):
        decoder.feed(wire)


def test_too_many_chunk_streams_are_rejected() -> None:
    decoder = ChunkDecoder(max_chunk_streams=3)
    wire = b"".join(h(f"{csid:02x} 000000 000001 09 01000000 61") for csid in (4, 5, 6, 7))
    with pytest.raises(ChunkError, match="more than 3 chunk streams"):
        decoder.feed(wire)


def test_decoder_refuses_to_continue_after_an_error() -> None:
    decoder = ChunkDecoder()
    with pytest.raises(ChunkError):
        decoder.feed(h("c5 00"))
    with pytest.raises(ChunkError, match="already failed"):
        decoder.feed(h("03 000000 000000 14 00000000"))


def test_chunk_errors_are_protocol_errors() -> None:
    assert issubclass(ChunkError, RtmpProtocolError)


def test_encoder_rejects_invalid_chunk_sizes_and_ids_as_usage_errors() -> None:
    with pytest.raises(UsageError, match="must be 1..2147483647"):
        ChunkEncoder(0)
    with pytest.raises(UsageError, match="chunk stream id 1 is invalid"):
        ChunkEncoder().encode(1, 9, 1, 0, b"")
    with pytest.raises(UsageError, match="24-bit length"):
        ChunkEncoder().encode(4, 9, 1, 0, bytes(0x1000000))


# ------------------------------------------------------------------------------------- fuzzing

csids = st.sampled_from([2, 3, 4, 7, 63, 64, 65, 319, 320, 1000, 65599])
messages_strategy = st.lists(
    st.tuples(
        csids,
        st.sampled_from([8, 9, 18, 20]),
        st.integers(0, 3),
        st.one_of(st.integers(0, 5000), st.integers(0, 0xFFFFFFFF)),
        st.binary(max_size=700),
    ),
    max_size=25,
)


@given(messages_strategy, st.sampled_from([1, 2, 3, 7, 128, 4096]), st.integers(1, 3000))
@settings(max_examples=200, deadline=None)
def test_any_message_sequence_round_trips_through_encoder_and_decoder(
    messages: list[Msg], chunk_size: int, step: int
) -> None:
    encoder = ChunkEncoder()
    wire = bytearray()
    encoder.write(wire, 2, 1, 0, 0, encode_set_chunk_size(chunk_size))
    encoder.set_chunk_size(chunk_size)
    for message in messages:
        encoder.write(wire, *message)
    decoded = decode_all(bytes(wire), 128, step=step)
    assert decoded[0] == (2, 1, 0, 0, encode_set_chunk_size(chunk_size))
    assert decoded[1:] == messages


@given(st.binary(max_size=3000), st.integers(1, 500))
@settings(max_examples=1000)
def test_random_bytes_raise_only_chunk_errors_and_stay_within_limits(data: bytes, step: int) -> None:
    decoder = ChunkDecoder(max_message_size=5000, max_partial_streams=4, max_chunk_streams=16)
    try:
        for i in range(0, len(data), step):
            decoder.feed(data[i : i + step])
            assert decoder.partial_streams <= 4
            # One incomplete chunk (at most 18 header bytes + a chunk) plus incomplete messages.
            assert decoder.buffered_bytes <= 18 + 5000 + 2 * 5000
    except ChunkError:
        pass


@pytest.mark.parametrize("type_id", [15, 16, 17, 18, 19, 20])
def test_command_and_data_messages_over_their_limit_are_rejected_from_the_header(type_id: int) -> None:
    decoder = ChunkDecoder(max_command_size=64 * 1024)
    header = bytes([4]) + h("000000") + (64 * 1024 + 1).to_bytes(3, "big") + bytes([type_id]) + h("01000000")
    with pytest.raises(ChunkError, match=f"65537 bytes \\(type {type_id}\\).*65536-byte limit"):
        decoder.feed(header)  # no payload sent: refused before anything is buffered


def test_command_limit_leaves_media_and_legal_commands_alone() -> None:
    decoder = ChunkDecoder(max_command_size=64 * 1024)
    video = bytes([4]) + h("000000") + (1 << 20).to_bytes(3, "big") + h("09 01000000")
    decoder.feed(video)  # a 1 MiB video message: accepted, waits for its payload
    command = ChunkEncoder().encode(3, 20, 0, 0, bytes(64 * 1024))
    assert [m.type_id for m in ChunkDecoder(max_command_size=64 * 1024).feed(command)] == [20]


# ----- shared type-0 chunks (RTMP play: made once per frame, sent to every player) ---------------------


@pytest.mark.parametrize("timestamp", [0, 40, 0xFFFFFE, 0xFFFFFF, 0x1234_5678])
@pytest.mark.parametrize("size", [10, 128, 4096])
def test_chunk_message_is_what_a_fresh_encoder_writes_and_decodes_back(timestamp: int, size: int) -> None:
    payload = bytes(range(256)) * 20
    data = chunk_message(7, 9, 1, timestamp, memoryview(payload), size)
    assert data == ChunkEncoder(size).encode(7, 9, 1, timestamp, payload)
    assert decode_all(data, size) == [(7, 9, 1, timestamp, payload)]


def test_extended_timestamp_is_repeated_on_every_continuation_chunk() -> None:
    data = chunk_message(6, 8, 1, 0x0100_0000, b"abcdefgh", 4)
    assert data == h("06 ffffff 000008 08 01000000 01000000 61626364 | c6 01000000 65666768")


def test_shared_type0_messages_interleave_with_the_encoders_own_and_any_reader_agrees() -> None:
    """A player that joins mid-stream gets type-0 media after its control messages; the encoder then
    compresses what it writes next on those chunk streams against the shared headers."""
    encoder = ChunkEncoder(128)
    out = bytearray()
    encoder.write(out, 5, 20, 1, 0, b"status")
    expected: list[Msg] = [(5, 20, 1, 0, b"status")]
    for ts, csid, type_id, payload in ((0x1000000, 7, 9, b"k" * 300), (0x1000021, 6, 8, b"a" * 10),
                                       (0x1000042, 7, 9, b"p" * 300), (0, 5, 18, b"meta")):
        out += chunk_message(csid, type_id, 1, ts, payload, 128)
        encoder.restate(csid, type_id, 1, ts, len(payload))
        expected.append((csid, type_id, 1, ts, payload))
    for ts, csid, type_id, payload in ((0x1000063, 7, 9, b"p" * 300), (0x1000084, 7, 9, b"p" * 300),
                                       (0, 5, 20, b"end")):
        encoder.write(out, csid, type_id, 1, ts, payload)
        expected.append((csid, type_id, 1, ts, payload))
    assert decode_all(bytes(out), 128) == expected
    assert decode_all(bytes(out), 128, step=7) == expected


def test_shared_chunks_are_made_once_per_owner_and_bounded() -> None:
    shared = SharedChunks(128, 1, max_entries=3, max_bytes=10_000)
    owners = [object() for _ in range(5)]
    first = shared.get(owners[0], 7, 9, 40, b"x" * 300)
    assert shared.get(owners[0], 7, 9, 40, b"x" * 300) is first
    assert (shared.made, shared.hits) == (1, 1)
    for i, owner in enumerate(owners[1:], 1):
        shared.get(owner, 7, 9, 40 + i, b"x" * 300)
    assert len(shared) == 3  # the oldest were dropped
    again = shared.get(owners[0], 7, 9, 40, b"x" * 300)
    assert again == first and again is not first and shared.made == 6
    big = SharedChunks(128, 1, max_bytes=1000)
    for owner in owners:
        big.get(owner, 7, 9, 0, b"y" * 400)
    assert len(big) == 2 and big.cached_bytes <= 1000
