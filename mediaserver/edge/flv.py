"""HTTP-FLV viewers: `GET /APP/NAME.flv`.

A viewer gets the FLV header, then onMetaData and the sequence headers, then the cached GOP from its
keyframe (so the picture starts at once), then live tags. Every tag is the frame's own `tag` bytes,
shared by all viewers. Writes are merged: after each write the viewer sleeps `flv_merge_ms`, then takes
everything queued and writes it in one call; awaiting the write is the backpressure, and a write that
does not finish within `write_timeout` ends the viewer.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ..hub.stream import Stream
from ..hub.subscriber import SlowConsumer
from ..log import event
from ..media.frames import Frame
from ..remux.flv import flv_header
from .common import CONFIG, REGISTRY, cors_headers, find_stream, peer_of

log = logging.getLogger(__name__)


def _has_tracks(stream: Stream) -> tuple[bool, bool]:
    """(has_audio, has_video) for the FLV header; players such as mpegts.js wait for a track the
    header announces, so announce only what the stream carries (both while it is still unknown)."""
    info = stream.info
    has_audio = info.audio_codec is not None
    has_video = info.video_codec is not None
    if not (has_audio or has_video):
        values = info.metadata_values
        has_audio = "audiocodecid" in values or not values
        has_video = "videocodecid" in values or not values
    return has_audio, has_video


async def serve_flv(request: web.Request, app: str, name: str) -> web.StreamResponse:
    stream = find_stream(request, app, name)
    cfg = request.app[CONFIG].http
    loop = asyncio.get_running_loop()
    peer = peer_of(request)
    sub, start = stream.subscribe("flv", peer, loop.time())
    event(log, "viewer_join", stream=str(stream.key), format="flv", peer=peer, viewers=len(stream.subscribers))
    reason = "viewer_left"
    resp = web.StreamResponse(
        headers={
            "Content-Type": "video/x-flv",
            "Cache-Control": "no-cache, no-store",
            **cors_headers(request),
        }
    )
    try:
        await resp.prepare(request)
        has_audio, has_video = _has_tracks(stream)
        first = [flv_header(has_audio, has_video)]
        first.extend(f.tag for f in start)
        await _write(resp, b"".join(first), cfg.write_timeout, sub)
        merge_s = cfg.flv_merge_ms / 1000
        while True:
            if merge_s:
                await asyncio.sleep(merge_s)
            batch: list[Frame] | None = await sub.next_batch()
            if batch is None:
                reason = sub.close_reason or "stream_ended"
                break
            await _write(resp, b"".join([f.tag for f in batch]), cfg.write_timeout, sub)
        await resp.write_eof()
    except SlowConsumer:
        reason = "slow_consumer"
    except TimeoutError:
        reason = "write_timeout"
    except (ConnectionError, asyncio.CancelledError) as err:
        reason = "viewer_left"
        if isinstance(err, asyncio.CancelledError):
            raise
    finally:
        sub.close(reason if reason != "stream_ended" else "viewer_left")
        event(
            log, "viewer_leave", stream=str(stream.key), format="flv", peer=peer, reason=reason,
            bytes=sub.bytes_sent, dropped_frames=sub.frames_dropped,
        )
    return resp


async def _write(resp: web.StreamResponse, data: bytes, timeout: float, sub) -> None:
    async with asyncio.timeout(timeout):
        await resp.write(data)
    sub.bytes_sent += len(data)
