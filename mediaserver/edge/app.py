"""The viewer-facing aiohttp application: routes from the URL map, built from injected parts.

| route                      | what                                  |
|----------------------------|---------------------------------------|
| GET /healthz               | alive                                 |
| GET /APP/NAME.flv          | HTTP-FLV                              |
| GET /APP/NAME/index.m3u8   | HLS playlist (MPEG-TS segments)       |
| GET /APP/NAME/master.m3u8  | HLS-TS multivariant: source + ladder  |
| GET /APP/NAME/SEGMENT.ts   | an HLS segment                        |
| GET /APP/NAME/cmaf.m3u8    | LL-HLS over fMP4/CMAF (see cmaf.py)   |
| GET /APP/NAME/manifest.mpd | MPEG-DASH over the same segments      |
| GET /APP/NAME/thumbnail.jpg| the newest keyframe as JPEG           |
| GET /time                  | UTC time for DASH players             |
| GET /metrics, /readyz      | Prometheus metrics, readiness         |
| /api/v1/...                | the admin API (a sub-application)     |

Play routes (named `play-*`) pass the admission middleware first: it counts requests in progress per
client address and asks the gate (mediaserver/gate.py, shared with RTMP) about every viewer: the play
token when the app requires one, locating the stream (an edge pulls it), the viewers-per-stream limit
and the on_play webhook. This module only turns the gate's verdicts into HTTP answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlencode

from aiohttp import web

from ..auth import cors
from ..auth.admission import Admission
from ..auth.forwarded import TrustedProxies
from ..auth.names import NAME_RULE
from ..auth.tokens import bearer_matches, bearer_token
from ..config import Config
from ..errors import Unavailable
from ..gate import ABR, CREDENTIAL, LIMIT, Gate, Refusal
from ..hub.registry import StreamRegistry
from ..hub.stream import StreamKey
from ..transcode.health_monitor import HealthWatch
from .cmaf import CMAF_MANIFESTS, serve_cmaf, serve_time
from .common import cors_headers, json_error, not_published, play_refused
from .fastlane import FAST_LANE, FastLane
from .formats import DASH, LLHLS, TS_HLS, refuse_uncarried
from .flv import VIEWER, serve_flv
from .hls import PLAY_QUERY, serve_master, serve_playlist, serve_segment
from .keys import CONFIG, GATE, METRICS, PACKAGERS, REGISTRY
from .metrics import Metrics, ReadyCheck, response_format, serve_metrics, serve_readyz
from .names import stream_key
from .overload import redirect_if_full
from .vod import add_vod_routes, serve_dvr
from .packagers import PackagerPool
from .pages import add_routes as add_page_routes
from .proxies import forwarded_middleware
from .thumbnails import add_thumbnails, serve_thumbnail
from .webhooks import WebhookClient

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "streams": len(request.app[REGISTRY])})


async def preflight(request: web.Request) -> web.Response:
    origin = request.app[CONFIG].http.cors_origin
    # POST and DELETE: WHIP and WHEP sessions (/APP/STREAM/whip, /whep) are created and ended from pages.
    headers = cors.preflight_headers(request.headers.get("Origin"), (origin,) if origin else (),
                                     "GET, HEAD, POST, DELETE, OPTIONS",
                                     request.headers.get("Access-Control-Request-Headers", "*"))
    return web.Response(status=204, headers=headers)


async def flv_or_404(request: web.Request) -> web.StreamResponse:
    file = request.match_info["file"]
    if file.endswith(".flv"):
        return await serve_flv(request, request.match_info["app"], file[:-4])
    raise json_error(404, "not found", "HTTP-FLV URLs look like /APP/NAME.flv", cors_headers(request))


async def hls_file(request: web.Request) -> web.StreamResponse:
    file = request.match_info["file"]
    if file == "index.m3u8":
        key = stream_key(request.match_info["app"], request.match_info["name"])
        refuse_uncarried(request, request.app[REGISTRY].get(key) if key else None, TS_HLS)
        return await serve_playlist(request)
    if file.endswith(".ts"):
        return await serve_segment(request)
    if file == "master.m3u8":
        return await serve_master(request)
    if file == "dvr.m3u8":
        return await serve_dvr(request, request.match_info["app"], request.match_info["name"])
    if file in CMAF_MANIFESTS or file.endswith((".m4s", ".mp4")):
        key = stream_key(request.match_info["app"], request.match_info["name"])
        packager = request.app[PACKAGERS].cmaf(key) if key is not None else None
        if packager is None:
            if key is None:
                raise json_error(400, "invalid stream name", NAME_RULE, cors_headers(request))
            raise not_published(request, key)
        refuse_uncarried(request, request.app[REGISTRY].get(key), DASH if file == "manifest.mpd" else LLHLS)
        return await serve_cmaf(request, packager, file)
    raise json_error(404, "not found", "HLS URLs look like /APP/NAME/index.m3u8", cors_headers(request))


async def not_found(request: web.Request) -> web.Response:
    raise json_error(404, "not found", "stream URLs look like /APP/NAME.flv or /APP/NAME/index.m3u8", cors_headers(request))


@web.middleware
async def errors_as_json(request: web.Request, handler):
    """Any HTTP error without a body of ours gets the JSON shape; nothing leaks a traceback."""
    try:
        return await handler(request)
    except Unavailable as err:  # the recordings database (or a bucket) is away: a VOD player asks again
        raise json_error(503, err.public_message, f"retry in {err.retry_after_s} seconds",
                         {"Retry-After": str(err.retry_after_s), **cors_headers(request)}) from None
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        headers = cors_headers(request)
        hint = "see the URL map in the README"
        if "Allow" in exc.headers:  # 405 from the router: say which methods this URL answers
            headers["Allow"] = exc.headers["Allow"]
            hint = f"this URL answers {exc.headers['Allow']}"
        raise json_error(exc.status, exc.reason.lower(), hint, headers) from None


def make_app(
    config: Config,
    registry: StreamRegistry,
    packagers: PackagerPool,
    *,
    gate: Gate | None = None,
    hooks: WebhookClient | None = None,
    admin: web.Application | None = None,
    ready_checks: Mapping[str, ReadyCheck] | None = None,
    metrics_token: str | None = None,
    health: HealthWatch | None = None,
    add_routes: Sequence[Callable[[web.Application], None]] = (),
) -> web.Application:
    """`gate` None admits every viewer; `admin` is mounted at /api/v1; `metrics_token`, when given,
    is the bearer token /metrics requires; `health`, when [health] is enabled, gives /metrics its flags;
    `add_routes` add routes of their own (WebRTC signaling) before the play routes and their catch-alls."""
    gate = gate or Gate(Admission(), registry)
    middlewares = [errors_as_json, admission_middleware]
    if config.http.trusted_proxies:  # first: every later reader of request.remote sees the client
        middlewares.insert(0, forwarded_middleware(TrustedProxies.parse(config.http.trusted_proxies)))
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[PACKAGERS] = packagers
    app[GATE] = gate
    app[FAST_LANE] = lane = FastLane(app)  # the hottest viewer requests, answered without the stack below

    async def close_lane(_app: web.Application) -> None:
        lane.close()

    app.on_cleanup.append(close_lane)
    hook_outcomes = (lambda: hooks.outcomes) if hooks is not None and hooks.enabled else None
    metrics = Metrics(registry, gate.admission, packager_count=lambda: len(packagers), hook_outcomes=hook_outcomes)
    metrics.ready_checks.update(ready_checks or {})
    metrics.required_token = metrics_token
    app[METRICS] = metrics
    metrics.thumbnails = add_thumbnails(app, registry)
    metrics.health = health
    app.cleanup_ctx.append(metrics.cleanup_ctx)
    if hooks is not None:
        app.cleanup_ctx.append(hooks.cleanup_ctx)
    if admin is not None:
        app.add_subapp("/api/v1", admin)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", serve_readyz)
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/time", serve_time)
    add_page_routes(app)  # the player, picker and console: before the play routes, whose patterns match them too
    add_vod_routes(app)  # recordings: before the play routes too
    for add in add_routes:
        add(app)
    app.router.add_get("/{app}/{file}", flv_or_404, name="play-flv")
    app.router.add_get("/{app}/{name}/thumbnail.jpg", serve_thumbnail, name="play-thumbnail")
    app.router.add_get("/{app}/{name}/{file}", hls_file, name="play-hls")
    app.router.add_route("OPTIONS", "/{tail:.*}", preflight)
    app.router.add_get("/{tail:.*}", not_found)
    return app


# ----- admission: the gate's verdicts as HTTP answers ------------------------------------------------


def _play_target(request: web.Request) -> tuple[StreamKey, str] | None:
    """The stream and format a play route is for; None for other routes and for invalid names (the
    handler answers those)."""
    route = request.match_info.route.name
    if route == "play-flv":
        file = request.match_info["file"]
        if not file.endswith(".flv"):
            return None
        key = stream_key(request.match_info["app"], file[:-4])
        fmt = "ws-flv" if request.headers.get("Upgrade", "").lower() == "websocket" else "flv"
    elif route == "play-hls":
        key = stream_key(request.match_info["app"], request.match_info["name"])
        fmt = "hls"
    elif route == "play-thumbnail":  # admitted as a viewer for the request's length; the hook sees "thumbnail"
        key = stream_key(request.match_info["app"], request.match_info["name"])
        fmt = "thumbnail"
    else:
        return None
    return (key, fmt) if key is not None else None


@web.middleware
async def admission_middleware(request: web.Request, handler):
    """Requests in progress per client address, /metrics' token, and the gate's verdict on every viewer
    of a play route (token, locate or pull, viewers limit, on_play hook) before the route runs."""
    app = request.app
    gate = app[GATE]
    metrics = app[METRICS]
    address = request.remote
    refusal = gate.connection_opened(address, log, path=request.path[:128])
    if refusal is not None:
        raise json_error(429, refusal.message, refusal.hint, {"Retry-After": "5", **cors_headers(request)})
    target = _play_target(request)
    verdict = None
    expiry: asyncio.TimerHandle | None = None
    started = time.monotonic()
    try:
        if request.path == "/metrics" and metrics.required_token is not None:
            _require_metrics_token(request, metrics.required_token)
        if target is not None:
            await redirect_if_full(request, target[0], target[1])  # an edge at its ceiling moves new viewers
            verdict = await _admit_viewer(request, gate, target[0], target[1], address)
            if verdict.expires_in is not None:
                expiry = asyncio.get_running_loop().call_later(verdict.expires_in, _expire_viewer, request)
        resp = await handler(request)
    finally:
        gate.connection_closed(address)
        if expiry is not None:
            expiry.cancel()
        viewer = request.get(VIEWER)
        if verdict is not None:
            if viewer is not None:
                gate.viewer_left(verdict, viewer.close_reason or "viewer_left", time.monotonic() - started,
                                 viewer.bytes_sent, viewer.frames_dropped)
            else:
                gate.viewer_left(verdict)
    fmt = target[1] if target is not None else "other"
    # A viewer's bytes were counted by its writer as they were sent (StreamRegistry.count_sent); a plain
    # Response is written after the middlewares return: count its body.
    if viewer is not None:
        sent = 0
    else:
        sent = resp.body_length if resp.prepared else resp.content_length or 0
    metrics.response_done(response_format(request, fmt), sent)
    if fmt == "flv" and resp.prepared:
        resp.force_close()  # the stream ended or the viewer was kicked: close the socket too
    if target is not None and fmt == "hls" and resp.status < 300:
        metrics.hls_request(verdict.address if verdict is not None else address, str(target[0]))
    return resp


def _require_metrics_token(request: web.Request, token: str) -> None:
    if not bearer_matches(request.headers.get("Authorization"), token):
        raise json_error(401, "metrics need the admin token", "send Authorization: Bearer $MEDIASERVER_ADMIN_TOKEN, "
                         "or set api.metrics_public = true", {"WWW-Authenticate": 'Bearer realm="mediaserver"'})


async def _admit_viewer(request: web.Request, gate: Gate, key: StreamKey, fmt: str, address: str | None):
    """The gate's verdict on this viewer; raises the HTTP answer when it refuses. The play token comes in
    the query (`?token=`) or as a bearer token."""
    token = request.query.get("token", "") or bearer_token(request.headers.get("Authorization"))
    verdict = await gate.admit_play(key.app, key.name, token=token, query=request.query, address=address or "",
                                    protocol=fmt)
    if verdict.refusal is not None:
        raise _refusal(request, str(key), verdict.refusal)
    if verdict.play_token:
        request[PLAY_QUERY] = urlencode({"token": verdict.play_token})
    return verdict


def _expire_viewer(request: web.Request) -> None:
    viewer = request.get(VIEWER)
    if viewer is not None:
        viewer.close("session_expired")


def _refusal(request: web.Request, subject: str, refusal: Refusal) -> web.HTTPException:
    """A refusal as an HTTP answer: 401 (no token), 403 (a credential or the hook), 503 (a limit). A stream
    that is not here is the route's 404 (an ended HLS playlist is still served)."""
    headers = cors_headers(request)
    if refusal.kind == LIMIT:
        return json_error(503, refusal.message, refusal.hint, {"Retry-After": "10", **headers})
    if refusal.kind == ABR:  # a rendition that cannot be made: 404, 409, 415 or 503, with why
        if refusal.status == 503:
            headers["Retry-After"] = "10"
        return json_error(refusal.status or 503, refusal.message, refusal.hint, headers)
    reason = refusal.reason if refusal.kind == CREDENTIAL else refusal.kind
    return play_refused(request, subject, reason, refusal.message, "add ?token=... to the URL")
