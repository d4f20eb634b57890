"""Which edge a new viewer should watch on: the loads of the nodes in, one node (or none) out.

Pure: the node records (heartbeats, `locator.NodeInfo`) are all it reads, so the rules are tested without
Redis or sockets, and the route (GET /api/v1/route/APP/NAME) and an overloaded edge's redirect decide
alike.

- A node can take a viewer when it pulls for viewers (role edge or both) and is under its ceilings
  (`max_viewers`, `max_egress_bps`; 0 is none). Its heartbeat being current is the locator's business:
  a lapsed node is not in the list.
- The least loaded wins: the highest share of a ceiling first (a node with no ceiling counts 0), then
  viewers, then egress, then the node id, so equal nodes are always ranked the same way (stable ties).
- An edge at a ceiling sends a new viewer to the least loaded other node that can take one; when there is
  none (every edge is at its ceiling too), it serves the viewer itself. A redirected viewer carries a
  marker the next edge honours by serving anyway, so a viewer is redirected at most once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .locator import NodeInfo

SERVING_ROLES = frozenset({"edge", "both"})
"""Roles whose nodes pull any stream of the cluster for their viewers."""


@dataclass(frozen=True, slots=True)
class Choice:
    """The node chosen, or why none could be."""

    node: NodeInfo | None
    reason: str = ""
    """Why `node` is None: "no_edge" (no node serves viewers) or "all_full" (every one is at a ceiling)."""


def share(node: NodeInfo) -> float:
    """How full the node is: its highest share of a ceiling (1.0 is at it); 0 with no ceiling."""
    shares = [0.0]
    if node.max_viewers > 0:
        shares.append(node.viewers / node.max_viewers)
    if node.max_egress_bps > 0:
        shares.append(node.egress_bps / node.max_egress_bps)
    return max(shares)


def at_ceiling(node: NodeInfo) -> bool:
    """True when one more viewer would be over a ceiling (viewers) or egress already reached it."""
    return (node.max_viewers > 0 and node.viewers >= node.max_viewers) or \
        (node.max_egress_bps > 0 and node.egress_bps >= node.max_egress_bps)


def rank(node: NodeInfo) -> tuple[float, int, int, str]:
    """Sort key: least loaded first, ties broken by the node id."""
    return (share(node), node.viewers, node.egress_bps, node.id)


def choose(nodes: Iterable[NodeInfo], exclude: Iterable[str] = ()) -> Choice:
    """The least loaded node that serves viewers and is under its ceilings (none of `exclude`)."""
    skipped = set(exclude)
    serving = [n for n in nodes if n.role in SERVING_ROLES and n.id not in skipped]
    if not serving:
        return Choice(None, "no_edge")
    open_ = [n for n in serving if not at_ceiling(n)]
    if not open_:
        return Choice(None, "all_full")
    return Choice(min(open_, key=rank))


def redirect_target(me: NodeInfo, nodes: Iterable[NodeInfo]) -> NodeInfo | None:
    """Where this node sends a new viewer: None while it is under its ceilings, or when no other node can
    take the viewer (then it serves the viewer itself); else the least loaded other node under its own."""
    if not at_ceiling(me):
        return None
    return choose(nodes, exclude=(me.id,)).node  # under its ceilings, so less loaded than this node
