"""The RTMP chunks of a pushed frame, made once and shared by every push that would make the same bytes.

A push's media messages are written as self-contained chunk runs: the first chunk of each message has a
type 0 header (absolute timestamp, length, type, message stream id), continuations are type 3. Such bytes
depend on nothing but the message, so every push of a stream with the same chunk size, message stream id
and timestamp base (pushes that started on the same keyframe, e.g. the configured pushes of a stream, or
targets added together) sends the very same bytes object: a frame is chunked once, not once per target.
A type 0 header costs at most 11 bytes more per message than the compressed ones (under 1 kB/s).

Pure: no IO, no clock. The cache is bounded in frames; a frame is held (so its id stays its own) only
while it is in the cache.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..media import amf0
from ..media.frames import Frame, FrameKind
from ..rtmp.client import chunk_media

SET_DATA_FRAME = amf0.encode("@setDataFrame")
"""What a publisher puts before a metadata object (the hub keeps the object without it)."""
MAX_CACHED_FRAMES = 512
"""About 7 s of a 30 fps stream with its audio: pushes that lag further behind chunk for themselves."""


def frame_timestamp(frame: Frame, base_ms: int | None) -> int:
    """A push's timestamps start at 0 on its first media frame (`base_ms`); data and what came before are 0."""
    if frame.kind == FrameKind.DATA or base_ms is None:
        return 0
    return max(0, frame.dts_ms - base_ms) & 0xFFFFFFFF


class SharedChunks:
    """The chunked bytes of one stream's frames, by (chunk size, message stream id, timestamp base)."""

    def __init__(self, max_frames: int = MAX_CACHED_FRAMES) -> None:
        self.max_frames = max_frames
        self._made: dict[tuple[int, int, int, int | None], tuple[Frame, bytes]] = {}
        self.made = 0
        """Frames chunked (a miss)."""
        self.shared = 0
        """Frames whose chunks were already made for another push (a hit)."""

    def messages(self, frames: Sequence[Frame], chunk_size: int, stream_id: int, base_ms: int | None) -> list[bytes]:
        """The bytes to write for `frames`, one object per frame, shared with other pushes where possible."""
        made = self._made
        out = []
        for frame in frames:
            key = (id(frame), chunk_size, stream_id, None if frame.kind == FrameKind.DATA else base_ms)
            hit = made.get(key)
            if hit is not None and hit[0] is frame:
                out.append(hit[1])
                self.shared += 1
                continue
            body = SET_DATA_FRAME + frame.body if frame.kind == FrameKind.DATA else frame.body
            data = chunk_media(frame.kind, stream_id, frame_timestamp(frame, base_ms), body, chunk_size)
            made[key] = (frame, data)
            self.made += 1
            out.append(data)
        excess = len(made) - self.max_frames
        if excess > 0:  # oldest first: dicts keep insertion order
            for key in list(_first(made, excess)):
                del made[key]
        return out


def _first(d: dict, n: int):
    for i, key in enumerate(d):
        if i >= n:
            return
        yield key
