"""The rendition streams of one transcode job: the worker's tags published into the hub as APP/STREAM@LABEL.

Each rung's video tags go to its own relay stream, taken (claim_publisher) at its first video tag with
its onMetaData (size, bit rate, frame rate, encoder) and the source's audio config first; the source's
audio goes into every rendition. Timestamps are the source's and stay so: the hub never rebases them. After
a worker restart, a frame no newer than what a rendition already carries is dropped, and the rendition's
sinks hear of the gap (`Stream.discontinuity`) at the new worker's first frame.

Synchronous, on the event loop; the caller flushes the touched streams' sinks once per read batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import MediaError
from ..hub.registry import PublishRefused, StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..log import LogGate, event
from ..media import amf0
from ..media.frames import FrameKind
from .ladder import Rendition
from .wire import AUDIO_TRACK, WireError

log = logging.getLogger(__name__)

SKIP_LOG_INTERVAL_S = 30.0
_SOURCE_METADATA = ("framerate", "audiodatarate", "audiosamplerate", "audiosamplesize", "stereo", "audiocodecid")
"""onMetaData keys a rendition keeps from its source's (its picture and video bit rate are its own)."""


@dataclass(slots=True)
class RenditionOut:
    """One rung of the job and the stream it publishes."""

    rung: Rendition
    key: StreamKey
    stream: Stream | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at the rendition's first keyframe: from then on it can be played."""
    shed: bool = False
    ended: bool = False
    last_video_ms: int | None = None
    last_audio_ms: int | None = None
    gap: bool = False
    """A new worker took over: its first frame tells the sinks of the discontinuity."""
    caught_up: bool = False
    """The current worker published a keyframe of this rendition."""
    frames_out: int = 0
    bytes_since: int = 0
    kbps: float | None = None


class RenditionPublisher:
    """The hub's Publisher of one rendition stream: closed by a kick (the admin API, or the job itself)."""

    def __init__(self, renditions: Renditions, out: RenditionOut, peer: str) -> None:
        self.renditions = renditions
        self.out = out
        self.peer = peer

    def close(self, reason: str) -> None:
        self.renditions.closed(self.out, reason)


