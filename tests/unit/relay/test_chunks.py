"""Shared push chunks: what a target's chunk decoder gets back from them, and that pushes with the same
chunk size, message stream and timestamp base get the very same bytes objects."""

from __future__ import annotations

from mediaserver.media import amf0
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.relay.chunks import SharedChunks
from mediaserver.rtmp.client import chunk_media
from mediaserver.rtmp.chunk import ChunkDecoder


def frame(kind: FrameKind, dts_ms: int, body: bytes, *, config: bool = False) -> Frame:
    tag = bytes(11) + body + len(body).to_bytes(4, "big")
    return Frame(kind, dts_ms, 0, "h264", kind != FrameKind.VIDEO, config, tag, 11)


def decode(data: bytes, chunk_size: int):
    decoder = ChunkDecoder()
    decoder.chunk_size = chunk_size
    return [(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in decoder.feed(data)]


def test_a_message_is_a_self_contained_chunk_run_with_extended_timestamps_repeated():
    payload = bytes(range(256)) * 5
    for ts in (0, 40, 0xFFFFFE, 0xFFFFFF, 0x1234_5678):
        data = chunk_media(9, 1, ts, payload, 128)
        assert decode(data, 128) == [(7, 9, 1, ts, payload)]
    assert chunk_media(8, 1, 5, b"ab", 128) == bytes([6, 0, 0, 5, 0, 0, 2, 8, 1, 0, 0, 0]) + b"ab"
    # after any other message on the same chunk stream (type 0 needs no earlier state)
    decoder = ChunkDecoder()
    decoder.chunk_size = 100
    first = decoder.feed(chunk_media(9, 3, 99, b"x" * 250, 100))
    second = decoder.feed(chunk_media(9, 1, 10, b"y" * 30, 100))
    assert (first[0].stream_id, first[0].timestamp, second[0].stream_id, second[0].timestamp) == (3, 99, 1, 10)


def test_pushes_with_the_same_base_share_bytes_and_others_get_their_own():
    meta = frame(FrameKind.DATA, 5000, amf0.encode("onMetaData", amf0.EcmaArray({"width": 64})))
    config = frame(FrameKind.VIDEO, 5000, b"\x17\x00\x00\x00\x00cfg", config=True)
    key = frame(FrameKind.VIDEO, 5000, b"\x17\x01\x00\x00\x00" + b"k" * 9000)
    audio = frame(FrameKind.AUDIO, 5021, b"\xaf\x01" + b"a" * 300)
    batch = [meta, config, key, audio]
    shared = SharedChunks()
    first = shared.messages(batch, 4096, 1, 5000)
    second = shared.messages(batch, 4096, 1, 5000)
    assert all(a is b for a, b in zip(first, second)) and (shared.made, shared.shared) == (4, 4)
    got = decode(b"".join(first), 4096)
    assert [(m[1], m[3]) for m in got] == [(18, 0), (9, 0), (9, 0), (8, 21)]
    assert got[0][4] == amf0.encode("@setDataFrame") + bytes(meta.body) and got[2][4] == bytes(key.body)

    later = shared.messages(batch, 4096, 1, 4000)  # started on an earlier keyframe: other timestamps
    assert later[0] is first[0] and later[2] is not first[2]  # metadata is at 0 for everyone
    assert decode(later[2], 4096)[0][3] == 1000
    assert shared.messages([key], 128, 1, 5000)[0] is not first[2]  # another chunk size


def test_the_cache_is_bounded_in_frames():
    shared = SharedChunks(max_frames=3)
    frames = [frame(FrameKind.AUDIO, 1000 + i, b"\xaf\x01" + bytes(10)) for i in range(5)]
    for f in frames:
        shared.messages([f], 4096, 1, 1000)
    assert len(shared._made) == 3
    shared.messages(frames[:1], 4096, 1, 1000)
    assert shared.made == 6  # the oldest was let go: chunked again
