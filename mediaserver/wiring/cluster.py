"""The composition root's cluster part: the Redis locator, the member that claims published streams,
the pool that pulls other nodes' streams, players' routing, and where a rendition viewer's stream comes
from. Absent when standalone."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import __version__
from ..config import Config, ConfigError
from ..edge.keys import METRICS, REGISTRY
from ..gate import ABR as ABR_REFUSAL
from ..gate import Refusal
from ..hub.rate import RateMeter
from ..hub.registry import StreamRegistry
from ..hub.stream import StreamKey
from ..log import event
from ..relay.pull import PullRelays
from ..transcode.cluster_abr import ClusterAbr
from ..transcode.pool import TranscodePool
from ..transcode.service import AbrRefusal

if TYPE_CHECKING:
    from ..cluster.locator import NodeInfo

log = logging.getLogger("mediaserver")


class ClusterWiring:
    """The node's part in a cluster: the RedisLocator, the ClusterMember that claims published streams,
    and the PullPool that serves other nodes' streams to this node's viewers. Absent when standalone."""

    def __init__(self, config: Config, registry: StreamRegistry, environ: Mapping[str, str],
                 locator_factory: Callable[[Callable[[], NodeInfo]], Any] | None = None) -> None:
        """`locator_factory` (NodeInfo's maker -> a StreamLocator) replaces Redis: a node-local cluster's workers."""
        from ..cluster.locator import NodeInfo
        from ..cluster.member import TAKEOVER_POLL_S, ClusterMember
        from ..cluster.router import LoadRouter
        from ..cluster.redis_locator import RedisLocator
        from ..auth.names import split_rendition
        from ..edge.origin_pull import OriginPull, PullPool, PullSettings

        cfg = config.cluster
        if locator_factory is None and not cfg.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"cluster.role = {cfg.role!r} needs cluster.redis_url (redis://HOST:PORT/DB), "
                              f"got {cfg.redis_url!r}; or set cluster.role = \"standalone\"")
        secret = environ.get(cfg.secret_env, "").strip()
        if len(secret) < 16:
            raise ConfigError(f"cluster.role = {cfg.role!r} needs a shared secret of 16+ characters in "
                              f"${cfg.secret_env} (the same on every node), e.g. "
                              "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        host = socket.gethostname()
        self.node_id = cfg.node_id or f"{host}-{config.http.port}"
        bind = config.http.bind if config.http.bind not in ("", "0.0.0.0", "::") else host
        self.http_url = (cfg.advertise_url or f"http://{bind}:{config.http.port}").rstrip("/")
        # Edges pull from the URL an origin (or a parent edge) advertises: a bare hostname often does not
        # resolve on other machines, and nothing else would say why their pulls fail.
        self.advertise_guessed = not cfg.advertise_url and bind == host and (cfg.role != "edge" or cfg.serve_edges)
        rtmp_host = config.rtmp.bind if config.rtmp.bind not in ("", "0.0.0.0", "::") else host
        self.rtmp_url = f"rtmp://{rtmp_host}:{config.rtmp.port}"
        self.role = cfg.role
        self.registry = registry
        self._egress = RateMeter(window_s=2.0, min_span_s=0.5)
        self._egress_bps = 0
        # load balancing: HLS clients and HLS/CMAF bytes are counted by the edge's metrics (cli sets these)
        self.hls_viewers: Callable[[], int] = lambda: 0
        self.egress_total: Callable[[], int] = lambda: sum(registry.egress_bytes.values())

        def node_info(measure: bool = True) -> NodeInfo:
            streams = registry.streams()
            per_stream = {str(s.key): len(s.subscribers) for s in streams if s.subscribers}
            return NodeInfo(
                id=self.node_id, role=cfg.role, http=self.http_url, rtmp=self.rtmp_url, version=__version__,
                streams=len(streams), viewers=sum(per_stream.values()) + self.hls_viewers(),
                egress_bps=self._measure_egress() if measure else self._egress_bps,
                stream_viewers=per_stream, pulling=[str(k) for k in pulls.pulls] if (pulls := getattr(self, "pulls", None)) else [],
                seen_at=time.time(), **node_offer(config),
            )

        serving = cfg.role in ("edge", "both")  # balanced on their loads: fresh figures every second
        self.locator = locator_factory(node_info) if locator_factory is not None else RedisLocator(
            cfg.redis_url, node_info, ttl=cfg.claim_ttl, node_ttl=cfg.node_ttl,
            record_every=min(1.0, cfg.claim_ttl / 3) if serving else None)
        self.router = LoadRouter(lambda: node_info(measure=False), self.locator.nodes)

        def published_here(name: str) -> bool:
            stream = registry.get(_key(name))
            return stream is not None and stream.publisher is not None and not isinstance(stream.publisher, OriginPull)

        self.member = ClusterMember(self.locator, self.node_id, self.http_url, published_here,
                                    lambda name, reason: registry.kick(_key(name), reason),
                                    takeover_wait=cfg.node_ttl + 2 * TAKEOVER_POLL_S)
        self.pulls = PullPool(
            registry, self.locator,
            PullSettings(node_id=self.node_id, secret=secret, grace=cfg.pull_grace, wait=cfg.pull_wait,
                         upstream=cfg.upstream.rstrip("/"), serve_edges=cfg.serve_edges, max_pulls=cfg.max_pulls,
                         max_pulls_per_client=cfg.max_pulls_per_client),
            pull_viewers=cfg.role in ("edge", "both"),
        )

        def own(hook):
            def run(stream) -> None:
                hook(str(stream.key))
            return run

        def published(stream) -> None:
            if isinstance(stream.publisher, OriginPull):
                return
            if split_rendition(stream.key.name)[1] is not None:
                self.member.adopt(str(stream.key))  # made here (a transcode, an encoder's track): no gate claimed it
            else:
                self.member.published(str(stream.key))

        registry.on_published.append(published)
        registry.on_unpublished.append(own(self.member.unpublished))
        registry.on_stream_ended.append(own(self.member.ended))

    def _measure_egress(self) -> int:
        # Counted as sent (viewers that left meanwhile included), so the rate never dips when one leaves.
        self._egress.add(time.monotonic(), self.egress_total())
        self._egress_bps = int((self._egress.per_second() or 0) * 8)
        return self._egress_bps

    async def stream_live(self, stream: str) -> bool:
        """Whether some node holds "app/name" (the admin API's route says so to players)."""
        return await self.locator.lookup(stream) is not None

    async def claim(self, key) -> str | None:
        if self.role in ("edge", "transcoder"):
            return (f"this node is {'an edge' if self.role == 'edge' else 'a transcoder'} (cluster.role = "
                    f"\"{self.role}\"); publish {key} to an origin instead")
        return await self.member.claim(str(key))

    async def locate(self, key, address: str):
        """The gate's play_locate: the local stream, pulled first when another node publishes it; the
        pull bounds (cluster.max_pulls, max_pulls_per_client) refuse as a limit."""
        from ..edge.origin_pull import PullRefusal
        from ..gate import LIMIT, Refusal

        found = await self.pulls.request(key, client=address)
        if isinstance(found, PullRefusal):
            if found.status == 404:
                return None
            return Refusal(LIMIT, found.reason, found.error, found.hint)
        return found

    async def kick(self, name: str, reason: str) -> bool:
        return await self.member.kick(name, reason)

    async def nodes(self) -> list[dict]:
        from dataclasses import asdict
        return [{**asdict(n), "self": n.id == self.node_id} for n in await self.locator.nodes()]

    async def streams(self) -> list[dict]:
        """Every stream published in the cluster, with viewers added up across nodes."""
        claims = await self.locator.claims()
        nodes = await self.locator.nodes()
        out = []
        for name in sorted(claims):
            by_node = {n.id: n.stream_viewers[name] for n in nodes if n.stream_viewers.get(name)}
            pulls = sum(1 for n in nodes if name in n.pulling)  # edges' pulls are viewers of their source
            out.append({"stream": name, "origin": claims[name].node, "origin_url": claims[name].http,
                        "since": claims[name].since, "viewers": max(0, sum(by_node.values()) - pulls),
                        "viewers_by_node": by_node, "edges_pulling": pulls})
        return out

    def store_ready(self) -> tuple[bool, str]:
        """/readyz's advisory check: the cluster store answers. Not a readiness check: Redis away would take
        every node out of its load balancer at once, while origins go on serving the streams they hold."""
        if self._store_up():
            return True, "reachable"
        return False, ("Redis is away: this node serves only the streams published on it, and reconnects with "
                       "backoff")

    def collect(self) -> Any:
        """/metrics: whether the cluster store answers, and the commands sent to it."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily("mediaserver_cluster_store_up", "1 while Redis (the cluster store) answers; 0 "
                                "while it is away and the node serves only its own streams.",
                                value=1 if self._store_up() else 0)
        yield CounterMetricFamily("mediaserver_cluster_store_commands", "Commands sent to the cluster store.",
                                  value=getattr(self.locator, "ops", 0))

    def _store_up(self) -> bool:
        return getattr(self.locator, "up", True)  # a node-local locator (workers) has no store to lose

    def remote_vod(self):
        from ..edge.vod_remote import RemoteVod
        settings = self.pulls.settings
        return RemoteVod(self.node_id, settings.secret, self.locator.node, connect_timeout=settings.connect_timeout,
                         read_timeout=settings.read_timeout)

    def wire(self, app: web.Application) -> None:
        """Internal requests (edges pulling from this node) pass before admission; viewers' pulls start in
        the gate (`locate`), for RTMP players and HTTP viewers alike."""
        app.middlewares.insert(0, self.pulls.internal_middleware)

    async def start(self) -> None:
        await self.locator.start()
        event(log, "cluster", role=self.role, node=self.node_id, advertise=self.http_url,
              redis="up" if self.locator.up else "down")
        if self.advertise_guessed:
            event(log, "cluster_advertise_url_guessed", logging.WARNING, advertise=self.http_url,
                  hint="edges pull from this URL; if other machines cannot resolve this hostname, set "
                       "cluster.advertise_url = http://ADDRESS:PORT (an address or name they can reach)")

    async def close(self) -> None:
        await self.member.drain()
        await self.pulls.close()
        await self.locator.close()


def _key(name: str) -> StreamKey:
    app, _, stream = name.partition("/")
    return StreamKey(app, stream)


def node_offer(config: Config) -> dict:
    """What a node's record tells players' routing: its ceilings, its public URL and its play formats."""
    outputs = (["flv", "ws-flv", "rtmp"] + (["hls", "llhls", "dash"] if config.hls.enabled else [])
               + (["webrtc"] if config.webrtc.enabled else []))
    return {"max_viewers": config.cluster.max_viewers,
            "max_egress_bps": int(config.cluster.max_egress_mbps * 1_000_000),
            "play_url": config.cluster.public_url.rstrip("/"), "outputs": outputs}


READ_EVERY_S = 0.5
"""StandaloneLoad reads the egress counter at most this often, however often the route is asked."""


class StandaloneLoad:
    """A standalone node's load for the route's answer, counted as a cluster node's record counts it (HLS
    clients and HLS/CMAF bytes as /metrics does); egress is measured between route requests (0 at first)."""

    def __init__(self, registry: StreamRegistry, hls_viewers: Callable[[], int], egress_total: Callable[[], int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.hls_viewers = hls_viewers
        self.egress_total = egress_total
        self.clock = clock
        self._egress = RateMeter(window_s=10.0, min_span_s=0.5)
        self._read_at = -READ_EVERY_S

    def viewers(self) -> int:
        return sum(len(s.subscribers) for s in self.registry.streams()) + self.hls_viewers()

    def egress_bps(self) -> int:
        now = self.clock()
        if now - self._read_at >= READ_EVERY_S:  # the route is public: a flood of it adds no readings
            self._read_at = now
            self._egress.add(now, self.egress_total())
        return int((self._egress.per_second() or 0) * 8)


def load_routing(config: Config, cluster: ClusterWiring | None, app: web.Application):
    """The route's choice (GET /api/v1/route/...) and, on an edge with a ceiling, the redirect of new viewers
    (edge/overload.py). Viewers and egress count HLS clients and HLS/CMAF bytes as /metrics does."""
    from ..cluster.locator import NodeInfo
    from ..cluster.router import LoadRouter
    from ..edge.metrics import HLS_VIEWER_WINDOW_S
    from ..edge.overload import LOAD_REDIRECT

    metrics = app[METRICS]

    def hls_viewers() -> int:  # as mediaserver_viewers{format="hls"} counts them
        cutoff = metrics.clock() - HLS_VIEWER_WINDOW_S
        return sum(1 for seen in metrics.hls_clients.values() if seen >= cutoff)

    if cluster is None:
        host = socket.gethostname()
        load = StandaloneLoad(app[REGISTRY], hls_viewers, lambda: sum(n for fmt, n in metrics.egress().items()
                                                                     if fmt != "other"))
        router = LoadRouter(lambda: NodeInfo(id=host, role="standalone", http="", rtmp=f"rtmp://{host}:{config.rtmp.port}",
                                             version=__version__, viewers=load.viewers(), egress_bps=load.egress_bps(),
                                             **node_offer(config)))
    else:
        cluster.hls_viewers = hls_viewers
        cluster.egress_total = lambda: sum(n for fmt, n in metrics.egress().items() if fmt != "other")
        router = cluster.router
        cfg = config.cluster
        if cfg.role in ("edge", "both") and (cfg.max_viewers or cfg.max_egress_mbps):

            async def redirect() -> str | None:
                node = await router.redirect()
                return (node.play_url or node.http) if node is not None else None

            app[LOAD_REDIRECT] = redirect

    async def route():
        choice = await router.route()
        return choice.node, choice.reason

    return route


def rendition_locate(abr: TranscodePool | ClusterAbr, registry: StreamRegistry, cluster: ClusterWiring | None,
                     pulls: PullRelays | None = None):
    """The gate's rendition_locate: a viewer named APP/STREAM@LABEL that is not live here. The source is
    pulled first on a node that pulls for its viewers; then its transcode is started (or joined)."""
    from ..auth.names import split_rendition

    async def locate(key: StreamKey, address: str):
        source = StreamKey(key.app, split_rendition(key.name)[0])
        if isinstance(abr, ClusterAbr):  # cluster: made here, or pulled from the node that makes it
            assert cluster is not None
            found = await abr.locate(key)
            if found is None:
                return await cluster.locate(key, address)
            if isinstance(found, AbrRefusal):
                return Refusal(ABR_REFUSAL, found.reason, found.error, found.hint, status=found.status)
            return found
        if pulls is not None and source in pulls.pulls:  # relay pull: the source is pulled first (on_demand)
            local = registry.get(source)
            if (local is None or local.ended) and await pulls.locate(source) is None:
                return None
        if cluster is not None and cluster.role in ("edge", "both"):
            local = registry.get(source)
            if local is None or local.ended:
                found = await cluster.locate(source, address)
                if found is None or isinstance(found, Refusal):
                    return found
        found = await abr.locate(key)
        if isinstance(found, AbrRefusal):
            return Refusal(ABR_REFUSAL, found.reason, found.error, found.hint, status=found.status)
        return found

    return locate
