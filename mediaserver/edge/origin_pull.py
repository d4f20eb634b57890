"""OriginPull: an edge's on-demand copy of a stream published on another node.

The first viewer of a stream this node does not have (any format: HTTP-FLV, WebSocket-FLV, HLS, LL-HLS,
DASH) starts one OriginPull: the owning origin is looked up in the StreamLocator, its `.flv` is fetched
with the cluster credential, parsed by the sans-IO FlvReader and republished into the local registry,
where the pull is the stream's (relay) publisher. Every later viewer, in every format, shares that copy.
Viewers that arrive while the pull connects wait for its first keyframe (at most `pull_wait`).

Pulls cost the source bandwidth, so they start only for streams that exist and are bounded: before a
pull starts, the locator is asked whether anybody publishes the stream (an unknown name is 404 at once,
tiered edges included: they ask the locator too, not their parent); a node runs at most `max_pulls` pulls
and a client address may have started at most `max_pulls_per_client` of the running ones (503 with a hint
beyond either; internal requests from other edges are bounded by the node limit only). Refusals are
counted in `PullPool.refusals`. A pull that never connected stops as soon as no viewer waits for it.

The pull stops when the stream has had no viewer and no packager for `pull_grace`; a viewer who comes
back within that time reuses it. When the connection to the origin ends (the origin died, or the
publisher moved) the local stream waits as for a reconnecting publisher (`hub.reconnect_grace`) while
the pull finds the new owner (news on the cluster channel, or a lookup) and connects again (news of a
new owner also abandons a connection attempt to the old one): HTTP-FLV
viewers stay connected and continue after the new sequence headers, HLS and DASH viewers see a
discontinuity.

Internal requests carry the shared secret (`CREDENTIAL_HEADER`) and a hop count (`HOPS_HEADER`). A node
answers them from what it has (recordings too: another node fetching a file on this node's disk, see
vod_remote.py); it starts a pull of its own for one only when configured to serve other
edges (tiered), and never beyond MAX_HOPS, so pulls cannot loop between edges.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from ..auth.tokens import normalize_address
from ..cluster.locator import KICK, PUBLISHED, ClusterEvent, StreamLocator
from ..errors import MediaError
from ..hub.registry import PublishRefused, StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..log import LogGate, event
from .common import PLAY_QUERY, json_error
from .flv_ingest import FlvIngest
from .keys import request_key
from .names import stream_key

log = logging.getLogger(__name__)

CREDENTIAL_HEADER = "X-Mediaserver-Cluster"
"""The cluster's shared secret: an internal request (an edge pulling) skips viewer admission."""
HOPS_HEADER = "X-Mediaserver-Pull"
"""The marker on internal requests: how many pulls deep this one is."""
MAX_HOPS = 3
INTERNAL_REQUEST = request_key("mediaserver.internal_request", bool)
"""Set (True) on a request admitted by the cluster credential: a handler that admits viewers itself (VOD)
does not admit it again (the node that fetches admitted its viewer)."""
_RETRY_S = 0.3
_WATCHDOG_S = 0.5
_REFUSAL_LOG_S = 10.0


@dataclass(frozen=True, slots=True)
class PullSettings:
    node_id: str
    secret: str
    grace: float = 10.0
    """Seconds without viewers before a pull stops."""
    wait: float = 5.0
    """Seconds a viewer waits for a starting pull's first keyframe."""
    upstream: str = ""
    """Base URL of a parent edge to pull from instead of the owning origin (tiered)."""
    serve_edges: bool = False
    """Start a pull for an internal request too (this node is a parent edge)."""
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    max_pulls: int = 1000
    """Pulls this node runs at once (0: no limit)."""
    max_pulls_per_client: int = 10
    """Running pulls one client address may have started (0: no limit; internal requests are exempt)."""


@dataclass(frozen=True, slots=True)
class PullRefusal:
    """Why no pull was started for a viewer: an HTTP status, the reason counted, and words for the client."""

    status: int
    reason: str
    """unknown_stream, node_limit or client_limit."""
    error: str
    hint: str


