"""VOD of a recording: `/vod/ID.mp4` (the file, with HTTP Range: 206, 416, sent with os.sendfile: sendfile.py),
`/vod/ID/index.m3u8` (an HLS VOD playlist over byte ranges of that same file: EXT-X-MAP and
EXT-X-BYTERANGE, no copy) and `/vod/ID/manifest.mpd` (a static DASH manifest over the same ranges). The
file's fragment index is read in a thread and kept per file size and mtime (record/vod.py `index_path`).

Admission: each of them is a play of the recording's app/stream, whether it is live or not (the gate's
vod-* protocols): the stream's play token (`?token=` or a bearer token) when its app needs one, and the
on_play hook, whose answer is reused per client as for HLS, so the range requests of one player are one
viewer. The token is carried into the playlist's and the manifest's URIs, as live HLS does.

DVR: `/APP/NAME/dvr.m3u8` of a stream being recorded lists the last `record.dvr_window` seconds of its
recording, across the files it rotated through (no ENDLIST; the newest fragment left out while its audio
may still come), over byte ranges of each `/vod/ID.mp4`, so a player scrubs back and returns to live with
memory bounded: bytes come from disk (record/dvr.py)."""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from urllib.parse import urlencode

from aiohttp import web

from ..auth.tokens import bearer_token
from ..errors import MediaError
from ..gate import CREDENTIAL, LIMIT
from ..record.vod import dash_manifest, hls_playlist, index_path
from . import vod_s3
from .common import PLAY_QUERY, QUERY_SLOT, QUERY_SLOT_BYTES, cors_headers, fill_query, json_error, play_refused
from .fastlane import FAST_LANE
from .keys import CONFIG, GATE, RECORDINGS
from .names import stream_key
from .origin_pull import INTERNAL_REQUEST
from .sendfile import serve_file
from .vod_remote import fetch_remote, fetches_remote, serve_remote_dvr

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MPD_TYPE = "application/dash+xml"
_finished: OrderedDict[tuple[str, str, int], str] = OrderedDict()
"""(recording id, vod-hls or vod-dash, its size) -> the playlist or MPD of a finished local file, no token."""


async def _file(request: web.Request, rec_id: str):
    manager = request.app.get(RECORDINGS)
    cors = cors_headers(request)
    if manager is None:
        raise json_error(404, "recording is off on this node", "set record.mode = \"api\" or \"all\"", cors)
    if not _ID.fullmatch(rec_id):
        raise json_error(404, "no such recording", "GET /api/v1/recordings lists them", cors)
    found = await manager.row_of(rec_id)  # (kept a moment: every range request of every viewer asks)
    if found is not None and found[1] is not None:
        return found
    if found is not None and vod_s3.in_bucket(found[0]):
        return found  # record.storage = "s3": vod_s3 serves it
    if found is not None and fetches_remote(request, found[0]):
        return found  # cluster: on another node's disk, fetched from it (vod_remote)
    raise json_error(404, f"recording {rec_id} is not on this node", "GET /api/v1/recordings lists them", cors)


async def _admitted(request: web.Request, rec_id: str, protocol: str):
    """The recording's row and file (None: in the bucket or on another node), once the gate admits this
    client as a viewer of its stream (the token query, "" or "token=...", is left in request[PLAY_QUERY]).
    A request another node fetches for a viewer it admitted (vod_remote) is not admitted again."""
    row, path = await _file(request, rec_id)
    gate = request.app.get(GATE)
    if gate is not None and not request.get(INTERNAL_REQUEST):
        token = request.query.get("token", "") or bearer_token(request.headers.get("Authorization"))
        verdict = await gate.admit_play(row.app, row.stream, token=token, query=request.query,
                                        address=request.remote or "", protocol=protocol)
        refusal = verdict.refusal
        if refusal is not None:
            subject = f"recording {rec_id} of {row.app}/{row.stream}"
            if refusal.kind == LIMIT:
                raise json_error(503, refusal.message, refusal.hint, {"Retry-After": "10", **cors_headers(request)})
            reason = refusal.reason if refusal.kind == CREDENTIAL else refusal.kind
            raise play_refused(request, subject, reason, refusal.message,
                               "add ?token=... (a play token for the recorded stream) to the URL")
        request[PLAY_QUERY] = urlencode({"token": verdict.play_token}) if verdict.play_token else ""
    return row, path


