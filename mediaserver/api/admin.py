"""The admin REST API: an aiohttp sub-application mounted at /api/v1.

| route                                              | what                                           |
|----------------------------------------------------|------------------------------------------------|
| GET    openapi.json                                | this API described (OpenAPI 3.1), no token     |
| GET    streams                                     | every stream, with publisher, codecs, viewers  |
| GET    streams/{app}/{name}                        | one stream in detail                           |
| POST   streams/{app}/{name}/kick                   | end the publisher's session (and maybe block)  |
| GET    streams/{app}/{name}/viewers                | the stream's viewers (FLV, WebSocket, RTMP)    |
| POST   streams/{app}/{name}/viewers/kick           | disconnect every viewer                        |
| POST   streams/{app}/{name}/viewers/{id}/kick      | disconnect one viewer                          |
| GET    blocks                                      | blocked stream names                           |
| PUT    blocks/{app}/{name}                         | refuse publishing that name for a while        |
| DELETE blocks/{app}/{name}                         | lift a block                                   |
| POST   tokens                                      | mint a play or publish token                   |
| GET    nodes                                       | every node with a heartbeat (standalone: this) |
| GET    streams/{app}/{name}/abr                    | the stream's transcode: renditions, CPU, state  |
| POST   streams/{app}/{name}/abr                    | start it (waits for its renditions, abr.wait)  |
| DELETE streams/{app}/{name}/abr                    | stop it; its renditions end                    |
| POST   streams/{app}/{name}/record                 | record it (fMP4 files, a catalog row per file) |
| DELETE streams/{app}/{name}/record                 | stop recording it                              |
| GET    recordings                                  | recordings: app, stream, since, until, cursor  |
| GET    recordings/{id}                             | one recording                                  |
| DELETE recordings/{id}                             | delete its file and row                        |
| GET    streams/{app}/{name}/relays                 | the stream's pushes: state, error, bytes, rate |
| POST   streams/{app}/{name}/relays                 | push it to {"url": "rtmp[s]://HOST/APP/KEY"}   |
| DELETE streams/{app}/{name}/relays/{id}            | stop and remove one push                       |
| GET    pulls                                       | pull relays: source, state, last error, bytes  |
| GET    route/{app}/{name}                          | play URLs on the least loaded edge (public)    |

Every route but openapi.json and route/... (public: players call it; see api/route.py) needs
`Authorization: Bearer <token>`, the token being the value of the
environment variable the config names (`api.token_env`, default MEDIASERVER_ADMIN_TOKEN). Without a token
configured the API is disabled: 503 with a hint. A missing or wrong token is 401 with `WWW-Authenticate`,
answered after a short random delay; tokens are compared in constant time.

Requests and answers are JSON; every error is `{"error": ..., "hint": ...}` with its status code. Stream
names in paths are checked like the play routes' (1-128 letters, digits, '_', '-', '.', '~'), so no path
can name anything but a stream. The API reads the hub through the registry's public methods and the
streams' snapshots, and acts through `StreamRegistry.kick`, `Subscriber.close` and the access policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .. import __version__
from ..auth import cors
from ..auth.names import NAME_RULE, split_rendition, valid_name, valid_play_name
from ..auth.policy import AccessPolicy
from ..auth.tokens import Action, AuthError, bearer_matches, bearer_token, normalize_address
from ..cluster.locator import NodeInfo
from ..errors import Unavailable, UsageError
from ..hub.rate import RateMeter
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..log import event
from ..record.manager import RecordingManager
from ..relay.manager import RelayManager, RelayRefused
from ..transcode.pool import TranscodePool
from . import recordings as recordings_api
from . import route as route_api
from ..transcode.service import AbrRefusal
from .openapi import openapi_document

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
BODY_TIMEOUT_S = 10.0
"""Seconds a request body may take to arrive once its head has: a client trickling it is answered 408."""
MAX_BLOCK_S = 366 * 86_400
RATE_SAMPLE_S = 2.0
RATE_WINDOW_S = 10.0


@dataclass(slots=True)
class AdminDeps:
    """What the admin API works with, built by the composition root."""

    registry: StreamRegistry
    policy: AccessPolicy
    token: str | None
    """The bearer token; None or "" disables the API."""
    token_env: str = "MEDIASERVER_ADMIN_TOKEN"
    cors_origins: tuple[str, ...] = ()
    node_name: str = "local"
    failure_delay_s: float = 0.5
    wall_clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    health: Callable[[StreamKey], dict[str, Any] | None] | None = None
    """A stream's health flags (black, frozen, silent: {"since", "duration_s"} or null); None: [health] off."""
    # The cluster's view (all None when standalone).
    cluster_kick: Callable[[str, str], Awaitable[bool]] | None = None
    """Send a kick for "app/name" to every node; True when some node publishes it. None: standalone."""
    cluster_nodes: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None
    """The cluster's node records. None: standalone (this node only)."""
    cluster_streams: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None
    """Every stream in the cluster with viewers added up across nodes (GET streams?scope=cluster)."""
    abr: TranscodePool | None = None
    """This node's transcode jobs (streams/APP/NAME/abr, and "abr" in each stream's description)."""
    recordings: RecordingManager | None = None
    """This node's recordings (streams/APP/NAME/record, recordings/...); None: record.mode = "off"."""
    relays: RelayManager | None = None
    """Pushes to other servers (streams/APP/NAME/relays)."""
    pulls: Callable[[], list[dict[str, Any]]] | None = None
    """The configured pull relays' state (GET pulls); None: no [[relay.pull]]."""
    route: Callable[[], Awaitable[tuple[NodeInfo | None, str]]] | None = None
    """The node a new viewer should watch on, or None and why not (GET route/...); None: this node."""
    play_cors_origin: str = ""
    """http.cors_origin: the route answers players' pages like the play routes do."""
    stream_live: Callable[[str], Awaitable[bool]] | None = None
    """Whether "app/name", not live on this node, is published on another the route's players reach (a
    cluster's node, a sibling worker)."""