class OriginPull:
    """One stream pulled from another node; the local stream's publisher while connected."""

    def __init__(self, pool: PullPool, key: StreamKey, hops: int, client: str | None = None) -> None:
        self.pool = pool
        self.key = key
        self.hops = hops
        self.client = client
        """The address whose request started this pull (None: internal, or RTMP play)."""
        self.peer = "pull"
        self.source: str | None = None
        self.stream: Stream | None = None
        self.ready = asyncio.Event()
        self.connects = 0
        self.bytes_in = 0
        self._stopped = False
        self._retarget: str | None = None
        self._wake = asyncio.Event()
        self._response: aiohttp.ClientResponse | None = None
        self._connecting: asyncio.Task[int] | None = None
        self._idle_since: float | None = None
        self._waiters = 0
        self._quiet = False
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"pull {key}")
        self._watchdog = loop.call_later(_WATCHDOG_S, self._check_idle)

    # ----- the hub's Publisher -------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """The registry ends the stream (kick, shutdown, a local publisher took the name): stop."""
        if self._stopped:
            return
        self._stopped = True
        self._watchdog.cancel()
        self._task.cancel()
        event(log, "pull_stop", stream=str(self.key), source=self.source or "-", reason=reason,
              connects=self.connects, bytes=self.bytes_in)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def retarget(self, source: str) -> None:
        """The stream is now published at `source`: drop the current connection and go there."""
        if source == self.source or self._stopped:
            return
        self._retarget = source
        self._wake.set()
        if self._response is not None:
            self._response.close()
        elif self._connecting is not None:
            self._connecting.cancel()  # e.g. waiting for connect_timeout on a dead machine

    async def wait_ready(self, timeout: float) -> None:
        self._waiters += 1
        try:
            async with asyncio.timeout(timeout):
                done = asyncio.ensure_future(self._task_done())
                ready = asyncio.ensure_future(self.ready.wait())
                try:
                    await asyncio.wait({done, ready}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    done.cancel()
                    ready.cancel()
        except TimeoutError:
            pass
        finally:
            self._waiters -= 1

    async def _task_done(self) -> None:
        with contextlib.suppress(BaseException):
            await asyncio.shield(self._task)

    # ----- the pull loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._stopped:
                if self.stream is not None and self.stream.ended:
                    break  # the local stream ended (no source for hub.reconnect_grace)
                source = self._retarget or await self.pool.source_for(self.key)
                source = self._retarget or source  # news that arrived during the lookup wins
                self._retarget = None
                if source is None:
                    if self.stream is None:
                        break  # nobody publishes it: the waiting viewers get 404
                    await self._pause(_RETRY_S * 2)
                    continue
                status = await self._attempt(source)
                if status == 404 and self.stream is None and self._retarget is None and self._waiters == 0:
                    break  # the source does not have it and nobody waits: no polling for nothing
                if not self._stopped and self._retarget is None:
                    await self._pause(_RETRY_S)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("pull of %s failed", self.key)
        finally:
            self._release()
            self._stopped = True
            self._watchdog.cancel()
            self.ready.set()
            self.pool._forget(self)

    async def _pause(self, seconds: float) -> None:
        if self._retarget is not None:
            return  # the new owner is known already
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _attempt(self, source: str) -> int:
        """One connection to `source`, abandoned (cancelled) by a retarget while it connects. Returns the
        source's HTTP status (0: no answer, or abandoned)."""
        attempt = asyncio.get_running_loop().create_task(self._pull_once(source))
        self._connecting = attempt
        try:
            await asyncio.wait({attempt})
        except asyncio.CancelledError:
            attempt.cancel()
            raise
        finally:
            self._connecting = None
        return 0 if attempt.cancelled() else attempt.result()

    async def _pull_once(self, source: str) -> int:
        self.source = source
        settings = self.pool.settings
        url = f"{source}/{self.key.app}/{self.key.name}.flv"
        headers = {CREDENTIAL_HEADER: settings.secret, HOPS_HEADER: str(self.hops + 1)}
        timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout)
        started = time.monotonic()
        status = 0
        try:
            async with self.pool.session().get(url, headers=headers, timeout=timeout) as resp:
                status = resp.status
                if resp.status != 200:
                    text = (await resp.text())[:200] if resp.status < 500 else ""
                    if not self._quiet:
                        event(log, "pull_refused", logging.WARNING, stream=str(self.key), source=source,
                              status=resp.status, body=text)
                        self._quiet = True
                    return status
                self._response = resp
                if not self._claim(source):
                    return status
                self.connects += 1
                self._quiet = False
                event(log, "pull_start", stream=str(self.key), source=source, connect=self.connects,
                      connect_ms=round((time.monotonic() - started) * 1000))
                await self._relay(resp)
                reason = "source_ended"
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError, MediaError) as err:
            reason = f"{type(err).__name__}: {str(err)[:160]}"
        finally:
            self._response = None
            self._release()
        if not self._stopped and not self._quiet:
            # Once per loss: retries against a dead source stay quiet until a connection succeeds.
            event(log, "pull_lost", stream=str(self.key), source=source, reason=reason)
            self._quiet = True
        return status

    def _claim(self, source: str) -> bool:
        self.peer = f"pull:{source}"
        try:
            self.stream = self.pool.registry.claim_publisher(self.key, self)
        except PublishRefused as err:
            event(log, "pull_refused_locally", logging.WARNING, stream=str(self.key), reason=str(err))
            self._stopped = True
            return False
        return True

    def _release(self) -> None:
        stream = self.stream
        if stream is not None and stream.publisher is self:
            self.pool.registry.release_publisher(stream, self)

    async def _relay(self, resp: aiohttp.ClientResponse) -> None:
        stream = self.stream
        assert stream is not None
        ingest = FlvIngest(stream)  # a new connection: new timelines, rebased by the hub
        async for chunk in resp.content.iter_any():
            self.bytes_in += len(chunk)
            if not ingest.relay(chunk, time.monotonic(), self):
                return  # replaced or kicked meanwhile
            if ingest.ready:
                self.ready.set()

    # ----- idle ------------------------------------------------------------------------------------

    def _check_idle(self) -> None:
        if self._stopped:
            return
        stream = self.pool.registry.get(self.key)
        busy = self._waiters > 0 or (stream is not None and (stream.subscribers or stream.sinks))
        if not busy and self.connects == 0 and self.stream is None:
            self.close("no_source")  # never connected and nobody waits any more: stop polling the source
            return
        now = time.monotonic()
        if busy:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        elif now - self._idle_since >= self.pool.settings.grace:
            if stream is not None and stream.publisher is self:
                self.pool.registry.kick(self.key, "pull_idle")  # ends the copy; calls close()
            else:
                if stream is not None and not stream.ended and stream.publisher is None:
                    self.pool.registry.kick(self.key, "pull_idle")
                self.close("pull_idle")
            return
        self._watchdog = asyncio.get_running_loop().call_later(_WATCHDOG_S, self._check_idle)


