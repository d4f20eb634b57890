"""FLV out and FLV in: the file header, tag batches for viewers, and a sans-IO reader.

Writing is almost free: every Frame already holds its complete FLV tag (header, body, PreviousTagSize),
built once at ingest, so a viewer's batch is the FLV header once and then `encode_tags(batch)`: the
frames' tags joined into one buffer for one write.

Reading (`FlvReader`) is for whoever consumes another node's HTTP-FLV (origin pull) and for tests. It
is sans-IO: `feed(data)` takes bytes as they arrive, split anywhere, and returns the tags completed so
far; `feed_eof()` says the stream ended and raises if it ended inside the header or a tag. It never
touches a socket or the clock.

    FLV file = header (9 bytes: "FLV", version 1, flags 0b00000A0V, DataOffset = 9)
               PreviousTagSize0 (u32 = 0)
               { tag header (11 bytes) | tag body (DataSize bytes) | PreviousTagSize (u32 = 11 + DataSize) }*
    tag header = TagType (u8: 8 audio, 9 video, 18 script data; bit 5 = Filter, i.e. encrypted)
                 DataSize (u24) | Timestamp (u24, low bits) | TimestampExtended (u8, high bits) | StreamID (u24)

What the reader rejects, with a MediaError (a PeerError: drop that connection):
- a signature other than "FLV", a version other than 1, a DataOffset below 9 or above 9 + 1024;
- a PreviousTagSize that is not 0 (first) or 11 + the previous tag's DataSize;
- a declared DataSize above `max_tag_size` (default 16 MiB), detected from the 11-byte tag header alone,
  before any of the body is buffered: memory stays bounded by one tag plus what a single feed brought;
- a tag with the Filter bit set: encrypted FLV is not something a live server can play.
Tags of an unknown type (not 8, 9 or 18) are skipped and counted in `skipped_tags`: their size still
frames them, and future writers (or padding) should not break a reader. StreamID, always 0 in practice,
is ignored. Timestamps are reported as written: 32-bit ms, not unwrapped (the hub unwraps at ingest).

Reference: Adobe Flash Video File Format Specification v10.1, annex E.2-E.4.

`FlvScanner` is a reader's cheap sibling for load testers: it walks tag headers, skips bodies without
copying them, and only counts (tags, video/audio, keyframes, bytes, last timestamp).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import MediaError, UsageError
from ..media.flv_body import audio_frame, build_tag, data_frame, video_frame
from ..media.frames import Frame, FrameKind

FLV_SIGNATURE = b"FLV"
FLV_HEADER_SIZE = 9
"""The header proper; PreviousTagSize0 (4 bytes) follows it."""
TAG_HEADER_SIZE = 11
PREVIOUS_TAG_SIZE_SIZE = 4
DEFAULT_MAX_TAG_SIZE = 16 * 1024 * 1024
MAX_HEADER_PADDING = 1024
"""How far past 9 a DataOffset may point: the spec leaves room for a bigger header, nobody uses it."""

_FLAG_AUDIO = 0x04
_FLAG_VIDEO = 0x01
_FILTER_BIT = 0x20
_KNOWN_KINDS = frozenset({FrameKind.AUDIO, FrameKind.VIDEO, FrameKind.DATA})


def flv_header(has_audio: bool, has_video: bool) -> bytes:
    """The 9-byte FLV header followed by PreviousTagSize0: what a viewer receives first."""
    flags = (_FLAG_AUDIO if has_audio else 0) | (_FLAG_VIDEO if has_video else 0)
    return b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


def encode_tags(frames: Iterable[Frame]) -> bytes:
    """The frames' complete tags joined into one buffer, for one write per batch.

    The join is the only copy: a batch costs one allocation, not one write per frame.
    """
    return b"".join([f.tag for f in frames])


@dataclass(frozen=True, slots=True)
class FlvHeader:
    """The FLV file header as read."""

    version: int
    has_audio: bool
    has_video: bool
    data_offset: int


@dataclass(frozen=True, slots=True)
class FlvTag:
    """One FLV tag as read: its type, its timestamp and a copy of its body."""

    kind: int
    """TagType: 8 audio, 9 video, 18 script data (compare with FrameKind)."""
    timestamp_ms: int
    """The 32-bit timestamp: Timestamp with TimestampExtended as its high byte."""
    body: bytes
    """The tag body (what an RTMP message would carry), without tag header or PreviousTagSize."""

    @property
    def is_video_keyframe(self) -> bool:
        """A video tag holding a keyframe picture (not a sequence header); legacy and Enhanced RTMP alike."""
        b = self.body
        if self.kind != FrameKind.VIDEO or not b:
            return False
        verdict = _keyframe_from_first_byte(b[0])
        if verdict is None:
            return len(b) > 1 and b[1] == 1
        return verdict

    @property
    def is_sequence_header(self) -> bool:
        """An AVC/HEVC or AAC sequence header (legacy FLV or Enhanced RTMP SequenceStart)."""
        b = self.body
        if self.kind == FrameKind.VIDEO and len(b) >= 2:
            if b[0] & 0x80:
                return b[0] & 0x0F == 0
            return b[0] & 0x0F in (7, 12) and b[1] == 0
        if self.kind == FrameKind.AUDIO and len(b) >= 2:
            if b[0] >> 4 == 9:
                return b[0] & 0x0F == 0
            return b[0] >> 4 == 10 and b[1] == 0
        return False

    def to_frame(self) -> Frame | None:
        """The tag as a hub Frame (None for bodies that carry nothing to play, see media.flv_body).

        Raises MediaError for a malformed body or a tag type the hub does not carry.
        """
        if self.kind == FrameKind.VIDEO:
            return video_frame(self.body, self.timestamp_ms)
        if self.kind == FrameKind.AUDIO:
            return audio_frame(self.body, self.timestamp_ms)
        if self.kind == FrameKind.DATA:
            return data_frame(self.body, self.timestamp_ms)
        raise MediaError(f"FLV tag type {self.kind} is not audio (8), video (9) or script data (18)")

    def encode(self) -> bytes:
        """The complete tag again (header, body, PreviousTagSize): what a writer would have sent."""
        return build_tag(self.kind, self.timestamp_ms, self.body)


def _keyframe_from_first_byte(b0: int) -> bool | None:
    """Whether a video body is a keyframe picture, from its first byte; None when the AVC/HEVC packet type
    (the second byte) decides: 1 is a picture, 0 a sequence header, 2 an end of sequence."""
    if b0 & 0x80:  # Enhanced RTMP: FrameType 1 and PacketType CodedFrames or CodedFramesX
        return (b0 >> 4) & 0x07 == 1 and b0 & 0x0F in (1, 3)
    if b0 >> 4 != 1:
        return False
    return None if b0 & 0x0F in (7, 12) else True


def _check_max_tag_size(max_tag_size: int) -> int:
    if not 1 <= max_tag_size <= DEFAULT_MAX_TAG_SIZE:
        raise UsageError(f"max_tag_size {max_tag_size} is invalid; must be 1..{DEFAULT_MAX_TAG_SIZE}")
    return max_tag_size


def _parse_header(b: bytes | bytearray | memoryview) -> FlvHeader:
    if bytes(b[0:3]) != FLV_SIGNATURE:
        raise MediaError(f"not an FLV stream: signature {bytes(b[0:3])!r}, expected b'FLV'")
    if b[3] != 1:
        raise MediaError(f"FLV version {b[3]} is not supported; only version 1 exists")
    offset = int.from_bytes(b[5:9], "big")
    if not FLV_HEADER_SIZE <= offset <= FLV_HEADER_SIZE + MAX_HEADER_PADDING:
        raise MediaError(
            f"FLV DataOffset {offset} is invalid; must be {FLV_HEADER_SIZE}..{FLV_HEADER_SIZE + MAX_HEADER_PADDING}"
        )
    return FlvHeader(version=1, has_audio=bool(b[4] & _FLAG_AUDIO), has_video=bool(b[4] & _FLAG_VIDEO), data_offset=offset)


def _tag_header_error(kind_byte: int, size: int, max_tag_size: int) -> MediaError | None:
    if kind_byte & _FILTER_BIT:
        return MediaError(f"FLV tag type {kind_byte:#04x} has the Filter bit set; encrypted FLV is not supported")
    if size > max_tag_size:
        return MediaError(f"FLV tag declares a {size}-byte body; the limit is {max_tag_size} bytes")
    return None


class FlvReader:
    """Sans-IO FLV reader: bytes in (split anywhere), FlvTags out.

    Feed every byte of the stream, in order, from its first byte (the "FLV" signature). After a
    MediaError the reader is broken: every later call raises the same error again.
    """

    __slots__ = (
        "_buf", "_max_tag_size", "_header", "_skip", "_need_prev", "_expect_prev", "_error", "_offset",
        "tags_read", "skipped_tags", "bytes_fed",
    )

    def __init__(self, max_tag_size: int = DEFAULT_MAX_TAG_SIZE) -> None:
        self._buf = bytearray()
        self._max_tag_size = _check_max_tag_size(max_tag_size)
        self._header: FlvHeader | None = None
        self._skip = 0  # header padding (DataOffset > 9) still to discard
        self._need_prev = True  # a PreviousTagSize comes next, not a tag header
        self._expect_prev = 0  # ... and this is its value
        self._error: MediaError | None = None
        self._offset = 0  # stream offset of self._buf[0], for error messages
        self.tags_read = 0
        self.skipped_tags = 0
        """Tags of an unknown type, framed by their size and dropped."""
        self.bytes_fed = 0

    @property
    def header(self) -> FlvHeader | None:
        """The file header, once its 9 bytes have arrived."""
        return self._header

    @property
    def buffered_bytes(self) -> int:
        """Bytes held back waiting for the rest of a tag: at most one tag plus one feed."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[FlvTag]:
        """Take the next bytes of the stream; return every tag they complete, in order."""
        if self._error is not None:
            raise self._error
        self.bytes_fed += len(data)
        self._buf += data
        try:
            return self._parse()
        except MediaError as err:
            self._error = err
            self._buf = bytearray()
            raise

    def feed_eof(self) -> None:
        """The stream has ended. Raises MediaError if it ended inside the header or a tag."""
        if self._error is not None:
            raise self._error
        if self._header is None:
            err = MediaError(f"FLV stream ended after {self.bytes_fed} bytes, before its 9-byte header was complete")
        elif self._buf or self._skip or self._need_prev:
            err = MediaError(
                f"FLV stream ended inside a tag at byte {self.bytes_fed}, "
                f"after {self.tags_read + self.skipped_tags} complete tags: it was cut short"
            )
        else:
            return
        self._error = err
        raise err

    def _parse(self) -> list[FlvTag]:
        buf = self._buf
        pos = 0
        end = len(buf)
        if self._header is None:
            if end < FLV_HEADER_SIZE:
                # Fail on a wrong signature at once rather than wait for 9 bytes that may never come.
                if bytes(buf[:3]) != FLV_SIGNATURE[:end]:
                    _parse_header(bytes(buf[:3]).ljust(FLV_HEADER_SIZE, b"\0"))
                return []
            self._header = _parse_header(buf)
            pos = FLV_HEADER_SIZE
            self._skip = self._header.data_offset - FLV_HEADER_SIZE
        if self._skip:
            n = min(self._skip, end - pos)
            pos += n
            self._skip -= n
        tags: list[FlvTag] = []
        max_size = self._max_tag_size
        with memoryview(buf) as mv:
            while not self._skip:
                if self._need_prev:
                    if end - pos < PREVIOUS_TAG_SIZE_SIZE:
                        break
                    prev = int.from_bytes(mv[pos : pos + PREVIOUS_TAG_SIZE_SIZE], "big")
                    if prev != self._expect_prev:
                        raise MediaError(
                            f"FLV PreviousTagSize at byte {self._offset + pos} is {prev}, expected "
                            f"{self._expect_prev}: the stream is corrupt or out of step"
                        )
                    pos += PREVIOUS_TAG_SIZE_SIZE
                    self._need_prev = False
                if end - pos < TAG_HEADER_SIZE:
                    break
                kind = mv[pos]
                size = (mv[pos + 1] << 16) | (mv[pos + 2] << 8) | mv[pos + 3]
                err = _tag_header_error(kind, size, max_size)
                if err is not None:
                    raise err
                body_start = pos + TAG_HEADER_SIZE
                if end - body_start < size:
                    break
                if kind in _KNOWN_KINDS:
                    ts = (mv[pos + 7] << 24) | (mv[pos + 4] << 16) | (mv[pos + 5] << 8) | mv[pos + 6]
                    tags.append(FlvTag(kind, ts, bytes(mv[body_start : body_start + size])))
                    self.tags_read += 1
                else:
                    self.skipped_tags += 1
                pos = body_start + size
                self._expect_prev = size + TAG_HEADER_SIZE
                self._need_prev = True
        del buf[:pos]
        self._offset += pos
        return tags


