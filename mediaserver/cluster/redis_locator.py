"""RedisLocator: the StreamLocator over Redis (6.2 commands only). The one module that imports redis.

Keys with a TTL are the truth, pub/sub is the news:
- `ms:stream:{app}/{name}` holds the owner's JSON, set with `SET NX EX ttl` (one publisher per stream in
  the cluster), extended every ttl/3 while the stream is live, and removed with a compare-and-delete (a
  Lua script, so a node never deletes the claim a successor made after its own lapsed). A node that dies
  stops refreshing; its claims are gone within `ttl`.
- `ms:node:{id}` holds the node's heartbeat record (role, URLs, version, load), set with EX ttl.
- The channel `ms:streams` carries ClusterEvents. Delivery is at most once, so watchers treat it as a
  hint and look keys up when in doubt.

When Redis goes away every call answers from what this node knows (claims it made are kept and made good
when Redis returns, lookups find nothing, news is dropped), one warning is logged, and a background task
reconnects with backoff; nothing raises to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..log import event
from .locator import ClusterEvent, EventCallback, LocatorError, NodeInfo, Owner

log = logging.getLogger(__name__)

STREAM_PREFIX = "ms:stream:"
NODE_PREFIX = "ms:node:"
CHANNEL = "ms:streams"

# Extend the claim if it is still ours; take it again if it lapsed meanwhile (Redis was away); else 0.
_REFRESH = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end
return 0
"""
# Delete only our own claim.
_WITHDRAW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 5.0)
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
    ) -> None:
        self.url = url
        self.ttl = max(1, int(round(ttl)))
        self._node = node
        self.node_id = node().id
        self._wall = wall_clock
        self._client = aioredis.from_url(
            url, socket_timeout=op_timeout, socket_connect_timeout=op_timeout, retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._refresh_script = self._client.register_script(_REFRESH)
        self._withdraw_script = self._client.register_script(_WITHDRAW)
        self._held: dict[str, Owner] = {}
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
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.up:
            for stream, owner in list(self._held.items()):
                await self.withdraw(stream, owner)
            await self._call(self._client.delete(NODE_PREFIX + self.node_id))
            await self.send(ClusterEvent(kind="node_down", sender=self.node_id, reason="shutdown"))
        with contextlib.suppress(Exception):
            await self._client.aclose()

    # ----- StreamLocator -----------------------------------------------------------------------

    async def announce(self, stream: str, owner: Owner) -> Owner:
        self._held[stream] = owner
        if not self.up:
            return owner  # claimed for real when Redis returns (the refresh re-takes lapsed claims)
        key = STREAM_PREFIX + stream
        for _ in range(3):
            ok = await self._call(self._client.set(key, owner.to_json(), nx=True, ex=self.ttl))
            if ok is _AWAY or ok:
                return owner  # taken, or Redis went away (kept in _held)
            current = await self._call(self._client.get(key))
            if current is _AWAY:
                return owner
            if current is None:
                continue  # it lapsed between SET and GET: try again
            try:
                holder = Owner.from_json(current)
            except LocatorError as err:
                event(log, "cluster_bad_claim", logging.WARNING, stream=stream, error=str(err))
                holder = None
            if holder is None:
                await self._call(self._client.set(key, owner.to_json(), ex=self.ttl))
                return owner
            if holder.node == owner.node:
                self._held[stream] = holder  # this node's own claim (a publisher replacing its stale self)
                return holder
            self._held.pop(stream, None)
            return holder
        self._held.pop(stream, None)
        return owner

    async def refresh(self) -> None:
        if not self._held or not self.up:
            return
        items = list(self._held.items())
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for stream, owner in items:
                    await self._refresh_script(keys=[STREAM_PREFIX + stream], args=[owner.to_json(), self.ttl],
                                               client=pipe)
                self.ops += len(items)
                results = await pipe.execute()
        except (RedisError, OSError) as err:
            self._lost(err)
            return
        for (stream, owner), kept in zip(items, results):
            if not kept and self._held.get(stream) is owner:
                event(log, "cluster_claim_lost", logging.WARNING, stream=stream,
                      hint="another node claimed the stream while this one could not refresh its claim")
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
            return Owner.from_json(current)
        except LocatorError as err:
            event(log, "cluster_bad_claim", logging.WARNING, stream=stream, error=str(err))
            return None

    def watch(self, callback: EventCallback) -> None:
        self._watchers.append(callback)

    async def send(self, message: ClusterEvent) -> None:
        if self.up:
            await self._call(self._client.publish(CHANNEL, message.to_json()))

    async def nodes(self) -> list[NodeInfo]:
        if not self.up:
            return [self._node()]
        try:
            keys = [k async for k in self._client.scan_iter(match=NODE_PREFIX + "*", count=500)]
            self.ops += 1 + len(keys) // 500
            values = await self._client.mget(keys) if keys else []
            self.ops += 1
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

    async def claims(self) -> dict[str, Owner]:
        """Every stream claimed in the cluster, with its owner (SCAN, for the admin API's list)."""
        if not self.up:
            return dict(self._held)
        try:
            keys = [k async for k in self._client.scan_iter(match=STREAM_PREFIX + "*", count=500)]
            values = await self._client.mget(keys) if keys else []
            self.ops += 2 + len(keys) // 500
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
        """Every ttl/3: refresh the claims and the heartbeat; while Redis is away, retry with backoff."""
        period = self.ttl / 3
        attempt = 0
        while not self._closed:
            if self.up:
                await self.refresh()
                await self._heartbeat()
                await asyncio.sleep(period)
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
        await self.refresh()  # claims made while away are made good (or found lost)
        await self._heartbeat()
        await self.send(ClusterEvent(kind="node_up", sender=self.node_id))

    async def _heartbeat(self) -> None:
        info = self._node()
        await self._call(self._client.set(NODE_PREFIX + self.node_id, info.to_json(), ex=self.ttl))

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

    async def _call(self, awaitable):
        """Await one Redis command; _AWAY (and the node marked as cut off) when Redis is away."""
        self.ops += 1
        try:
            return await awaitable
        except (RedisError, OSError) as err:
            self._lost(err)
            return _AWAY

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