DEPS = web.AppKey("admin_deps", AdminDeps)


def error(status: int, message: str, hint: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message, "hint": hint}, status=status, headers=headers)


class ApiError(Exception):
    def __init__(self, status: int, message: str, hint: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.hint, self.headers = status, message, hint, headers


# ----- measured bit rates --------------------------------------------------------------------------


class StreamRates:
    """Each stream's received bit rate over the last ~10 s, from `bytes_in` sampled every 2 s."""

    def __init__(self, registry: StreamRegistry, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.clock = clock
        self._meters: dict[StreamKey, RateMeter] = {}

    def sample(self) -> None:
        now = self.clock()
        live = set()
        for stream in self.registry.streams():
            live.add(stream.key)
            meter = self._meters.get(stream.key)
            if meter is None:
                meter = self._meters[stream.key] = RateMeter(RATE_WINDOW_S, min_span_s=0.5)
            meter.add(now, stream.bytes_in)
        for key in [k for k in self._meters if k not in live]:
            del self._meters[key]

    def kbps(self, stream: Stream) -> float | None:
        meter = self._meters.get(stream.key)
        kbps = meter.kbps() if meter is not None else None
        return round(kbps, 1) if kbps is not None else None

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        async def run() -> None:
            while True:
                self.sample()
                await asyncio.sleep(RATE_SAMPLE_S)

        task = asyncio.get_running_loop().create_task(run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


RATES = web.AppKey("admin_rates", StreamRates)


# ----- middlewares ---------------------------------------------------------------------------------


@web.middleware
async def api_middleware(request: web.Request, handler):
    """CORS, the bearer token, and one translation of every error into `{error, hint}` JSON."""
    deps = request.app[DEPS]
    origin = request.headers.get("Origin")
    allowed = cors.cors_headers(origin, deps.cors_origins)
    try:
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=cors.preflight_headers(
                origin, deps.cors_origins, "GET, POST, PUT, DELETE, OPTIONS", "Authorization, Content-Type"))
        if request.match_info.route.name not in PUBLIC:
            await _check_token(request, deps)
        resp = await handler(request)
    except ApiError as err:
        resp = error(err.status, err.message, err.hint, err.headers)
        if err.status == 408:
            return await _answer_and_close(request, resp, allowed)
    except Unavailable as err:  # the recordings database (or a bucket) is away: ask again soon
        resp = error(503, str(err), f"retry in {err.retry_after_s} seconds; /readyz says when it is back",
                     {"Retry-After": str(err.retry_after_s)})
    except web.HTTPException as exc:
        if exc.status == 404:
            resp = error(404, "no such API route", "GET /api/v1/openapi.json lists every route")
        elif exc.status == 405:
            resp = error(405, f"{request.method} is not allowed here", "GET /api/v1/openapi.json lists every "
                         "route and its methods", {"Allow": exc.headers.get("Allow", "")})
        elif exc.status == 413:
            resp = error(413, "request body too large", f"send at most {MAX_BODY_BYTES} bytes of JSON")
        else:
            resp = error(exc.status, exc.reason.lower(), "see GET /api/v1/openapi.json")
    resp.headers.update(allowed)
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


async def _answer_and_close(request: web.Request, resp: web.Response, headers: dict[str, str]) -> web.Response:
    """Send `resp`, then close the connection without reading the rest of the request body (aiohttp would
    linger up to 10 s for it)."""
    resp.headers.update(headers)
    resp.headers.setdefault("Cache-Control", "no-store")
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()
    return resp


async def _check_token(request: web.Request, deps: AdminDeps) -> None:
    if not deps.token:
        raise ApiError(503, "the admin API is disabled",
                       f"set the environment variable {deps.token_env} to a secret of 16 or more characters "
                       "and restart the server")
    header = request.headers.get("Authorization")
    challenge = {"WWW-Authenticate": 'Bearer realm="mediaserver admin"'}
    if not bearer_token(header):
        await asyncio.sleep(deps.rng.uniform(deps.failure_delay_s / 2, deps.failure_delay_s))
        raise ApiError(401, "a bearer token is required", f"send Authorization: Bearer ${deps.token_env}", challenge)
    if not bearer_matches(header, deps.token):
        event(log, "admin_auth_refused", logging.WARNING, peer=request.remote or "", path=request.path[:128])
        await asyncio.sleep(deps.rng.uniform(deps.failure_delay_s / 2, deps.failure_delay_s))
        challenge["WWW-Authenticate"] += ', error="invalid_token"'
        raise ApiError(401, "the bearer token is wrong", f"use the value of {deps.token_env} on the server",
                       challenge)


# ----- request helpers -----------------------------------------------------------------------------


def _key(request: web.Request, rendition: bool = False) -> StreamKey:
    """The stream named in the path; `rendition` also accepts STREAM@LABEL (a transcoded rendition)."""
    app, name = request.match_info["app"], request.match_info["name"]
    if not (valid_name(app) and (valid_play_name(name) if rendition else valid_name(name))):
        raise ApiError(400, "invalid stream name", NAME_RULE)
    return StreamKey(app, name)


def _stream(request: web.Request) -> Stream:
    key = _key(request, rendition=True)
    stream = request.app[DEPS].registry.get(key)
    if stream is None or stream.ended:
        raise ApiError(404, f"stream {key} is not being published",
                       "it may have just ended; GET /api/v1/streams lists the streams there are")
    return stream


async def _read_body(request: web.Request) -> bytes:
    """The whole body, at most MAX_BODY_BYTES, within BODY_TIMEOUT_S (one `read` may return only the part
    that has arrived, so it is read to its end)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            while chunk := await request.content.read(MAX_BODY_BYTES + 1 - size):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ApiError(413, "request body too large", f"send at most {MAX_BODY_BYTES} bytes of JSON")
    except TimeoutError:
        # The rest of the body will not be read: the connection cannot carry another request.
        raise ApiError(408, f"the request body did not arrive within {BODY_TIMEOUT_S:g} s",
                       "send the whole body with the request (Content-Length bytes)") from None
    return b"".join(chunks)


async def _body(request: web.Request, required: bool = False) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, "request body too large", f"send at most {MAX_BODY_BYTES} bytes of JSON")
    raw = await _read_body(request)
    if not raw.strip():
        if required:
            raise ApiError(400, "a JSON body is required", "see the request schema in GET /api/v1/openapi.json")
        return {}
    # The body is read as JSON whatever Content-Type says: `curl -d '{...}'` labels it a form, and the
    # README's examples are written for curl.
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: nested past the parser's depth
        raise ApiError(400, f"the body is not valid JSON: {str(err)[:120]}", "send a JSON object, e.g. "
                       "-d '{\"block_seconds\": 600}'") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(body).__name__}", "send {...}")
    return body


def _number(body: dict[str, Any], name: str, lo: float, hi: float, default: float | None = None) -> float | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ApiError(400, f"\"{name}\" must be a number of seconds in {lo:g}..{hi:g}", f"got {str(value)[:40]!r}")
    return float(value)


def _text(body: dict[str, Any], name: str, default: str = "", max_len: int = 128) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or len(value) > max_len:
        raise ApiError(400, f"\"{name}\" must be a string of at most {max_len} characters", f"got {str(value)[:40]!r}")
    return value


# ----- descriptions --------------------------------------------------------------------------------


def describe_stream(stream: Stream, rates: StreamRates | None, now: float,
                    health: Callable[[StreamKey], dict[str, Any] | None] | None = None,
                    abr: TranscodePool | None = None, relays: RelayManager | None = None,
                    recordings: RecordingManager | None = None) -> dict[str, Any]:
    snap = stream.snapshot(now)
    snap["health"] = health(stream.key) if health is not None else None
    if relays is not None:
        snap["relays"] = relays.listing(stream.key) or []
    snap["recording"] = ({"active": stream.key in recordings.active, "id": recordings.current(stream.key)}
                         if recordings is not None and recordings.applies(stream.key) else None)
    if abr is not None:
        source, label = split_rendition(stream.key.name)
        snap["abr"] = (abr.status(stream.key) if label is None
                       else {"rendition_of": str(StreamKey(stream.key.app, source)), "label": label})
    meta = stream.info.metadata_values
    declared = {
        k.removesuffix("datarate"): round(v, 1)
        for k in ("videodatarate", "audiodatarate")
        if isinstance(v := meta.get(k), (int, float)) and not isinstance(v, bool)
    }
    fps = meta.get("framerate")
    if snap.get("video") is not None and isinstance(fps, (int, float)) and not isinstance(fps, bool):
        snap["video"]["fps"] = round(fps, 3)
    snap["bitrate_kbps"] = {
        "measured": rates.kbps(stream) if rates is not None else None,
        "declared": declared or None,
    }
    snap["viewers_total"] = sum(snap["viewers"].values())
    return snap


def describe_viewer(sub: Any, now: float) -> dict[str, Any]:
    return {
        "id": sub.id,
        "format": sub.kind,
        "peer": sub.peer,
        "connected_s": round(now - sub.joined_at, 3),
        "bytes_sent": sub.bytes_sent,
        "frames_dropped": sub.frames_dropped,
    }


# ----- handlers ------------------------------------------------------------------------------------


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(), headers={"Cache-Control": "max-age=60"})


async def list_streams(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    scope = request.query.get("scope", "node")
    if scope not in ("node", "cluster"):
        raise ApiError(400, f"scope={scope[:32]!r} is not accepted", "use scope=node (the default) or scope=cluster")
    if scope == "cluster":  # cluster: every node's streams, viewers added up
        if deps.cluster_streams is None:
            raise ApiError(400, "this node is not in a cluster", "omit scope=cluster, or set cluster.role")
        return web.json_response({"scope": "cluster", "streams": await deps.cluster_streams()})
    now = deps.registry.clock()
    rates = request.app[RATES]
    streams = sorted(deps.registry.streams(), key=lambda s: (s.key.app, s.key.name))
    return web.json_response({"streams": [describe_stream(s, rates, now, deps.health, deps.abr, deps.relays,
                                                          deps.recordings)
                                            for s in streams
                                            if not s.ended]})


async def get_stream(request: web.Request) -> web.Response:
    stream = _stream(request)
    now = request.app[DEPS].registry.clock()
    deps = request.app[DEPS]
    body = describe_stream(stream, request.app[RATES], now, deps.health, deps.abr, deps.relays, deps.recordings)
    body["viewer_list"] = [describe_viewer(s, asyncio.get_running_loop().time())
                           for s in sorted(stream.subscribers, key=lambda s: s.id)][:1000]
    return web.json_response(body)


async def _kick_in_cluster(deps: AdminDeps, key: StreamKey, reason: str, block_s: float | None) -> web.Response | None:
    """The kick reaches the node holding the publisher, and edges drop their copies. The answer when the
    stream is not here (forwarded), or None when it is: the local kick goes on."""
    assert deps.cluster_kick is not None
    local = deps.registry.get(key)
    if local is None or local.ended:
        if not await deps.cluster_kick(str(key), reason):
            raise ApiError(404, f"stream {key} is not being published in the cluster",
                           "it may have just ended; GET /api/v1/streams lists the streams there are")
        if block_s is not None:
            deps.policy.block(key.app, key.name, deps.wall_clock() + block_s, reason)
        event(log, "admin_kick", stream=str(key), reason=reason, forwarded=True)
        return web.json_response({"kicked": str(key), "reason": reason, "forwarded": True})
    await deps.cluster_kick(str(key), reason)
    return None


async def kick_stream(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await _body(request)
    reason = _text(body, "reason", "kicked", 64) or "kicked"
    block_s = _number(body, "block_seconds", 1, MAX_BLOCK_S)
    if deps.cluster_kick is not None:
        forwarded = await _kick_in_cluster(deps, _key(request), reason, block_s)
        if forwarded is not None:
            return forwarded
    stream = _stream(request)
    key = stream.key
    blocked = None
    if block_s is not None:
        blocked = deps.policy.block(key.app, key.name, deps.wall_clock() + block_s, reason)
    viewers = len(stream.subscribers)
    if not deps.registry.kick(key, reason):  # ended between the lookup and now
        raise ApiError(404, f"stream {key} is not being published", "it has just ended")
    event(log, "admin_kick", stream=str(key), reason=reason, viewers=viewers, block_s=block_s or 0)
    return web.json_response({
        "kicked": str(key), "reason": reason, "viewers_ended": viewers,
        "blocked_until": blocked.until if blocked is not None else None,
    })


async def list_viewers(request: web.Request) -> web.Response:
    stream = _stream(request)
    now = asyncio.get_running_loop().time()
    viewers = [describe_viewer(s, now) for s in sorted(stream.subscribers, key=lambda s: s.id)]
    return web.json_response({"stream": str(stream.key), "viewers": viewers,
                              "note": "HLS viewers are stateless requests and are not listed"})


async def kick_viewers(request: web.Request) -> web.Response:
    stream = _stream(request)
    body = await _body(request)
    reason = _text(body, "reason", "kicked", 64) or "kicked"
    subs = list(stream.subscribers)
    for sub in subs:
        sub.close(reason)
    event(log, "admin_kick_viewers", stream=str(stream.key), viewers=len(subs), reason=reason)
    return web.json_response({"stream": str(stream.key), "viewers_kicked": [s.id for s in subs]})


async def kick_viewer(request: web.Request) -> web.Response:
    stream = _stream(request)
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 15:
        raise ApiError(400, "a viewer id is a whole number", "GET .../viewers lists the ids")
    body = await _body(request)
    reason = _text(body, "reason", "kicked", 64) or "kicked"
    viewer_id = int(text)
    sub = next((s for s in stream.subscribers if s.id == viewer_id), None)
    if sub is None:
        raise ApiError(404, f"viewer {viewer_id} is not watching {stream.key}",
                       f"it may have just left; GET /api/v1/streams/{stream.key}/viewers lists the viewers")
    sub.close(reason)
    event(log, "admin_kick_viewer", stream=str(stream.key), viewer=viewer_id, peer=sub.peer, reason=reason)
    return web.json_response({"stream": str(stream.key), "viewer_kicked": viewer_id})


def _describe_block(block: Any, now: float) -> dict[str, Any]:
    return {"app": block.app, "name": block.name, "until": block.until,
            "remaining_s": round(block.until - now, 1), "reason": block.reason}


async def list_blocks(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    now = deps.wall_clock()
    return web.json_response({"blocks": [_describe_block(b, now) for b in deps.policy.blocks(now)]})


async def put_block(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    key = _key(request)
    body = await _body(request, required=True)
    seconds = _number(body, "seconds", 1, MAX_BLOCK_S)
    if seconds is None:
        raise ApiError(400, "\"seconds\" is required", 'send {"seconds": 600} to block publishing for 10 minutes')
    reason = _text(body, "reason", "", 128)
    now = deps.wall_clock()
    block = deps.policy.block(key.app, key.name, now + seconds, reason)
    event(log, "admin_block", stream=str(key), seconds=seconds, reason=reason)
    return web.json_response(_describe_block(block, now))


async def delete_block(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    key = _key(request)
    if not deps.policy.unblock(key.app, key.name):
        raise ApiError(404, f"{key} is not blocked", "GET /api/v1/blocks lists the blocks in force")
    event(log, "admin_unblock", stream=str(key))
    return web.json_response({"unblocked": str(key)})


async def mint_token(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await _body(request, required=True)
    action = _text(body, "action", "")
    if action not in ("play", "publish"):
        raise ApiError(400, "\"action\" must be \"play\" or \"publish\"", f"got {action[:20]!r}")
    app, name = _text(body, "app", ""), _text(body, "stream", "")
    if not (valid_name(app) and valid_name(name)):
        raise ApiError(400, "\"app\" and \"stream\" must be valid names", NAME_RULE)
    ttl = _number(body, "ttl", 1, 10 * 365 * 86_400, 3600)
    ip = body.get("ip")
    if ip is not None and (not isinstance(ip, str) or not 0 < len(ip) <= 64):
        raise ApiError(400, "\"ip\" must be the client address the token is bound to", "or leave it out")
    now = deps.wall_clock()
    try:
        token = deps.policy.mint(Action(action), app, name, ttl or 3600, now, ip)
    except UsageError as err:
        raise ApiError(409, str(err), "configure a token secret (auth.token_secret_env) and restart") from None
    return web.json_response({"token": token, "expires_at": int(now + (ttl or 3600)), "action": action,
                              "app": app, "stream": name, "ip": ip})


async def list_nodes(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    if deps.cluster_nodes is not None:  # cluster: every node with a current heartbeat
        return web.json_response({"nodes": await deps.cluster_nodes()})
    streams = deps.registry.streams()
    return web.json_response({"nodes": [{
        "name": deps.node_name, "self": True, "version": __version__,
        "streams": len(streams), "viewers": sum(len(s.subscribers) for s in streams),
    }]})


async def get_route(request: web.Request) -> web.Response:
    """Play URLs on the least loaded edge, after the play token (when the app needs one)."""
    deps = request.app[DEPS]
    key = _key(request, rendition=True)
    token = request.query.get("token", "")
    address = normalize_address(request.remote or "")
    try:
        deps.policy.authorize_play(key.app, split_rendition(key.name)[0], token, address, deps.wall_clock())
    except AuthError as err:
        await asyncio.sleep(deps.rng.uniform(deps.failure_delay_s / 2, deps.failure_delay_s))
        if err.reason == "missing":
            raise ApiError(401, f"playing {key} needs a play token", "add ?token=... to the URL; "
                           "`mediaserver token --action play` mints one",
                           {"WWW-Authenticate": 'Bearer realm="mediaserver play"'}) from None
        raise ApiError(403, f"playing {key} is refused: {err}", "ask for a new play URL; tokens are for one "
                       "stream and expire") from None
    if deps.route is not None:
        node, reason = await deps.route()
    else:
        node, reason = NodeInfo(id=deps.node_name, role="standalone", http="", rtmp="", version=__version__), ""
    if node is None:
        error_text, hint = route_api.REASONS.get(reason, (reason or "no node can take a viewer", "try again"))
        raise ApiError(503, error_text, hint, {"Retry-After": "5"})
    body = route_api.play_urls(node, key.app, key.name, token, f"{request.scheme}://{request.host}")
    source = StreamKey(key.app, split_rendition(key.name)[0])  # a rendition is live while its source is
    here = deps.registry.get(source)
    body["live"] = (here is not None and not here.ended) or (
        deps.stream_live is not None and await deps.stream_live(str(source)))
    origin = deps.play_cors_origin
    headers = cors.cors_headers(request.headers.get("Origin"), (origin,) if origin else ())
    return web.json_response(body, headers=headers)


async def list_pulls(request: web.Request) -> web.Response:
    """The [[relay.pull]] streams: source (without its key), mode, state, last error, bytes, reconnects."""
    pulls = request.app[DEPS].pulls
    return web.json_response({"pulls": pulls() if pulls is not None else []})


def _abr(request: web.Request) -> tuple[TranscodePool, StreamKey]:
    abr = request.app[DEPS].abr
    key = _key(request)
    if abr is None:
        raise ApiError(404, "this node runs no transcodes", "ABR is not set up in this server")
    return abr, key


def _abr_refused(refusal: AbrRefusal) -> web.Response:
    headers = {"Retry-After": "10"} if refusal.status == 503 else None
    return web.json_response({"error": refusal.error, "hint": refusal.hint, "reason": refusal.reason},
                             status=refusal.status, headers=headers)


async def get_abr(request: web.Request) -> web.Response:
    abr, key = _abr(request)
    return web.json_response(abr.status(key))


async def start_abr(request: web.Request) -> web.Response:
    abr, key = _abr(request)
    running = abr.job(key) is not None
    found = await abr.start(key)
    if isinstance(found, AbrRefusal):
        return _abr_refused(found)
    event(log, "admin_abr_start", stream=str(key), already_running=running,
          ready=sum(1 for o in found.live_outs() if o.ready.is_set()))
    return web.json_response({**abr.status(key), "started": not running})


async def stop_abr(request: web.Request) -> web.Response:
    abr, key = _abr(request)
    if not await abr.stop(key):
        raise ApiError(404, f"stream {key} is not being transcoded",
                       f"GET /api/v1/streams/{key}/abr says whether it is")
    event(log, "admin_abr_stop", stream=str(key))
    return web.json_response({**abr.status(key), "stopped": True})


# ----- recordings (api/recordings.py answers; here they are routed and their errors turned into answers) -----


async def _recordings(answer) -> web.Response:
    try:
        return web.json_response(await answer)
    except recordings_api.RecordingsError as err:
        raise ApiError(err.status, err.message, err.hint) from None


async def _record_action(request: web.Request, action, name: str) -> web.Response:
    """Start or stop a stream's recording (`action` is recordings_api.start or .stop) and log it."""
    key = _key(request)
    try:
        body = action(request.app[DEPS].recordings, key)
    except recordings_api.RecordingsError as err:
        raise ApiError(err.status, err.message, err.hint) from None
    event(log, name, stream=str(key))
    return web.json_response(body)


async def start_record(request: web.Request) -> web.Response:
    return await _record_action(request, recordings_api.start, "admin_record_start")


async def stop_record(request: web.Request) -> web.Response:
    return await _record_action(request, recordings_api.stop, "admin_record_stop")


async def list_recordings(request: web.Request) -> web.Response:
    return await _recordings(recordings_api.listing(request.app[DEPS].recordings, request.query))


async def get_recording(request: web.Request) -> web.Response:
    return await _recordings(recordings_api.one(request.app[DEPS].recordings, request.match_info["id"]))


async def delete_recording(request: web.Request) -> web.Response:
    response = await _recordings(recordings_api.delete(request.app[DEPS].recordings, request.match_info["id"]))
    event(log, "admin_recording_deleted", id=request.match_info["id"])
    return response


# ----- relays (pushes to other servers; relay/manager.py runs them) ---------------------------------------


def _relays(request: web.Request) -> tuple[RelayManager, StreamKey]:
    relays = request.app[DEPS].relays
    if relays is None:
        raise ApiError(404, "relays are not available on this node", "they run on the node the stream is published to")
    return relays, _key(request, rendition=True)


async def list_relays(request: web.Request) -> web.Response:
    relays, key = _relays(request)
    found = relays.listing(key)
    if found is None:
        raise ApiError(404, f"stream {key} is not being published and has no pushes",
                       "pushes are listed while their stream is live (and for a while after it ends)")
    return web.json_response({"stream": str(key), "relays": found})


async def add_relay(request: web.Request) -> web.Response:
    relays, key = _relays(request)
    body = await _body(request, required=True)
    try:
        added = relays.add(key, body.get("url"))
    except RelayRefused as err:
        raise ApiError(err.status, err.message, err.hint) from None
    event(log, "admin_relay_add", stream=str(key), relay=added["id"], url=added["url"])
    return web.json_response(added)


async def delete_relay(request: web.Request) -> web.Response:
    relays, key = _relays(request)
    removed = await relays.remove(key, request.match_info["id"])
    if removed is None:
        raise ApiError(404, f"stream {key} has no push {request.match_info['id'][:40]!r}",
                       f"GET /api/v1/streams/{key}/relays lists them")
    return web.json_response({**removed, "deleted": True})


ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/openapi.json", get_openapi, "openapi"),
    ("GET", "/streams", list_streams, "list_streams"),
    ("GET", "/streams/{app}/{name}", get_stream, "get_stream"),
    ("POST", "/streams/{app}/{name}/kick", kick_stream, "kick_stream"),
    ("GET", "/streams/{app}/{name}/viewers", list_viewers, "list_viewers"),
    ("POST", "/streams/{app}/{name}/viewers/kick", kick_viewers, "kick_viewers"),
    ("POST", "/streams/{app}/{name}/viewers/{id}/kick", kick_viewer, "kick_viewer"),
    ("GET", "/blocks", list_blocks, "list_blocks"),
    ("PUT", "/blocks/{app}/{name}", put_block, "put_block"),
    ("DELETE", "/blocks/{app}/{name}", delete_block, "delete_block"),
    ("POST", "/tokens", mint_token, "mint_token"),
    ("GET", "/nodes", list_nodes, "list_nodes"),
    ("GET", "/streams/{app}/{name}/abr", get_abr, "get_abr"),
    ("POST", "/streams/{app}/{name}/abr", start_abr, "start_abr"),
    ("DELETE", "/streams/{app}/{name}/abr", stop_abr, "stop_abr"),
    ("POST", "/streams/{app}/{name}/record", start_record, "start_record"),
    ("DELETE", "/streams/{app}/{name}/record", stop_record, "stop_record"),
    ("GET", "/recordings", list_recordings, "list_recordings"),
    ("GET", "/recordings/{id}", get_recording, "get_recording"),
    ("DELETE", "/recordings/{id}", delete_recording, "delete_recording"),
    ("GET", "/streams/{app}/{name}/relays", list_relays, "list_relays"),
    ("POST", "/streams/{app}/{name}/relays", add_relay, "add_relay"),
    ("DELETE", "/streams/{app}/{name}/relays/{id}", delete_relay, "delete_relay"),
    ("GET", "/pulls", list_pulls, "list_pulls"),
    ("GET", "/route/{app}/{name}", get_route, "get_route"),
]
"""(method, path under /api/v1, handler, operationId): the OpenAPI document must describe exactly these."""
PUBLIC = frozenset({"openapi", "get_route"})
"""Routes answered without the admin token (and while the admin API is disabled)."""


def make_admin_app(deps: AdminDeps) -> web.Application:
    app = web.Application(middlewares=[api_middleware], client_max_size=MAX_BODY_BYTES)
    app[DEPS] = deps
    rates = StreamRates(deps.registry)
    app[RATES] = rates
    app.cleanup_ctx.append(rates.cleanup_ctx)
    for method, path, handler, name in ROUTES:
        app.router.add_route(method, path, handler, name=name)
    return app  # OPTIONS (CORS preflight) is answered by the middleware for every path
