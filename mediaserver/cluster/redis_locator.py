"""RedisLocator: the StreamLocator over Redis (6.2 commands only). The one module that imports redis.

Keys with a TTL are the truth, pub/sub is the news:
- `ms:node:{id}` holds the node's heartbeat record (role, URLs, version, load). It lives `node_ttl`
  (1.5 s by default) and is kept alive every node_ttl/3 with a PEXPIRE; the record itself is rewritten
  every ttl/3 (`record_every`: every second on edges, whose loads viewers are balanced on). A node whose
  heartbeat lapsed is dead for the cluster.
- `ms:stream:{app}/{name}` holds the owner's JSON, set with `SET NX EX ttl` (one publisher per stream in
  the cluster), extended every ttl/3 while the stream is live, and removed with a compare-and-delete (a
  Lua script, so a node never deletes the claim a successor made after its own lapsed). A claim counts
  only while its owner's heartbeat is current: another node's `announce` takes over the claim of a dead
  node at once (compare-and-swap, in one script with the heartbeat check), and `lookup` does not name a
  dead owner. So a crashed origin's streams move within `node_ttl`, while each claim costs one refresh per
  ttl/3 whatever the heartbeat rate. Claims of a dead node that nobody takes lapse within `ttl`.
- The channel `ms:streams` carries ClusterEvents. Delivery is at most once, so watchers treat it as a
  hint and look keys up when in doubt.

A claim is recorded (and refreshed) only once `announce` has its answer; an `announce` cancelled while it
waits for Redis (the publisher hung up) withdraws whatever it may have written, so a name is never left
claimed by nobody (issue 9, defect 10).

When Redis goes away every call answers from what this node knows (claims it made are kept and made good
when Redis returns, lookups find nothing, news is dropped), one warning is logged, and a background task
reconnects with backoff; nothing raises to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError, RedisError

from ..log import event
from .locator import ClusterEvent, EventCallback, LocatorError, NodeInfo, Owner

log = logging.getLogger(__name__)

STREAM_PREFIX = "ms:stream:"
NODE_PREFIX = "ms:node:"
CHANNEL = "ms:streams"

# For each claim KEYS[i] (value ARGV[i + 1]): extend it if it is still ours; take it again if it lapsed
# meanwhile (Redis was away); else 0. One call for many claims: a stream costs its GET and EXPIRE only.
_REFRESH = """
local kept = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur == ARGV[i + 1] then redis.call('EXPIRE', key, ARGV[1]) kept[i] = 1
  elseif not cur then redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1]) kept[i] = 1
  else kept[i] = 0 end
