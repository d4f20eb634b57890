"""A worker's part of the composition root (cli.serve): the node-local cluster it is a node of.

The supervisor names the worker in its environment (WORKER_ENV, SECRET_ENV). The worker then runs as a
cluster node of role "both" whose locator is the supervisor's stream book (client.LocalLocator): it binds
a private loopback HTTP port first and advertises it, so siblings pull its streams there (internal pulls
carry the per-start secret, as an edge's pulls carry the cluster's); it binds the public ports with
SO_REUSEPORT, and hands a public connection asking for a sibling's HLS/DASH to that sibling (handoff); its /metrics and stream lists (/api/v1/streams, /streams.json) answer for the whole node
(node_metrics.py). Blocks put through it are also kept in the supervisor's book, which a restarted
worker copies them from before it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import time
from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import web

from .. import __version__
from ..api.admin import DEPS, AdminDeps
from ..cluster.locator import NodeInfo, Owner
from ..config import Config, ConfigError
from ..edge.connections import GuardedSite, HandOff
from ..edge.keys import METRICS, REGISTRY
from ..edge.overload import LOAD_REDIRECT
from ..edge.pages import MAX_PUBLIC_STREAMS
from ..hub.rate import RateMeter
from ..log import event
from ..wiring.cluster import node_offer
from ..workers import SECRET_ENV, WORKER_ENV
from ..workers.client import LocalLocator
from ..workers.handoff import HandoffCollector, Inbox, Outbox
from ..workers.protocol import BookBlock
from ..workers.node_metrics import (Pulls, merge, merge_history, merge_public_streams, merge_pulls, merge_streams,
                                    restarts_family)
from .worker_traffic import SiblingCounter

log = logging.getLogger("mediaserver.workers")

LOCAL_HEADER = "X-Mediaserver-Worker"
"""On a sibling's request for /metrics or the stream list (with the secret): answer for this worker only."""
STREAMS_PATH = "/api/v1/streams"
PUBLIC_STREAMS_PATH = "/streams.json"
HISTORY_PATH = "/console/history.json"
PULLS_PATH = "/api/v1/pulls"
NODE_VIEWS = ("/metrics", STREAMS_PATH, PUBLIC_STREAMS_PATH, HISTORY_PATH, PULLS_PATH)
"""What each worker answers for itself and the node answers as the workers' merge."""
BLOCKS_PATH = "/api/v1/blocks/"
SIBLING_TIMEOUT_S = 2.0


def node_id(index: int) -> str:
    return f"worker{index}"


