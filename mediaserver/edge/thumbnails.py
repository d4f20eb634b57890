"""GET /APP/STREAM/thumbnail.jpg[?width=N]: the stream's newest keyframe as a JPEG.

The keyframe comes from the hub (`GopCache.newest_keyframe`); decoding, scaling and encoding run in a
thread (transcode/thumbnail.py), never on the event loop. Costs stay bounded however many ask:
- one decode per keyframe interval per stream at most: a picture decoded from a keyframe is reused for
  any keyframe that arrives less than one keyframe interval (at least `MIN_DECODE_INTERVAL_MS`) of media
  time after it, so an all-intra stream or a burst of keyframes cannot make requests decode more;
- single flight: requests for the same stream wait for the one render under way (a per-stream lock held
  by a task, so a client that leaves does not cancel it for the others);
- the JPEGs of the newest picture are cached per width (`JPEGS_PER_STREAM` at most), and the state of a
  stream is dropped when it ends; `MAX_RENDERS` renders run at once across streams.

Answers: 200 image/jpeg with `Cache-Control: max-age` of about one keyframe interval and an ETag naming
the keyframe and size (`If-None-Match` gets 304); 404 with a hint for no stream, no keyframe yet, an
audio-only stream or thumbnails disabled; 400 for a bad width; 415 for a codec that cannot be decoded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field

from aiohttp import web

from ..hub.registry import StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..log import LogGate, event
from ..transcode.thumbnail import (MIN_WIDTH, Keyframe, Thumbnail, ThumbnailError, decode_keyframe, render_thumbnail,
                                   thumbnail_size)
from .common import cors_headers, find_stream, json_error
from .keys import CONFIG, THUMBNAILS

log = logging.getLogger(__name__)

MIN_DECODE_INTERVAL_MS = 1_000
JPEGS_PER_STREAM = 4
MAX_RENDERS = max(1, (os.cpu_count() or 2) // 2)
MAX_WIDTH_DIGITS = 5
_LOG_INTERVAL_S = 60.0


@dataclass(slots=True)
class _StreamThumbs:
    """One stream's decoded picture and the JPEGs made from it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    keyframe: Keyframe | None = None
    """The keyframe the picture was decoded from."""
    picture: object | None = None
    """The decoded picture (av.VideoFrame)."""
    jpegs: OrderedDict[tuple[int, int], Thumbnail] = field(default_factory=OrderedDict)
    """Served size -> JPEG of `picture`, least recently used first. Keyed by what is served, not by what
    was asked: every width above the source's (or max_width) is one JPEG, not one encode each."""
    failure: ThumbnailError | None = None
    """Why `keyframe` could not be decoded: answered again without decoding it again."""