end
return kept
"""
_REFRESH_BATCH = 500
"""Claims per refresh call (Redis runs a script without serving anyone else)."""
# Delete only our own claim.
_WITHDRAW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Take over the claim ARGV[1] (still unchanged) when its node's heartbeat KEYS[2] has lapsed: 1 taken,
# -1 its node is alive, 0 the claim changed meanwhile.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 5.0)
_ABANDON_RECHECK_S = 1.0
"""A cancelled claim is withdrawn at once and again after this long: the cancelled SET may reach Redis
(on its own, now closed, connection) after the first withdrawal."""
_IN_FLIGHT = 64
"""Redis commands a node has in flight at once; more wait their turn. Past its max_connections redis-py's
pool refuses a command with a ConnectionError, which would read as Redis being away: a burst of lookups
(hundreds of viewers asking for names at once) must queue, never cut the node off the cluster."""
_POOL_SPARE = 4
"""Connections beyond _IN_FLIGHT: the news subscription holds one for good."""
_AWAY = object()
"""What a command answers when Redis could not be reached (None is a nil reply)."""


class RedisLocator:
    """StreamLocator over Redis; `start()` connects and starts the refresh/heartbeat and news tasks."""

    def __init__(
        self,
        url: str,
        node: Callable[[], NodeInfo],
        ttl: float = 15.0,
        wall_clock: Callable[[], float] = time.time,
        op_timeout: float = 2.0,
        node_ttl: float = 1.5,
        record_every: float | None = None,
    ) -> None:
        self.url = url
        self.ttl = max(1, int(round(ttl)))
        self.node_ttl_ms = max(300, int(node_ttl * 1000))
        """Milliseconds a heartbeat lives; kept alive every third of it."""
        self.record_every = record_every if record_every is not None else self.ttl / 3
        """Seconds between rewrites of the heartbeat record (its load figures); in between it is only kept
        alive. Edges that balance viewers rewrite it every second, so others decide on fresh figures."""
        self._node = node
        self.node_id = node().id
        self._wall = wall_clock
        self._client = aioredis.from_url(
            url, socket_timeout=op_timeout, socket_connect_timeout=op_timeout, retry=Retry(NoBackoff(), 0),
            decode_responses=True, max_connections=_IN_FLIGHT + _POOL_SPARE,
        )
        self._slots = asyncio.Semaphore(_IN_FLIGHT)
        self._refresh_script = self._client.register_script(_REFRESH)
        self._withdraw_script = self._client.register_script(_WITHDRAW)
        self._take_over_script = self._client.register_script(_TAKE_OVER)
        self._held: dict[str, Owner] = {}
        self._abandoning: set[asyncio.Task[None]] = set()
        self._watchers: list[EventCallback] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.up = False
        self._ever_up = False
        self.ops = 0
        """Redis commands sent (for the bench's operations per stream per minute)."""

    # ----- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (without failing when Redis is away: the node then serves locally and keeps trying)."""
        await self._try_connect()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._maintain()), loop.create_task(self._listen())]

    async def close(self) -> None:
        """Withdraw this node's claims and heartbeat, say goodbye, stop the tasks."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._abandoning):
            task.cancel()
        if self.up:
            for stream, owner in list(self._held.items()):
                await self.withdraw(stream, owner)
            await self._call(self._client.delete(NODE_PREFIX + self.node_id))
            await self.send(ClusterEvent(kind="node_down", sender=self.node_id, reason="shutdown"))
        with contextlib.suppress(Exception):
            await self._client.aclose()

    # ----- StreamLocator -----------------------------------------------------------------------

    async def announce(self, stream: str, owner: Owner) -> Owner:
        try:
            return await self._announce(stream, owner)
        except asyncio.CancelledError:
            self._abandon(stream, owner)
            raise

    async def _announce(self, stream: str, owner: Owner) -> Owner:
        if not self.up:
            self._held[stream] = owner  # claimed for real when Redis returns (the refresh re-takes lapsed claims)
            return owner
        key = STREAM_PREFIX + stream
        mine = owner.to_json()
        for _ in range(3):
            ok = await self._call(self._client.set(key, mine, nx=True, ex=self.ttl))
            if ok is _AWAY or ok:
                self._held[stream] = owner  # taken, or Redis went away (made good when it returns)
                return owner
            current = await self._call(self._client.get(key))
            if current is _AWAY:
                self._held[stream] = owner
                return owner
            if current is None:
                continue  # it lapsed between SET and GET: try again
            try:
                holder: Owner | None = Owner.from_json(current)
            except LocatorError as err:
                event(log, "cluster_bad_claim", logging.WARNING, stream=stream, error=str(err))
                holder = None
            if holder is not None and holder.node == owner.node:
                self._held[stream] = holder  # this node's own claim (a publisher replacing its stale self)
                return holder
            heartbeat = NODE_PREFIX + (holder.node if holder is not None else "")
            taken = await self._call(self._take_over_script(keys=[key, heartbeat], args=[current, mine, self.ttl]))
            if taken is _AWAY or taken == 1:
                if taken == 1:
                    event(log, "cluster_claim_taken_over", stream=stream,
                          previous=holder.node if holder is not None else "unreadable")
                self._held[stream] = owner
                return owner
            if taken == -1 and holder is not None:
                return holder  # published on a live node
        self._held[stream] = owner  # the key kept changing under us: let the refresh settle it
        return owner

    def _abandon(self, stream: str, owner: Owner) -> None:
        """`announce` was cancelled: forget the claim and delete it if it reached Redis."""
        if self._held.get(stream) == owner:
            del self._held[stream]
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._withdraw_abandoned(stream, owner))
        self._abandoning.add(task)
        task.add_done_callback(self._abandoning.discard)

    async def _withdraw_abandoned(self, stream: str, owner: Owner) -> None:
        for delay in (0.0, _ABANDON_RECHECK_S):
            await asyncio.sleep(delay)
            if self._held.get(stream) == owner:
                return  # announced again meanwhile
            if self.up:
                await self._call(self._withdraw_script(keys=[STREAM_PREFIX + stream], args=[owner.to_json()]))
        event(log, "cluster_claim_abandoned", stream=stream, hint="the publisher left while its claim was being made")

    async def refresh(self) -> None:
        if not self._held or not self.up:
            return
        items = list(self._held.items())
        for i in range(0, len(items), _REFRESH_BATCH):
            batch = items[i:i + _REFRESH_BATCH]
            results = await self._call(self._refresh_script(
                keys=[STREAM_PREFIX + stream for stream, _ in batch],
                args=[self.ttl, *(owner.to_json() for _, owner in batch)]))
            if results is _AWAY:
                return
            for (stream, owner), kept in zip(batch, results):
                if not kept and self._held.get(stream) is owner:
                    event(log, "cluster_claim_lost", logging.WARNING, stream=stream,
                          hint="another node took the stream over: this node's heartbeat or Redis was away")
                    self._held.pop(stream, None)

    async def withdraw(self, stream: str, owner: Owner) -> None:
        if self._held.get(stream) == owner:
            del self._held[stream]
        if self.up:
            await self._call(self._withdraw_script(keys=[STREAM_PREFIX + stream], args=[owner.to_json()]))

    async def lookup(self, stream: str) -> Owner | None:
        if not self.up:
            return None
        current = await self._call(self._client.get(STREAM_PREFIX + stream))
        if current is None or current is _AWAY:
            return None
        try:
            owner = Owner.from_json(current)
        except LocatorError as err:
            event(log, "cluster_bad_claim", logging.WARNING, stream=stream, error=str(err))
            return None
        if owner.node != self.node_id and not await self._alive(owner.node):
            return None  # its node died: nobody publishes it until another origin takes the claim
        return owner

    async def _alive(self, node_id: str) -> bool:
        """The node's heartbeat is current (when Redis cannot say, it is taken as alive)."""
        found = await self._call(self._client.exists(NODE_PREFIX + node_id))
        return found is _AWAY or bool(found)

    def watch(self, callback: EventCallback) -> None:
        self._watchers.append(callback)

    async def send(self, message: ClusterEvent) -> None:
        if self.up:
            await self._call(self._client.publish(CHANNEL, message.to_json()))

    async def nodes(self) -> list[NodeInfo]:
        if not self.up:
            return [self._node()]
        try:
            async with self._slots:
                keys = [k async for k in self._client.scan_iter(match=NODE_PREFIX + "*", count=500)]
                self.ops += 1 + len(keys) // 500
                values = await self._client.mget(keys) if keys else []
                self.ops += 1
        except MaxConnectionsError:
            return [self._node()]
        except (RedisError, OSError) as err:
            self._lost(err)
            return [self._node()]
        found = []
        for value in values:
            if value is None:
                continue
            try:
                found.append(NodeInfo.from_json(value))
            except LocatorError as err:
                event(log, "cluster_bad_node", logging.WARNING, error=str(err))
        return sorted(found, key=lambda n: n.id)

    async def node(self, node_id: str) -> NodeInfo | None:
        """One node's heartbeat record (one GET); None when it lapsed, or when Redis is away."""
        if node_id == self.node_id:
            return self._node()
        if not self.up:
            return None
        value = await self._call(self._client.get(NODE_PREFIX + node_id))
        if value is _AWAY or value is None:
            return None
        try:
            return NodeInfo.from_json(value)
        except LocatorError as err:
            event(log, "cluster_bad_node", logging.WARNING, error=str(err))
            return None

    async def claims(self) -> dict[str, Owner]:
        """Every stream claimed in the cluster, with its owner (SCAN, for the admin API's list)."""
        if not self.up:
            return dict(self._held)
        try:
            async with self._slots:
                keys = [k async for k in self._client.scan_iter(match=STREAM_PREFIX + "*", count=500)]
                values = await self._client.mget(keys) if keys else []
                self.ops += 2 + len(keys) // 500
        except MaxConnectionsError:
            return dict(self._held)
        except (RedisError, OSError) as err:
            self._lost(err)
            return dict(self._held)
        found: dict[str, Owner] = {}
        for key, value in zip(keys, values):
            if value is not None:
                with contextlib.suppress(LocatorError):
                    found[key.removeprefix(STREAM_PREFIX)] = Owner.from_json(value)
        return found

    @property
    def held(self) -> dict[str, Owner]:
        return dict(self._held)

    # ----- background ----------------------------------------------------------------------------

    async def _maintain(self) -> None:
        """Every node_ttl/3 keep the heartbeat alive (or rewrite its record, every `record_every`); every
        ttl/3 also refresh the claims. While Redis is away, retry with backoff."""
        loop = asyncio.get_running_loop()
        beat = self.node_ttl_ms / 3000
        attempt = 0
        record_due = loop.time() + self.record_every  # start() wrote the record and refreshed
        claims_due = loop.time() + self.ttl / 3
        while not self._closed:
            if self.up:
                await asyncio.sleep(beat)
                if loop.time() >= record_due:
                    record_due = loop.time() + self.record_every
                    await self._heartbeat()
                else:
                    await self._keep_alive()
                if loop.time() >= claims_due:
                    claims_due = loop.time() + self.ttl / 3
                    await self.refresh()
                attempt = 0
            else:
                await asyncio.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
                attempt += 1
                await self._try_connect()

    async def _try_connect(self) -> None:
        try:
            await self._client.ping()
            self.ops += 1
        except (RedisError, OSError) as err:
            if not self._ever_up and not self._closed and self.up is False and not getattr(self, "_warned", False):
                self._warned = True
                event(log, "redis_unavailable", logging.WARNING, url=_safe_url(self.url), error=_short(err),
                      hint="serving local streams only; reconnecting with backoff")
            return
        was_ever = self._ever_up
        self.up = self._ever_up = True
        self._warned = False
        event(log, "redis_reconnected" if was_ever else "redis_connected", url=_safe_url(self.url),
              claims=len(self._held))
        await self._heartbeat()  # first: a claim made good below must not look like a dead node's
        await self.refresh()  # claims made while away are made good (or found lost)
        await self.send(ClusterEvent(kind="node_up", sender=self.node_id))

    async def _heartbeat(self) -> None:
        info = self._node()
        await self._call(self._client.set(NODE_PREFIX + self.node_id, info.to_json(), px=self.node_ttl_ms))

    async def _keep_alive(self) -> None:
        kept = await self._call(self._client.pexpire(NODE_PREFIX + self.node_id, self.node_ttl_ms))
        if kept is not _AWAY and not kept:
            # It lapsed (this loop stalled longer than node_ttl, or Redis lost it): other nodes may have
            # taken our claims meanwhile, which the next refresh reports.
            event(log, "cluster_heartbeat_lapsed", logging.WARNING, node=self.node_id, node_ttl_ms=self.node_ttl_ms,
                  hint="the event loop stalled or Redis lost the key; raise cluster.node_ttl if this repeats")
            await self._heartbeat()

    async def _listen(self) -> None:
        while not self._closed:
            if not self.up:
                await asyncio.sleep(0.2)
                continue
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._deliver(message.get("data"))
            except (RedisError, OSError) as err:
                self._lost(err)
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _deliver(self, data: object) -> None:
        try:
            message = ClusterEvent.from_json(data if isinstance(data, (str, bytes)) else str(data))
        except LocatorError as err:
            event(log, "cluster_bad_message", logging.WARNING, error=str(err))
            return
        if message.sender == self.node_id:
            return
        for callback in list(self._watchers):
            try:
                callback(message)
            except Exception:
                log.exception("cluster event watcher %r failed for %s", callback, message.kind)

    # ----- errors --------------------------------------------------------------------------------

    async def _call(self, awaitable: Coroutine[Any, Any, Any]):
        """Await one Redis command, in turn (_IN_FLIGHT at once); _AWAY (and the node marked as cut off)
        when Redis is away. A command that waited while Redis went away is not sent."""
        self.ops += 1
        try:
            async with self._slots:
                if not self.up:
                    return _AWAY
                return await awaitable
        except MaxConnectionsError:
            return _AWAY  # the pool, not Redis: this command fails alone (only past _IN_FLIGHT + _POOL_SPARE)
        except (RedisError, OSError) as err:
            self._lost(err)
            return _AWAY
        finally:
            awaitable.close()  # not sent (cancelled while waiting, or Redis away): no "never awaited" warning

    def _lost(self, err: BaseException) -> None:
        if self.up and not self._closed:
            event(log, "redis_unavailable", logging.WARNING, url=_safe_url(self.url), error=_short(err),
                  hint="serving local streams only; reconnecting with backoff")
            self._warned = True
        self.up = False


def _short(err: BaseException) -> str:
    return (str(err) or type(err).__name__).splitlines()[0][:200]


def _safe_url(url: str) -> str:
    """The URL without a password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
