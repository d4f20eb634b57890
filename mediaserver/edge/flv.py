"""HTTP-FLV and WebSocket-FLV viewers: `GET /APP/NAME.flv` (plain, or upgraded to a WebSocket).

A viewer gets the FLV header, then onMetaData and the sequence headers, then the cached GOP from its
keyframe (so the picture starts at once), then live tags. Every tag is the frame's own `tag` bytes,
shared by all viewers. Writes are merged: after each write the viewer waits a window (hub/pacing.py: none
while viewers are few and the loop idle, up to `flv_merge_ms` as they grow; always `flv_merge_ms` in mode
"fixed"), then takes everything queued and writes it in one call (the joined bytes of a batch are made
once for the viewers that take the same frames, as all do when woken by the same frame); awaiting the
write is the backpressure. What each write sent is counted for the viewer and the egress
metrics (`StreamRegistry.count_sent`) as soon as it completes.

A viewer that is stuck (a write, or the final end of the response, does not finish within `write_timeout`)
or too slow (the hub ends it as a slow consumer) is reset (`transports.reset`), so the kernel frees the
send queue instead of holding it for a peer that does not read (issue 9, defect 4).

A WebSocket viewer's socket is read while media is sent (RFC 6455 5.5.1): a Close is answered and ends
the viewer, a Ping is answered (aiohttp's autoping), and a viewer that sends data frames, which players
never do, is closed with 1003 (unsupported data).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..hub.pacing import GAUGE, MergePolicy, SharedBatch
from ..hub.stream import Stream
from ..hub.subscriber import SlowConsumer, Subscriber
from ..log import event
from ..media.frames import Frame
from ..remux.flv import flv_header
from ..transports import reset
from .common import CONFIG, REGISTRY, cors_headers, find_stream, peer_of
from .keys import request_key
from .origin_pull import INTERNAL_REQUEST

log = logging.getLogger(__name__)

VIEWER = request_key("mediaserver.viewer", object)
"""Request key: the viewer's Subscriber, for the admission middleware (expiry, play_done, metrics)."""

_WS_CLOSE_TIMEOUT_S = 2.0
"""How long a WebSocket viewer gets to answer our Close before its socket is closed anyway."""

_BATCHES: weakref.WeakKeyDictionary[Stream, SharedBatch[bytes]] = weakref.WeakKeyDictionary()
"""Per stream, the joined tags of the last batch: viewers that take the same frames share the bytes."""


def _join_tags(batch) -> bytes:
    return b"".join([f.tag for f in batch])


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
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=4096, autoping=True, compress=False,
                                   timeout=_WS_CLOSE_TIMEOUT_S)
        if ws.can_prepare(request).ok:
            await ws.prepare(request)
            await _serve_viewer(request, stream, "ws-flv", ws.send_bytes, ws.close, _watch_ws_viewer(ws))
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
    watch: Coroutine[Any, Any, str] | None = None,
) -> None:
    """Send the stream until it ends, the viewer goes, or the viewer is stuck; `watch`, when given,
    reads the viewer's socket meanwhile and returns why the viewer ended the session."""
    cfg = request.app[CONFIG].http
    loop = asyncio.get_running_loop()
    peer = peer_of(request)
    sub, start = stream.subscribe(kind, peer, loop.time())
    sub.internal = bool(request.get(INTERNAL_REQUEST))  # another node's pull (its credential was checked)
    request[VIEWER] = sub
    event(log, "viewer_join", stream=str(stream.key), format=kind, peer=peer, viewers=len(stream.subscribers))
    reason = "viewer_left"
    sending = _send(request, stream, sub, start, write)
    try:
        reason = await sending if watch is None else await _first_of(sending, watch)
        if reason != "viewer_left":  # the stream ended or the viewer was kicked: end the response cleanly
            async with asyncio.timeout(cfg.write_timeout):
                await finish()
    except SlowConsumer:
        reason = "slow_consumer"
    except TimeoutError:
        reason = "write_timeout"
    except ConnectionError:
        reason = "viewer_left"
    finally:
        if reason in ("slow_consumer", "write_timeout"):
            reset(request.transport)  # not a polite close behind a send queue the peer does not read
        sub.close(reason if reason != "stream_ended" else "viewer_left")
        event(
            log, "viewer_leave", stream=str(stream.key), format=kind, peer=peer, reason=reason,
            bytes=sub.bytes_sent, dropped_frames=sub.frames_dropped,
        )


