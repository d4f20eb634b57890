"""The supervisor's side of the stream book: a Unix socket server speaking protocol.py to the workers.

Each worker holds one connection. It must say hello within HELLO_TIMEOUT_S; a line that is not the
protocol, or longer than MAX_LINE, closes the connection (the worker then loses its claims, as if it had
died); a worker that neither asks nor records anything for IDLE_TIMEOUT_S is dropped (its record is
rewritten every second). News from one worker is passed to all the others, and so are the blocks it keeps
in the book and lifts (BLOCK_OPS); a worker that does not read
its news (over MAX_BACKLOG unsent bytes) is dropped rather than buffered without bound. When each
worker was last heard from is kept (`heard`) for the supervisor's liveness check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from ..log import event
from .protocol import MAX_LINE, ProtocolError, StreamBook, _name, decode, encode, parse_request

log = logging.getLogger("mediaserver.workers")

HELLO_TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 30.0
MAX_BACKLOG = 16 * MAX_LINE
BLOCK_OPS = ("block", "unblock")
"""Passed on to the other workers as they come, besides being kept: a worker that has said hello but not yet
recorded itself is missed by the sender's forwards, and may have copied the book's blocks already."""


class BookService:
    def __init__(self, path: str, on_ready: Callable[[int], None] = lambda index: None,
                 hello_timeout: float = HELLO_TIMEOUT_S, idle_timeout: float = IDLE_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.book = StreamBook()
        self.on_ready = on_ready
        """Called with a worker's index when it says it is serving (listening on the public ports)."""
        self.hello_timeout = hello_timeout
        self.idle_timeout = idle_timeout
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._server: asyncio.AbstractServer | None = None
        self.clock = clock
        self.heard: dict[int, float] = {}
        """Worker index -> when (clock) its last line came: the supervisor's liveness check reads it."""

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=MAX_LINE + 1)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers.values()):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        node = ""
        try:
            line = await asyncio.wait_for(reader.readline(), self.hello_timeout)
            hello = parse_request(decode(line))
            if hello.op != "hello":
                raise ProtocolError(f"the first request must be hello, not {hello.op}")
            node = _name(hello.args, "node")
            index = hello.args.get("worker")
            if not isinstance(index, int) or isinstance(index, bool):
                raise ProtocolError("hello needs the worker's index")
            old = self._writers.pop(node, None)
            if old is not None:  # a restarted worker whose predecessor's drop was not noticed yet
                old.close()
                self._leave(node)
            self.book.join(node)
            self._writers[node] = writer
            self.heard[index] = self.clock()
            writer.write(encode({"id": hello.id, "ok": None}))
            while True:
                line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
                if not line:
                    return
                self.heard[index] = self.clock()
                request = parse_request(decode(line))
                try:
                    value, news = self.book.handle(node, request)
                except ProtocolError as err:
                    writer.write(encode({"id": request.id, "error": str(err)[:500]}))
                    continue
                writer.write(encode({"id": request.id, "ok": value}))
                if request.op == "ready":
                    self.on_ready(index)
                if news is not None:
                    self._broadcast(node, news.to_json())
                elif request.op in BLOCK_OPS:  # a worker (re)starting now gets it, whatever the sender reached
                    self._broadcast(node, None, {request.op: {k: v for k, v in request.args.items() if k != "op"}})
        except (ProtocolError, ValueError) as err:  # ValueError: a line over the reader's limit
            event(log, "worker_protocol_error", logging.WARNING, node=node or "?", error=str(err)[:200])
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if node and self._writers.get(node) is writer:
                del self._writers[node]
                self._leave(node)
            writer.close()

    def _leave(self, node: str) -> None:
        streams = self.book.leave(node)
        self._broadcast(node, self.book.node_down(node).to_json())
        if streams:
            event(log, "worker_claims_released", node=node, streams=len(streams))

    def _broadcast(self, sender: str, text: str | None, message: dict | None = None) -> None:
        line = encode({"event": text} if message is None else message)
        for node, writer in list(self._writers.items()):
            if node == sender:
                continue
            transport = writer.transport
            if transport.is_closing():
                continue
            if transport.get_write_buffer_size() > MAX_BACKLOG:
                event(log, "worker_news_backlog", logging.WARNING, node=node,
                      hint="the worker does not read its news (event loop stalled?); dropping its connection")
                writer.close()
                continue
            writer.write(line)
