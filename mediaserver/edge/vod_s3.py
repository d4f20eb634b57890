"""VOD of a recording kept in object storage (its row's location is s3://BUCKET/KEY): any node that shares
the catalog and has the [record.s3] settings serves it, not only the node that recorded it.

`/vod/ID.mp4` answers HTTP Range by ranged GETs from the bucket, streamed through in chunks (206 with
Content-Range, 416 for a range outside the object or a malformed one; memory bounded, never the whole
object), or with a 302 to a presigned URL when record.s3.presign is true. `/vod/ID/index.m3u8` is made
from the VOD index stored beside the object at upload (record/sidecar.py), fetched once; the playlist
is cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import MediaError
from ..log import event
from ..record.catalog import Recording
from ..record.manager import RecordingManager
from ..record.objectstore import ObjectStore, StorageError, parse_uri
from ..record.sidecar import load_index, sidecar_key
from ..record.vod import dash_manifest, hls_playlist, index_file
from .common import PLAY_QUERY, cors_headers, json_error
from .keys import CONFIG
from .sendfile import byte_range as local_byte_range, write_within

log = logging.getLogger(__name__)

PRESIGN_S = 3600
"""How long a presigned URL lets a player read (a VOD session longer than this asks /vod/ID.mp4 again)."""
PLAYLIST_CACHE = 256
"""Playlists of stored recordings kept in memory (a recording's never changes once it is in the bucket)."""
_playlists: OrderedDict[str, str] = OrderedDict()
_manifests: OrderedDict[str, str] = OrderedDict()


def in_bucket(row: Recording) -> bool:
    return row.location.startswith("s3://")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a Range header over a `size`-byte object, None for the whole object;
    ValueError (sendfile.Unsatisfiable) for a malformed one or one outside the object (416): the rules of a
    local file's ranges (sendfile.byte_range)."""
    part = local_byte_range(header, size)
    return None if part is None else (part.start, part.end - 1)


def _where(request: web.Request, manager: RecordingManager, row: Recording):
    cors = cors_headers(request)
    if manager.uploader is None:
        raise json_error(404, f"recording {row.id} is in object storage, which this node is not set up for",
                         "set record.storage = \"s3\" and [record.s3] as on the recording node", cors)
    store = manager.uploader.store
    bucket, key = parse_uri(row.location)
    if bucket != store.bucket:
        raise json_error(404, f"recording {row.id} is in bucket {bucket!r}, not this node's {store.bucket!r}",
                         "give every node the same record.s3.bucket", cors)
    return store, key


def _unavailable(request: web.Request, row: Recording, err: StorageError) -> web.HTTPException:
    event(log, "vod_storage_failed", logging.WARNING, id=row.id, error=str(err))
    status = 404 if err.code in ("NoSuchKey", "404") else 503
    return json_error(status, f"recording {row.id} cannot be read from object storage ({err.code})",
                      "retry later" if status == 503 else "the object is gone; DELETE the recording",
                      {"Retry-After": "5", **cors_headers(request)} if status == 503 else cors_headers(request))


async def serve_mp4(request: web.Request, manager: RecordingManager, row: Recording) -> web.StreamResponse:
    store, key = _where(request, manager, row)
    cors = cors_headers(request)
    if store.cfg.presign:
        try:
            url = await store.presign(key, PRESIGN_S)
        except StorageError as err:
            raise _unavailable(request, row, err) from None
        return web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store", **cors})
    size = row.bytes  # verified against the object's size when it was uploaded
    try:
        wanted = byte_range(request.headers.get("Range"), size)
    except ValueError as err:
        raise json_error(416, str(err), "ask for bytes within the recording's size",
                         {"Content-Range": f"bytes */{size}", **cors}) from None
    first, last = wanted if wanted is not None else (0, size - 1)
    headers = {"Content-Type": "video/mp4", "Accept-Ranges": "bytes", "Cache-Control": "no-cache",
               "Content-Length": str(max(0, last - first + 1)), **cors}
    if wanted is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    response = web.StreamResponse(status=206 if wanted is not None else 200, headers=headers)
    if request.method == "HEAD" or size == 0:
        await response.prepare(request)
        return response
    chunks = store.read_range(key, first, last)
    try:
        chunk = await anext(chunks)  # the first chunk before the answer: a bucket error is still an HTTP error
    except StopAsyncIteration:
        chunk = b""
    except StorageError as err:
        raise _unavailable(request, row, err) from None
    await response.prepare(request)
    async with contextlib.aclosing(chunks):
        try:
            timeout = request.app[CONFIG].http.write_timeout
            await write_within(response.write, chunk, timeout, request.transport)
            async for chunk in chunks:
                # awaited: a slow viewer slows the GET, nothing piles up; a stuck one is dropped
                await write_within(response.write, chunk, timeout, request.transport)
        except StorageError as err:  # mid-body: the answer ends short, the client sees it and may resume
            event(log, "vod_storage_failed", logging.WARNING, id=row.id, error=str(err))
            response.force_close()  # else the player waits on a kept-alive connection for bytes never coming
            return response
    await response.write_eof()
    return response


async def serve_playlist(request: web.Request, manager: RecordingManager, row: Recording) -> web.Response:
    async def build(store: ObjectStore, key: str) -> str:
        data = await store.get_bytes(sidecar_key(key))
        # in a thread: a day-long recording's index is a few MB of JSON
        return await asyncio.to_thread(lambda: hls_playlist(load_index(data), f"../{row.id}.mp4"))

    return await _described(request, manager, row, _playlists, build, "application/vnd.apple.mpegurl")


async def serve_manifest(request: web.Request, manager: RecordingManager, row: Recording) -> web.Response:
    """The static MPD of a stored recording from the sidecar's index; a sidecar written before it kept the
    codecs and picture size has them read from the init at the head of the object (one small ranged GET)."""
    async def build(store: ObjectStore, key: str) -> str:
        index = load_index(await store.get_bytes(sidecar_key(key)))
        if not index.codecs:
            init = b"".join([chunk async for chunk in store.read_range(
                key, index.init_offset, index.init_offset + index.init_size - 1)])
            head = await asyncio.to_thread(index_file, init)
            index = dataclasses.replace(index, codecs=head.codecs, width=head.width, height=head.height)
        return await asyncio.to_thread(dash_manifest, index, f"../{row.id}.mp4")

    return await _described(request, manager, row, _manifests, build, "application/dash+xml")


async def _described(request: web.Request, manager: RecordingManager, row: Recording, cache: OrderedDict[str, str],
                     build: Callable[[ObjectStore, str], Awaitable[str]], content_type: str) -> web.Response:
    """A playlist or manifest of a stored recording: built once from its sidecar index (kept in `cache`, the
    least recently used dropped first), answered with the viewer's token in its URIs."""
    store, key = _where(request, manager, row)
    cors = cors_headers(request)
    text = cache.get(row.id)
    if text is None:
        try:
            text = await build(store, key)
        except StorageError as err:
            if err.code == "NoSuchKey":
                raise json_error(422, f"recording {row.id} has no VOD index in object storage (its file had no "
                                 f"whole fragment)", f"download /vod/{row.id}.mp4", cors) from None
            raise _unavailable(request, row, err) from None
        except MediaError as err:
            raise json_error(422, f"recording {row.id}'s VOD index cannot be read: {err}",
                             f"download /vod/{row.id}.mp4", cors) from None
        cache[row.id] = text
        while len(cache) > PLAYLIST_CACHE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(row.id)
    return web.Response(text=with_token(request, text, row), headers={
        "Content-Type": content_type, "Cache-Control": "no-cache", **cors})


def with_token(request: web.Request, text: str, row: Recording) -> str:
    """The viewer's play token (admitted by edge/vod.py) in the URIs of the file: the cache holds none."""
    query = request.get(PLAY_QUERY, "")
    return text.replace(f"../{row.id}.mp4", f"../{row.id}.mp4?{query}") if query else text