class FlvScanner:
    """Counts FLV tags without keeping their bodies: a load tester's reader.

    Same framing rules as FlvReader (signature, PreviousTagSize, max tag size, Filter bit), but bodies
    are skipped, never copied or buffered; only the first two bytes of a video body are looked at, to
    count keyframes. Per feed it costs a few operations per tag, not per byte. After a MediaError,
    discard the scanner.
    """

    __slots__ = (
        "_pending", "_max_tag_size", "_header_done", "_skip", "_peek", "_expect_prev",
        "tags", "video_tags", "audio_tags", "data_tags", "keyframes", "last_timestamp_ms", "bytes_fed",
    )

    _TAG_PREFIX = PREVIOUS_TAG_SIZE_SIZE + TAG_HEADER_SIZE

    def __init__(self, max_tag_size: int = DEFAULT_MAX_TAG_SIZE) -> None:
        self._pending = bytearray()  # a partial header: the file header, or PreviousTagSize + tag header
        self._max_tag_size = _check_max_tag_size(max_tag_size)
        self._header_done = False
        self._skip = 0  # body (or header padding) bytes still to skip
        self._peek = 0  # 2: the next body byte is a video tag's first (FrameType); 1: its second (packet type)
        self._expect_prev = 0
        self.tags = 0
        self.video_tags = 0
        self.audio_tags = 0
        self.data_tags = 0
        self.keyframes = 0
        self.last_timestamp_ms: int | None = None
        self.bytes_fed = 0

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Take the next bytes; return how many tag headers they completed."""
        mv = memoryview(data)
        n = len(mv)
        self.bytes_fed += n
        before = self.tags
        pending = self._pending
        prefix = self._TAG_PREFIX
        pos = 0
        while pos < n:
            if self._skip:
                if self._peek:
                    self._peek_at(mv[pos])
                    pos += 1
                    self._skip -= 1
                    continue
                take = min(self._skip, n - pos)
                pos += take
                self._skip -= take
                continue
            if not self._header_done:
                take = min(FLV_HEADER_SIZE - len(pending), n - pos)
                pending += mv[pos : pos + take]
                pos += take
                if len(pending) < FLV_HEADER_SIZE:
                    break
                header = _parse_header(pending)
                pending.clear()
                self._header_done = True
                self._skip = header.data_offset - FLV_HEADER_SIZE
                continue
            if not pending and n - pos >= prefix:
                self._tag_header(mv[pos : pos + prefix])
                pos += prefix
                continue
            take = min(prefix - len(pending), n - pos)
            pending += mv[pos : pos + take]
            pos += take
            if len(pending) < prefix:
                break
            self._tag_header(memoryview(bytes(pending)))
            pending.clear()
        return self.tags - before

    def _peek_at(self, b: int) -> None:
        if self._peek == 2:
            verdict = _keyframe_from_first_byte(b)
            if verdict is None and self._skip > 1:
                self._peek = 1
                return
            self.keyframes += bool(verdict)
        else:
            self.keyframes += b == 1
        self._peek = 0

    def _tag_header(self, h: memoryview) -> None:
        prev = int.from_bytes(h[0:4], "big")
        if prev != self._expect_prev:
            raise MediaError(f"FLV PreviousTagSize is {prev}, expected {self._expect_prev} (after {self.tags} tags)")
        kind = h[4]
        size = (h[5] << 16) | (h[6] << 8) | h[7]
        err = _tag_header_error(kind, size, self._max_tag_size)
        if err is not None:
            raise err
        self.tags += 1
        if kind == FrameKind.VIDEO:
            self.video_tags += 1
            self._peek = 2 if size else 0
        elif kind == FrameKind.AUDIO:
            self.audio_tags += 1
        elif kind == FrameKind.DATA:
            self.data_tags += 1
        self.last_timestamp_ms = (h[11] << 24) | (h[8] << 16) | (h[9] << 8) | h[10]
        self._expect_prev = size + TAG_HEADER_SIZE
        self._skip = size
