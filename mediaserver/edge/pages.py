"""Pages people use: the player, the stream picker and the operator console, with the little JSON they read.

| route                          | what                                                                 |
|--------------------------------|----------------------------------------------------------------------|
| GET /                          | stream picker (HTML)                                                 |
| GET /play/APP/NAME             | player (HTML); query: format=llhls|hls|dash|flv|ws-flv, token, autoplay=0 |
| GET /play/vod/ID               | the same page playing a recording (format=hls|dash|mp4, t=S); ?dvr=1 on a live stream: its DVR window |
| GET /console                   | operator console (HTML); its data come from /api/v1 with the admin token |
| GET /static/FILE               | the pages' scripts and styles, and the vendored hls.js, dash.js, mpegts.js |
| GET /streams.json              | public stream list: app, name, codecs, live; only apps open to viewers |
| GET /play/APP/NAME/status.json | one stream's state, codecs, the formats that carry it, whether ABR is on (play token if the app needs one) |
| GET /console/history.json      | ingest bit rate and viewers per stream over the last minutes (admin token) |

Every page is a fixed file, the same for every stream: nothing from the request is ever written into
HTML, and the scripts read what they need from the URL and the JSON routes. Pages carry a strict
Content-Security-Policy (scripts, styles and workers from this origin only, no inline code; media from
this origin and blob: for Media Source Extensions; connections to this origin and its WebSocket twin;
no framing), send no Referer (a play token in the page URL stays out of other servers' logs) and hold
no secrets: the console asks the operator for the admin token and keeps it in the tab's sessionStorage.

The browser players are pinned npm packages copied into `mediaserver/web/vendor/` by
`scripts/build-web` and committed, so the server needs neither npm nor a CDN at run time. Static files
are served from a table built at start-up, so no request path ever names a file outside it.

These routes are registered before the play routes, so an app cannot be called "play" or "static"
(its play URLs would reach these pages), nor can a stream be "console/history.json".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from ..auth.names import NAME_RULE, split_rendition
from ..auth.tokens import AuthError, bearer_matches, normalize_address
from ..hub.stream import Stream, StreamState
from ..log import event
from ..webrtc.units import carried_problem
from .common import json_error, play_refused
from .formats import DASH, LLHLS, TS_HLS, refuse_uncarried
from .history import StreamHistory
from .keys import ABR, ADMIN_TOKEN, CONFIG, GATE, HISTORY, METRICS, REGISTRY, STATIC_FILES
from .metrics import HLS_VIEWER_WINDOW_S, Metrics
from .names import stream_key

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
PAGES = {"index": "index.html", "play": "player.html", "console": "console.html"}
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # VERSIONS
}
MAX_PUBLIC_STREAMS = 1000


# The formats a stream can be played in, best first for a browser viewer (the player page takes the
# first one the stream's codecs and the browser allow): HTTP-FLV has the lowest delay and the quickest
# start (the GOP cache gives a picture at once) and works wherever Media Source Extensions do; LL-HLS
# is next, and also plays natively where MSE is missing (iPhone Safari); DASH and plain HLS follow with
# a few segments of delay; WebSocket-FLV is FLV for networks whose proxies buffer long HTTP responses.
# (id, label, carried-by key in formats.CARRIED or None for FLV, URL template, transport)
FORMATS: tuple[tuple[str, str, str | None, str, str], ...] = (
    ("flv", "HTTP-FLV", None, "/{app}/{name}.flv", "http"),
    ("llhls", "LL-HLS", LLHLS, "/{app}/{name}/cmaf.m3u8", "http"),
    ("dash", "DASH", DASH, "/{app}/{name}/manifest.mpd", "http"),
    ("hls", "HLS", TS_HLS, "/{app}/{name}/index.m3u8", "http"),
    ("ws-flv", "WebSocket-FLV", None, "/{app}/{name}.flv", "ws"),
)

_HOST = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")


def content_security_policy(host: str) -> str:
    """The pages' policy. WebSocket-FLV needs ws: (or wss:) to this very host; older browsers do not
    count those as 'self', so they are named, when the Host header is a plain host[:port]."""
    connect = "'self'"
    if _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
        f"media-src 'self' blob:; worker-src 'self'; connect-src {connect}; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _page_headers(request: web.Request) -> dict[str, str]:
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": content_security_policy(request.host),
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


def _page(kind: str):
    path = WEB_DIR / PAGES[kind]

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers=_page_headers(request))

    return serve


def static_table(root: Path = WEB_DIR) -> dict[str, tuple[Path, str]]:
    """URL path under /static/ -> (file, content type), for every servable file under `root`."""
    table: dict[str, tuple[Path, str]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        content_type = _STATIC_TYPES.get(path.suffix)
        if content_type is None:
            continue  # HTML is served by the page routes; anything else is not ours to serve
        table[path.relative_to(root).as_posix()] = (path, content_type)
    return table


async def serve_static(request: web.Request) -> web.StreamResponse:
    found = request.app[STATIC_FILES].get(request.match_info["path"])
    if found is None:
        raise json_error(404, "no such file", "the pages' files are under /static/ (see mediaserver/web/)")
    path, content_type = found
    return web.FileResponse(path, headers={
        "Content-Type": content_type,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    })


# ----- public JSON: the stream list and one stream's status -------------------------------------------


def _admission(app: web.Application):
    gate = app.get(GATE)
    return gate.admission if gate is not None else None


def _public_state(stream: Stream | None) -> str:
    if stream is None or stream.ended:
        return "offline"
    return "live" if stream.state is StreamState.LIVE else "reconnecting"


async def serve_stream_list(request: web.Request) -> web.Response:
    """Streams of apps anyone may watch: names, codecs and whether a publisher is on. Nothing about
    publishers, viewers or apps that need a play token."""
    admission = _admission(request.app)
    streams = []
    renditions: dict[tuple[str, str], list[str]] = {}
    for stream in request.app[REGISTRY].streams():
        if stream.ended or (admission is not None and not admission.policy.play_is_open(stream.key.app)):
            continue
        base, label = split_rendition(stream.key.name)
        if label is not None:  # a rendition is offered by its source's player (the quality selector)
            renditions.setdefault((stream.key.app, base), []).append(label)
            continue
        streams.append({
            "app": stream.key.app, "name": stream.key.name, "live": stream.state is StreamState.LIVE,
            "video": stream.info.video_codec, "audio": stream.info.audio_codec,
        })
    for entry in streams:
        entry["renditions"] = sorted(renditions.get((entry["app"], entry["name"]), []))
    streams.sort(key=lambda s: (s["app"], s["name"]))
    body = {"streams": streams[:MAX_PUBLIC_STREAMS], "truncated": len(streams) > MAX_PUBLIC_STREAMS}
    return web.json_response(body, headers={"Cache-Control": "no-cache"})


async def serve_stream_status(request: web.Request) -> web.Response:
    """What the player needs before it picks a format: live or not, codecs, and for each format its URL
    or the server's reason to refuse it (the same 415 answer the format's own URL gives)."""
    app, name = request.match_info["app"], request.match_info["name"]
    key = stream_key(app, name)
    if key is None:
        raise json_error(400, "invalid stream name", NAME_RULE)
    await _check_play_token(request, key.app, key.name)
    stream = request.app[REGISTRY].get(key)
    locate = request.app[GATE].play_locate  # an edge: a stream another node publishes is pulled, as to play it
    if (stream is None or stream.ended) and locate is not None and split_rendition(key.name)[1] is None:
        located = await locate(key, normalize_address(request.remote or ""))
        stream = located if isinstance(located, Stream) else stream
    state = _public_state(stream)
    live = stream if state != "offline" else None
    info = live.info if live is not None else None
    formats = []
    for fmt_id, label, carried_by, url, transport in FORMATS:
        refused = None
        if carried_by is not None and live is not None:
            try:
                refuse_uncarried(request, live, carried_by)
            except web.HTTPException as refusal:
                refused = json.loads(refusal.text or "{}")
        formats.append({"id": fmt_id, "label": label, "url": url.format(app=key.app, name=key.name),
                        "transport": transport, "refused": refused})
    body: dict[str, Any] = {
        "app": key.app,
        "name": key.name,
        "state": state,
        "video": ({"codec": info.video_codec, "width": info.width, "height": info.height}
                  if info is not None and info.video_codec else None),
        "audio": ({"codec": info.audio_codec, "sample_rate": info.audio_sample_rate, "channels": info.audio_channels}
                  if info is not None and info.audio_codec else None),
        "formats": formats,
        "reconnect_grace_s": request.app[CONFIG].hub.reconnect_grace,
        "abr": _abr_on(request, key) if live is not None else False,
    }
    if request.app[CONFIG].webrtc.enabled:
        body["webrtc"] = _webrtc_format(live, key, body["abr"])
    return web.json_response(body, headers={"Cache-Control": "no-cache"})


def _webrtc_format(live: Stream | None, key, abr: bool) -> dict[str, Any]:
    """WHEP, kept apart from `formats`: the player prefers it when the stream can be played that way (H.264
    without B-frames, AV1 or HEVC to a browser that receives it, or served from an H.264 rendition when ABR is
    on)."""
    refused = None
    if live is not None:
        info = live.info
        why = carried_problem(info.video_codec, info.audio_codec, live.gop.frames_from(live.gop.base))
        if why is not None and not (abr and info.video_codec is not None):
            refused = {"error": f"stream {key} cannot be played over WebRTC: {why}",
                       "hint": "publish H.264 (or AV1, HEVC) without B-frames, or turn ABR on for its app"}
    return {"id": "webrtc", "label": "WebRTC", "url": f"/{key.app}/{key.name}/whep", "transport": "whep",
            "refused": refused}


def _abr_on(request: web.Request, key) -> bool:
    """Whether master.m3u8, cmaf.m3u8 and manifest.mpd offer this stream's ladder (the player then plays one
    of them by default); renditions themselves have none."""
    abr = request.app.get(ABR)
    return abr is not None and split_rendition(key.name)[1] is None and abr.enabled_for(key)


async def _check_play_token(request: web.Request, app: str, name: str) -> None:
    """A stream of an app that needs play tokens tells its status only to holders of one."""
    admission = _admission(request.app)
    if admission is None or admission.policy.play_is_open(app):
        return
    token = request.query.get("token", "")
    try:
        admission.policy.authorize_play(app, name, token, normalize_address(request.remote), time.time())
    except AuthError as err:
        delay = admission.refused("play", err.reason)
        if delay > 0:
            await asyncio.sleep(delay)
        raise play_refused(request, f"{app}/{name}", err.reason, str(err),
                           "open the player with ?token=... in its URL") from None


# ----- the console's history (admin token) ------------------------------------------------------------


async def serve_history(request: web.Request) -> web.Response:
    await _check_admin_token(request)
    return web.json_response(request.app[HISTORY].describe(), headers={"Cache-Control": "no-store"})


async def _check_admin_token(request: web.Request) -> None:
    """The admin API's rule, for the one route of the console outside it."""
    token = request.app[ADMIN_TOKEN]
    token_env = request.app[CONFIG].api.token_env
    if not token:
        raise json_error(503, "the admin API is disabled",
                         f"set the environment variable {token_env} to a secret of 16 or more characters "
                         "and restart the server")
    if bearer_matches(request.headers.get("Authorization"), token):
        return
    admission = _admission(request.app)
    delay = admission.failure_delay_s * admission.rng.uniform(0.5, 1.0) if admission is not None else 0.5
    event(log, "admin_auth_refused", logging.WARNING, peer=request.remote or "", path=request.path[:128])
    if delay > 0:
        await asyncio.sleep(delay)
    raise json_error(401, "the bearer token is missing or wrong", f"send Authorization: Bearer ${token_env}",
                     {"WWW-Authenticate": 'Bearer realm="mediaserver admin"'})