class ThumbnailService:
    def __init__(self, registry: StreamRegistry, max_width: int, quality: int) -> None:
        self.max_width = max_width
        self.quality = quality
        self.decodes = 0
        """Keyframes decoded since start (tests and metrics count them)."""
        self.renders = 0
        self._streams: dict[StreamKey, tuple[Stream, _StreamThumbs]] = {}
        self._slots = asyncio.Semaphore(MAX_RENDERS)
        self._errors = LogGate(_LOG_INTERVAL_S)
        registry.on_stream_ended.append(self._stream_ended)

    def _stream_ended(self, stream: Stream) -> None:
        entry = self._streams.get(stream.key)
        if entry is not None and entry[0] is stream:
            del self._streams[stream.key]

    def _state(self, stream: Stream) -> _StreamThumbs:
        entry = self._streams.get(stream.key)
        if entry is None or entry[0] is not stream:
            entry = (stream, _StreamThumbs())
            self._streams[stream.key] = entry
        return entry[1]

    @staticmethod
    def max_age_s(stream: Stream) -> int:
        interval = stream.gop.keyframe_interval_ms
        return max(1, round((interval or 2_000) / 1000))

    def _keyframe(self, stream: Stream, state: _StreamThumbs) -> Keyframe | None:
        """The keyframe to serve: the decoded one while the newest is less than a keyframe interval newer."""
        newest = stream.gop.newest_keyframe
        if newest is None:
            return None
        current = state.keyframe
        if current is not None:
            reuse_ms = max(MIN_DECODE_INTERVAL_MS, stream.gop.keyframe_interval_ms or 0)
            if 0 <= newest.dts_ms - current.dts_ms < reuse_ms:  # a stream's timeline never goes back
                return current
        return Keyframe.of(newest, stream.info.video_config)

    async def thumbnail(self, stream: Stream, width: int | None) -> tuple[Keyframe, Thumbnail] | None:
        """The JPEG of the stream's newest keyframe (see the module docstring); None without a keyframe.
        Raises ThumbnailError."""
        state = self._state(stream)
        keyframe = self._keyframe(stream, state)
        if keyframe is None:
            return None
        if state.keyframe is keyframe:
            if state.failure is not None:
                raise state.failure
            if (hit := self._cached(state, width)) is not None:
                return keyframe, hit
        task = asyncio.get_running_loop().create_task(self._render(stream, state, width))
        task.add_done_callback(_retrieve)  # the requester may have left; its error is answered to the others
        return await asyncio.shield(task)

    async def _render(self, stream: Stream, state: _StreamThumbs, width: int | None) -> tuple[Keyframe, Thumbnail] | None:
        async with state.lock:  # one render per stream at a time: who waited finds the work done
            keyframe = self._keyframe(stream, state)
            if keyframe is None:
                return None
            if state.keyframe is keyframe:
                if state.failure is not None:
                    raise state.failure
                if (hit := self._cached(state, width)) is not None:
                    return keyframe, hit
            picture = state.picture if state.keyframe is keyframe else None
            async with self._slots:
                if picture is None:
                    self.decodes += 1
                    state.keyframe, state.picture, state.failure = keyframe, None, None
                    state.jpegs.clear()
                    try:
                        picture = await asyncio.to_thread(decode_keyframe, keyframe)
                    except ThumbnailError as err:
                        state.failure = err
                        raise
                    state.picture = picture
                self.renders += 1
                thumb = await asyncio.to_thread(render_thumbnail, picture, width, self.max_width, self.quality)
            state.jpegs[(thumb.width, thumb.height)] = thumb
            while len(state.jpegs) > JPEGS_PER_STREAM:
                state.jpegs.popitem(last=False)
            return keyframe, thumb

    def _cached(self, state: _StreamThumbs, width: int | None) -> Thumbnail | None:
        if state.picture is None:
            return None
        size = thumbnail_size(state.picture, width, self.max_width)
        hit = state.jpegs.get(size)
        if hit is not None:
            state.jpegs.move_to_end(size)
        return hit

    def log_failure(self, key: StreamKey, err: ThumbnailError) -> None:
        count = self._errors.should_log(str(key), asyncio.get_running_loop().time())
        if count:
            event(log, "thumbnail_failed", logging.WARNING, stream=str(key), error=str(err), status=err.status,
                  more_since_last_log=count - 1)


def add_thumbnails(app: web.Application, registry: StreamRegistry) -> ThumbnailService:
    """The application's ThumbnailService (under THUMBNAILS), configured from [thumbnails]."""
    cfg = app[CONFIG].thumbnails
    service = app[THUMBNAILS] = ThumbnailService(registry, cfg.max_width, cfg.quality)
    return service


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def parse_width(raw: str | None, max_width: int) -> int | None:
    """?width=N: None when absent; an int MIN_WIDTH.. (wider than max_width is served at max_width).
    Raises ValueError with what is accepted."""
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_WIDTH_DIGITS or int(raw) < MIN_WIDTH:
        raise ValueError(f"width={raw[:16]!r} is not accepted; give a whole number of pixels from {MIN_WIDTH} "
                         f"(wider than {max_width} is served {max_width} wide)")
    return int(raw)


async def serve_thumbnail(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG].thumbnails
    headers = cors_headers(request)
    if not config.enabled:
        raise json_error(404, "thumbnails are disabled", "set thumbnails.enabled = true", headers)
    try:
        width = parse_width(request.query.get("width"), config.max_width)
    except ValueError as err:
        raise json_error(400, "bad width", str(err), headers) from None
    stream = find_stream(request, request.match_info["app"], request.match_info["name"])
    if stream.gop.newest_keyframe is None:
        if stream.info.audio_codec is not None and stream.info.video_codec is None and stream.frames_in > 0:
            raise json_error(404, f"{stream.key} has no picture", "this stream carries audio only", headers)
        raise json_error(404, f"{stream.key} has no keyframe yet",
                         "try again after the publisher's first keyframe (about one GOP)", headers)
    service = request.app[THUMBNAILS]
    try:
        made = await service.thumbnail(stream, width)
    except ThumbnailError as err:
        service.log_failure(stream.key, err)
        raise json_error(err.status, str(err), err.hint, headers) from None
    if made is None:
        raise json_error(404, f"{stream.key} has no keyframe yet", "try again after the publisher's next keyframe",
                         headers)
    keyframe, thumb = made
    etag = f'"{keyframe.tag}-{thumb.width}x{thumb.height}"'
    headers.update({"ETag": etag, "Cache-Control": f"max-age={service.max_age_s(stream)}"})
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=thumb.jpeg, content_type="image/jpeg", headers=headers)
