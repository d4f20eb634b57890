"""The RTMP chunk layer (RTMP spec 5.3): messages cut into chunks, interleaved across chunk streams.

Each chunk is a basic header (format 0-3 and a chunk stream id of 1, 2 or 3 bytes), a message header
whose size depends on the format, an optional 4-byte extended timestamp, and up to `chunk_size` bytes
of payload:

    fmt 0  11 bytes  timestamp, length, type id, message stream id (little endian): a new message
    fmt 1   7 bytes  timestamp delta, length, type id: same message stream as before
    fmt 2   3 bytes  timestamp delta: same stream, length and type as before
    fmt 3   0 bytes  a continuation chunk, or a new message repeating the previous delta

Timestamps are 32-bit and wrap: deltas accumulate modulo 2^32, and a message's timestamp is delivered
as the 32-bit value (callers unwrap it once, at ingest). A type-3 chunk that *starts* a message adds
the last timestamp field of its chunk stream, which after a type-0 header is the absolute timestamp:
that is how the spec's example (5.3.2.1), ffmpeg, librtmp's reader and SRS read it, and what Adobe's
FMLE sends (SRS documents a `c4` after a type-0 header at 26 ms meaning 52 ms). `ChunkEncoder` never
emits such a chunk right after a type-0 header, only after a type 1 or 2, so every reader agrees.
librtmp's *writer* differs: it sends a type-3 new message when the timestamp equals the previous
message's, so after a non-zero delta that message is read late by that delta. It does so only for
two consecutive messages of the same type, size and timestamp on one chunk stream, which OBS's
media does not produce.

Extended timestamps. When the 3-byte field is 0xFFFFFF, the real value follows in 4 bytes. The spec
(5.3.1.3) and Flash, FMS, ffmpeg and OBS repeat those 4 bytes on every type-3 chunk of that chunk
stream, but some librtmp-based clients do not. The rule here, the one SRS uses: on a type-3 chunk
whose chunk stream's last header had an extended timestamp, the next 4 bytes are taken as the
repeated extended timestamp only if they equal it; otherwise they are payload (while fewer than 4
bytes have arrived, the decoder waits only if they match the start of the timestamp). A continuation
chunk whose payload happens to begin with exactly those 4 bytes would be misread, which needs a
timestamp beyond 4.6 hours and a 1-in-2^32 coincidence. The encoder always repeats them.

A chunk stream that never had a header cannot start with a type-2 or type-3 chunk (there is nothing
to repeat): that is an error. A type-1 chunk is accepted there, with message stream 0 and timestamp
base 0, because librtmp sends its first Ping/Set Buffer Length that way (SRS issue 98).

The decoder applies Set Chunk Size (type 1) and Abort (type 2) as soon as they complete, because the
very next chunk depends on them; it also returns them, so the session can see them.

Limits, each checked before any memory is committed: a message may not declare more than
`max_message_size` bytes, nor a command, data or shared-object message (types 15-20, decoded as AMF on
the event loop) more than `max_command_size`, checked as soon as its header announces the length; at
most `max_partial_streams` chunk streams may hold an incomplete message and their declared lengths may
not add up to more than `max_pending_bytes`; at most `max_chunk_streams` distinct chunk stream ids may
be used. Bytes held between calls are one incomplete chunk plus the incomplete messages, so memory per
connection is bounded by these limits.

Speed: the decoder parses from one buffer with offsets (no per-byte loop); a chunk's payload is kept as
a memoryview slice of the input and each message is joined once, when complete. Slices still pending
at the end of `feed()` are copied out so the input buffer can be released. A chunk is only consumed
when it is complete, so a partial chunk costs nothing but a buffer append until the rest arrives.

Callers must feed every byte after the handshake, in order, and stop after the first error: the
stream cannot be resynchronised.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mediaserver.errors import UsageError
from mediaserver.rtmp.errors import ChunkError

MASK32 = 0xFFFFFFFF
DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0x7FFFFFFF
EXTENDED = 0xFFFFFF
MIN_CSID = 2
MAX_CSID = 65599
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
DEFAULT_MAX_COMMAND_SIZE = 64 * 1024
COMMAND_TYPES = frozenset({15, 16, 17, 18, 19, 20})
"""AMF3/AMF0 data, shared object and command messages: held to `max_command_size`."""

_HDR7 = struct.Struct(">HBHBB")  # timestamp (3), length (3), type id: the start of fmt 0 and fmt 1
_HDR3 = struct.Struct(">HB")  # timestamp delta (3): fmt 2
_U32 = struct.Struct(">I")
_U32LE = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class RtmpMessage:
    """One complete message, as the chunk layer delivers it."""

    csid: int
    """Chunk stream id it arrived on."""
    type_id: int
    stream_id: int
    """Message stream id (0 for the connection itself)."""
    timestamp: int
    """32-bit timestamp in ms, wrapped as on the wire."""
    payload: bytes


class _InStream:
    """Decoder state of one chunk stream: its last header and the message being assembled."""

    __slots__ = (
        "timestamp",
        "ts_field",
        "ext",
        "ext_value",
        "length",
        "type_id",
        "stream_id",
        "in_progress",
        "received",
        "pieces",
        "views",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        self.ts_field = 0
        self.ext = False
        self.ext_value = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.in_progress = False
        self.received = 0
        self.pieces: list[bytes] = []  # copied out by earlier feed() calls
        self.views: list[memoryview] = []  # slices of the current feed() input


MESSAGE_UNITS = 8
"""What a message costs of a ChunkDecoder's allowance, against 1 for each further chunk of it: a message is
handed on (parsed, dispatched, published) where a chunk is only sliced."""


def validate_chunk_size(size: int) -> str | None:
    """Return why `size` is not a valid chunk size, or None when it is."""
    if size < 1 or size > MAX_CHUNK_SIZE:
        return f"chunk size {size} is invalid; must be 1..{MAX_CHUNK_SIZE}"
    return None


class ChunkDecoder:
    """Turns the chunk stream into complete `RtmpMessage`s."""

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_command_size: int = DEFAULT_MAX_COMMAND_SIZE,
        max_partial_streams: int = 16,
        max_pending_bytes: int | None = None,
        max_chunk_streams: int = 256,
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        """The peer's chunk size, changed by its Set Chunk Size messages."""
        self.max_message_size = max_message_size
        self.max_command_size = max_command_size
        self.max_partial_streams = max_partial_streams
        self.max_pending_bytes = 2 * max_message_size if max_pending_bytes is None else max_pending_bytes
        self.max_chunk_streams = max_chunk_streams
        self._streams: dict[int, _InStream] = {}
        self._partial: dict[int, _InStream] = {}
        self._pending_declared = 0
        self._buf = bytearray()
        self._need = 0
        self._failure: str | None = None
        self.allowance: int | None = None
        """Units feed() may still spend (None: no bound): MESSAGE_UNITS for each message begun, 1 for each
        further chunk of one. Once they are spent, feed() stops before the next chunk and holds the rest of
        its input (`holding`) until the caller allows more and calls feed(b"") again: how a connection keeps
        a flood of tiny messages or tiny chunks to a rate instead of spending the event loop on it."""
        self.holding = False
        self.completed = 0
        """Messages completed so far."""

    @property
    def buffered_bytes(self) -> int:
        """Bytes held: the incomplete chunk plus the parts of incomplete messages received so far."""
        return len(self._buf) + sum(st.received for st in self._partial.values())

    @property
    def partial_streams(self) -> int:
        """How many chunk streams hold an incomplete message."""
        return len(self._partial)

    def feed(self, data: bytes | bytearray) -> list[RtmpMessage]:
        """Consume bytes; return the messages they complete, in the order they completed."""
        if self._failure is not None:
            raise ChunkError(f"chunk stream already failed ({self._failure}); the connection must close")
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return []
            buf: bytes | bytearray = self._buf
        else:
            if not data:
                return []
            buf = data
        try:
            messages, pos = self._parse(buf)
        except ChunkError as err:
            self._failure = str(err)
            raise
        self.completed += len(messages)
        if pos == len(buf):
            self._buf = bytearray()
        elif pos or buf is not self._buf:
            self._buf = bytearray(buf[pos:])
        return messages

    def _parse(self, buf: bytes | bytearray) -> tuple[list[RtmpMessage], int]:
        out: list[RtmpMessage] = []
        streams = self._streams
        partial = self._partial
        chunk_size = self.chunk_size
        max_message_size = self.max_message_size
        max_command_size = self.max_command_size
        n = len(buf)
        pos = 0
        need = 0
        mv = memoryview(buf)
        hdr7 = _HDR7.unpack_from
        hdr3 = _HDR3.unpack_from
        u32 = _U32.unpack_from
        room = self.allowance if self.allowance is not None else 1 << 62
        units = MESSAGE_UNITS
        self.holding = False
        try:
            while pos < n:
                start = pos
                b0 = buf[pos]
                fmt = b0 >> 6
                csid = b0 & 0x3F
                pos += 1
                if csid < 2:
                    if csid == 0:
                        if pos >= n:
                            need = n - start + 1
                            pos = start
                            break
                        csid = 64 + buf[pos]
                        pos += 1
                    else:
                        if pos + 2 > n:
                            need = n - start + 1
                            pos = start
                            break
                        csid = 64 + buf[pos] + (buf[pos + 1] << 8)
                        pos += 2
                st = streams.get(csid)

                if fmt == 3:
                    if st is None:
                        raise ChunkError(
                            f"type-3 chunk on chunk stream {csid}, which never had a message header; "
                            "the first chunk of a chunk stream must be type 0"
                        )
                    if st.ext:
                        if pos + 4 <= n:
                            if u32(buf, pos)[0] == st.ext_value:
                                pos += 4
                        elif bytes(buf[pos:n]) == _U32.pack(st.ext_value)[: n - pos]:
                            # Could still be the repeated extended timestamp: wait for more.
                            need = n - start + 1
                            pos = start
                            break
                    if st.in_progress:
                        # Continuation of the message being assembled: the hot path.
                        take = st.length - st.received
                        if take > chunk_size:
                            take = chunk_size
                        end = pos + take
                        if end > n:
                            need = end - start
                            pos = start
                            break
                        if room < 1:
                            self.holding = True
                            pos = start
                            break
                        room -= 1
                        st.views.append(mv[pos:end])
                        pos = end
                        st.received += take
                        if st.received == st.length:
                            if st.pieces:
                                payload = b"".join(st.pieces + st.views)
                                st.pieces = []
                            else:
                                payload = b"".join(st.views)
                            st.views = []
                            st.in_progress = False
                            del partial[csid]
                            self._pending_declared -= st.length
                            message = RtmpMessage(csid, st.type_id, st.stream_id, st.timestamp, payload)
                            out.append(message)
                            if message.type_id <= 2:
                                chunk_size = self._control(message)
                        continue
                    # A new message repeating the previous header and delta.
                    length = st.length
                    type_id = st.type_id
                    stream_id = st.stream_id
                    ts_field = st.ts_field
                    timestamp = (st.timestamp + ts_field) & MASK32
                    ext = st.ext
                    ext_value = st.ext_value
                elif fmt == 0:
                    if pos + 11 > n:
                        need = n - start + 1
                        pos = start
                        break
                    t_hi, t_lo, l_hi, l_lo, type_id = hdr7(buf, pos)
                    stream_id = _U32LE.unpack_from(buf, pos + 7)[0]
                    pos += 11
                    ts_field = (t_hi << 8) | t_lo
                    length = (l_hi << 8) | l_lo
                    ext = ts_field == EXTENDED
                    if ext:
                        if pos + 4 > n:
                            need = n - start + 1
                            pos = start
                            break
                        ts_field = u32(buf, pos)[0]
                        pos += 4
                    ext_value = ts_field
                    timestamp = ts_field
                    if st is not None and st.in_progress:
                        raise self._interrupted(st, csid, fmt)
                elif fmt == 1:
                    if pos + 7 > n:
                        need = n - start + 1
                        pos = start
                        break
                    t_hi, t_lo, l_hi, l_lo, type_id = hdr7(buf, pos)
                    pos += 7
                    ts_field = (t_hi << 8) | t_lo
                    length = (l_hi << 8) | l_lo
                    ext = ts_field == EXTENDED
                    if ext:
                        if pos + 4 > n:
                            need = n - start + 1
                            pos = start
                            break
                        ts_field = u32(buf, pos)[0]
                        pos += 4
                    ext_value = ts_field
                    if st is None:
                        # librtmp starts a fresh chunk stream with type 1 (see module docstring).
                        stream_id = 0
                        timestamp = ts_field
                    else:
                        if st.in_progress:
                            raise self._interrupted(st, csid, fmt)
                        stream_id = st.stream_id
                        timestamp = (st.timestamp + ts_field) & MASK32
                else:  # fmt 2
                    if st is None:
                        raise ChunkError(
                            f"type-2 chunk on chunk stream {csid}, which never had a message header; "
                            "the first chunk of a chunk stream must be type 0"
                        )
                    if pos + 3 > n:
                        need = n - start + 1
                        pos = start
                        break
                    t_hi, t_lo = hdr3(buf, pos)
                    pos += 3
                    ts_field = (t_hi << 8) | t_lo
                    ext = ts_field == EXTENDED
                    if ext:
                        if pos + 4 > n:
                            need = n - start + 1
                            pos = start
                            break
                        ts_field = u32(buf, pos)[0]
                        pos += 4
                    ext_value = ts_field
                    if st.in_progress:
                        raise self._interrupted(st, csid, fmt)
                    length = st.length
                    type_id = st.type_id
                    stream_id = st.stream_id
                    timestamp = (st.timestamp + ts_field) & MASK32

                # The first chunk of a new message.
                if length > max_message_size:
                    raise ChunkError(
                        f"message of {length} bytes (type {type_id}) on chunk stream {csid} exceeds the "
                        f"{max_message_size}-byte limit"
                    )
                if length > max_command_size and type_id in COMMAND_TYPES:
                    raise ChunkError(
                        f"command or data message of {length} bytes (type {type_id}) on chunk stream {csid} "
                        f"exceeds the {max_command_size}-byte limit for AMF messages; send media as audio/video"
                    )
                take = length if length < chunk_size else chunk_size
                end = pos + take
                if end > n:
                    need = end - start
                    pos = start
                    break
                if room < units:
                    self.holding = True
                    pos = start
                    break
                room -= units
                if st is None:
                    if len(streams) >= self.max_chunk_streams:
                        raise ChunkError(
                            f"peer opened more than {self.max_chunk_streams} chunk streams "
                            f"(chunk stream id {csid}); that many are never needed"
                        )
                    st = streams[csid] = _InStream()
                st.timestamp = timestamp
                st.ts_field = ts_field
                st.ext = ext
                st.ext_value = ext_value
                st.length = length
                st.type_id = type_id
                st.stream_id = stream_id
                if take == length:
                    message = RtmpMessage(csid, type_id, stream_id, timestamp, mv[pos:end].tobytes())
                    pos = end
                    out.append(message)
                    if type_id <= 2:
                        chunk_size = self._control(message)
                    continue
                if len(partial) >= self.max_partial_streams:
                    raise ChunkError(
                        f"peer has incomplete messages on more than {self.max_partial_streams} chunk "
                        "streams at once"
                    )
                if self._pending_declared + length > self.max_pending_bytes:
                    raise ChunkError(
                        f"incomplete messages would total {self._pending_declared + length} bytes, over "
                        f"the {self.max_pending_bytes}-byte limit"
                    )
                self._pending_declared += length
                st.in_progress = True
                st.received = take
                st.views.append(mv[pos:end])
                partial[csid] = st
                pos = end
        finally:
            # Copy out the slices of incomplete messages so the input buffer can be released.
            for st in partial.values():
                if st.views:
                    st.pieces.append(b"".join(st.views))
                    st.views = []
            mv.release()
            if self.allowance is not None:
                self.allowance = room
        self._need = need
        return out, pos

    def _interrupted(self, st: _InStream, csid: int, fmt: int) -> ChunkError:
        return ChunkError(
            f"type-{fmt} header on chunk stream {csid} while its message is incomplete "
            f"({st.received} of {st.length} bytes); send Abort first"
        )

    def _control(self, message: RtmpMessage) -> int:
        """Apply Set Chunk Size (1) and Abort (2) at once; return the chunk size now in force."""
        if message.type_id == 1:
            if len(message.payload) < 4:
                raise ChunkError(f"Set Chunk Size message of {len(message.payload)} bytes; must be 4")
            size = _U32.unpack_from(message.payload)[0]
            problem = validate_chunk_size(size)
            if problem is not None:
                raise ChunkError(f"peer's {problem}")
            self.chunk_size = size
        elif message.type_id == 2:
            if len(message.payload) < 4:
                raise ChunkError(f"Abort message of {len(message.payload)} bytes; must be 4")
            csid = _U32.unpack_from(message.payload)[0]
            st = self._partial.pop(csid, None)
            if st is not None:
                self._pending_declared -= st.length
                st.in_progress = False
                st.received = 0
                st.pieces = []
                st.views = []
        return self.chunk_size