def _segment_viewers(metrics: Metrics):
    """HLS/DASH clients seen fetching from each stream in the metrics' viewer window."""

    def count() -> Counter[str]:
        cutoff = metrics.clock() - HLS_VIEWER_WINDOW_S
        return Counter(stream for (_, stream), seen in metrics.hls_clients.items() if seen >= cutoff)

    return count


# ----- registration -----------------------------------------------------------------------------------


def add_routes(app: web.Application, environ: Mapping[str, str] = os.environ) -> None:
    """Register the pages, their files and JSON, and the history sampler. Call before the play routes
    (their patterns would match these paths too). The admin token is read from the environment variable
    `api.token_env` names, as the admin API's is."""
    config = app[CONFIG]
    app[ADMIN_TOKEN] = environ.get(config.api.token_env, "").strip()
    app[STATIC_FILES] = static_table()
    metrics = app.get(METRICS)
    history = StreamHistory(app[REGISTRY], _segment_viewers(metrics) if metrics is not None else None)
    app[HISTORY] = history
    app.cleanup_ctx.append(history.cleanup_ctx)
    router = app.router
    router.add_get("/", _page("index"), name="page-index")
    router.add_get("/console", _page("console"), name="page-console")
    router.add_get("/streams.json", serve_stream_list, name="page-streams")
    router.add_get("/console/history.json", serve_history, name="page-history")
    router.add_get("/static/{path:.+}", serve_static, name="page-static")
    router.add_get("/play/{app}/{name}", _page("play"), name="page-play")
    router.add_get("/play/{app}/{name}/status.json", serve_stream_status, name="page-status")
