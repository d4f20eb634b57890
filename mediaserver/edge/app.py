"""The viewer-facing aiohttp application: routes from the URL map, built from injected parts.

| route                      | what                                  |
|----------------------------|---------------------------------------|
| GET /healthz               | alive                                 |
| GET /APP/NAME.flv          | HTTP-FLV                              |
| GET /APP/NAME/index.m3u8   | HLS playlist (MPEG-TS segments)       |
| GET /APP/NAME/SEGMENT.ts   | an HLS segment                        |
| GET /APP/NAME/cmaf.m3u8    | LL-HLS over fMP4/CMAF (see cmaf.py)   |
| GET /APP/NAME/manifest.mpd | MPEG-DASH over the same segments      |
| GET /time                  | UTC time for DASH players             |
| GET /metrics, /readyz      | Prometheus metrics, readiness         |
| /api/v1/...                | the admin API (a sub-application)     |

Play routes (named `play-*`) pass the admission middleware first: requests in progress per client
address, the play token when the app requires one (refusals answered after a short random delay), the
viewers-per-stream limit, and the on_play webhook.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Mapping
from urllib.parse import urlencode

from aiohttp import web

from ..auth.admission import Admission
from ..auth.hooks import HookRequest, HookVerdict
from ..auth.limits import LimitExceeded
from ..auth.tokens import AuthError, normalize_address
from ..config import Config
from ..hub.registry import StreamRegistry
from ..hub.stream import StreamKey
from ..log import event
from .cmaf import CMAF_MANIFESTS, serve_cmaf, serve_time
from .common import CONFIG, REGISTRY, cors_headers, json_error
from .formats import DASH, LLHLS, TS_HLS, refuse_uncarried
from .flv import VIEWER, serve_flv
from .hls import PACKAGERS, PLAY_QUERY, serve_playlist, serve_segment
from .metrics import METRICS, Metrics, ReadyCheck, response_format, serve_metrics, serve_readyz
from .names import stream_key
from .packagers import PackagerPool
from .pages import add_routes as add_page_routes
from .webhooks import WebhookClient

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "streams": len(request.app[REGISTRY])})


async def preflight(request: web.Request) -> web.Response:
    headers = cors_headers(request)
    if headers:
        headers["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
        headers["Access-Control-Allow-Headers"] = request.headers.get("Access-Control-Request-Headers", "*")
        headers["Access-Control-Max-Age"] = "600"
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
    if file in CMAF_MANIFESTS or file.endswith((".m4s", ".mp4")):
        key = stream_key(request.match_info["app"], request.match_info["name"])
        packager = request.app[PACKAGERS].cmaf(key) if key is not None else None
        if packager is None:
            raise json_error(404, f"stream {request.match_info['app'][:64]}/{request.match_info['name'][:64]} is not being published",
                             "publish it first to rtmp://HOST/APP/NAME", cors_headers(request))
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
    admission: Admission | None = None,
    hooks: WebhookClient | None = None,
    admin: web.Application | None = None,
    ready_checks: Mapping[str, ReadyCheck] | None = None,
    metrics_token: str | None = None,
) -> web.Application:
    """`admission` None admits every viewer; `admin` is mounted at /api/v1; `metrics_token`, when given,
    is the bearer token /metrics requires."""
    admission = admission or Admission()
    app = web.Application(middlewares=[errors_as_json, admission_middleware], client_max_size=64 * 1024)
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[PACKAGERS] = packagers
    app[ADMISSION] = admission
    hook_outcomes = (lambda: hooks.outcomes) if hooks is not None and hooks.enabled else None
    metrics = Metrics(registry, admission, packager_count=lambda: len(packagers), hook_outcomes=hook_outcomes)
    metrics.ready_checks.update(ready_checks or {})
    metrics.required_token = metrics_token
    app[METRICS] = metrics
    app[HLS_VERDICTS] = {}
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
    app.router.add_get("/{app}/{file}", flv_or_404, name="play-flv")
    app.router.add_get("/{app}/{name}/{file}", hls_file, name="play-hls")
    app.router.add_route("OPTIONS", "/{tail:.*}", preflight)
    app.router.add_get("/{tail:.*}", not_found)
    return app


# ----- admission: connections per address, play tokens, viewer limits, on_play hooks ----------------

ADMISSION = web.AppKey("admission", Admission)
HLS_VERDICTS = web.AppKey("hls_verdicts", dict)
"""(client address, stream) -> (verdict, reuse until, allowed until): on_play answers reused for HLS."""
_MAX_HLS_VERDICTS = 100_000


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
    else:
        return None
    return (key, fmt) if key is not None else None


@web.middleware
async def admission_middleware(request: web.Request, handler):
    app = request.app
    admission = app[ADMISSION]
    metrics = app[METRICS]
    address = normalize_address(request.remote)
    refused = admission.limits.connection_opened(address)
    if refused is not None:
        _log_limit(admission, refused, request.path)
        raise json_error(429, refused.message, f"close other connections, or raise {refused.config_key}",
                         {"Retry-After": "5", **cors_headers(request)})
    target = _play_target(request)
    expiry: asyncio.TimerHandle | None = None
    started = time.monotonic()
    try:
        if request.path == "/metrics" and metrics.required_token is not None:
            _require_metrics_token(request, metrics.required_token)
        if target is not None:
            expiry = await _admit_viewer(request, admission, target[0], target[1], address)
        resp = await handler(request)
    finally:
        admission.limits.connection_closed(address)
        if expiry is not None:
            expiry.cancel()
    fmt = target[1] if target is not None else "other"
    viewer = request.get(VIEWER)
    # A viewer's bytes were counted by its writer as they were sent (StreamRegistry.count_sent); a plain
    # Response is written after the middlewares return: count its body.
    if viewer is not None:
        sent = 0
    else:
        sent = resp.body_length if resp.prepared else resp.content_length or 0
    metrics.response_done(response_format(request, fmt), sent)
    if fmt == "flv" and resp.prepared:
        resp.force_close()  # the stream ended or the viewer was kicked: close the socket too
    if target is not None and resp.status < 300:
        key = target[0]
        if fmt == "hls":
            metrics.hls_request(address, str(key))
        elif viewer is not None and admission.wants_hook("play_done") and admission.hooks is not None:
            admission.hooks.tell(HookRequest("play_done", key.app, key.name, address, fmt, _params(request), {
                "reason": viewer.close_reason or "viewer_left", "duration_s": round(time.monotonic() - started, 3),
                "bytes_sent": viewer.bytes_sent, "frames_dropped": viewer.frames_dropped,
            }))
    return resp


def _params(request: web.Request) -> dict[str, str]:
    """The query for webhooks, without the play token when it was ours (a credential is never forwarded)."""
    ours = PLAY_QUERY in request
    return {k: v for k, v in request.query.items() if not (ours and k == "token")}


def _log_limit(admission: Admission, refused: LimitExceeded, path: str) -> None:
    count = admission.limits.should_log(refused, time.monotonic())
    if count:
        event(log, "limit_reached", logging.WARNING, limit=refused.config_key, subject=refused.subject,
              current=refused.current, maximum=refused.maximum, refused=count, path=path[:128])


def _require_metrics_token(request: web.Request, token: str) -> None:
    sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(sent.encode(), token.encode()):
        raise json_error(401, "metrics need the admin token", "send Authorization: Bearer $MEDIASERVER_ADMIN_TOKEN, "
                         "or set api.metrics_public = true", {"WWW-Authenticate": 'Bearer realm="mediaserver"'})


async def _admit_viewer(
    request: web.Request, admission: Admission, key: StreamKey, fmt: str, address: str
) -> asyncio.TimerHandle | None:
    """Check the play token, the viewers limit and the on_play hook; raise the HTTP error when refused.
    Returns the timer that ends the viewer when the hook set an expiry."""
    token = request.query.get("token", "")
    if not token and request.headers.get("Authorization", "").startswith("Bearer "):
        token = request.headers["Authorization"][7:].strip()
    try:
        grant = admission.policy.authorize_play(key.app, key.name, token, address, time.time())
    except AuthError as err:
        raise await _refusal(request, admission, err.reason, str(key), address, fmt, str(err)) from None
    if grant is not None:
        request[PLAY_QUERY] = urlencode({"token": token})
    registry = request.app[REGISTRY]
    stream = registry.get(key)
    if fmt != "hls" and stream is not None:
        refused = admission.limits.check_viewers(str(key), len(stream.subscribers))
        if refused is not None:
            _log_limit(admission, refused, request.path)
            raise json_error(503, refused.message, "try again later, or ask the operator to raise "
                             f"{refused.config_key}", {"Retry-After": "10", **cors_headers(request)})
    if stream is None or not admission.wants_hook("play") or admission.hooks is None:
        return None
    verdict = await _ask_play_hook(request, admission, key, fmt, address)
    if not verdict.allowed:
        raise await _refusal(request, admission, f"webhook_{verdict.reason}", str(key), address, fmt,
                             "refused by the on_play hook")
    if verdict.expires_in is None or fmt == "hls":
        return None
    return asyncio.get_running_loop().call_later(verdict.expires_in, _expire_viewer, request)


async def _ask_play_hook(
    request: web.Request, admission: Admission, key: StreamKey, fmt: str, address: str
) -> HookVerdict:
    assert admission.hooks is not None
    hook = HookRequest("play", key.app, key.name, address, fmt, _params(request))
    if fmt != "hls":
        return await admission.hooks.ask(hook)
    # HLS players make a request every few seconds: one answer per client and stream is reused.
    cache = request.app[HLS_VERDICTS]
    now = time.monotonic()
    cached = cache.get((address, str(key)))
    if cached is not None and now < cached[1]:
        verdict, _, allowed_until = cached
        if verdict.allowed and allowed_until is not None and now >= allowed_until:
            return HookVerdict(False, "expired")
        return verdict
    verdict = await admission.hooks.ask(hook)
    reuse_s = request.app[CONFIG].webhooks.hls_cache_s
    until = now + verdict.expires_in if verdict.expires_in is not None else None
    if len(cache) >= _MAX_HLS_VERDICTS:
        for k in [k for k, v in cache.items() if v[1] <= now]:
            del cache[k]
    if len(cache) < _MAX_HLS_VERDICTS:
        cache[(address, str(key))] = (verdict, now + reuse_s, until)
    return verdict


def _expire_viewer(request: web.Request) -> None:
    viewer = request.get(VIEWER)
    if viewer is not None:
        viewer.close("session_expired")


async def _refusal(
    request: web.Request, admission: Admission, reason: str, subject: str, address: str, fmt: str, why: str
) -> web.HTTPException:
    """Count and log (once per interval per client and stream) a refused viewer, wait the random delay,
    then give the answer to raise: 401 (no token) or 403."""
    delay = admission.refused("play", reason)
    count = admission.log_gate.should_log(("play", address, subject, reason), time.monotonic())
    if count:
        event(log, "play_refused", logging.WARNING, stream=subject, reason=reason, peer=address, format=fmt,
              refused=count)
    if delay > 0:
        await asyncio.sleep(delay)
    headers = cors_headers(request)
    if reason == "missing":
        headers["WWW-Authenticate"] = 'Bearer realm="mediaserver play"'
        return json_error(401, f"playing {subject} needs a play token",
                          "add ?token=... to the URL; `mediaserver token --action play` mints one", headers)
    return json_error(403, f"playing {subject} is refused: {why}",
                      "ask for a new play URL; tokens are for one stream and expire", headers)
