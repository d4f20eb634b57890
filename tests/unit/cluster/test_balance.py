"""The choice of an edge for a new viewer (cluster/balance.py) and the cached view it decides on
(cluster/router.py): loads in, one node out."""

from __future__ import annotations

import asyncio

import pytest

from mediaserver.cluster.balance import at_ceiling, choose, redirect_target, share
from mediaserver.cluster.locator import NodeInfo
from mediaserver.cluster.router import LoadRouter


def node(id: str, role: str = "edge", viewers: int = 0, egress: int = 0, max_viewers: int = 0,
         max_egress: int = 0) -> NodeInfo:
    return NodeInfo(id=id, role=role, http=f"http://{id}:8080", rtmp=f"rtmp://{id}:1935", version="t",
                    viewers=viewers, egress_bps=egress, max_viewers=max_viewers, max_egress_bps=max_egress)


def test_the_least_loaded_edge_wins_and_origins_and_transcoders_are_never_chosen():
    nodes = [node("origin", "origin"), node("tc", "transcoder"), node("e1", viewers=5), node("e2", viewers=2),
             node("both", "both", viewers=3)]
    assert choose(nodes).node.id == "e2"
    assert choose([n for n in nodes if n.id != "e2"]).node.id == "both"


def test_share_of_the_ceiling_ranks_before_raw_counts():
    big = node("big", viewers=500, max_viewers=1000)      # half full
    small = node("small", viewers=90, max_viewers=100)    # 90 % full
    assert choose([small, big]).node.id == "big"
    by_egress = node("e", viewers=1, egress=80_000_000, max_egress=100_000_000)
    assert share(by_egress) == pytest.approx(0.8)
    assert choose([by_egress, small]).node.id == "e"


def test_ties_are_broken_by_node_id_whatever_the_order():
    nodes = [node("edge-c"), node("edge-a"), node("edge-b")]
    for order in (nodes, nodes[::-1], nodes[1:] + nodes[:1]):
        assert choose(order).node.id == "edge-a"
    # equal share: fewer viewers, then less egress, then the id
    assert choose([node("x", viewers=3, egress=9), node("y", viewers=3, egress=5)]).node.id == "y"


def test_a_node_at_a_ceiling_is_skipped_and_none_left_says_why():
    full = node("full", viewers=10, max_viewers=10)
    hot = node("hot", egress=50, max_egress=50)
    assert at_ceiling(full) and at_ceiling(hot)
    assert not at_ceiling(node("under", viewers=9, max_viewers=10, egress=49, max_egress=50))
    assert not at_ceiling(node("none", viewers=10**6, egress=10**12))  # 0 is no ceiling
    assert choose([full, hot]).node is None and choose([full, hot]).reason == "all_full"
    assert choose([full, hot, node("free", viewers=100)]).node.id == "free"
    assert choose([node("o", "origin")]).reason == "no_edge"
    assert choose([]).reason == "no_edge"


def test_an_edge_redirects_only_at_its_ceiling_and_only_to_a_node_under_its_own():
    me = node("me", viewers=10, max_viewers=10)
    other = node("other", viewers=4, max_viewers=10)
    assert redirect_target(me, [me, other]).id == "other"
    under = node("me", viewers=9, max_viewers=10)
    assert redirect_target(under, [under, other]) is None
    # every other edge is at its ceiling too: serve here rather than bounce the viewer around
    full_other = node("other", viewers=10, max_viewers=10)
    assert redirect_target(me, [me, full_other]) is None
    # never to itself, never to an origin
    assert redirect_target(me, [me, node("o", "origin")]) is None
    # the less loaded of two candidates
    assert redirect_target(me, [me, other, node("third", viewers=1, max_viewers=10)]).id == "third"


async def test_the_router_reads_the_nodes_at_most_once_per_max_age_and_uses_its_own_fresh_record():
    calls = 0
    now = [0.0]
    mine = {"viewers": 0}

    async def nodes() -> list[NodeInfo]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return [node("me", viewers=99, max_viewers=10), node("other", viewers=3, max_viewers=10)]

    router = LoadRouter(lambda: node("me", viewers=mine["viewers"], max_viewers=10), nodes, max_age=1.0,
                        clock=lambda: now[0])
    assert await router.redirect() is None and calls == 0  # under its ceiling: no Redis at all
    assert (await router.route()).node.id == "me"  # its own record, not the stale heartbeat (99 viewers)
    views = await asyncio.gather(*(router.view() for _ in range(20)))
    assert calls == 1 and all(len(v) == 2 for v in views)
    mine["viewers"] = 10
    assert (await router.redirect()).id == "other" and calls == 1
    assert (await router.route()).node.id == "other"
    now[0] = 1.5
    await router.view()
    assert calls == 2


async def test_when_the_loads_cannot_be_read_the_last_known_are_used_and_nobody_fails():
    answers: list = [[node("me"), node("other", viewers=1)], RuntimeError("redis went away")]
    now = [0.0]

    async def nodes() -> list[NodeInfo]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    router = LoadRouter(lambda: node("me", viewers=5, max_viewers=5), nodes, clock=lambda: now[0])
    assert (await router.redirect()).id == "other"
    now[0] = 2.0
    assert (await router.redirect()).id == "other"  # the failed read kept the last view
    assert (await router.route()).node.id == "other" and not answers


async def test_a_standalone_router_answers_its_own_node():
    router = LoadRouter(lambda: node("solo", "standalone", viewers=10, max_viewers=1))
    assert router.standalone
    assert (await router.route()).node.id == "solo"
    assert await router.redirect() is None