class WorkerSetup:
    def __init__(self, index: int, socket_path: str, secret: str) -> None:
        self.index = index
        self.socket_path = socket_path
        self.secret = secret
        self.node_id = node_id(index)
        self.stop: Callable[[], None] = lambda: None
        """Set by cli.serve: ends the worker (the supervisor is gone)."""
        self.locator: LocalLocator | None = None
        self._private = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._private.bind(("127.0.0.1", 0))
        self._private.listen(128)
        self._private.setblocking(False)
        self.private_url = f"http://127.0.0.1:{self._private.getsockname()[1]}"
        self._session: aiohttp.ClientSession | None = None
        self.traffic: SiblingCounter | None = None
        self.config: Config | None = None
        """The worker's config, once adapt made it."""
        self._sibling_egress = RateMeter(window_s=2.0, min_span_s=0.5)  # as the record's egress is measured
        self.admin: AdminDeps | None = None
        """The admin API's dependencies (its access policy holds the blocks), once wire found them."""
        self._owners: dict[str, tuple[Owner, float]] = {}
        """Siblings' segmented streams, their owners as the book last said, with when (OWNER_TTL_S)."""
        self._heads: dict[bytes, str | None] = {}
        """The stream each request head asks for (hand_off_target), None for what is not HLS/DASH."""
        self.outbox = Outbox(socket_path)
        self.inbox: Inbox | None = None
        self._adopting: set[asyncio.Task[None]] = set()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> WorkerSetup | None:
        named = environ.get(WORKER_ENV)
        if not named:
            return None
        index, _, path = named.partition(":")
        secret = environ.get(SECRET_ENV, "")
        if not index.isdigit() or not path or len(secret) < 16:
            raise ConfigError(f"{WORKER_ENV}={named!r} is set by the supervisor only; unset it to run a server")
        return cls(int(index), path, secret)

    def adapt(self, config: Config) -> Config:
        """The worker's config: a node of role "both" advertising its private port."""
        # No ceilings: the kernel spreads viewers among the workers, and an overloaded worker's 302 would
        # send a player to a sibling's private loopback URL, which it cannot reach.
        cluster = dataclasses.replace(config.cluster, role="both", node_id=self.node_id,
                                      advertise_url=self.private_url, redis_url="", upstream="",
                                      serve_edges=False, max_pulls=0, max_pulls_per_client=0,
                                      max_viewers=0, max_egress_mbps=0)
        # Segmented formats proxied from a sibling name their client in X-Forwarded-For (play tokens bound
        # to an address, per-client counts): loopback is a trusted proxy.
        trusted = tuple(dict.fromkeys((*config.http.trusted_proxies, *LOOPBACK)))
        self.config = dataclasses.replace(config, cluster=cluster,
                                          http=dataclasses.replace(config.http, trusted_proxies=trusted))
        return self.config

    def environ(self, environ: Mapping[str, str], config: Config) -> dict[str, str]:
        return {**environ, config.cluster.secret_env: self.secret}

    def make_locator(self, node: Callable[[], NodeInfo]) -> LocalLocator:
        self.locator = LocalLocator(self.socket_path, lambda: self._without_sibling_egress(node()), self.index,
                                    on_lost=lambda: self.stop(), on_blocks=self._take_blocks,
                                    on_unblock=self._lift_block)
        return self.locator

    def _without_sibling_egress(self, info: NodeInfo) -> NodeInfo:
        """The worker's record with the bytes it sends siblings' pulls out of its egress: they never leave
        the machine, and the route's load adds up the records."""
        if self.traffic is None:
            return info
        self._sibling_egress.add(time.monotonic(), self.traffic.now().egress_flv_bytes)
        sibling_bps = int((self._sibling_egress.per_second() or 0) * 8)
        return dataclasses.replace(info, egress_bps=max(0, info.egress_bps - sibling_bps))

    def _take_blocks(self, blocks: list[BookBlock]) -> None:
        """The node's blocks from the supervisor's book, at start: a restarted worker forgot them all."""
        if self.admin is None:  # pragma: no cover - cli.serve wires the app before the locator starts
            event(log, "worker_blocks_lost", logging.ERROR, worker=self.index, blocks=len(blocks))
            return
        for block in blocks:
            self.admin.policy.block(block.app, block.name, block.until, block.reason)
        if blocks:
            event(log, "worker_blocks_copied", worker=self.index, blocks=len(blocks))

    def _lift_block(self, app: str, name: str) -> None:
        if self.admin is not None:
            self.admin.policy.unblock(app, name)

    def wire(self, app: web.Application) -> None:
        app.pop(LOAD_REDIRECT, None)  # never a 302 toward a sibling's private URL (adapt sets no ceiling)
        for resource in app.router.resources():
            if isinstance(resource, web.PrefixedSubAppResource) and DEPS in resource.get_info()["app"]:
                self.admin = resource.get_info()["app"][DEPS]
                self.admin.route = self.route
                self.admin.cluster_nodes = self.machine_nodes
        self.traffic = SiblingCounter(app[REGISTRY])
        self.traffic.wire(app)
        app[METRICS].prom.register(HandoffCollector(self.outbox, lambda: self.inbox))
        app.middlewares.insert(0, self._node_view)
        app.middlewares.insert(1, self._api_routing)
        app.middlewares.insert(2, self._segments_from_owner)
        app.middlewares.insert(3, self._sessions_on_their_worker)

    async def route(self) -> tuple[NodeInfo | None, str]:
        """GET /api/v1/route/...: the machine is one standalone node to its players, whichever worker they
        reach; its play URLs are on the caller's base URL (or cluster.public_url), never a worker's private
        loopback port."""
        assert self.config is not None, "adapt() makes the worker's config before the app is wired"
        host = socket.gethostname()
        viewers, egress_bps = await self._node_load()
        return NodeInfo(id=host, role="standalone", http="", rtmp=f"rtmp://{host}:{self.config.rtmp.port}",
                        version=__version__, viewers=viewers, egress_bps=egress_bps, **node_offer(self.config)), ""

    async def machine_nodes(self) -> list[dict]:
        """GET /api/v1/nodes: the machine, one node (its workers are no cluster's nodes, and their private
        loopback URLs reach nobody), with the workers' streams, viewers and egress added up."""
        assert self.config is not None and self.locator is not None, "a wired worker answers"
        viewers, egress_bps = await self._node_load()
        return [{"name": socket.gethostname(), "self": True, "role": "standalone", "version": __version__,
                 "streams": len(await self.locator.claims()), "viewers": viewers, "egress_bps": egress_bps,
                 "workers": len(await self.locator.nodes())}]

    async def _node_load(self) -> tuple[int, int]:
        """The node's viewers and egress (bit/s): its workers' records added up, without siblings' pulls (each
        stream a worker pulls is one viewer of its publisher's worker; their bytes are out of the records)."""
        if self.locator is None:
            return 0, 0
        nodes = await self.locator.nodes()
        pulls = sum(len(n.pulling) for n in nodes)
        return max(0, sum(n.viewers for n in nodes) - pulls), sum(n.egress_bps for n in nodes)

    async def start_private(self, runner: web.AppRunner, public: GuardedSite) -> None:
        """Serve the app on the private loopback port too (siblings' pulls and metrics), and take the public
        connections siblings hand over (`public` serves them)."""
        await web.SockSite(runner, self._private).start()
        loop = asyncio.get_running_loop()

        def adopt(sock: socket.socket, data: bytes) -> None:
            task = loop.create_task(public.adopt(sock, data))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

        self.inbox = Inbox(self.socket_path, self.index, adopt)
        self.inbox.start()

    # ----- HLS, LL-HLS, DASH connections handed to the packager's worker (handoff.py) -----------------

    def handoff(self) -> HandOff:
        """What the public site hands connections over with (connections.HandOff)."""
        return HandOff(self.hand_off_target, self.outbox.send)

    def hand_off_target(self, data: bytes) -> int | None:
        """The sibling a public connection whose request `data` (a complete head) asks for the playlists or
        segments of a stream it publishes goes to (it has the packager); None keeps the connection here. Only
        when the book named the owner lately (a request that finds none goes the proxied way, and its lookup
        fills `_owners` for the next)."""
        stream = self._heads.get(data, _UNPARSED)
        if stream is _UNPARSED:
            stream = _segmented_head(data)
            if len(data) <= MAX_HANDED:
                if len(self._heads) >= MAX_HEADS:
                    self._heads.clear()
                self._heads[data] = stream  # players repeat the same heads: parsed once
        known = self._owners.get(stream) if stream is not None else None  # type: ignore[arg-type]
        if known is None or known[0].node == self.node_id or time.monotonic() - known[1] > OWNER_TTL_S:
            return None
        sibling = known[0].node.removeprefix("worker")
        return int(sibling) if sibling.isdigit() else None

    async def _owner(self, stream: str) -> Owner | None:
        assert self.locator is not None, "only a wired worker asks"
        known = self._owners.get(stream)
        now = time.monotonic()
        if known is not None and now - known[1] <= OWNER_TTL_S:
            return known[0]
        owner = await self.locator.lookup(stream)
        if owner is None or owner.node == self.node_id:  # its own: asked afresh, so a move is seen at once
            self._owners.pop(stream, None)
        else:
            if len(self._owners) >= MAX_OWNERS:
                self._owners = {s: o for s, o in self._owners.items() if now - o[1] <= OWNER_TTL_S}
            self._owners[stream] = (owner, now)
        return owner

    async def ready(self) -> None:
        if self.locator is not None:
            await self.locator.ready()

    def stop_adopting(self) -> None:
        """The worker stops: siblings' hand-offs fail from now on (they proxy those requests instead), so no
        connection is adopted into a server that is closing."""
        if self.inbox is not None:
            self.inbox.close()  # (again at close: a no-op)

    async def close(self) -> None:
        self.stop_adopting()
        self.outbox.close()
        for task in self._adopting:
            task.cancel()
        if self._session is not None:
            await self._session.close()

    # ----- /metrics and the stream list for the whole node ------------------------------------------

    @web.middleware
    async def _node_view(self, request: web.Request, handler):
        path = request.path
        if request.method != "GET" or path not in NODE_VIEWS or (path == STREAMS_PATH and "scope" in request.query):
            return await handler(request)
        own = await handler(request)  # the token check and this worker's own answer
        if not isinstance(own, web.Response) or own.status != 200 or own.body is None:
            return own
        if path == "/metrics" and self.traffic is not None:  # the merge takes the siblings' traffic out
            text = bytes(own.body).rstrip(b"\n")  # type: ignore[arg-type]
            own.body = text + f"\n{self.traffic.now().line()}\n".encode()
        if request.headers.get(LOCAL_HEADER) == self.secret or self.locator is None:
            return own
        nodes = await self.locator.nodes()
        claims = await self.locator.claims()
        label = {n.id: n.id.removeprefix("worker") for n in nodes}
        label[self.node_id] = str(self.index)
        answers = {str(self.index): bytes(own.body).decode()}  # type: ignore[arg-type]
        siblings = [n for n in nodes if n.id != self.node_id]
        fetched = await asyncio.gather(*(self._fetch(n.http + path, request) for n in siblings))
        for node, text in zip(siblings, fetched):
            if text is not None:
                answers[label[node.id]] = text
        answers = dict(sorted(answers.items()))
        if path in (PUBLIC_STREAMS_PATH, HISTORY_PATH, PULLS_PATH):  # each worker's own: the node merges them
            bodies = []
            for text in answers.values():
                with contextlib.suppress(ValueError):
                    bodies.append(json.loads(text))
            bodies = [b for b in bodies if isinstance(b, dict)]
            merged = (merge_public_streams(bodies, MAX_PUBLIC_STREAMS) if path == PUBLIC_STREAMS_PATH
                      else merge_history(bodies) if path == HISTORY_PATH else merge_pulls(bodies))
            return web.json_response(merged, headers={"Cache-Control": own.headers.get("Cache-Control", "no-cache")})
        if path == "/metrics":
            body = merge(answers, Pulls.of(nodes, claims, label)) + restarts_family(await self.locator.restarts())
            return web.Response(body=body.encode(), headers={
                "Content-Type": own.headers.get("Content-Type", "text/plain"), "Cache-Control": "no-store"})
        lists = {}
        for worker, text in answers.items():
            try:
                lists[worker] = list(json.loads(text)["streams"])
            except (ValueError, KeyError, TypeError):
                continue
        owners = {s: label[o.node] for s, o in claims.items() if o.node in label}
        return web.json_response({"streams": merge_streams(lists, owners), "workers": len(answers)})

    # ----- the admin API: a stream's requests go to its publisher's worker, kicks and blocks to all ------

    @web.middleware
    async def _api_routing(self, request: web.Request, handler):
        if request.headers.get(LOCAL_HEADER) == self.secret or self.locator is None:
            answer = await handler(request)
            if api_route(request.method, request.path) == VIEWERS:
                return self._without_sibling_pulls(answer)
            return answer
        where = api_route(request.method, request.path)
        if where is None:
            return await handler(request)
        if where == VIEWERS:  # every worker's viewers; each leaves its siblings' pulls out
            bases = await self._bases()
            answers = await asyncio.gather(*(self._forward(base, request, b"") for base in bases.values()))
            return merge_viewers({i: a for i, a in zip(bases, answers) if a is not None})
        if where.endswith(f" {VIEWER}"):  # one viewer: on the worker its node-wide id names, by its own id
            parts = request.path.split("/")
            found = split_viewer_id(parts[-2])
            bases = await self._bases()
            if found is None or found[0] not in bases:
                return await handler(request)  # its 400 or 404
            parts[-2] = str(found[1])
            answer = await self._forward(bases[found[0]], request, await request.read(), path="/".join(parts))
            return self._with_node_viewer_id(answer, found[0]) if answer is not None else pick_answer([])
        if where == ALL:  # every worker, this one too through its private port: the body is read once, here
            body = await request.read()
            indexed = await self._bases()
            answers = await asyncio.gather(*(self._forward(base, request, body) for base in indexed.values()))
            if request.path.startswith(BLOCKS_PATH):
                await self._book_block(request.method, request.path[len(BLOCKS_PATH):], answers)
            kicked = request.path.endswith("/viewers/kick")
            if kicked:  # each worker's viewer ids as the node lists them (merge_viewers)
                answers = [with_node_viewer_ids(a, i) if a is not None else None for i, a in zip(indexed, answers)]
            return pick_answer([a for a in answers if a is not None], kicked_viewers=kicked)
        stream, _, action = where.partition(" ")
        owner = await self.locator.lookup(stream)
        if action != KICK and (owner is None or owner.node == self.node_id):
            return await handler(request)
        body = await request.read()
        answer = await self._forward(owner.http if owner is not None else self.private_url, request, body)
        if answer is None:
            return pick_answer([])
        if action == KICK and answer.status == 200:  # the kick's block holds on every worker's publish gate
            await self._block_everywhere(stream, body, request)
        return answer

    async def _bases(self) -> dict[int, str]:
        """Every worker's private base URL by index, this one's included."""
        assert self.locator is not None, "only a wired worker asks"
        nodes = await self.locator.nodes()
        bases = {int(n.id.removeprefix("worker")): n.http for n in nodes if n.id.removeprefix("worker").isdigit()}
        return {**bases, self.index: self.private_url}

    def _without_sibling_pulls(self, answer: web.StreamResponse) -> web.StreamResponse:
        """This worker's viewers of a stream, but not its siblings' pulls (no viewer of the node's)."""
        if self.traffic is None or not isinstance(answer, web.Response) or answer.status != 200:
            return answer
        pulls = self.traffic.pull_viewer_ids()
        body = answer_json(answer)
        if body is None:
            return answer
        body["viewers"] = [v for v in body.get("viewers", []) if v.get("id") not in pulls]
        return web.json_response(body)

    @staticmethod
    def _with_node_viewer_id(answer: web.Response, worker: int) -> web.Response:
        body = answer_json(answer)
        if answer.status != 200 or body is None or not isinstance(body.get("viewer_kicked"), int):
            return answer
        return web.json_response({**body, "viewer_kicked": node_viewer_id(body["viewer_kicked"], worker)})

    # ----- HLS, LL-HLS, DASH: one packager per stream, on the publisher's worker -----------------------

    @web.middleware
    async def _segments_from_owner(self, request: web.Request, handler):
        """Playlists and segments of a stream another worker publishes come from that worker's packager:
        each worker's would number segments its own way, and a player's connections land on any worker.
        (The fast lane answers only where a packager runs, so on the publisher's worker.) Most such requests
        never get here: their connection was handed to that worker (handoff) once the owner was known; this
        proxy takes a connection's first request for a stream, and one arriving while aiohttp is busy."""
        stream = segmented_stream(request.method, request.path)
        if stream is None or request.headers.get(LOCAL_HEADER) == self.secret or self.locator is None:
            return await handler(request)
        owner = await self._owner(stream)
        if owner is None or owner.node == self.node_id:
            return await handler(request)
        return await self._relay(request, owner.http + request.path_qs, PROXIED_REQUEST_HEADERS,
                                 lambda name: name.lower() in PROXIED_RESPONSE_HEADERS, self._proxy_timeout_s(), b"",
                                 ("the worker publishing this stream did not answer",
                                  "it may be restarting; try again"))

    async def _relay(self, request: web.Request, url: str, request_headers: tuple[str, ...],
                     keep: Callable[[str], bool], timeout_s: float, body: bytes, failed: tuple[str, str]
                     ) -> web.Response:
        """`request` asked of a sibling at `url` (as an internal request), its answer passed back whole with
        the headers `keep` allows; a sibling that does not answer is a 503 saying `failed` (error, hint)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(trust_env=False, auto_decompress=False)
        headers = {LOCAL_HEADER: self.secret, "X-Forwarded-For": forwarded_for(request)}
        for name in request_headers:
            if name in request.headers:
                headers[name] = request.headers[name]
        try:
            async with self._session.request(request.method, url, headers=headers, data=body or None,
                                             allow_redirects=False,
                                             timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                answer = await resp.read()
                kept = {k: v for k, v in resp.headers.items() if keep(k)}
                return web.Response(status=resp.status, body=answer, headers=kept)
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            event(log, "worker_sibling_unreachable", logging.WARNING, url=url.split("?")[0], error=str(err)[:200])
            return web.json_response({"error": failed[0], "hint": failed[1]}, status=503)

    def _proxy_timeout_s(self) -> float:
        """Longer than the owner may hold an LL-HLS blocking reload or a DASH part (three segment durations)."""
        segment_s = self.config.hls.segment_duration if self.config is not None else 2.0
        return max(PROXY_TIMEOUT_S, 3 * segment_s + 5)

    # ----- WHEP/WHIP: a session lives on the worker that answered its POST --------------------------------

    @web.middleware
    async def _sessions_on_their_worker(self, request: web.Request, handler):
        """A session's Location names its worker (SESSION.N), so its DELETE and PATCH, on any connection,
        reach the worker holding its peer connection, which knows it by its own id."""
        if request.headers.get(LOCAL_HEADER) == self.secret or self.locator is None:
            return await handler(request)
        if request.method == "POST" and request.path.endswith(("/whep", "/whip")):
            answer = await handler(request)
            location = answer.headers.get("Location", "") if isinstance(answer, web.StreamResponse) else ""
            if answer.status == 201 and session_of(location) is not None:
                answer.headers["Location"] = f"{location}{SESSION_WORKER}{self.index}"
            return answer
        found = session_of(request.path) if request.method in ("DELETE", "PATCH") else None
        named = session_worker(found) if found is not None else None
        base = (await self._bases()).get(named[1]) if named is not None else None
        if found is None or named is None or base is None:
            return await handler(request)  # an id no worker made: the handler's 404
        path = request.path[:-len(found)] + named[0]
        return await self._relay(request, base + path, SESSION_REQUEST_HEADERS,
                                 lambda name: name.lower() not in HOP_HEADERS, SIBLING_TIMEOUT_S, await request.read(),
                                 ("the worker holding this WebRTC session did not answer",
                                  "it may be restarting; the session ends with it"))

    async def _block_everywhere(self, stream: str, body: bytes, request: web.Request) -> None:
        try:
            asked = json.loads(body or b"{}")
            seconds, reason = asked.get("block_seconds"), asked.get("reason", "kicked")
        except (ValueError, AttributeError):
            return
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            return
        block = json.dumps({"seconds": seconds, "reason": reason if isinstance(reason, str) else "kicked"}).encode()
        bases = {n.http for n in await self.locator.nodes()} | {self.private_url}
        answers = await asyncio.gather(*(self._forward(base, request, block, "PUT", f"{BLOCKS_PATH}{stream}")
                                         for base in sorted(bases)))
        await self._book_block("PUT", stream, answers)

    async def _book_block(self, method: str, stream: str, answers: list[web.Response | None]) -> None:
        """Keep a block put on (or lifted from) every worker in the supervisor's book too, so that a worker
        started again later gets it back (a lifted block must not come back with it)."""
        assert self.locator is not None, "only a wired worker asks"
        if method == "DELETE":
            app, _, name = stream.partition("/")
            if app and name:
                await self.locator.lift_block(app, name)
            return
        for answer in answers:
            body = answer_json(answer) if answer is not None and answer.status == 200 else None
            if body is not None and {"app", "name", "until"} <= body.keys():
                await self.locator.keep_block(BookBlock(str(body["app"]), str(body["name"]), float(body["until"]),
                                                        str(body.get("reason") or "")))
                return

    async def _forward(self, base: str, request: web.Request, body: bytes, method: str = "",
                       path: str = "") -> web.Response | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(trust_env=False)
        headers = {LOCAL_HEADER: self.secret}
        for name in ("Authorization", "Content-Type", "Origin"):
            if name in request.headers:
                headers[name] = request.headers[name]
        url = base + (path or request.path_qs)
        try:
            async with self._session.request(method or request.method, url, headers=headers, data=body or None,
                                             timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT_S)) as resp:
                return web.Response(status=resp.status, body=await resp.read(),
                                    content_type=resp.content_type if resp.content_type else None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            event(log, "worker_sibling_unreachable", logging.WARNING, url=url, error=str(err)[:200])
            return None

    async def _fetch(self, url: str, request: web.Request) -> str | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(trust_env=False)
        headers = {LOCAL_HEADER: self.secret, "Accept": "text/plain"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        try:
            async with self._session.get(url, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT_S)) as resp:
                if resp.status != 200:
                    return None
                return await resp.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, UnicodeDecodeError) as err:
            event(log, "worker_sibling_unreachable", logging.WARNING, url=url, error=str(err)[:200])
            return None


OWNER_TTL_S = 1.0
"""How long a stream's owner, as the book said, is taken for granted: a stream published again on another
worker meanwhile costs a request a hand-off (or a proxied request) to the old one, which asks the book."""
MAX_OWNERS = 4096
MAX_HANDED = 8192
"""Longer request heads stay where they arrived (the fast lane's limit too)."""
MAX_HEADS = 1024
"""Request heads whose stream is remembered (as the fast lane's head cache)."""
_UNPARSED = object()
LOOPBACK = ("127.0.0.1", "::1")
PROXY_TIMEOUT_S = 15.0
"""At least this long for a sibling's HLS/DASH answer: an LL-HLS blocking reload is held until its part
exists, up to three segment durations (fastlane._Held), so long segments raise it (_proxy_timeout_s)."""
SEGMENTED_FILES = (".m3u8", ".ts", ".m4s", ".mp4", ".mpd", ".m4a", ".m4v", ".aac")
PROXIED_REQUEST_HEADERS = ("Range", "If-None-Match", "If-Modified-Since", "Origin", "Authorization", "Accept",
                           "Accept-Encoding", "User-Agent")
PROXIED_RESPONSE_HEADERS = frozenset(h.lower() for h in (
    "Content-Type", "Cache-Control", "ETag", "Last-Modified", "Content-Range", "Accept-Ranges", "Content-Encoding",
    "Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Vary", "Retry-After", "Location", "Date"))


SESSION_WORKER = "."
"""Between a WebRTC session's id and its worker's index in the Location (not a character of the ids)."""
SESSION_REQUEST_HEADERS = ("Content-Type", "If-Match", "Origin", "Authorization", "Accept")
HOP_HEADERS = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive", "server", "date"))


def session_of(path: str) -> str | None:
    """The session part of a WHEP/WHIP session URL (/APP/NAME/whep/SESSION), else None."""
    parts = path.split("/")
    if len(parts) != 5 or parts[0] or not all(parts[1:3]) or parts[3] not in ("whep", "whip") or not parts[4]:
        return None
    return parts[4]


def session_worker(session: str) -> tuple[str, int] | None:
    """(the worker's own session id, the worker's index) of a Location's SESSION.N; None for what no
    worker made (no index, or one that is not a few ASCII digits)."""
    own_id, _, worker = session.rpartition(SESSION_WORKER)
    if not own_id or not (worker.isascii() and worker.isdigit()) or len(worker) > 3:
        return None
    return own_id, int(worker)


def _segmented_head(data: bytes) -> str | None:
    """The stream a complete HTTP/1.1 request head asks the playlists or segments of (segmented_stream)."""
    if len(data) > MAX_HANDED or not data.endswith(b"\r\n\r\n"):
        return None
    line = data[:data.find(b"\r\n")].split(b" ")
    if len(line) != 3 or line[0] not in (b"GET", b"HEAD") or line[2] != b"HTTP/1.1":
        return None
    path = line[1].split(b"?", 1)[0]
    if not path.isascii() or b"%" in path:
        return None
    return segmented_stream(line[0].decode(), path.decode())


def segmented_stream(method: str, path: str) -> str | None:
    """"app/name" for a GET of an HLS/LL-HLS/DASH playlist or segment (/APP/NAME/FILE), else None."""
    if method not in ("GET", "HEAD"):
        return None
    parts = path.split("/")
    if len(parts) != 4 or parts[0] or not parts[1] or not parts[2] or parts[1] in ("api", "vod", "static"):
        return None
    return f"{parts[1]}/{parts[2]}" if parts[3].endswith(SEGMENTED_FILES) else None


def forwarded_for(request: web.Request) -> str:
    earlier = request.headers.get("X-Forwarded-For", "")
    remote = request.remote or ""
    return f"{earlier}, {remote}" if earlier else remote


ALL = "*"
"""api_route's answer for requests every worker must apply (kicking a stream's viewers, blocks)."""
KICK = "kick"
VIEWERS = "viewers"
"""api_route's answer for listing a stream's viewers: every worker's, merged (merge_viewers)."""
VIEWER = "viewer"
"""The action of "app/name viewer": kicking one viewer, on the worker its node-wide id names."""
VIEWER_ID_SPAN = 1000
"""A viewer's node-wide id is its worker's own id * VIEWER_ID_SPAN + the worker's index: each worker
numbers its viewers from 1, so ids alone would collide (more than MAX_WORKERS = 256 fit)."""


def node_viewer_id(local: int, worker: int) -> int:
    return local * VIEWER_ID_SPAN + worker


def split_viewer_id(text: str) -> tuple[int, int] | None:
    """(worker index, the worker's own viewer id) of a node-wide id; None for what is not one."""
    if not (text.isascii() and text.isdigit()) or len(text) > 15:
        return None
    local, worker = divmod(int(text), VIEWER_ID_SPAN)
    return worker, local


def answer_json(answer: web.Response) -> dict | None:
    """A worker's JSON answer as a dict; None when it is not one."""
    try:
        body = json.loads(bytes(answer.body or b""))  # type: ignore[arg-type]
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def with_node_viewer_ids(answer: web.Response, worker: int) -> web.Response:
    """A worker's answer to kicking a stream's viewers, its viewers_kicked as node-wide ids."""
    body = answer_json(answer)
    if answer.status != 200 or body is None or not isinstance(body.get("viewers_kicked"), list):
        return answer
    kicked = [node_viewer_id(int(v), worker) for v in body["viewers_kicked"]]
    return web.json_response({**body, "viewers_kicked": kicked})


def merge_viewers(answers: dict[int, web.Response]) -> web.Response:
    """GET .../viewers for the node from each worker's answer (by index): every viewer, with its node-wide
    id and its worker. A worker without the stream answers 404; all of them: that 404."""
    merged: dict | None = None
    viewers: list[dict] = []
    for worker, answer in sorted(answers.items()):
        body = answer_json(answer) if answer.status == 200 else None
        if body is None:
            continue
        merged = merged or body
        for viewer in body.get("viewers", []):
            viewers.append({**viewer, "id": node_viewer_id(int(viewer["id"]), worker), "worker": worker})
    if merged is None:
        return next(iter(answers.values())) if answers else pick_answer([])
    return web.json_response({**merged, "viewers": viewers})


def api_route(method: str, path: str) -> str | None:
    """Where an admin API request goes: ALL workers (kicking a stream's viewers; a block, which each worker's
    publish gate checks); VIEWERS: every worker's viewers of the stream, merged; "app/name viewer": the
    worker a viewer's node-wide id names; "app/name" for the worker publishing that stream (its
    description, recording, relays, renditions); "app/name kick" for a kick, sent to that worker, whose
    block (if any) is then put on every worker; None for this worker."""
    if not path.startswith("/api/v1/") or method == "OPTIONS":
        return None
    parts = path[len("/api/v1/"):].split("/")
    if parts[0] == "blocks" and method in ("PUT", "DELETE"):
        return ALL
    if parts[0] != "streams" or len(parts) < 3 or not parts[1] or not parts[2]:
        return None
    rest = parts[3:]
    if method == "POST" and rest == ["viewers", "kick"]:
        return ALL
    if method == "GET" and rest == ["viewers"]:
        return VIEWERS
    if method == "POST" and len(rest) == 3 and rest[0] == "viewers" and rest[2] == "kick":
        return f"{parts[1]}/{parts[2]} {VIEWER}"
    if method == "POST" and rest == ["kick"]:
        return f"{parts[1]}/{parts[2]} {KICK}"
    return f"{parts[1]}/{parts[2]}"


def pick_answer(answers: list[web.Response], kicked_viewers: bool = False) -> web.Response:
    """One answer for a request every worker applied: a kick's from the worker that held the publisher
    (not `forwarded`), the viewers every worker kicked, else the first success, else this worker's error."""
    done = [a for a in answers if 200 <= a.status < 300]
    if not done:
        return answers[0] if answers else web.json_response(
            {"error": "no worker answered", "hint": "the workers may be restarting; try again"}, status=503)
    bodies = [answer_json(answer) or {} for answer in done]
    if kicked_viewers:
        kicked = [v for b in bodies for v in b.get("viewers_kicked", [])]
        return web.json_response({**bodies[0], "viewers_kicked": kicked})
    for answer, body in zip(done, bodies):
        if isinstance(body, dict) and not body.get("forwarded"):
            return answer
    return done[0]