SessionFactory = Callable[[], aiohttp.ClientSession]


class PullPool:
    """The node's pulls, one per stream; the aiohttp middlewares that start them and admit internal
    requests; the reaction to cluster news."""

    def __init__(self, registry: StreamRegistry, locator: StreamLocator | None, settings: PullSettings,
                 pull_viewers: bool = True) -> None:
        self.registry = registry
        self.locator = locator
        self.settings = settings
        self.pull_viewers = pull_viewers
        """Start pulls for viewers (role edge or both); False answers internal requests only."""
        self.pulls: dict[StreamKey, OriginPull] = {}
        self.started = 0
        self.refusals: Counter[str] = Counter()
        """Viewers for whom no pull started, by PullRefusal.reason."""
        self._by_client: Counter[str] = Counter()
        self._log_gate = LogGate(_REFUSAL_LOG_S)
        self._session: aiohttp.ClientSession | None = None
        if locator is not None:
            locator.watch(self.on_cluster_event)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
                auto_decompress=False, trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        for pull in list(self.pulls.values()):
            pull.close("server_shutdown")
        tasks = [p._task for p in self.pulls.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        if self._session is not None:
            await self._session.close()

    async def source_for(self, key: StreamKey) -> str | None:
        if self.locator is None:
            return self.settings.upstream or None
        owner = await self.locator.lookup(str(key))
        if owner is None or owner.node == self.settings.node_id:
            return None
        return self.settings.upstream or owner.http

    async def ensure(self, key: StreamKey, hops: int = 0, client: str | None = None) -> Stream | None:
        """The local stream, pulling it first when another node publishes it (waiting at most
        `settings.wait` for its first keyframe). None when nobody publishes it, or when the pull
        limits refuse it (`request` says which)."""
        found = await self.request(key, hops=hops, client=client)
        return found if isinstance(found, Stream) else None

    async def request(self, key: StreamKey, hops: int = 0, client: str | None = None,
                      internal: bool = False) -> Stream | PullRefusal | None:
        """As `ensure`, with the refusal: the local stream; a PullRefusal (404 for a stream nobody
        publishes, 503 beyond max_pulls or max_pulls_per_client, counted and logged once per interval);
        None when a pull started but the stream is not there (yet). `client` is the viewer's address
        (None for RTMP players the caller does not name); `internal` requests (other edges) are bounded
        by the node limit only. This is the hook admission code calls for viewers of other nodes' streams."""
        stream = self.registry.get(key)
        if stream is not None and not stream.ended:
            return stream
        pull = self.pulls.get(key)
        if pull is None or pull.stopped:
            if await self.source_for(key) is None:  # answered at once: no pull for a stream nobody publishes
                return self._refuse(key, client, PullRefusal(
                    404, "unknown_stream", f"stream {key} is not being published in the cluster",
                    "check the name; the stream's publisher must be live on an origin"))
            stream = self.registry.get(key)  # a pull may have started while we looked
            if stream is not None and not stream.ended:
                return stream
            pull = self.pulls.get(key)
            if pull is None or pull.stopped:
                refusal = self._over_limit(client if not internal else None)
                if refusal is not None:
                    return self._refuse(key, client, refusal)
                client = None if internal or not client else normalize_address(client)
                pull = self.pulls[key] = OriginPull(self, key, hops, client)
                if client:
                    self._by_client[client] += 1
                self.started += 1
        await pull.wait_ready(self.settings.wait)
        stream = self.registry.get(key)
        return stream if stream is not None and not stream.ended else None

    def _over_limit(self, client: str | None) -> PullRefusal | None:
        settings = self.settings
        running = sum(1 for p in self.pulls.values() if not p.stopped)
        if settings.max_pulls and running >= settings.max_pulls:
            return PullRefusal(
                503, "node_limit", f"this node already pulls {running} streams (cluster.max_pulls = {settings.max_pulls})",
                "try again later or on another edge; an operator can raise cluster.max_pulls")
        if client and settings.max_pulls_per_client:
            mine = self._by_client.get(normalize_address(client), 0)
            if mine >= settings.max_pulls_per_client:
                return PullRefusal(
                    503, "client_limit", f"your address started {mine} pulls on this node that are still running "
                    f"(cluster.max_pulls_per_client = {settings.max_pulls_per_client})",
                    "watch fewer streams at once from this address, or try again after one of them stops")
        return None

    def _refuse(self, key: StreamKey, client: str | None, refusal: PullRefusal) -> PullRefusal:
        self.refusals[refusal.reason] += 1
        if refusal.status != 404:  # unknown names are the client's business; limits are the operator's
            count = self._log_gate.should_log((refusal.reason,), time.monotonic())
            if count:
                event(log, "pull_refused_limit", logging.WARNING, reason=refusal.reason, stream=str(key),
                      client=client or "-", refusals=count, pulls=len(self.pulls))
        return refusal

    def _forget(self, pull: OriginPull) -> None:
        if self.pulls.get(pull.key) is pull:
            del self.pulls[pull.key]
        if pull.client:
            left = self._by_client[pull.client] - 1
            if left > 0:
                self._by_client[pull.client] = left
            else:
                self._by_client.pop(pull.client, None)

    def on_cluster_event(self, message: ClusterEvent) -> None:
        key = _key_of(message.stream)
        if key is None:
            return
        pull = self.pulls.get(key)
        if message.kind == PUBLISHED and pull is not None and message.owner is not None and not self.settings.upstream:
            if message.owner.node != self.settings.node_id:
                pull.retarget(message.owner.http)
        elif message.kind == KICK and pull is not None:
            stream = self.registry.get(key)
            if stream is not None and (stream.publisher is pull or stream.publisher is None):
                self.registry.kick(key, message.reason or "kicked")
            pull.close(message.reason or "kicked")

    # ----- aiohttp ----------------------------------------------------------------------------------

    def is_relay(self, stream: Stream) -> bool:
        return isinstance(stream.publisher, OriginPull)

    @web.middleware
    async def internal_middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]):
        """Outermost: a request with the cluster credential is an edge pulling. It is served from what
        this node has, without viewer admission; a pull of its own only when serving other edges."""
        sent = request.headers.get(CREDENTIAL_HEADER)
        if sent is None:
            return await handler(request)
        if not hmac.compare_digest(sent.encode(), self.settings.secret.encode()):
            event(log, "cluster_credential_refused", logging.WARNING, peer=str(request.remote), path=request.path[:128])
            raise json_error(403, "the cluster credential is wrong",
                             "every node needs the same secret in the variable cluster.secret_env names")
        if is_recording_request(request):  # another node fetches a recording on this node's disk (vod_remote)
            request[INTERNAL_REQUEST] = True
            token = request.query.get("token")
            if token:  # the play token that node admitted: into the URIs of the playlist answered
                request[PLAY_QUERY] = urlencode({"token": token})
            return await request.match_info.handler(request)
        if request.match_info.route.name != "play-flv" or not request.match_info["file"].endswith(".flv"):
            raise json_error(404, "internal pulls are HTTP-FLV only (and recordings: /vod/..., dvr.m3u8)",
                             "GET /APP/NAME.flv")
        request[INTERNAL_REQUEST] = True  # a pull: its viewer is counted apart (edge/flv.py, metrics)
        key = stream_key(request.match_info["app"], request.match_info["file"][:-4])
        if key is None:
            return await handler(request)
        stream = self.registry.get(key)
        if stream is None or stream.ended:
            try:
                hops = int(request.headers.get(HOPS_HEADER, "1"))
            except ValueError:
                hops = MAX_HOPS
            if self.settings.serve_edges and hops < MAX_HOPS:
                found = await self.request(key, hops, client=request.remote, internal=True)
                if isinstance(found, PullRefusal) and found.status != 404:
                    raise json_error(found.status, found.error, found.hint, {"Retry-After": "5"})
            else:
                raise json_error(404, f"stream {key} is not on this node",
                                 "internal pulls go to the stream's origin; set cluster.serve_edges on a parent edge")
        return await request.match_info.handler(request)


def is_recording_request(request: web.Request) -> bool:
    """A recording's file or a DVR playlist: what other nodes fetch from the node whose disk holds it, for
    viewers they admitted themselves."""
    if request.method not in ("GET", "HEAD"):
        return False
    return request.path.startswith("/vod/") or (request.match_info.route.name == "play-hls"
                                                and request.match_info.get("file") == "dvr.m3u8")


def _key_of(text: str) -> StreamKey | None:
    app, sep, name = text.partition("/")
    return stream_key(app, name) if sep else None
