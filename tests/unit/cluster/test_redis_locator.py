"""RedisLocator against a real redis-server (6.2 commands): claims, compare-and-delete, news, heartbeats,
and Redis going away and coming back."""

from __future__ import annotations

import asyncio
import time

import pytest

from mediaserver.cluster.locator import KICK, ClusterEvent, NodeInfo, Owner
from mediaserver.cluster.redis_locator import RedisLocator
from support.redis_server import RedisServer


def _node(node_id: str) -> NodeInfo:
    return NodeInfo(id=node_id, role="origin", http=f"http://{node_id}:8080", rtmp="", version="t", seen_at=time.time())


def _owner(node: str, claim: str = "c1") -> Owner:
    return Owner(node=node, http=f"http://{node}:8080", since=time.time(), claim=claim)


@pytest.fixture
async def locators(redis):
    made: list[RedisLocator] = []

    async def make(node_id: str, ttl: float = 3, node_ttl: float = 1.5) -> RedisLocator:
        locator = RedisLocator(redis.url, lambda: _node(node_id), ttl=ttl, node_ttl=node_ttl)
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


def _crash(locator: RedisLocator) -> None:
    locator._closed = True  # no more refreshes or heartbeats, no withdraw
    for task in locator._tasks:
        task.cancel()


def _exists(redis: RedisServer, key: str) -> bool:
    return redis.command("EXISTS", key).startswith(b":1")


async def test_claims_are_refreshed_while_held_and_lapse_when_the_node_stops(redis, locators):
    one = await locators("origin-1", ttl=2)
    await one.announce("live/x", _owner("origin-1"))
    await asyncio.sleep(3.0)  # longer than the TTL: only the refresh keeps it
    assert await one.lookup("live/x") is not None
    _crash(one)
    assert await _until(lambda: not _exists(redis, "ms:stream:live/x"), 4.0)


async def test_a_claim_cancelled_while_redis_answers_is_withdrawn_and_free_for_another_node(redis, locators):
    one, two = await locators("origin-1"), await locators("origin-2")
    mine = _owner("origin-1")
    redis.command("CLIENT", "PAUSE", "500", "WRITE")  # the SET waits in Redis, as behind a slow link
    announcing = asyncio.ensure_future(one.announce("live/x", mine))
    await asyncio.sleep(0.15)
    assert not announcing.done()
    announcing.cancel()  # the publisher hung up: its admission task is cancelled
    with pytest.raises(asyncio.CancelledError):
        await announcing
    assert "live/x" not in one.held
    await asyncio.sleep(2.5)  # the pause is over; refreshes (every 1 s) and the second withdrawal ran
    assert not _exists(redis, "ms:stream:live/x"), "the cancelled claim is left in Redis"
    theirs = _owner("origin-2", "c2")
    assert await two.announce("live/x", theirs) == theirs


async def test_a_claim_cancelled_after_it_reached_redis_is_withdrawn(redis, locators):
    one, two = await locators("origin-1"), await locators("origin-2")
    mine = _owner("origin-1")
    original = one._client.set

    async def set_then_hang(*args, **kwargs):  # the SET is applied, its answer never comes back
        await original(*args, **kwargs)
        await asyncio.sleep(3600)

    one._client.set = set_then_hang
    announcing = asyncio.ensure_future(one.announce("live/x", mine))
    assert await _until(lambda: _exists(redis, "ms:stream:live/x"), 2.0)
    announcing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await announcing
    one._client.set = original
    assert await _until(lambda: not _exists(redis, "ms:stream:live/x"), 1.0)
    await asyncio.sleep(1.5)  # a refresh period: nothing takes it again
    assert not _exists(redis, "ms:stream:live/x")
    theirs = _owner("origin-2", "c2")
    assert await two.announce("live/x", theirs) == theirs