def _with_query(uri: str, request: web.Request) -> str:
    query = request.get(PLAY_QUERY, "")
    return f"{uri}?{query}" if query else uri


async def serve_mp4(request: web.Request) -> web.StreamResponse:
    file = request.match_info["file"]
    if not file.endswith(".mp4"):
        raise json_error(404, "not found", "VOD URLs are /vod/ID.mp4, /vod/ID/index.m3u8 and /vod/ID/manifest.mpd",
                         cors_headers(request))
    row, path = await _admitted(request, file[:-4], "vod-mp4")
    if path is None:
        if vod_s3.in_bucket(row):
            return await vod_s3.serve_mp4(request, request.app[RECORDINGS], row)
        return await fetch_remote(request, row)
    lane = request.app.get(FAST_LANE)
    if lane is not None and not request.get(INTERNAL_REQUEST):
        lane.remember_vod(row.id, row.app, row.stream, str(path))  # its next ranges may take the fast lane
    try:
        return await serve_file(request, path, {"Content-Type": "video/mp4", "Cache-Control": "no-cache",
                                                **cors_headers(request)},
                                write_timeout=request.app[CONFIG].http.write_timeout)
    except FileNotFoundError:  # deleted (or uploaded and removed) since it was looked up
        raise json_error(404, f"recording {row.id} is no longer on this node", "GET /api/v1/recordings lists them",
                         cors_headers(request)) from None


async def _describe(request: web.Request, protocol: str, render, stored, *, finished: bool = False):
    """Admit the client, then render(index, the file's URI with its token, live) from the file's index in a
    thread (text), or answer with stored(request, manager, row) for a recording in the bucket, or with the
    node that has it. `finished`: a recording still being written is refused (409)."""
    rec_id = request.match_info["id"]
    row, path = await _admitted(request, rec_id, protocol)
    live = row.status == "recording"
    if finished and live:
        raise json_error(409, f"recording {rec_id} is still being written; a static manifest describes a finished "
                         "file", f"play /vod/{rec_id}/index.m3u8 or /{row.app}/{row.stream}/dvr.m3u8 meanwhile",
                         cors_headers(request))
    if path is None:
        if vod_s3.in_bucket(row):
            return await stored(request, request.app[RECORDINGS], row)
        return await fetch_remote(request, row)
    # A finished file never changes: its text is rendered once (kept per file, the least recently used
    # dropped first) and every viewer's token filled in; a growing one is rendered per request.
    kept = (rec_id, protocol, row.bytes)
    text = None if live else _finished.get(kept)
    if text is not None:
        _finished.move_to_end(kept)
        _lane_may_answer(request, row, path, protocol, text)
        return vod_s3.with_token(request, text, row)
    uri = _with_query(f"../{rec_id}.mp4", request) if live else f"../{rec_id}.mp4"

    def build() -> str:
        return render(index_path(path), uri, live)

    try:
        text = await asyncio.to_thread(build)
    except (OSError, MediaError) as err:
        raise json_error(422, f"recording {rec_id} cannot be read: {err}", "the file is damaged or missing",
                         cors_headers(request)) from None
    if live:
        return text
    _finished[kept] = text
    while len(_finished) > vod_s3.PLAYLIST_CACHE:
        _finished.popitem(last=False)
    _lane_may_answer(request, row, path, protocol, text)
    return vod_s3.with_token(request, text, row)


_TEXT_FILES = {"vod-hls": "index.m3u8", "vod-dash": "manifest.mpd"}


def _lane_may_answer(request: web.Request, row, path, protocol: str, text: str) -> None:
    """The fast lane answers this finished file's text (asked without a query) and its ranges from now on."""
    lane = request.app.get(FAST_LANE)
    if lane is not None and not request.get(INTERNAL_REQUEST):
        lane.remember_vod(row.id, row.app, row.stream, str(path), (_TEXT_FILES[protocol], text.encode(), row.bytes))


