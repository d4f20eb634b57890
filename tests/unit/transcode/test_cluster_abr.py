"""ABR across nodes (transcode/cluster_abr.py) with real TranscodePools (the worker stand-in) sharing one
in-memory locator: who takes a stream's job, how other nodes see its renditions, and the takeover of a
dead transcoder's jobs. The Redis side and real workers are covered by tests/e2e/test_abr_cluster.py."""

from __future__ import annotations

import asyncio
import contextlib

from mediaserver.cluster.locator import InMemoryLocator, NodeInfo, Owner
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import Stream, StreamKey
from mediaserver.transcode.cluster_abr import ClusterAbr, job_claim
from mediaserver.transcode.service import AbrRefusal
from test_pool import SOURCE, Source, eventually, make_pool


class Node:
    """One node: its registry, pool and ClusterAbr; renditions it publishes are claimed as the cluster
    wiring claims them (wiring.cluster.ClusterWiring: published -> adopt)."""

    def __init__(self, name: str, locator: InMemoryLocator, origin: Source | None, transcoder: bool) -> None:
        self.name = name
        self.locator = locator
        self.registry = StreamRegistry()
        self.pool = make_pool(self.registry, max_jobs=1, idle_grace=60.0)
        self.origin = origin
        self.abr = ClusterAbr(self.pool, locator, name, f"http://{name}", transcoder=transcoder,
                              pull_source=self.pull, claims=self.all_claims, scan_s=0.1)
        self.registry.on_published.append(self._adopt)
        locator.heartbeat(NodeInfo(id=name, role="transcoder" if transcoder else "edge", http=f"http://{name}",
                                   rtmp="", version="test"))

    async def all_claims(self) -> dict[str, Owner]:
        return dict(self.locator.claims)

    async def pull(self, key: StreamKey) -> Stream | None:
        """The source as an edge's pull would give it: a copy published into this node's registry."""
        if self.origin is None or key != self.origin.key:
            return None
        copy = Source(self.registry, key)
        copy.run()
        self._copy = copy
        return copy.stream

    def _adopt(self, stream: Stream) -> None:
        if "@" in stream.key.name:
            owner = Owner(self.name, f"http://{self.name}", 0.0, f"{self.name}-{stream.key.name}")
            asyncio.get_running_loop().create_task(self.locator.announce(str(stream.key), owner))

    async def close(self) -> None:
        await self.abr.close()
        if getattr(self, "_copy", None) is not None:
            await self._copy.stop()
        await self.pool.close()


@contextlib.asynccontextmanager
async def cluster(*transcoders: str, edges: int = 1):
    locator = InMemoryLocator()
    origin_registry = StreamRegistry()
    origin = Source(origin_registry)
    origin.run()
    await locator.announce(str(SOURCE), Owner("origin", "http://origin", 0.0, "c0"))
    nodes = [Node(name, locator, origin, True) for name in transcoders]
    nodes += [Node(f"edge-{i}", locator, origin, False) for i in range(edges)]
    for node in nodes:
        await node.abr.start_scanning()
    try:
        yield locator, nodes
    finally:
        for node in nodes:
            await node.close()
        await origin.stop()


async def test_without_transcoders_the_node_that_asks_makes_the_ladder():
    async with cluster(edges=2) as (locator, (first, second)):
        views = await first.abr.renditions(SOURCE)
        assert not isinstance(views, AbrRefusal) and [v.label for v in views] == ["360p", "240p"]
        assert locator.claims[job_claim(SOURCE)].node == "edge-0"
        assert first.pool.job(SOURCE) is not None
        await eventually(lambda: "live/demo@360p" in locator.claims, what="the renditions' claims")
        # The second node (serving the source itself, as its master.m3u8 does) lists them from the claims
        # and makes nothing.
        copy = await second.pull(SOURCE)
        await eventually(lambda: copy.info.width is not None, what="the source's size on the second node")
        remote = await second.abr.renditions(SOURCE)
        assert [v.label for v in remote] == ["360p", "240p"] and second.pool.job(SOURCE) is None
        assert await second.abr.locate(StreamKey("live", "demo@360p")) is None  # pulled like any stream


async def test_a_transcoder_takes_the_job_an_edge_asks_for():
    async with cluster("trans-1", edges=1) as (locator, (transcoder, edge)):
        await edge.pull(SOURCE)  # the edge serves the source itself (its master.m3u8 needs it)
        views = await edge.abr.renditions(SOURCE)
        assert [v.label for v in views] == ["360p", "240p"], views
        assert locator.claims[job_claim(SOURCE)].node == "trans-1"
        assert transcoder.pool.job(SOURCE) is not None and edge.pool.job(SOURCE) is None
        assert locator.claims["live/demo@240p"].node == "trans-1"


async def test_a_dead_transcoders_job_is_taken_over_by_another():
    async with cluster("trans-1", "trans-2", edges=1) as (locator, nodes):
        edge = nodes[-1]
        await edge.pull(SOURCE)
        assert len(await edge.abr.renditions(SOURCE)) == 2
        holder = locator.claims[job_claim(SOURCE)].node
        other = next(n for n in nodes[:2] if n.name != holder)
        locator.dead.add(holder)  # its heartbeat lapsed
        await eventually(lambda: locator.claims[job_claim(SOURCE)].node == other.name, what="the takeover")
        await eventually(lambda: other.pool.job(SOURCE) is not None, what="the new job")
        await eventually(lambda: other.abr.taken_over == 1, what="the takeover counted")


async def test_a_job_that_ends_gives_its_claim_back():
    async with cluster(edges=1) as (locator, (node,)):
        assert len(await node.abr.renditions(SOURCE)) == 2
        assert await node.pool.stop(SOURCE)
        await eventually(lambda: job_claim(SOURCE) not in locator.claims, what="the claim withdrawn")


async def test_abr_off_for_the_app_is_refused_without_a_claim():
    async with cluster(edges=1) as (locator, (node,)):
        other = StreamKey("vod", "demo")
        node.pool.abr = node.pool.abr.__class__(mode="on_demand", apps=("live",))
        found = await node.abr.renditions(other)
        assert isinstance(found, AbrRefusal) and found.status == 404
        assert job_claim(other) not in locator.claims
        await asyncio.sleep(0)


async def test_a_made_up_label_is_refused_before_any_node_claims_the_job():
    async with cluster("trans-1", edges=1) as (locator, (transcoder, edge)):
        found = await edge.abr.locate(StreamKey("live", "demo@nope"))
        assert isinstance(found, AbrRefusal) and found.status == 404 and found.reason == "no_rung"
        assert job_claim(SOURCE) not in locator.claims
        assert transcoder.pool.job(SOURCE) is None and edge.pool.job(SOURCE) is None
