"""Handing an accepted HTTP connection to a sibling worker: its socket and the bytes already read from it.

With `[server] workers = N` the kernel spreads a player's connections over the workers, but a stream's HLS,
LL-HLS and DASH packager runs on one worker only, its publisher's. A request reaching another worker used to
be proxied to that one, request by request (a second HTTP exchange and a copy of every segment, costing
the machine several times what one worker spends on the same viewer). Instead, the worker that accepted the
connection sends the socket itself to the packager's worker over a Unix datagram socket (SCM_RIGHTS), with
the request head it read, and forgets it; the receiver adopts the socket as if it had accepted it (the
client's address is the socket's peer) and answers that request and the connection's next ones.

Each worker binds `handoff-INDEX.sock` next to the supervisor's stream book (a directory only this user
reaches). A datagram carries one descriptor and the bytes read so far (at most MAX_BYTES); a full or absent
receiver makes `send` answer False at once, and the request goes the proxied way.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily

from ..log import event

log = logging.getLogger("mediaserver.workers")

MAX_BYTES = 16384
"""The most bytes of a connection a hand-off carries (a request head the lane parses is at most 8 kB)."""
MAX_PER_WAKE = 64
"""Datagrams taken per wake-up of the receiver, so that a burst cannot hold the event loop."""
_FD_SIZE = array.array("i").itemsize


def inbox_path(book_path: str, index: int) -> str:
    """Where worker `index` takes connections handed to it: beside the supervisor's book socket."""
    return os.path.join(os.path.dirname(book_path), f"handoff-{index}.sock")


class Outbox:
    """Sends connections to siblings. One unbound, non-blocking datagram socket for all of them."""

    def __init__(self, book_path: str) -> None:
        self._book_path = book_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self.sent = 0
        self.failed = 0

    def send(self, index: int, fd: int, data: bytes) -> bool:
        """Hand the connection on descriptor `fd` (not closed here) and the bytes `data` read from it to worker
        `index`; False when that worker cannot take it now (not listening, its queue full)."""
        if len(data) > MAX_BYTES:
            return False
        try:
            self._sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))], 0,
                               inbox_path(self._book_path, index))
        except OSError:
            self.failed += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()


class Inbox:
    """Takes connections siblings hand over, and gives each to `adopt` (socket, bytes already read)."""

    def __init__(self, book_path: str, index: int, adopt: Callable[[socket.socket, bytes], None]) -> None:
        self.path = inbox_path(book_path, index)
        self._adopt = adopt
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.taken = 0
        self.refused = 0

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a dead worker's, before this one was started again
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self.path)
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._drain)

    def close(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _drain(self) -> None:
        sock = self._sock
        for _ in range(MAX_PER_WAKE):
            if sock is None:
                return
            try:
                data, ancillary, flags, _ = sock.recvmsg(MAX_BYTES + 1, socket.CMSG_SPACE(_FD_SIZE))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                event(log, "worker_handoff_error", logging.WARNING, error=str(err)[:200])
                return
            fds = _descriptors(ancillary)
            whole = len(fds) == 1 and len(data) <= MAX_BYTES and not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)
            conn = _stream_socket(fds[0]) if whole else None  # closes a descriptor that is no TCP socket
            if conn is None:
                for fd in fds if not whole else ():
                    os.close(fd)
                self.refused += 1
                continue
            self.taken += 1
            self._adopt(conn, data)


def _descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[:len(payload) - len(payload) % _FD_SIZE])
            fds.extend(got)
    return fds


def _stream_socket(fd: int) -> socket.socket | None:
    """The TCP socket on `fd`, non-blocking; None (and `fd` closed) for any other kind of descriptor."""
    try:
        conn = socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return None
    try:
        listening = conn.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 1
    if conn.type != socket.SOCK_STREAM or conn.family not in (socket.AF_INET, socket.AF_INET6) or listening:
        conn.close()
        return None
    conn.setblocking(False)
    return conn



class HandoffCollector:
    """/metrics: connections this worker handed to siblings, took from them, and could not hand over."""

    def __init__(self, outbox: Outbox, inbox: Callable[[], Inbox | None]) -> None:
        self.outbox = outbox
        self.inbox = inbox

    def collect(self):
        handed = CounterMetricFamily("mediaserver_worker_connections_handed", "HTTP connections handed between "
                                     "workers to the one with the stream's packager: out (to a sibling), in (from "
                                     "one), failed (the sibling could not take it; the request was proxied).",
                                     labels=["way"])
        inbox = self.inbox()
        handed.add_metric(["out"], self.outbox.sent)
        handed.add_metric(["in"], inbox.taken if inbox is not None else 0)
        handed.add_metric(["failed"], self.outbox.failed)
        yield handed
