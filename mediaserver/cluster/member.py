"""ClusterMember: what one node does for the cluster, between its registry hooks and a StreamLocator.

- Before a publisher is accepted, `claim(stream)` claims the stream for this node; a stream another node
  holds is refused (one publisher per stream across the cluster). When the holder may be a node that just
  died (an encoder reconnecting here after its origin crashed), the claim is asked again for up to
  `takeover_wait` (a little over the heartbeat TTL): once the holder's heartbeat lapses the locator hands
  the claim over, and the publisher is accepted without reconnecting again. A claim whose publisher was
  then not accepted locally is given back after a short check.
- The registry's hooks call `published` / `unpublished` / `ended` (for streams this node publishes, not
  for relays it pulls), which send the news and withdraw the claim when the publisher leaves, so a
  publisher that moves to another origin is found there at once.
- `kick(stream, reason)` sends the kick to every node; `on_event` kicks the local publisher when the
  command comes from another node.

Streams are "app/name" strings; the hub's objects never reach this module (the composition root adapts).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from ..log import event
from .locator import KICK, PUBLISHED, UNPUBLISHED, ClusterEvent, Owner, StreamLocator

log = logging.getLogger(__name__)

CLAIM_CHECK_S = 5.0
"""After this long, a claim whose publisher is not live here is given back."""
TAKEOVER_POLL_S = 0.25
"""How often a claim held by another node is asked again while that node may be dying."""


class ClusterMember:
    def __init__(
        self,
        locator: StreamLocator,
        node_id: str,
        http_url: str,
        is_published_here: Callable[[str], bool],
        kick_here: Callable[[str, str], bool],
        wall_clock: Callable[[], float] = time.time,
        takeover_wait: float = 0.0,
    ) -> None:
        self.locator = locator
        self.takeover_wait = takeover_wait
        """Seconds a publisher waits for the holder of its stream to be found dead before it is refused."""
        self.node_id = node_id
        self.http_url = http_url
        self._is_published_here = is_published_here
        self._kick_here = kick_here
        self._wall = wall_clock
        self.owners: dict[str, Owner] = {}
        """Claims this node holds, by stream."""
        self._tasks: set[asyncio.Task[None]] = set()
        locator.watch(self.on_event)

    async def claim(self, stream: str) -> str | None:
        """None when this node may accept the publisher; otherwise why not (for NetStream.Publish.BadName)."""
        mine = Owner(node=self.node_id, http=self.http_url, since=self._wall(), claim=secrets.token_hex(8))
        holder = await self.locator.announce(stream, mine)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.takeover_wait
        while holder.node != self.node_id and loop.time() < deadline:
            await asyncio.sleep(min(TAKEOVER_POLL_S, max(0.0, deadline - loop.time())))
            holder = await self.locator.announce(stream, mine)
        if holder.node != self.node_id:
            event(log, "cluster_publish_refused", logging.WARNING, stream=stream, owner=holder.node)
            return (f"{stream} is already being published on node {holder.node} ({holder.http}); "
                    "stop that publisher or use another stream name")
        self.owners[stream] = holder
        asyncio.get_running_loop().call_later(CLAIM_CHECK_S, self._check_claim, stream, holder)
        return None

    def _check_claim(self, stream: str, owner: Owner) -> None:
        if self.owners.get(stream) is owner and not self._is_published_here(stream):
            self._spawn(self._withdraw(stream, owner, announce=False))

    # ----- registry hooks (streams this node publishes) -------------------------------------------

    def published(self, stream: str) -> None:
        owner = self.owners.get(stream)
        if owner is not None:
            self._spawn(self.locator.send(ClusterEvent(kind=PUBLISHED, sender=self.node_id, stream=stream, owner=owner)))

    def adopt(self, stream: str) -> None:
        """A stream this node makes itself (a transcoder's rendition, an encoder's extra track): it passed no
        publish gate, so it is claimed here, then announced. Another live node's claim wins (logged)."""
        self._spawn(self._adopt(stream))

    async def _adopt(self, stream: str) -> None:
        if stream in self.owners:
            self.published(stream)
            return
        mine = Owner(node=self.node_id, http=self.http_url, since=self._wall(), claim=secrets.token_hex(8))
        holder = await self.locator.announce(stream, mine)
        if holder.node != self.node_id:
            event(log, "cluster_rendition_elsewhere", logging.WARNING, stream=stream, owner=holder.node)
            return
        if not self._is_published_here(stream):  # it ended while the claim was made
            await self.locator.withdraw(stream, holder)
            return
        self.owners[stream] = holder
        await self.locator.send(ClusterEvent(kind=PUBLISHED, sender=self.node_id, stream=stream, owner=holder))

    def unpublished(self, stream: str) -> None:
        owner = self.owners.get(stream)
        if owner is not None:
            self._spawn(self._withdraw(stream, owner, announce=True))

    ended = unpublished

    async def _withdraw(self, stream: str, owner: Owner, announce: bool) -> None:
        if self.owners.get(stream) is owner:
            del self.owners[stream]
        await self.locator.withdraw(stream, owner)
        if announce:
            await self.locator.send(ClusterEvent(kind=UNPUBLISHED, sender=self.node_id, stream=stream, owner=owner))

    # ----- kick ------------------------------------------------------------------------------------

    async def kick(self, stream: str, reason: str) -> bool:
        """Send the kick to every node. True when some node publishes the stream."""
        await self.locator.send(ClusterEvent(kind=KICK, sender=self.node_id, stream=stream, reason=reason))
        return await self.locator.lookup(stream) is not None or stream in self.owners

    def on_event(self, message: ClusterEvent) -> None:
        if message.kind == KICK and message.stream and self._is_published_here(message.stream):
            if self._kick_here(message.stream, message.reason or "kicked"):
                event(log, "cluster_kick", stream=message.stream, sender=message.sender, reason=message.reason)

    # ----- tasks -------------------------------------------------------------------------------------

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait for news and withdrawals in flight (at shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
