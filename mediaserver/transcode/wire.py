"""What a transcoder worker process sends back on its stdout: framed messages, sans-IO on both sides.

The server feeds a worker its source as a plain FLV byte stream on stdin (header, then the hub's own FLV
tags, PreviousTagSize included) and tells it the job as JSON on its command line. The worker answers with
messages of the form

    kind (1 byte) | track (1 byte) | length (4 bytes, big endian) | payload

- TAG: a complete FLV tag for `track` (a rung's index in the job, or AUDIO_TRACK for the source's audio,
  which goes into every rendition unchanged);
- STATS: JSON, about once a second (frames in and out, speed against real time, rungs shed);
- ERROR: JSON {"reason", "message"}: the worker cannot go on (a source it cannot decode); it exits next.

The worker writes only these to stdout (its logs go to stderr), so a reader that meets anything else
is reading a broken worker: WireError.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from ..errors import MediaError

TAG = 0x54  # "T"
STATS = 0x53  # "S"
ERROR = 0x58  # "X"
KINDS = frozenset({TAG, STATS, ERROR})
AUDIO_TRACK = 0xFF
MAX_PAYLOAD = 32 * 1024 * 1024
_HEADER = struct.Struct(">BBI")


class WireError(MediaError):
    """The worker's output is not made of messages: it is broken (it is restarted)."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: int
    track: int
    payload: bytes

    def json(self) -> dict[str, Any]:
        value = json.loads(self.payload)
        if not isinstance(value, dict):
            raise WireError("a worker's JSON message must be an object")
        return value


def encode(kind: int, track: int, payload: bytes) -> bytes:
    return _HEADER.pack(kind, track, len(payload)) + payload


def encode_json(kind: int, value: dict[str, Any]) -> bytes:
    return encode(kind, 0, json.dumps(value, separators=(",", ":")).encode())


class MessageReader:
    """Bytes in, messages out."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self._max = max_payload

    def feed(self, data: bytes) -> list[Message]:
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        while len(buf) - pos >= _HEADER.size:
            kind, track, size = _HEADER.unpack_from(buf, pos)
            if kind not in KINDS:
                raise WireError(f"unknown message kind {kind:#x} from the worker")
            if size > self._max:
                raise WireError(f"a worker message of {size} bytes is over the limit of {self._max}")
            end = pos + _HEADER.size + size
            if end > len(buf):
                break
            out.append(Message(kind, track, bytes(buf[pos + _HEADER.size : end])))
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