async def test_the_claim_of_a_node_whose_heartbeat_lapsed_moves_at_once_not_after_its_ttl(redis, locators):
    one = await locators("origin-1", ttl=30, node_ttl=1.0)
    two = await locators("origin-2", ttl=30, node_ttl=1.0)
    edge = await locators("edge-1", ttl=30, node_ttl=1.0)
    old, new = _owner("origin-1"), _owner("origin-2", "c2")
    assert await one.announce("live/x", old) == old
    await asyncio.sleep(1.5)  # heartbeats kept alive beyond node_ttl
    assert await two.announce("live/x", new) == old  # its node is alive: refused
    _crash(one)
    crashed = time.monotonic()
    assert await _until(lambda: not _exists(redis, "ms:node:origin-1"), 2.0)
    assert time.monotonic() - crashed <= 1.2
    assert _exists(redis, "ms:stream:live/x")  # the claim itself would live 30 s
    assert await edge.lookup("live/x") is None  # a dead owner is not named
    assert await two.announce("live/x", new) == new
    assert await edge.lookup("live/x") == new
    assert "origin-2" in [n.id for n in await edge.nodes()] and "origin-1" not in [n.id for n in await edge.nodes()]


def _calls(redis: RedisServer) -> dict[str, int]:
    found = {}
    for line in redis.command("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            found[name.removeprefix("cmdstat_")] = int(rest.split(",")[0].removeprefix("calls="))
    return found


async def test_a_claim_costs_two_commands_per_refresh_and_the_heartbeat_one_per_beat_for_the_node(
        redis, locators):
    one = await locators("origin-1", ttl=3, node_ttl=1.5)  # refresh every 1 s, beat every 0.5 s
    for i in range(5):
        await one.announce(f"live/s{i}", _owner("origin-1", f"c{i}"))
    before = _calls(redis)
    await asyncio.sleep(3.05)
    after = _calls(redis)
    spent = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    refreshes = spent.get("get", 0) // 5
    assert 2 <= refreshes <= 4 and spent.get("get", 0) == spent.get("expire", 0) == 5 * refreshes, spent
    assert spent.get("evalsha", 0) <= refreshes + 1, spent  # one call for all five claims (+1: loading it)
    assert 4 <= spent.get("pexpire", 0) + spent.get("set", 0) <= 8, spent  # the node's heartbeat


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
    found = await one.node("edge-1")  # one node by id (where an edge fetches another node's recordings)
    assert found is not None and found.http == "http://edge-1:8080"
    assert await one.node("nobody") is None
    await two.close()
    assert [n.id for n in await one.nodes()] == ["origin-1"]
    assert await one.node("edge-1") is None


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


async def test_a_burst_of_lookups_queues_and_never_marks_redis_away(redis, locators):
    # More lookups at once than the connection pool holds (a crowd of viewers asking for names): each waits
    # its turn; none may read as Redis being away, which would make the node's live streams unknown.
    edge, origin = await locators("edge-1"), await locators("origin-1")
    mine = _owner("origin-1")
    await origin.announce("live/x", mine)
    names = [f"live/unknown-{i}" for i in range(300)] + ["live/x"] * 50
    found = await asyncio.gather(*(edge.lookup(name) for name in names))
    assert edge.up
    assert found[:300] == [None] * 300 and found[300:] == [mine] * 50
    claims = await asyncio.gather(*(origin.announce(f"live/s{i}", _owner("origin-1", f"s{i}")) for i in range(300)))
    assert origin.up and all(owner.node == "origin-1" for owner in claims)
    assert (await edge.lookup("live/s299")).node == "origin-1"


async def test_a_lookup_cancelled_while_waiting_its_turn_leaves_nothing_behind(redis, locators):
    edge = await locators("edge-1")
    tasks = [asyncio.ensure_future(edge.lookup(f"live/n{i}")) for i in range(200)]
    await asyncio.sleep(0)
    for task in tasks[100:]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is None for r in results[:100])
    assert edge.up and await edge.lookup("live/n0") is None
