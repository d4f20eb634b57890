"""The locator's records and news on the wire, the in-memory locator, and ClusterMember's claims."""

from __future__ import annotations

import asyncio

import pytest

from mediaserver.cluster.locator import (
    KICK, PUBLISHED, UNPUBLISHED, ClusterEvent, InMemoryLocator, LocatorError, NodeInfo, Owner,
)
from mediaserver.cluster.member import ClusterMember

OWNER = Owner(node="origin-1", http="http://10.0.0.1:8080", since=1700000000.5, claim="abc123")


@pytest.mark.parametrize("record", [
    OWNER,
    ClusterEvent(kind=PUBLISHED, sender="origin-1", stream="live/x", owner=OWNER),
    ClusterEvent(kind="node_down", sender="edge-2", reason="shutdown"),
    NodeInfo(id="edge-1", role="edge", http="http://e:8080", rtmp="rtmp://e:1935", version="1.0", streams=2,
             viewers=7, egress_bps=123456, stream_viewers={"live/x": 7}, seen_at=5.0),
])
def test_records_round_trip_through_json(record):
    assert type(record).from_json(record.to_json()) == record


@pytest.mark.parametrize("cls", [Owner, ClusterEvent, NodeInfo])
@pytest.mark.parametrize("text", [
    b"", b"not json", b"[]", b"null", b"{}", b'{"node": 1}', b'{"kind": "explode", "sender": "x"}',
    b'{"kind": "kick", "sender": "x", "owner": {"node": "n"}}', b'{"id": "n", "role": "edge", "http": "h", "streams": "many"}',
    b"\xff\xfe" * 1000,
])
def test_garbage_records_are_refused_with_a_clear_error(cls, text):
    with pytest.raises(LocatorError, match="not understood"):
        cls.from_json(text)


async def test_in_memory_locator_holds_one_claim_per_stream():
    locator = InMemoryLocator()
    other = Owner(node="origin-2", http="http://10.0.0.2:8080", since=2.0, claim="def")
    assert await locator.announce("live/x", OWNER) == OWNER
    assert await locator.announce("live/x", other) == OWNER
    assert await locator.lookup("live/x") == OWNER
    await locator.withdraw("live/x", other)  # not its claim: nothing happens
    assert await locator.lookup("live/x") == OWNER
    await locator.withdraw("live/x", OWNER)
    assert await locator.lookup("live/x") is None
    assert await locator.announce("live/x", other) == other


def _member(locator: InMemoryLocator, node: str, published: set[str], kicked: list[tuple[str, str]],
            takeover_wait: float = 0.0) -> ClusterMember:
    def kick(stream: str, reason: str) -> bool:
        kicked.append((stream, reason))
        published.discard(stream)
        return True
    return ClusterMember(locator, node, f"http://{node}:8080", lambda s: s in published, kick,
                         takeover_wait=takeover_wait)


async def test_a_second_origin_is_refused_and_the_claim_moves_when_the_first_publisher_leaves():
    locator = InMemoryLocator()
    published1: set[str] = set()
    one = _member(locator, "origin-1", published1, [])
    two = _member(locator, "origin-2", set(), [])
    assert await one.claim("live/x") is None
    published1.add("live/x")
    one.published("live/x")
    refusal = await two.claim("live/x")
    assert refusal is not None and "origin-1" in refusal and "another stream name" in refusal
    one.unpublished("live/x")
    await one.drain()
    assert [e.kind for e in locator.sent] == [PUBLISHED, UNPUBLISHED]
    assert await two.claim("live/x") is None
    assert (await locator.lookup("live/x")).node == "origin-2"


async def test_the_same_node_claims_its_own_stream_again_without_a_second_record():
    locator = InMemoryLocator()
    one = _member(locator, "origin-1", {"live/x"}, [])
    assert await one.claim("live/x") is None
    first = await locator.lookup("live/x")
    assert await one.claim("live/x") is None  # a publisher replacing its stale self
    assert await locator.lookup("live/x") is first


async def test_a_kick_from_another_node_ends_the_local_publisher_only_where_it_is_published():
    locator = InMemoryLocator()
    kicked1: list[tuple[str, str]] = []
    kicked2: list[tuple[str, str]] = []
    one = _member(locator, "origin-1", {"live/x"}, kicked1)
    edge = _member(locator, "edge-1", set(), kicked2)
    await one.claim("live/x")
    assert await edge.kick("live/x", "operator") is True
    assert kicked1 == [("live/x", "operator")] and kicked2 == []
    assert locator.sent[-1].kind == KICK


async def test_a_claim_whose_publisher_was_never_accepted_is_given_back(monkeypatch):
    import mediaserver.cluster.member as member
    monkeypatch.setattr(member, "CLAIM_CHECK_S", 0.05)
    locator = InMemoryLocator()
    one = _member(locator, "origin-1", set(), [])
    assert await one.claim("live/x") is None
    await asyncio.sleep(0.2)
    await one.drain()
    assert await locator.lookup("live/x") is None


async def test_a_publisher_reconnecting_after_its_origin_died_is_held_until_the_claim_moves_then_accepted():
    locator = InMemoryLocator()
    one = _member(locator, "origin-1", {"live/x"}, [])
    two = _member(locator, "origin-2", set(), [], takeover_wait=2.0)
    assert await one.claim("live/x") is None
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, locator.dead.add, "origin-1")  # its heartbeat lapses a moment later
    started = loop.time()
    assert await two.claim("live/x") is None
    assert 0.3 <= loop.time() - started < 1.0
    assert (await locator.lookup("live/x")).node == "origin-2"


async def test_a_duplicate_publisher_is_refused_once_the_takeover_wait_is_over():
    locator = InMemoryLocator()
    one = _member(locator, "origin-1", {"live/x"}, [])
    two = _member(locator, "origin-2", set(), [], takeover_wait=0.4)
    assert await one.claim("live/x") is None
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert "origin-1" in (await two.claim("live/x") or "")
    assert 0.4 <= loop.time() - started < 1.0
    assert (await locator.lookup("live/x")).node == "origin-1"


async def test_a_dead_nodes_claim_is_not_named_by_lookups():
    locator = InMemoryLocator()
    assert await locator.announce("live/x", OWNER) == OWNER
    locator.dead.add("origin-1")
    assert await locator.lookup("live/x") is None