async def _send(
    request: web.Request, stream: Stream, sub: Subscriber, start: list[Frame],
    write: Callable[[bytes], Awaitable[None]],
) -> str:
    """The viewer's write loop; returns why it stopped (the stream ended, or the subscriber was closed:
    kicked, expired). Raises SlowConsumer, TimeoutError (a stuck write) or ConnectionError."""
    cfg = request.app[CONFIG].http
    registry = request.app[REGISTRY]
    timeout = cfg.write_timeout
    has_audio, has_video = _has_tracks(stream)
    first = [flv_header(has_audio, has_video)]
    first.extend(f.tag for f in start)
    data = b"".join(first)
    async with asyncio.timeout(timeout):
        await write(data)
    registry.count_sent(sub, len(data))
    policy = MergePolicy(cfg.flv_merge_ms, cfg.flv_merge_mode)
    subscribers = stream.subscribers
    shared = _BATCHES.get(stream)
    if shared is None:
        shared = _BATCHES[stream] = SharedBatch()
    transport = request.transport
    protocol = request.protocol
    while True:
        merge_s = policy.window_s(len(subscribers), GAUGE.busy())
        if merge_s:
            # Each viewer's own window (not ticks shared by the stream's viewers: at 1,000 viewers those
            # measured no cheaper, the burst of writes landing at once).
            await asyncio.sleep(merge_s)
        batch: list[Frame] | None = await sub.next_batch()
        if batch is None:
            return sub.close_reason or "stream_ended"
        data = shared.get(batch, _join_tags)
        if transport is not None and not protocol.writing_paused and _fits(transport, len(data)):
            await write(data)  # cannot pause the transport, so cannot wait: no deadline to arm
        else:
            async with asyncio.timeout(timeout):
                await write(data)
        registry.count_sent(sub, len(data))


def _fits(transport: asyncio.BaseTransport, size: int) -> bool:
    """Whether `size` more bytes stay under the transport's high-water mark: a write to a transport that is
    not paused then neither pauses it nor waits for it to drain (aiohttp's writers wait only while it is
    paused), and arming a deadline (a timer per write per viewer) can be skipped."""
    try:
        buffered = transport.get_write_buffer_size()  # type: ignore[attr-defined]
        high = transport.get_write_buffer_limits()[1]  # type: ignore[attr-defined]
    except (AttributeError, NotImplementedError):
        return False
    return not transport.is_closing() and buffered + size + 64 <= high  # 64: HTTP chunk or WebSocket framing


async def _first_of(sending: Coroutine[Any, Any, str], watching: Coroutine[Any, Any, str]) -> str:
    """Run the write loop and the socket reader together; the first to finish says why the viewer
    ended, and the other is cancelled."""
    tasks = [asyncio.ensure_future(sending), asyncio.ensure_future(watching)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return (tasks[0] if tasks[0] in done else tasks[1]).result()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _watch_ws_viewer(ws: web.WebSocketResponse) -> str:
    """Read a WebSocket viewer until it ends the session; returns the reason for the leave log.

    aiohttp answers Ping and Close inside `receive()`; a message too big for `max_msg_size` or a broken
    frame comes back as ERROR after aiohttp sent the matching close code."""
    msg = await ws.receive()
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
        return "viewer_left"
    if msg.type is WSMsgType.ERROR:
        return "protocol_error"
    await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"viewers send no messages")
    return "unexpected_message"
