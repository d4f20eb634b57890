"""FlvIngest: pulled FLV bytes into a hub Stream, published the way RTMP ingest publishes them.

An origin pull (and a relay pull from an HTTP-FLV URL) receives an HTTP-FLV body. FlvIngest parses it with
the sans-IO FlvReader and publishes each tag into the local Stream (a relay pull from an RTMP URL hands it
the RTMP messages one by one, `publish`: the same kinds, bodies and 32-bit timestamps):

- FLV tag timestamps are 32-bit milliseconds like RTMP's, so each track is unwrapped once here
  (`TimestampUnwrapper`, as `rtmp/server.py` does): a source whose clock crosses 2^32 ms continues on the
  stream's timeline instead of jumping back 49.7 days (which the hub would treat as a discontinuity).
- A script tag is metadata when it holds onMetaData (after an optional "@setDataFrame"); its values are
  read by the one AMF0 parser (`media/amf0.py`), leniently, as RTMP ingest reads them: a malformed object
  gives empty values, never an error. Other script tags are not media and are skipped.

One FlvIngest per connection: a new connection starts new timelines, which the hub rebases. It never
awaits and never touches a socket; the caller feeds the bytes in order and flushes the stream's sinks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..hub.stream import Stream
from ..media import amf0
from ..media.amf0 import Amf0Error
from ..media.frames import FrameKind
from ..media.timestamps import TimestampUnwrapper
from ..remux.flv import FlvReader

AUDIO_ONLY_READY_FRAMES = 20
"""An audio-only stream is ready to watch after this many audio frames (there is no keyframe to wait for)."""


class FlvIngest:
    """Feeds one FLV connection's tags into `stream`."""

    def __init__(self, stream: Stream | None = None, *, claim: Callable[[], Stream] | None = None) -> None:
        """`claim`, instead of `stream`: called for the stream at the first whole tag (a relay pull, so that
        a body that is not FLV, or never gets past its header, claims nothing; MediaError comes first)."""
        if (stream is None) == (claim is None):
            raise ValueError("give FlvIngest a stream or a claim, not both")
        self._stream = stream
        self._claim = claim
        self.ready = False
        """A keyframe (or, without video, enough audio) was published: viewers can start."""
        self._reader = FlvReader()
        self._video_ts = TimestampUnwrapper()
        self._audio_ts = TimestampUnwrapper()
        self._audio_frames = 0

    def feed(self, chunk: bytes, now: float) -> int:
        """Publish every complete tag in `chunk`; returns how many tags were read. Raises MediaError for
        bytes that are not FLV (the connection is then useless)."""
        tags = self._reader.feed(chunk)
        if tags and self._stream is None:
            assert self._claim is not None
            self._stream = self._claim()
        for tag in tags:
            self.publish(tag.kind, tag.timestamp_ms, tag.body, now)
        return len(tags)

    @property
    def stream(self) -> Stream:
        assert self._stream is not None, "no tag was read yet: the stream is not claimed"
        return self._stream

    def relay(self, chunk: bytes, now: float, publisher: object) -> bool:
        """`feed`, then `flush`: the loop body of a pull reading an FLV body (origin and relay pulls)."""
        if self.feed(chunk, now):
            return self.flush(publisher)
        return self._stream is None or self._stream.publisher is publisher

    def flush(self, publisher: object) -> bool:
        """Hand what was published to the stream's sinks (packagers, recorders); False once `publisher` no
        longer publishes the stream (replaced, kicked): the caller stops reading."""
        stream = self._stream
        if stream is None:
            return True  # nothing read yet, nothing claimed
        stream.flush_sinks()
        return stream.publisher is publisher

    def publish(self, kind: FrameKind, timestamp_ms: int, body: bytes, now: float) -> None:
        """Publish one tag (or RTMP message: the same kinds, bodies and 32-bit timestamps)."""
        stream = self._stream or self.stream  # the property fails clearly when nothing is claimed yet
        if kind == FrameKind.VIDEO:
            frame = stream.publish_video(self._video_ts.unwrap(timestamp_ms), body, now)
            if frame is not None and frame.keyframe and not frame.is_config:
                self.ready = True
        elif kind == FrameKind.AUDIO:
            stream.publish_audio(self._audio_ts.unwrap(timestamp_ms), body, now)
            self._audio_frames += 1
            if self._audio_frames >= AUDIO_ONLY_READY_FRAMES and stream.info.video_codec is None:
                self.ready = True
        elif kind == FrameKind.DATA:
            found = read_metadata(body)
            if found is not None:
                stream.publish_metadata(found[0], found[1], now)


def read_metadata(body: bytes) -> tuple[bytes, dict[str, Any]] | None:
    """An onMetaData script tag body: the body as the hub keeps it ("onMetaData" first, without
    "@setDataFrame") and its values ({} when they cannot be read). None when it is not onMetaData.
    Never raises."""
    try:
        name, after = amf0.decode(body)
        start = 0
        if name == "@setDataFrame":
            start = after
            name, after = amf0.decode(body, start)
    except Amf0Error:
        return None
    if name != "onMetaData":
        return None
    try:
        values, _ = amf0.decode(body, after)
    except Amf0Error:
        values = {}
    return body[start:], dict(values) if isinstance(values, dict) else {}
