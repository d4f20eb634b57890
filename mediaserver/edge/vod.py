"""VOD of a recording: `/vod/ID.mp4` (the file, with HTTP Range: 206, 416, sent with sendfile by aiohttp)
and `/vod/ID/index.m3u8` (an HLS VOD playlist over byte ranges of that same file: EXT-X-MAP and
EXT-X-BYTERANGE, no copy). The file's fragment index is read in a thread and kept per file size and mtime
(record/vod.py `index_path`).

DVR: `/APP/NAME/dvr.m3u8` of a stream being recorded lists the last `record.dvr_window` seconds of the
file being written (no ENDLIST; the newest fragment left out while its audio may still come), over byte
ranges of `/vod/ID.mp4`, so a player scrubs back and returns to live with memory bounded: bytes come from
disk. Its text is kept per file and size, so every viewer of a stream shares one index per new fragment."""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from ..errors import MediaError
from ..record.vod import hls_playlist, index_file, index_path
from . import vod_s3
from .common import cors_headers, json_error
from .keys import RECORDINGS
from .names import stream_key
from .vod_remote import fetch_remote, remote_row, serve_remote_dvr

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"


async def _file(request: web.Request, rec_id: str):
    manager = request.app.get(RECORDINGS)
    cors = cors_headers(request)
    if manager is None:
        raise json_error(404, "recording is off on this node", "set record.mode = \"api\" or \"all\"", cors)
    if not _ID.fullmatch(rec_id):
        raise json_error(404, "no such recording", "GET /api/v1/recordings lists them", cors)
    found = await manager.file_of(rec_id)
    if found is None and (row := await manager.catalog.get(rec_id)) is not None and vod_s3.in_bucket(row):
        return row, None  # record.storage = "s3": vod_s3 serves it
    if found is None and (row := await remote_row(request, rec_id)) is not None:
        return row, None  # cluster: on another node's disk, fetched from it (vod_remote)
    if found is None:
        raise json_error(404, f"recording {rec_id} is not on this node", "GET /api/v1/recordings lists them", cors)
    return found


async def serve_mp4(request: web.Request) -> web.StreamResponse:
    file = request.match_info["file"]
    if not file.endswith(".mp4"):
        raise json_error(404, "not found", "VOD files are /vod/ID.mp4 and /vod/ID/index.m3u8", cors_headers(request))
    row, path = await _file(request, file[:-4])
    if path is None:
        if vod_s3.in_bucket(row):
            return await vod_s3.serve_mp4(request, request.app[RECORDINGS], row)
        return await fetch_remote(request, row)
    return web.FileResponse(path, headers={"Content-Type": "video/mp4", "Cache-Control": "no-cache",
                                           **cors_headers(request)})


async def serve_playlist(request: web.Request) -> web.StreamResponse:
    rec_id = request.match_info["id"]
    row, path = await _file(request, rec_id)
    if path is None:
        if vod_s3.in_bucket(row):
            return await vod_s3.serve_playlist(request, request.app[RECORDINGS], row)
        return await fetch_remote(request, row)

    def build() -> str:
        return hls_playlist(index_path(path), f"../{rec_id}.mp4", live=row.status == "recording")

    try:
        text = await asyncio.to_thread(build)
    except (OSError, MediaError) as err:
        raise json_error(422, f"recording {rec_id} cannot be read: {err}", "the file is damaged or missing",
                         cors_headers(request)) from None
    return web.Response(text=text, headers={"Content-Type": PLAYLIST_TYPE, "Cache-Control": "no-cache",
                                            **cors_headers(request)})


_dvr_cache: dict[str, tuple[int, str]] = {}


async def serve_dvr(request: web.Request, app_name: str, name: str) -> web.StreamResponse:
    """dvr.m3u8 of a stream being recorded (the play route's admission has run)."""
    cors = cors_headers(request)
    manager = request.app.get(RECORDINGS)
    key = stream_key(app_name, name)
    rec_id = manager.current(key) if manager is not None and key is not None else None
    if rec_id is None and manager is not None and key in manager.active:
        raise json_error(503, f"the recording of {key} has no fragment yet", "retry in a few seconds",
                         {"Retry-After": "2", **cors})
    if rec_id is None and key is not None and (remote := await serve_remote_dvr(request, key)) is not None:
        return remote  # cluster: recorded by the node that publishes it
    if rec_id is None:
        raise json_error(404, f"stream {app_name}/{name} is not being recorded",
                         "DVR plays a stream while it is recorded: POST /api/v1/streams/APP/NAME/record", cors)
    row, path = await _file(request, rec_id)
    size = path.stat().st_size
    cached = _dvr_cache.get(rec_id)
    if cached is None or cached[0] != size:
        window = manager.cfg.dvr_window

        def build() -> str:
            with open(path, "rb") as f:
                return hls_playlist(index_file(f), f"../../vod/{rec_id}.mp4", live=True, window_s=window)

        try:
            cached = (size, await asyncio.to_thread(build))
        except (OSError, MediaError) as err:
            raise json_error(503, f"the recording of {key} cannot be read yet: {err}", "retry in a few seconds",
                             {"Retry-After": "2", **cors}) from None
        if len(_dvr_cache) > 1000:
            _dvr_cache.clear()
        _dvr_cache[rec_id] = cached
    return web.Response(text=cached[1], headers={"Content-Type": PLAYLIST_TYPE, "Cache-Control": "no-cache", **cors})


def add_vod_routes(app: web.Application) -> None:
    app.router.add_get("/vod/{id}/index.m3u8", serve_playlist, name="vod-hls")
    app.router.add_get("/vod/{file}", serve_mp4, name="vod-mp4")