class _OutStream:
    __slots__ = ("stream_id", "type_id", "length", "timestamp", "delta", "fmt", "ext", "ext_bytes")

    def __init__(self) -> None:
        self.stream_id = -1
        self.type_id = -1
        self.length = -1
        self.timestamp = 0
        self.delta = -1
        self.fmt = 0
        self.ext = False
        self.ext_bytes = b""


def basic_header(fmt: int, csid: int) -> bytes:
    """The 1-, 2- or 3-byte basic header for a chunk stream id (2..65599)."""
    if csid < 64:
        return bytes([(fmt << 6) | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    rest = csid - 64
    return bytes([(fmt << 6) | 1, rest & 0xFF, rest >> 8])


class ChunkEncoder:
    """Cuts messages into chunks, compressing headers as a good server does.

    Per chunk stream: type 0 for the first message and whenever the message stream id changes or the
    timestamp goes backwards; type 1 when the length or type changes; type 2 when only the delta
    changes (and always right after a type 0, see the module docstring); type 3 when everything
    repeats. Continuation chunks are type 3 and repeat an extended timestamp.

    To change the chunk size, write the Set Chunk Size message first, then call `set_chunk_size`.
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.set_chunk_size(chunk_size)
        self._streams: dict[int, _OutStream] = {}
        self._basic: dict[int, tuple[bytes, ...]] = {}

    def set_chunk_size(self, size: int) -> None:
        problem = validate_chunk_size(size)
        if problem is not None:
            raise UsageError(problem)
        self.chunk_size = size

    def encode(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> bytes:
        out = bytearray()
        self.write(out, csid, type_id, stream_id, timestamp, payload)
        return bytes(out)

    def write(
        self,
        out: bytearray,
        csid: int,
        type_id: int,
        stream_id: int,
        timestamp: int,
        payload: bytes | bytearray | memoryview,
    ) -> None:
        """Append the chunks of one message to `out`."""
        length = len(payload)
        timestamp &= MASK32
        st = self._streams.get(csid)
        if st is None:
            if not MIN_CSID <= csid <= MAX_CSID:
                raise UsageError(f"chunk stream id {csid} is invalid; must be {MIN_CSID}..{MAX_CSID}")
            if length > 0xFFFFFF:
                raise UsageError(f"message of {length} bytes does not fit RTMP's 24-bit length")
            st = self._streams[csid] = _OutStream()
            fmt = 0
        elif length > 0xFFFFFF:
            raise UsageError(f"message of {length} bytes does not fit RTMP's 24-bit length")
        elif st.stream_id != stream_id:
            fmt = 0
        else:
            delta = (timestamp - st.timestamp) & MASK32
            if delta & 0x80000000:
                fmt = 0  # backwards in time: restate the absolute timestamp
            elif st.length != length or st.type_id != type_id:
                fmt = 1
            elif st.fmt == 0 or delta != st.delta:
                fmt = 2
            else:
                fmt = 3
        basics = self._basic.get(csid)
        if basics is None:
            basics = self._basic[csid] = tuple(basic_header(f, csid) for f in range(4))
        if fmt == 0:
            field = timestamp
            ext = field >= EXTENDED
            out += basics[0]
            out += (EXTENDED if ext else field).to_bytes(3, "big")
            out += length.to_bytes(3, "big")
            out.append(type_id)
            out += _U32LE.pack(stream_id)
            st.stream_id = stream_id
            st.delta = -1
        elif fmt == 3:
            out += basics[3]
            ext = st.ext
        else:
            field = delta
            ext = field >= EXTENDED
            out += basics[fmt]
            out += (EXTENDED if ext else field).to_bytes(3, "big")
            if fmt == 1:
                out += length.to_bytes(3, "big")
                out.append(type_id)
            st.delta = field
        if fmt != 3:
            st.fmt = fmt
            st.ext = ext
            st.ext_bytes = _U32.pack(field) if ext else b""
        if ext:
            out += st.ext_bytes
        st.timestamp = timestamp
        st.length = length
        st.type_id = type_id

        size = self.chunk_size
        if length <= size:
            out += payload
            return
        view = memoryview(payload)
        out += view[:size]
        continuation = basics[3] + st.ext_bytes
        for offset in range(size, length, size):
            out += continuation
            out += view[offset : offset + size]

    def restate(self, csid: int, type_id: int, stream_id: int, timestamp: int, length: int) -> None:
        """Record that a message was sent on `csid` with a type-0 header made elsewhere (`chunk_message`),
        so the next message this encoder writes there is compressed against it."""
        st = self._streams.get(csid)
        if st is None:
            if not MIN_CSID <= csid <= MAX_CSID:
                raise UsageError(f"chunk stream id {csid} is invalid; must be {MIN_CSID}..{MAX_CSID}")
            st = self._streams[csid] = _OutStream()
        timestamp &= MASK32
        ext = timestamp >= EXTENDED
        st.stream_id = stream_id
        st.type_id = type_id
        st.length = length
        st.timestamp = timestamp
        st.delta = -1
        st.fmt = 0
        st.ext = ext
        st.ext_bytes = _U32.pack(timestamp) if ext else b""


def chunk_message(csid: int, type_id: int, stream_id: int, timestamp: int,
                  payload: bytes | bytearray | memoryview, chunk_size: int) -> bytes:
    """One message as chunks under a type-0 header: self-contained (it depends on no earlier header), so
    the same bytes are valid for every peer with this chunk size, whatever it was sent before. Continuation
    chunks repeat an extended timestamp, as `ChunkEncoder` does."""
    length = len(payload)
    if length > 0xFFFFFF:
        raise UsageError(f"message of {length} bytes does not fit RTMP's 24-bit length")
    if not MIN_CSID <= csid <= MAX_CSID:
        raise UsageError(f"chunk stream id {csid} is invalid; must be {MIN_CSID}..{MAX_CSID}")
    timestamp &= MASK32
    ext = timestamp >= EXTENDED
    ext_bytes = _U32.pack(timestamp) if ext else b""
    head = b"".join((basic_header(0, csid), (EXTENDED if ext else timestamp).to_bytes(3, "big"),
                     length.to_bytes(3, "big"), bytes((type_id,)), _U32LE.pack(stream_id), ext_bytes))
    if length <= chunk_size:
        return head + payload
    view = memoryview(payload)
    parts = [head, view[:chunk_size]]
    continuation = basic_header(3, csid) + ext_bytes
    for offset in range(chunk_size, length, chunk_size):
        parts.append(continuation)
        parts.append(view[offset : offset + chunk_size])
    return b"".join(parts)


class SharedChunks:
    """The chunked bytes of recent messages for one (chunk size, message stream id), made once and shared by
    every player with those two (as FLV tags are shared by every FLV viewer).

    Entries are keyed by the identity of an owner object (the frame), which the entry holds so the identity
    cannot be reused while it is cached; the oldest are dropped past `max_entries` or `max_bytes` (a player
    that far behind gets its bytes made again)."""

    __slots__ = ("chunk_size", "stream_id", "max_entries", "max_bytes", "_entries", "_bytes", "made", "hits")

    def __init__(self, chunk_size: int, stream_id: int, max_entries: int = 1024,
                 max_bytes: int = 24 * 1024 * 1024) -> None:
        self.chunk_size = chunk_size
        self.stream_id = stream_id
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: dict[int, tuple[object, bytes]] = {}
        self._bytes = 0
        self.made = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def get(self, owner: object, csid: int, type_id: int, timestamp: int,
            payload: bytes | bytearray | memoryview) -> bytes:
        entry = self._entries.get(id(owner))
        if entry is not None and entry[0] is owner:
            self.hits += 1
            return entry[1]
        data = chunk_message(csid, type_id, self.stream_id, timestamp, payload, self.chunk_size)
        self.made += 1
        entries = self._entries
        entries[id(owner)] = (owner, data)
        self._bytes += len(data)
        while len(entries) > self.max_entries or (self._bytes > self.max_bytes and len(entries) > 1):
            oldest = next(iter(entries))
            self._bytes -= len(entries.pop(oldest)[1])
        return data
