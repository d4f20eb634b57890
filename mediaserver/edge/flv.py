"""HTTP-FLV and WebSocket-FLV viewers: `GET /APP/NAME.flv` (plain, or upgraded to a WebSocket).

A viewer gets the FLV header, then onMetaData and the sequence headers, then the cached GOP from its
keyframe (so the picture starts at once), then live tags. Every tag is the frame's own `tag` bytes,
shared by all viewers. Writes are merged: after each write the viewer sleeps `flv_merge_ms`, then takes
everything queued and writes it in one call; awaiting the write is the backpressure, and a write that
does not finish within `write_timeout` ends the viewer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..hub.stream import Stream
from ..hub.subscriber import SlowConsumer
from ..log import event
from ..media.frames import Frame
from ..remux.flv import flv_header
from .common import CONFIG, REGISTRY, cors_headers, find_stream, peer_of

log = logging.getLogger(__name__)

VIEWER = "mediaserver.viewer"
"""Request key: the viewer's Subscriber, for the admission middleware (expiry, play_done, metrics)."""


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
    """HTTP-FLV, or WebSocket-FLV when the request asks to upgrade (as mpegts.js does): the same tags,
    one binary message per merged write."""
    stream = find_stream(request, app, name)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        # No permessage-deflate, though browsers offer it: media does not compress, and deflating every
        # message cost about 19 times the CPU per viewer (bench/load.py ws-flv --ws-deflate).
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=4096, autoping=True, compress=False)
        if ws.can_prepare(request).ok:
            await ws.prepare(request)
            await _serve_viewer(request, stream, "ws-flv", lambda data: ws.send_bytes(data), ws.close)
            return ws
    resp = web.StreamResponse(
        headers={
            "Content-Type": "video/x-flv",
            "Cache-Control": "no-cache, no-store",
            **cors_headers(request),
        }
    )
    await resp.prepare(request)
    await _serve_viewer(request, stream, "flv", resp.write, resp.write_eof)
    return resp


async def _serve_viewer(
    request: web.Request,
    stream: Stream,
    kind: str,
    write: Callable[[bytes], Awaitable[None]],
    finish: Callable[[], Awaitable[object]],
) -> None:
    cfg = request.app[CONFIG].http
    loop = asyncio.get_running_loop()
    peer = peer_of(request)
    sub, start = stream.subscribe(kind, peer, loop.time())
    request[VIEWER] = sub
    event(log, "viewer_join", stream=str(stream.key), format=kind, peer=peer, viewers=len(stream.subscribers))
    reason = "viewer_left"
    timeout = cfg.write_timeout
    try:
        has_audio, has_video = _has_tracks(stream)
        first = [flv_header(has_audio, has_video)]
        first.extend(f.tag for f in start)
        data = b"".join(first)
        async with asyncio.timeout(timeout):
            await write(data)
        sub.bytes_sent += len(data)
        merge_s = cfg.flv_merge_ms / 1000
        while True:
            if merge_s:
                await asyncio.sleep(merge_s)
            batch: list[Frame] | None = await sub.next_batch()
            if batch is None:
                reason = sub.close_reason or "stream_ended"
                break
            data = b"".join([f.tag for f in batch])
            async with asyncio.timeout(timeout):
                await write(data)
            sub.bytes_sent += len(data)
        await finish()
    except SlowConsumer:
        reason = "slow_consumer"
    except TimeoutError:
        reason = "write_timeout"
    except ConnectionError:
        reason = "viewer_left"
    finally:
        sub.close(reason if reason != "stream_ended" else "viewer_left")
        event(
            log, "viewer_leave", stream=str(stream.key), format=kind, peer=peer, reason=reason,
            bytes=sub.bytes_sent, dropped_frames=sub.frames_dropped,
        )
