"""LoadRouter: the node records `balance` decides on, read from the locator at most once a second.

The route (GET /api/v1/route/APP/NAME) and an edge's redirect of new viewers ask it. This node's own
record comes fresh from `me` (its viewers counted now), the others' from their heartbeats, which the
locator lists with one SCAN + MGET: a burst of viewers costs one Redis round trip per `max_age`, shared
by every request waiting meanwhile. An edge under its ceilings answers `redirect` without Redis at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ..log import LogGate, event
from .balance import Choice, at_ceiling, choose, redirect_target
from .locator import NodeInfo

log = logging.getLogger(__name__)

NODES_MAX_AGE_S = 1.0


class LoadRouter:
    def __init__(
        self,
        me: Callable[[], NodeInfo],
        nodes: Callable[[], Awaitable[list[NodeInfo]]] | None = None,
        max_age: float = NODES_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`me`: this node's record with its current load; `nodes`: every node with a current heartbeat
        (None when standalone: this node serves its own viewers)."""
        self.me = me
        self._nodes = nodes
        self.max_age = max_age
        self._clock = clock
        self._cached: list[NodeInfo] = []
        self._fetched_at = -float("inf")
        self._fetching: asyncio.Future[list[NodeInfo]] | None = None
        self._log_gate = LogGate(10.0)

    @property
    def standalone(self) -> bool:
        return self._nodes is None

    async def view(self) -> list[NodeInfo]:
        """Every node's record, this node's replaced by a fresh one."""
        me = self.me()
        if self._nodes is None:
            return [me]
        if self._clock() - self._fetched_at > self.max_age:
            if self._fetching is None:
                self._fetching = asyncio.ensure_future(self._fetch())
            await asyncio.shield(self._fetching)  # a viewer that hangs up does not cancel the others' fetch
        return [me, *(n for n in self._cached if n.id != me.id)]

    async def _fetch(self) -> list[NodeInfo]:
        try:
            self._cached = await self._nodes()  # type: ignore[misc]
        except Exception as err:  # a viewer never fails for it: decide on what was known, ask again later
            count = self._log_gate.should_log("nodes", self._clock())
            if count:
                event(log, "cluster_loads_unavailable", logging.WARNING, error=f"{type(err).__name__}: {err}",
                      failed=count, hint="routing and redirects use the last loads known")
        finally:
            self._fetched_at = self._clock()
            self._fetching = None
        return self._cached

    async def route(self) -> Choice:
        """The node a new viewer should watch on; standalone, this one."""
        if self._nodes is None:
            return Choice(self.me())
        return choose(await self.view())

    async def redirect(self) -> NodeInfo | None:
        """Where this node sends a new viewer when it is at a ceiling; None: serve it here."""
        if self._nodes is None:
            return None
        me = self.me()
        if not at_ceiling(me):
            return None
        return redirect_target(me, await self.view())
