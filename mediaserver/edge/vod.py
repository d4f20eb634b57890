"""VOD of a recording: `/vod/ID.mp4` (the file, with HTTP Range: 206, 416, sent with sendfile by aiohttp)
and `/vod/ID/index.m3u8` (an HLS VOD playlist over byte ranges of that same file: EXT-X-MAP and
EXT-X-BYTERANGE, no copy). The file's fragment index is read on request, in a thread."""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from ..errors import MediaError
from ..record.vod import hls_playlist, index_file
from .common import cors_headers, json_error
from .keys import RECORDINGS

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
    if found is None:
        raise json_error(404, f"recording {rec_id} is not on this node", "GET /api/v1/recordings lists them", cors)
    return found


async def serve_mp4(request: web.Request) -> web.StreamResponse:
    file = request.match_info["file"]
    if not file.endswith(".mp4"):
        raise json_error(404, "not found", "VOD files are /vod/ID.mp4 and /vod/ID/index.m3u8", cors_headers(request))
    _, path = await _file(request, file[:-4])
    return web.FileResponse(path, headers={"Content-Type": "video/mp4", "Cache-Control": "no-cache",
                                           **cors_headers(request)})


async def serve_playlist(request: web.Request) -> web.Response:
    rec_id = request.match_info["id"]
    row, path = await _file(request, rec_id)

    def build() -> str:
        with open(path, "rb") as f:
            return hls_playlist(index_file(f), f"../{rec_id}.mp4", live=row.status == "recording")

    try:
        text = await asyncio.to_thread(build)
    except (OSError, MediaError) as err:
        raise json_error(422, f"recording {rec_id} cannot be read: {err}", "the file is damaged or missing",
                         cors_headers(request)) from None
    return web.Response(text=text, headers={"Content-Type": PLAYLIST_TYPE, "Cache-Control": "no-cache",
                                            **cors_headers(request)})


def add_vod_routes(app: web.Application) -> None:
    app.router.add_get("/vod/{id}/index.m3u8", serve_playlist, name="vod-hls")
    app.router.add_get("/vod/{file}", serve_mp4, name="vod-mp4")
