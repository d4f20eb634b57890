"""The node-local stream book: its wire rules (pure), and the service with real LocalLocator clients over a
Unix socket: claims, news, a worker's death, and hostile lines."""

from __future__ import annotations

import asyncio
import json

import pytest

from mediaserver.cluster.locator import KICK, NODE_DOWN, ClusterEvent, NodeInfo, Owner
from mediaserver.workers.client import LocalLocator
from mediaserver.workers.protocol import MAX_LINE, ProtocolError, Request, StreamBook, decode, encode, parse_request
from mediaserver.workers.service import BookService


def owner(node: str, claim: str = "c1") -> Owner:
    return Owner(node=node, http=f"http://127.0.0.1/{node}", since=1.0, claim=claim)


# ----- pure ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    (b"not json\n", "not JSON"),
    (b"[1, 2]\n", "not a JSON object"),
    (b"\xff\xfe\n", "not JSON"),
    (b"{" + b" " * MAX_LINE + b"}\n", "over the"),
])
def test_lines_that_are_not_the_protocol_are_refused(line, message):
    with pytest.raises(ProtocolError, match=message):
        decode(line)


@pytest.mark.parametrize("message, error", [
    ({"op": "lookup"}, "request id"),
    ({"id": True, "op": "lookup"}, "request id"),
    ({"id": -1, "op": "lookup"}, "request id"),
    ({"id": 1, "op": "flushall"}, "unknown op"),
])
def test_requests_need_an_id_and_a_known_op(message, error):
    with pytest.raises(ProtocolError, match=error):
        parse_request(message)


def test_encode_refuses_a_message_over_the_line_limit():
    with pytest.raises(ProtocolError, match="line limit"):
        encode({"x": "y" * MAX_LINE})


def test_a_live_workers_claim_holds_and_a_departed_workers_claims_go():
    book = StreamBook()
    book.join("worker0")
    book.join("worker1")
    assert book.announce("live/a", owner("worker0")) == owner("worker0")
    assert book.announce("live/a", owner("worker1")) == owner("worker0")  # one publisher per stream
    assert book.announce("live/a", owner("worker0", "c2")) == owner("worker0")  # its own earlier claim
    assert book.leave("worker0") == ["live/a"]
    assert book.lookup("live/a") is None
    assert book.announce("live/a", owner("worker1")) == owner("worker1")
    book.withdraw("live/a", owner("worker1", "other"))  # not that claim: kept
    assert book.lookup("live/a") == owner("worker1")


@pytest.mark.parametrize("args, error", [
    ({"op": "lookup"}, "stream must be"),
    ({"op": "lookup", "stream": "x" * 5000}, "stream must be"),
    ({"op": "announce", "stream": "live/a", "owner": {"node": "w"}}, "not understood"),
    ({"op": "send", "event": '{"kind": "reboot"}'}, "not understood"),
    ({"op": "record", "node": {"id": "worker9", "role": "both", "http": "h"}}, "records itself only"),
])
def test_bad_arguments_are_an_error_answer(args, error):
    book = StreamBook()
    book.join("worker0")
    with pytest.raises(ProtocolError, match=error):
        book.handle("worker0", Request(1, args["op"], args))


# ----- the service with real clients ----------------------------------------------------------------

def info(node: str) -> NodeInfo:
    return NodeInfo(id=node, role="both", http=f"http://127.0.0.1/{node}", rtmp="", version="t")


async def client(path: str, index: int, lost: list[str] | None = None) -> LocalLocator:
    locator = LocalLocator(path, lambda: info(f"worker{index}"), index,
                           on_lost=lambda: lost.append(f"worker{index}") if lost is not None else None,
                           op_timeout=1.0, record_every=0.05)
    await locator.start()
    return locator


async def test_claims_news_and_a_workers_death_reach_the_siblings(tmp_path):
    ready: list[int] = []
    service = BookService(str(tmp_path / "book.sock"), on_ready=ready.append)
    await service.start()
    a, b = await client(service.path, 0), await client(service.path, 1)
    heard: list[ClusterEvent] = []
    b.watch(heard.append)
    a.watch(lambda e: pytest.fail(f"a worker hears its own news: {e}"))
    try:
        await a.ready()
        assert ready == [0]
        mine = owner("worker0")
        assert await a.announce("live/s", mine) == mine
        assert await b.announce("live/s", owner("worker1")) == mine
        assert await b.lookup("live/s") == mine
        assert set(await b.claims()) == {"live/s"}
        assert [n.id for n in await b.nodes()] == ["worker0", "worker1"]
        await a.send(ClusterEvent(kind=KICK, sender="worker0", stream="live/s", reason="kicked"))
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.01)
        assert [(e.kind, e.stream) for e in heard] == [(KICK, "live/s")]
        await a.close()  # as if it died: its connection drops
        for _ in range(100):
            if len(heard) > 1:
                break
            await asyncio.sleep(0.01)
        assert heard[1].kind == NODE_DOWN and heard[1].sender == "worker0"
        assert await b.lookup("live/s") is None
        assert await b.announce("live/s", owner("worker1")) == owner("worker1")
    finally:
        await b.close()
        await service.close()


async def raw(path: str, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(payload)
    try:
        return await asyncio.wait_for(reader.read(), 3.0)  # until the service closes the connection
    finally:
        writer.close()


async def test_garbage_oversized_and_silent_connections_are_closed_and_the_book_keeps_serving(tmp_path):
    service = BookService(str(tmp_path / "book.sock"), hello_timeout=0.3)
    await service.start()
    lost: list[str] = []
    good = await client(service.path, 0, lost)
    try:
        await good.announce("live/s", owner("worker0"))
        assert await raw(service.path, b"GET / HTTP/1.1\r\n\r\n") == b""
        assert await raw(service.path, b"x" * (MAX_LINE + 100)) == b""
        assert await raw(service.path, b"") == b""  # says nothing: dropped at the hello deadline
        hello = encode({"id": 1, "op": "hello", "node": "worker5", "worker": 5})
        answer = await raw(service.path, hello + encode({"id": 2, "op": "lookup", "stream": ""}) + b"{oops\n")
        replies = [json.loads(line) for line in answer.splitlines()]
        assert replies[0] == {"id": 1, "ok": None}
        assert replies[1]["id"] == 2 and "stream must be" in replies[1]["error"]  # answered, not dropped
        assert len(replies) == 2  # then the garbage line closed it
        assert await good.lookup("live/s") == owner("worker0")
        assert lost == []
    finally:
        await good.close()
        await service.close()


async def test_a_worker_stops_when_the_supervisor_goes(tmp_path):
    service = BookService(str(tmp_path / "book.sock"))
    await service.start()
    lost: list[str] = []
    worker = await client(service.path, 3, lost)
    await service.close()
    for _ in range(100):
        if lost:
            break
        await asyncio.sleep(0.01)
    assert lost == ["worker3"]
    assert await worker.lookup("live/s") is None  # answers as Redis away: nothing found, no exception
    await worker.close()
