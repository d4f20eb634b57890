"""The worker's stdout framing: messages out, and a reader that refuses anything else."""

from __future__ import annotations

import json
import os

import pytest

from mediaserver.transcode import wire
from mediaserver.transcode.wire import Message, MessageReader, WireError


def sample() -> tuple[bytes, list[Message]]:
    messages = [
        Message(wire.TAG, 0, b"\x09" + b"v" * 40),
        Message(wire.TAG, wire.AUDIO_TRACK, b"\x08" + b"a" * 7),
        Message(wire.STATS, 0, json.dumps({"frames_in": 3}).encode()),
        Message(wire.TAG, 2, b""),
        Message(wire.ERROR, 0, b'{"reason":"codec","message":"no decoder"}'),
    ]
    return b"".join(wire.encode(m.kind, m.track, m.payload) for m in messages), messages


def test_messages_round_trip() -> None:
    data, messages = sample()
    assert MessageReader().feed(data) == messages
    assert messages[2].json() == {"frames_in": 3}
    assert wire.encode_json(wire.STATS, {"a": 1}) == wire.encode(wire.STATS, 0, b'{"a":1}')


def test_fragmented_at_every_byte() -> None:
    data, messages = sample()
    for cut in range(len(data) + 1):
        reader = MessageReader()
        got = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert got == messages, cut
        assert reader.buffered == 0
    reader = MessageReader()
    got = [m for i in range(len(data)) for m in reader.feed(data[i : i + 1])]
    assert got == messages


def test_truncated_input_waits_and_holds_what_it_has() -> None:
    data, messages = sample()
    reader = MessageReader()
    assert reader.feed(data[:-1]) == messages[:-1]
    assert reader.buffered > 0  # the last message is incomplete: nothing made up
    assert reader.feed(data[-1:]) == messages[-1:]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(WireError, match="unknown message kind"):
        MessageReader().feed(b"\x00\x00\x00\x00\x00\x00")
    # A worker that prints a line of text onto its stdout is broken.
    with pytest.raises(WireError):
        MessageReader().feed(b"Traceback (most recent call last):\n")


def test_oversized_payload_is_refused_from_the_header_alone() -> None:
    reader = MessageReader(max_payload=1000)
    with pytest.raises(WireError, match="over the limit"):
        reader.feed(wire.encode(wire.TAG, 0, b"")[:2] + (1001).to_bytes(4, "big"))
    assert MessageReader().feed(wire.encode(wire.TAG, 0, b"x" * 1000))[0].payload == b"x" * 1000
    huge = bytes((wire.TAG, 0)) + (wire.MAX_PAYLOAD + 1).to_bytes(4, "big")
    with pytest.raises(WireError):
        MessageReader().feed(huge)


def test_json_messages_must_be_objects() -> None:
    with pytest.raises(WireError, match="object"):
        Message(wire.STATS, 0, b"[1, 2]").json()
    with pytest.raises(ValueError):
        Message(wire.STATS, 0, b"{not json").json()


def test_garbage_never_passes_as_messages() -> None:
    rng = __import__("random").Random(10)
    for _ in range(200):
        data = os.urandom(rng.randrange(1, 200))
        reader = MessageReader(max_payload=1 << 16)
        try:
            for message in reader.feed(data):
                assert message.kind in wire.KINDS
                assert len(message.payload) <= 1 << 16
        except WireError:
            pass
