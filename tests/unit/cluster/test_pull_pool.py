"""PullPool's bounds (issue 9, defect 11): no pull for a stream nobody publishes, at most max_pulls per
node and max_pulls_per_client per address, and no polling of a source that does not have the stream.
The source is a small real HTTP-FLV server on loopback; the locator is the in-memory one."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from mediaserver.cluster.locator import InMemoryLocator, Owner
from mediaserver.edge.origin_pull import PullPool, PullRefusal, PullSettings
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import Stream, StreamKey
from mediaserver.media.flv_body import build_tag
from mediaserver.media.frames import FrameKind
from mediaserver.remux.flv import flv_header

SECRET = "pull-pool-secret-0123456789"
AAC_CONFIG = b"\xaf\x00\x12\x10"
AAC_FRAME = b"\xaf\x01" + b"\x21" * 40


class Source:
    """An origin that serves an endless audio-only FLV for the names in `live`, 404 for others."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.requests: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{app}/{file}", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"].removesuffix(".flv")
        self.requests.append(name)
        if name not in self.live:
            raise web.HTTPNotFound()
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(flv_header(True, False) + build_tag(FrameKind.AUDIO, 0, AAC_CONFIG))
        ts = 0
        while True:
            ts += 23
            await resp.write(build_tag(FrameKind.AUDIO, ts, AAC_FRAME))
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def source():
    made = Source()
    await made.start()
    yield made
    await made.close()


@pytest.fixture
async def pools():
    made: list[PullPool] = []

    def make(locator: InMemoryLocator, **settings) -> PullPool:
        pool = PullPool(StreamRegistry(), locator, PullSettings(
            node_id="edge-1", secret=SECRET, grace=30.0, wait=settings.pop("wait", 2.0), **settings))
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()


def _published(locator: InMemoryLocator, source: Source, *names: str) -> None:
    for name in names:
        source.live.add(name)
        locator.claims[f"live/{name}"] = Owner(node="origin-1", http=source.url, since=time.time(), claim=name)


async def test_a_tiered_edge_answers_an_unknown_stream_at_once_without_asking_its_parent(source, pools):
    locator = InMemoryLocator()
    pool = pools(locator, upstream=source.url)
    started = time.monotonic()
    found = await pool.request(StreamKey("live", "nobody"), client="10.0.0.7")
    assert isinstance(found, PullRefusal) and found.status == 404 and found.reason == "unknown_stream"
    assert time.monotonic() - started < 0.5
    await asyncio.sleep(0.5)
    assert source.requests == [] and pool.pulls == {} and pool.started == 0
    assert pool.refusals["unknown_stream"] == 1


async def test_a_tiered_edge_pulls_a_published_stream_through_its_parent(source, pools):
    locator = InMemoryLocator()
    _published(locator, source, "a")
    pool = pools(locator, upstream=source.url)
    assert isinstance(await pool.request(StreamKey("live", "a"), client="10.0.0.7"), Stream)
    assert source.requests == ["a"]


async def test_one_address_cannot_start_more_than_its_share_of_pulls(source, pools):
    locator = InMemoryLocator()
    _published(locator, source, "a", "b", "c", "d")
    pool = pools(locator, max_pulls_per_client=2)
    for name in ("a", "b"):
        assert isinstance(await pool.request(StreamKey("live", name), client="10.0.0.7"), Stream)
    refused = await pool.request(StreamKey("live", "c"), client="::ffff:10.0.0.7")  # the same address
    assert isinstance(refused, PullRefusal) and refused.status == 503 and refused.reason == "client_limit"
    assert "max_pulls_per_client" in refused.error and refused.hint
    # A pull that runs serves everyone: the same client joins it freely.
    assert isinstance(await pool.request(StreamKey("live", "a"), client="10.0.0.7"), Stream)
    assert isinstance(await pool.request(StreamKey("live", "c"), client="10.0.0.8"), Stream)
    assert isinstance(await pool.request(StreamKey("live", "d"), client="10.0.0.7", internal=True), Stream)
    assert pool.refusals == {"client_limit": 1}
    assert sorted(source.requests) == ["a", "b", "c", "d"]


async def test_a_node_runs_at_most_max_pulls(source, pools):
    locator = InMemoryLocator()
    _published(locator, source, "a", "b", "c")
    pool = pools(locator, max_pulls=2)
    for name, client in (("a", "10.0.0.1"), ("b", "10.0.0.2")):
        assert isinstance(await pool.request(StreamKey("live", name), client=client), Stream)
    refused = await pool.request(StreamKey("live", "c"), client="10.0.0.3")
    assert isinstance(refused, PullRefusal) and refused.status == 503 and refused.reason == "node_limit"
    assert await pool.ensure(StreamKey("live", "c")) is None  # RTMP players: not found
    assert pool.refusals["node_limit"] == 2 and len(pool.pulls) == 2


async def test_a_source_that_does_not_have_the_stream_is_not_polled_once_nobody_waits(source, pools):
    locator = InMemoryLocator()
    _published(locator, source, "gone")
    source.live.discard("gone")  # claimed, but the origin answers 404 (its publisher just left)
    pool = pools(locator, wait=0.5)
    assert await pool.request(StreamKey("live", "gone"), client="10.0.0.7") is None
    await asyncio.sleep(1.5)
    asked = len(source.requests)
    assert pool.pulls == {}
    assert asked <= 4, source.requests  # ~0.3 s apart while the viewer waited, none after
