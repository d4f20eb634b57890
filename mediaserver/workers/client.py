"""LocalLocator: a worker's StreamLocator over the supervisor's stream book (service.py).

Requests are answered in order on one connection; each waits at most `op_timeout`. When an answer does
not come, the call answers as RedisLocator does while Redis is away (a claim is kept, a lookup finds
nothing). The worker's record (its load, the streams it pulls) is rewritten every `record_every` s.
When the connection drops the supervisor is gone (or dropped this worker): `on_lost` is called, and the
worker stops, since its claims are void and siblings can no longer find its streams. Right after its
hello (before the worker listens) it copies the node's blocks from the book (`on_blocks`), and from then on
it takes each block its siblings keep or lift there: a restarted worker's publish gate refuses what its
siblings refuse.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..cluster.locator import ClusterEvent, EventCallback, LocatorError, NodeInfo, Owner
from ..log import event
from .protocol import MAX_LINE, BookBlock, ProtocolError, decode, encode

log = logging.getLogger("mediaserver.workers")

_AWAY = object()


class LocalLocator:
    def __init__(self, path: str, node: Callable[[], NodeInfo], worker: int, on_lost: Callable[[], None],
                 op_timeout: float = 2.0, record_every: float = 1.0,
                 on_blocks: Callable[[list[BookBlock]], None] = lambda blocks: None,
                 on_unblock: Callable[[str, str], None] = lambda app, name: None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._node = node
        self.node_id = node().id
        self.worker = worker
        self.on_lost = on_lost
        self.op_timeout = op_timeout
        self.record_every = record_every
        self.on_blocks = on_blocks
        """Called at start with the node's blocks in force (the publish gate's policy takes them), and with each
        block a sibling keeps in the book later."""
        self.on_unblock = on_unblock
        """Called with each block a sibling lifts in the book."""
        self.wall_clock = wall_clock
        self.up = False
        self.ops = 0
        self._held: dict[str, Owner] = {}
        self._watchers: list[EventCallback] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._early: list[dict[str, Any]] | None = []
        """Blocks and lifts passed on by the book before this worker's copy of its blocks was applied."""

    # ----- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(self.path, limit=MAX_LINE + 1)
        self.up = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read(reader))]
        if await self._call("hello", node=self.node_id, worker=self.worker) is _AWAY:
            raise ConnectionError(f"the supervisor's stream book at {self.path} did not answer")
        await self._record()
        self.on_blocks(await self.blocks())
        early, self._early = self._early, None
        for message in early or ():  # in the book's order; one older than the copy changes nothing
            self._apply_block(message)
        self._tasks.append(loop.create_task(self._keep_recording()))

    async def ready(self) -> None:
        """Tell the supervisor this worker listens on the public ports."""
        await self._call("ready")

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()  # the book drops this worker's claims and tells the others
        self.up = False

    # ----- StreamLocator -----------------------------------------------------------------------

    async def announce(self, stream: str, owner: Owner) -> Owner:
        raw = await self._call("announce", stream=stream, owner=asdict(owner))
        holder = _owner(raw) if raw is not _AWAY else owner
        if holder is None:
            holder = owner
        if holder.node == self.node_id:
            self._held[stream] = holder
        return holder

    async def refresh(self) -> None:
        return None  # claims live as long as this connection

    async def withdraw(self, stream: str, owner: Owner) -> None:
        if self._held.get(stream) == owner:
            del self._held[stream]
        await self._call("withdraw", stream=stream, owner=asdict(owner))

    async def lookup(self, stream: str) -> Owner | None:
        raw = await self._call("lookup", stream=stream)
        return _owner(raw) if raw is not _AWAY else None

    def watch(self, callback: EventCallback) -> None:
        self._watchers.append(callback)

    async def send(self, message: ClusterEvent) -> None:
        await self._call("send", event=message.to_json())

    async def nodes(self) -> list[NodeInfo]:
        raw = await self._call("nodes")
        if not isinstance(raw, list):
            return [self._node()]
        found = [n for n in (_node(r) for r in raw) if n is not None]
        return sorted(found, key=lambda n: n.id)

    async def node(self, node_id: str) -> NodeInfo | None:
        if node_id == self.node_id:
            return self._node()
        raw = await self._call("node", node=node_id)
        return _node(raw) if raw is not _AWAY and raw is not None else None

    async def claims(self) -> dict[str, Owner]:
        raw = await self._call("claims")
        if not isinstance(raw, dict):
            return dict(self._held)
        return {str(s): o for s, o in ((s, _owner(r)) for s, r in raw.items()) if o is not None}

    # ----- the node's blocks and restarts (kept by the supervisor) -------------------------------

    async def keep_block(self, block: BookBlock) -> None:
        await self._call("block", block=asdict(block), now=self.wall_clock())

    async def lift_block(self, app: str, name: str) -> None:
        await self._call("unblock", app=app, name=name)

    async def blocks(self) -> list[BookBlock]:
        raw = await self._call("blocks", now=self.wall_clock())
        if not isinstance(raw, list):
            return []
        found = (_block(r) for r in raw)
        return [b for b in found if b is not None]

    async def restarts(self) -> dict[str, int]:
        """Worker index -> times the supervisor started it again; {} when the book does not answer."""
        raw = await self._call("restarts")
        return {str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    @property
    def held(self) -> dict[str, Owner]:
        return dict(self._held)

    # ----- wire --------------------------------------------------------------------------------

    async def _call(self, op: str, **args: Any) -> Any:
        writer = self._writer
        if writer is None or not self.up:
            return _AWAY
        number = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        self.ops += 1
        try:
            writer.write(encode({"id": number, "op": op, **args}))
            return await asyncio.wait_for(future, self.op_timeout)
        except (asyncio.TimeoutError, ConnectionError, ProtocolError) as err:
            event(log, "worker_book_unanswered", logging.WARNING, op=op, error=str(err)[:200] or type(err).__name__)
            return _AWAY
        finally:
            self._waiting.pop(number, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                message = decode(line)
                if "event" in message:
                    self._deliver(message["event"])
                    continue
                if "block" in message or "unblock" in message:
                    self._apply_block(message)
                    continue
                future = self._waiting.get(message.get("id", -1))
                if future is None or future.done():
                    continue
                if "error" in message:
                    future.set_exception(ProtocolError(str(message["error"])))
                else:
                    future.set_result(message.get("ok"))
        except (ProtocolError, ValueError, ConnectionError) as err:
            event(log, "worker_book_error", logging.WARNING, error=str(err)[:200])
        finally:
            self.up = False
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("the stream book connection closed"))
            if not self._closed:
                event(log, "worker_supervisor_lost", logging.ERROR, node=self.node_id,
                      hint="the supervisor is gone or dropped this worker: stopping")
                self.on_lost()

    def _apply_block(self, message: dict[str, Any]) -> None:
        """A sibling kept (or lifted) a block in the book: this worker's publish gate takes it too. Before the
        copy of the book's blocks is applied, kept for after it (the copy's reply and a lift that came after
        it may arrive in one read, and the lift must not be undone by the copy)."""
        if self._early is not None:
            self._early.append(message)
            return
        if "block" in message:
            raw = message["block"].get("block") if isinstance(message["block"], dict) else None
            block = _block(raw) if raw is not None else None
            if block is not None:
                self.on_blocks([block])
            return
        raw = message["unblock"]
        if isinstance(raw, dict) and isinstance(raw.get("app"), str) and isinstance(raw.get("name"), str):
            self.on_unblock(raw["app"], raw["name"])

    def _deliver(self, text: object) -> None:
        try:
            message = ClusterEvent.from_json(text if isinstance(text, str) else "")
        except LocatorError as err:
            event(log, "cluster_bad_message", logging.WARNING, error=str(err))
            return
        for callback in list(self._watchers):
            try:
                callback(message)
            except Exception:
                log.exception("cluster event watcher %r failed for %s", callback, message.kind)

    async def _record(self) -> None:
        await self._call("record", node=asdict(self._node()))

    async def _keep_recording(self) -> None:
        while self.up:
            await asyncio.sleep(self.record_every)
            await self._record()


def _owner(raw: Any) -> Owner | None:
    if raw is None:
        return None
    try:
        return Owner.from_json(json.dumps(raw))
    except LocatorError:
        return None


def _block(raw: Any) -> BookBlock | None:
    try:
        return BookBlock(str(raw["app"]), str(raw["name"]), float(raw["until"]), str(raw.get("reason", "")))
    except (KeyError, TypeError, ValueError):
        return None


def _node(raw: Any) -> NodeInfo | None:
    try:
        return NodeInfo.from_json(json.dumps(raw))
    except LocatorError:
        return None