async def serve_playlist(request: web.Request) -> web.StreamResponse:
    text = await _describe(request, "vod-hls", lambda index, uri, live: hls_playlist(index, uri, live=live),
                           vod_s3.serve_playlist)
    if isinstance(text, web.StreamResponse):
        return text
    return web.Response(text=text, headers={"Content-Type": PLAYLIST_TYPE, "Cache-Control": "no-cache",
                                            **cors_headers(request)})


async def serve_manifest(request: web.Request) -> web.StreamResponse:
    """The static MPD of a finished recording (one being written is played by its dvr.m3u8 or index.m3u8)."""
    text = await _describe(request, "vod-dash", lambda index, uri, _: dash_manifest(index, uri),
                           vod_s3.serve_manifest, finished=True)
    if isinstance(text, web.StreamResponse):
        return text
    return web.Response(text=text, headers={"Content-Type": MPD_TYPE, "Cache-Control": "no-cache",
                                            **cors_headers(request)})


def _dvr_render(trail) -> tuple[bytes, bytes]:
    """(the playlist, its template with QUERY_SLOT after each file's URI): blocking, for a thread."""
    template = trail.render(lambda rec_id: f"../../vod/{rec_id}.mp4{QUERY_SLOT}").encode()
    return template.replace(QUERY_SLOT_BYTES, b""), template


async def serve_dvr(request: web.Request, app_name: str, name: str) -> web.StreamResponse:
    """dvr.m3u8 of a stream being recorded (the play route's admission has run): record/dvr.py's window
    over the recording's files. Its text is kept until a fragment is added, so every viewer of a stream
    shares one rendering per new fragment."""
    cors = cors_headers(request)
    manager = request.app.get(RECORDINGS)
    key = stream_key(app_name, name)
    rec = manager.active.get(key) if manager is not None and key is not None else None
    if rec is not None and rec.recorder.stopped:
        rec = None  # a disk error ended it
    if rec is not None and (rec.row is None or not rec.dvr.files):
        raise json_error(503, f"the recording of {key} has no fragment yet", "retry in a few seconds",
                         {"Retry-After": "2", **cors})
    if rec is None and key is not None and (remote := await serve_remote_dvr(request, key)) is not None:
        return remote  # cluster: recorded by the node that publishes it
    if rec is None:
        hint = ("DVR plays a stream while it is recorded: POST /api/v1/streams/APP/NAME/record"
                if manager is not None else "recording is off on this node: set record.mode = \"api\" or \"all\"")
        raise json_error(404, f"stream {app_name}/{name} is not being recorded", hint, cors)
    trail = rec.dvr
    version = trail.key()
    cached = rec.dvr_text
    if cached is None or cached[0] != version or not cached[1].done():
        if cached is None or cached[0] != version:  # the viewers asking meanwhile wait for this one rendering
            render = asyncio.ensure_future(asyncio.to_thread(_dvr_render, trail))
            render.add_done_callback(lambda done: done.cancelled() or done.exception())  # (retrieved)
            cached = rec.dvr_text = (version, render)
        try:
            await asyncio.shield(cached[1])
        except (OSError, MediaError) as err:
            if rec.dvr_text is cached:
                rec.dvr_text = None  # the next request tries again
            raise json_error(503, f"the recording of {key} cannot be read yet: {err}", "retry in a few seconds",
                             {"Retry-After": "2", **cors}) from None
    plain, template = cached[1].result()
    query = request.get(PLAY_QUERY)
    # The viewer's play token goes into every URI (the file asks for it too), filled into the template.
    body = fill_query(template, f"?{query}") if query else plain
    return web.Response(body=body, headers={"Content-Type": PLAYLIST_TYPE, "Cache-Control": "no-cache", **cors})


def add_vod_routes(app: web.Application) -> None:
    app.router.add_get("/vod/{id}/index.m3u8", serve_playlist, name="vod-hls")
    app.router.add_get("/vod/{id}/manifest.mpd", serve_manifest, name="vod-dash")
    app.router.add_get("/vod/{file}", serve_mp4, name="vod-mp4")