class Renditions:
    def __init__(self, registry: StreamRegistry, source: Stream, rungs: Sequence[Rendition],
                 on_all_ended: Callable[[str], None]) -> None:
        self.registry = registry
        self.source = source
        self.outs = [RenditionOut(r, StreamKey(source.key.app, r.stream_name(source.key.name))) for r in rungs]
        self.tracks: list[RenditionOut] = []
        """The current worker's tracks: its rung i is tracks[i]."""
        self.on_all_ended = on_all_ended
        self.skipped = 0
        self._audio_config: bytes | None = None
        self._skip_log = LogGate(SKIP_LOG_INTERVAL_S)

    def live(self) -> list[RenditionOut]:
        return [o for o in self.outs if not o.shed and not o.ended]

    def begin_worker(self, restart: bool) -> list[RenditionOut]:
        """A worker starts with the live rungs as its tracks."""
        self.tracks = self.live()
        for out in self.tracks:
            out.caught_up = False
            out.gap = restart
            out.bytes_since = 0
        return self.tracks

    def newest_video_ms(self) -> int:
        """The newest video timestamp any rendition carries (-1 before the first)."""
        return max((o.last_video_ms for o in self.tracks if o.last_video_ms is not None), default=-1)

    def caught_up(self) -> bool:
        """Every live track had a keyframe from the current worker."""
        return all(o.caught_up for o in self.tracks if not o.shed and not o.ended)

    # ----- the worker's tags -------------------------------------------------------------------------------

    def publish_tag(self, track: int, tag: bytes, now: float, touched: set[Stream]) -> None:
        """One TAG message (a complete FLV tag). Raises WireError for one that is not a tag of this job."""
        if len(tag) < 15:
            raise WireError(f"a TAG message of {len(tag)} bytes is not an FLV tag")
        kind = tag[0]
        size = int.from_bytes(tag[1:4], "big")
        if 11 + size + 4 != len(tag):
            raise WireError(f"a TAG message of {len(tag)} bytes holds an FLV tag of {size} body bytes")
        ts = (tag[7] << 24) | (tag[4] << 16) | (tag[5] << 8) | tag[6]
        body = tag[11 : 11 + size]
        if kind == FrameKind.AUDIO and track == AUDIO_TRACK:
            if _is_config(kind, body):
                self._audio_config = body  # given to each rendition as its stream is taken
            for out in self.tracks:
                if out.stream is not None:
                    self._publish(out, kind, ts, body, now, touched)
            return
        if kind != FrameKind.VIDEO or track >= len(self.tracks):
            raise WireError(f"a TAG message for track {track} (type {kind}) that this job does not have")
        out = self.tracks[track]
        if out.shed or out.ended:
            return
        if out.stream is None and not self._claim(out, now):
            return
        self._publish(out, kind, ts, body, now, touched)

    def _publish(self, out: RenditionOut, kind: int, ts: int, body: bytes, now: float, touched: set[Stream]) -> None:
        stream = out.stream
        assert stream is not None
        video = kind == FrameKind.VIDEO
        if not _is_config(kind, body):
            last = out.last_video_ms if video else out.last_audio_ms
            if last is not None and ts <= last:
                return  # a restarted worker's frame the rendition already has
        if out.gap:
            out.gap = False
            stream.discontinuity()
        try:
            frame = stream.publish_video(ts, body, now) if video else stream.publish_audio(ts, body, now)
        except MediaError as err:
            self.skipped += 1
            count = self._skip_log.should_log(out.key, now)
            if count:
                event(log, "transcode_frame_skipped", logging.WARNING, stream=str(out.key), error=str(err)[:200],
                      skipped=count)
            return
        touched.add(stream)
        if frame is None or frame.is_config:
            return
        out.frames_out += 1
        out.bytes_since += len(body)
        if not video:
            out.last_audio_ms = ts
            return
        out.last_video_ms = ts
        if frame.keyframe:
            out.caught_up = True
            out.ready.set()

    def _claim(self, out: RenditionOut, now: float) -> bool:
        """The rendition's stream, taken at its first video tag; its metadata and the source's audio config
        go first."""
        try:
            stream = self.registry.claim_publisher(
                out.key, RenditionPublisher(self, out, f"transcoder:{self.source.key}"))
        except PublishRefused as err:
            event(log, "rendition_refused_locally", logging.WARNING, stream=str(out.key), reason=str(err))
            out.ended = True
            return False
        out.stream = stream
        stream.publish_metadata(*self._metadata(out), now)
        if self._audio_config is not None:
            stream.publish_audio(0, self._audio_config, now)
        return True

    def _metadata(self, out: RenditionOut) -> tuple[bytes, dict[str, Any]]:
        rung = out.rung
        values: dict[str, Any] = {
            "width": float(rung.width), "height": float(rung.height), "videodatarate": float(rung.video_kbps),
            "encoder": f"mediaserver transcoder ({rung.codec} {rung.preset})",
        }
        source = self.source.info.metadata_values
        for key in _SOURCE_METADATA:
            value = source.get(key)
            if isinstance(value, (int, float, bool)):
                values[key] = value
        return amf0.encode("onMetaData", amf0.EcmaArray(values)), values

    def measure(self, span_s: float | None) -> None:
        """The bit rate of each track since the last call, `span_s` ago (None: just start counting)."""
        for out in self.tracks:
            if span_s:
                out.kbps = round(out.bytes_since * 8 / 1000 / span_s, 1)
            out.bytes_since = 0

    # ----- ending ------------------------------------------------------------------------------------------

    def shed(self, out: RenditionOut, reason: str) -> None:
        out.shed = True
        self.end(out, reason)

    def end(self, out: RenditionOut, reason: str) -> None:
        """End one rendition's stream: its viewers get the end, its packagers end their playlists."""
        if out.ended:
            return
        out.ended = True
        if out.stream is not None:
            out.stream = None
            self.registry.kick(out.key, reason)

    def end_all(self, reason: str) -> None:
        for out in self.outs:
            self.end(out, reason)

    def closed(self, out: RenditionOut, reason: str) -> None:
        """The hub closed a rendition's publisher: an operator kicked it (our own ends come through `end`)."""
        if out.ended:
            return
        out.ended = True
        out.stream = None
        event(log, "rendition_ended", stream=str(out.key), reason=reason)
        if not self.live():
            self.on_all_ended(reason)

    # ----- what is shown -----------------------------------------------------------------------------------

    def watched(self, viewers: Callable[[StreamKey], int]) -> bool:
        """A viewer, a packager or a gate-counted viewer on any rendition."""
        for out in self.outs:
            stream = out.stream
            if stream is not None and (stream.subscribers or stream.sinks):
                return True
            if viewers(out.key):
                return True
        return False

    def snapshot(self, viewers: Callable[[StreamKey], int]) -> list[dict[str, Any]]:
        rows = []
        for out in self.outs:
            stream = out.stream
            rung = out.rung
            rows.append({
                "label": rung.label, "stream": str(out.key), "width": rung.width, "height": rung.height,
                "codec": rung.codec, "video_kbps": rung.video_kbps, "kbps": out.kbps,
                "ready": out.ready.is_set() and stream is not None, "shed": out.shed,
                "viewers": (len(stream.subscribers) if stream is not None else 0) + viewers(out.key),
                "packagers": len(stream.sinks) if stream is not None else 0,
            })
        return rows


def _is_config(kind: int, body: bytes) -> bool:
    """A sequence header (legacy or Enhanced FLV)."""
    if len(body) < 2:
        return False
    if kind == FrameKind.VIDEO:
        if body[0] & 0x80:
            return body[0] & 0x0F == 0
        return body[0] & 0x0F in (7, 12) and body[1] == 0
    if body[0] >> 4 == 9:
        return body[0] & 0x0F == 0
    return body[0] >> 4 == 10 and body[1] == 0
