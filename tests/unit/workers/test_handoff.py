"""Handing a public connection to the worker with the stream's packager (workers/handoff.py): the socket and the
bytes read from it cross a Unix datagram socket; what arrives that is not one TCP socket is refused and closed."""

from __future__ import annotations

import array
import asyncio
import os
import socket
import time

import pytest

from mediaserver.cluster.locator import Owner
from mediaserver.workers.handoff import MAX_BYTES, Inbox, Outbox, inbox_path
from mediaserver.wiring.worker import OWNER_TTL_S, WorkerSetup

HEAD = b"GET /live/s/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _tcp_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    """(listener, client, the server's accepted end), on loopback."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    return listener, client, accepted


async def _until(check, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


async def test_a_handed_connection_reaches_the_sibling_with_its_bytes_and_its_client(tmp_path):
    book = str(tmp_path / "book.sock")
    got: list[tuple[socket.socket, bytes]] = []
    inbox = Inbox(book, 1, lambda sock, data: got.append((sock, data)))
    inbox.start()
    outbox = Outbox(book)
    listener, client, accepted = _tcp_pair()
    try:
        assert outbox.send(1, accepted.fileno(), HEAD)
        accepted.close()  # the sender forgets it; the connection lives on in the receiver
        await _until(lambda: got)
        sock, data = got[0]
        assert data == HEAD
        assert sock.getpeername() == client.getsockname()  # the viewer's own address, no proxy header needed
        assert not sock.getblocking()
        sock.sendall(b"answered by the sibling")
        client.settimeout(2)
        assert client.recv(100) == b"answered by the sibling"
        sock.close()
        assert client.recv(100) == b""  # closed once, by its last holder
        assert (outbox.sent, inbox.taken, inbox.refused) == (1, 1, 0)
    finally:
        for s in (listener, client, outbox, inbox):
            s.close()
    assert not os.path.exists(inbox_path(book, 1))


async def test_what_is_not_one_tcp_socket_is_refused_closed_and_the_inbox_goes_on(tmp_path):
    book = str(tmp_path / "book.sock")
    got: list[tuple[socket.socket, bytes]] = []
    inbox = Inbox(book, 0, lambda sock, data: got.append((sock, data)))
    inbox.start()
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener, client, accepted = _tcp_pair()
    read_end, write_end = os.pipe()
    unix_a, unix_b = socket.socketpair()
    before = _open_fds()

    def rights(*fds: int) -> list:
        return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]

    try:
        raw.sendto(HEAD, inbox.path)  # no descriptor
        raw.sendmsg([HEAD], rights(read_end), 0, inbox.path)  # a pipe
        raw.sendmsg([HEAD], rights(unix_a.fileno()), 0, inbox.path)  # a Unix socket, not a viewer's
        raw.sendmsg([HEAD], rights(accepted.fileno(), write_end), 0, inbox.path)  # two at once
        raw.sendmsg([b"G" * (MAX_BYTES + 100)], rights(accepted.fileno()), 0, inbox.path)  # too long: truncated
        raw.sendmsg([HEAD], rights(listener.fileno()), 0, inbox.path)  # a listening socket, no viewer's
        await _until(lambda: inbox.refused == 6)
        assert got == []
        assert _open_fds() == before, "every descriptor received was closed"
        assert Outbox(book).send(0, accepted.fileno(), HEAD)  # and a good one is still taken
        await _until(lambda: got)
        assert got[0][1] == HEAD and got[0][0].getpeername() == client.getsockname()
        got[0][0].close()
    finally:
        for s in (raw, listener, client, accepted, unix_a, unix_b, inbox):
            s.close()
        os.close(read_end)
        os.close(write_end)


def test_a_sibling_not_listening_or_not_keeping_up_takes_nothing(tmp_path):
    book = str(tmp_path / "book.sock")
    outbox = Outbox(book)
    listener, client, accepted = _tcp_pair()
    inbox = Inbox(book, 3, lambda sock, data: None)
    try:
        assert not outbox.send(2, accepted.fileno(), HEAD)  # nobody bound: refused at once
        assert not outbox.send(3, accepted.fileno(), b"x" * (MAX_BYTES + 1))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # bound but never read: its queue fills
        sock.bind(inbox.path)
        results = [outbox.send(3, accepted.fileno(), HEAD) for _ in range(2000)]
        assert results[0] and not results[-1], "a full queue refuses without blocking"
        assert outbox.failed >= 2
        sock.close()
    finally:
        for s in (outbox, listener, client, accepted):
            s.close()


@pytest.fixture
def setup():
    made = WorkerSetup(0, "/nonexistent/book.sock", "s" * 24)
    yield made
    made.outbox.close()
    made._private.close()


def _owned(setup: WorkerSetup, stream: str, node: str, age_s: float = 0.0) -> None:
    setup._owners[stream] = (Owner(node=node, http="http://127.0.0.1:1", since=0.0, claim="c"),
                             time.monotonic() - age_s)


def test_only_segmented_requests_of_a_stream_a_sibling_owns_are_handed(setup):
    _owned(setup, "live/s", "worker1")
    _owned(setup, "live/mine", "worker0")
    _owned(setup, "live/old", "worker1", age_s=OWNER_TTL_S + 1)
    for head in (b"GET /live/s/index.m3u8 HTTP/1.1\r\n\r\n", b"HEAD /live/s/3.ts?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
                 b"GET /live/s/manifest.mpd HTTP/1.1\r\n\r\n"):
        assert setup.hand_off_target(head) == 1, head
        assert setup.hand_off_target(head) == 1, head  # remembered
    for head in (
        b"GET /live/mine/index.m3u8 HTTP/1.1\r\n\r\n",  # published here
        b"GET /live/old/index.m3u8 HTTP/1.1\r\n\r\n",  # the book's answer is too old: ask again
        b"GET /live/other/index.m3u8 HTTP/1.1\r\n\r\n",  # never asked: the proxied way asks the book
        b"GET /live/s.flv HTTP/1.1\r\n\r\n",  # FLV viewers are served where they are
        b"POST /live/s/index.m3u8 HTTP/1.1\r\n\r\n",
        b"GET /live/s/index.m3u8 HTTP/1.0\r\n\r\n",
        b"GET /live/%73/index.m3u8 HTTP/1.1\r\n\r\n",
        b"GET /live/s/index.m3u8 HTTP/1.1\r\nHost: h\r\n",  # not a whole head yet
        b"GET /live/s/index.m3u8 HTTP/1.1\r\n" + b"X: " + b"y" * 9000 + b"\r\n\r\n",
        b"GET /api/v1/streams/live/s HTTP/1.1\r\n\r\n",
        b"GET  /live/s/index.m3u8 HTTP/1.1\r\n\r\n",
        b"\xff\xfe /live/s/index.m3u8 HTTP/1.1\r\n\r\n",
    ):
        assert setup.hand_off_target(head) is None, head


def test_an_owner_index_that_is_no_worker_is_not_handed(setup):
    _owned(setup, "live/s", "edge-a")
    assert setup.hand_off_target(HEAD) is None


def test_the_heads_remembered_stay_bounded(setup):
    from mediaserver.wiring.worker import MAX_HEADS

    _owned(setup, "live/s", "worker1")
    for i in range(MAX_HEADS * 3):
        head = b"GET /live/s/%d.ts HTTP/1.1\r\n\r\n" % i
        assert setup.hand_off_target(head) == 1
        assert len(setup._heads) <= MAX_HEADS


async def test_a_siblings_owner_is_remembered_a_moment_and_its_own_streams_are_asked_afresh(setup):
    asked: list[str] = []
    owners = {"live/far": "worker1", "live/mine": "worker0"}

    class Book:
        async def lookup(self, stream: str):
            asked.append(stream)
            node = owners.get(stream)
            return Owner(node=node, http="http://127.0.0.1:1", since=0.0, claim="c") if node else None

    setup.locator = Book()  # type: ignore[assignment]
    for _ in range(3):
        assert (await setup._owner("live/far")).node == "worker1"
        assert (await setup._owner("live/mine")).node == "worker0"  # a move away is seen at the next request
        assert await setup._owner("live/none") is None
    assert asked.count("live/far") == 1 and asked.count("live/mine") == 3 and asked.count("live/none") == 3
    assert setup.hand_off_target(b"GET /live/far/index.m3u8 HTTP/1.1\r\n\r\n") == 1
    setup._owners["live/far"] = (setup._owners["live/far"][0], time.monotonic() - OWNER_TTL_S - 1)
    assert (await setup._owner("live/far")).node == "worker1" and asked.count("live/far") == 2
