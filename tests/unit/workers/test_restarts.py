"""What outlives a worker's restart, and restarts themselves: the node's blocks kept in the supervisor's book
(a restarted worker copies them before it listens), the start deadline of a restarted worker, the restart
count in the node's /metrics, and the route's load (the node's viewers and egress, not 0)."""

from __future__ import annotations

import asyncio
import sys
from types import SimpleNamespace

import pytest
from aiohttp import web

from mediaserver.auth.policy import AccessPolicy, Block
from mediaserver.cluster.locator import NodeInfo
from mediaserver.config import Config
from mediaserver.edge.keys import METRICS, REGISTRY
from mediaserver.wiring.cluster import load_routing
from mediaserver.wiring.worker import WorkerSetup
from mediaserver.workers import supervisor
from mediaserver.workers.client import LocalLocator
from mediaserver.workers.node_metrics import restarts_family
from mediaserver.workers.protocol import ProtocolError, Request, StreamBook
from mediaserver.workers.service import BookService
from mediaserver.workers.supervisor import Supervisor, kill_unless_ready

SLEEPER = (sys.executable, "-c", "import time; time.sleep(30)")


def info(node: str, viewers: int = 0, egress_bps: int = 0, pulling: tuple[str, ...] = ()) -> NodeInfo:
    return NodeInfo(id=node, role="both", http=f"http://127.0.0.1/{node}", rtmp="", version="t", viewers=viewers,
                    egress_bps=egress_bps, pulling=list(pulling))


# ----- blocks --------------------------------------------------------------------------------------

def test_the_book_keeps_blocks_until_they_expire_and_forgets_lifted_ones():
    book = StreamBook()

    def ask(op: str, **args):
        return book.handle("worker0", Request(1, op, {"op": op, **args}))[0]

    ask("block", block={"app": "live", "name": "a", "until": 200.0, "reason": "spam"})
    ask("block", block={"app": "live", "name": "b", "until": 50.0})
    ask("block", block={"app": "live", "name": "c", "until": 300.0})
    ask("unblock", app="live", name="c")
    assert ask("blocks", now=100.0) == [{"app": "live", "name": "a", "until": 200.0, "reason": "spam"}]
    assert ask("blocks", now=250.0) == []
    with pytest.raises(ProtocolError, match="until must be a number"):
        ask("block", block={"app": "live", "name": "a", "until": "soon"})


def worker(index: int, path: str) -> WorkerSetup:
    setup = WorkerSetup(index, path, "s" * 24)
    setup.admin = SimpleNamespace(policy=AccessPolicy())  # type: ignore[assignment]
    return setup


async def test_a_restarted_worker_copies_the_nodes_blocks_before_it_listens(tmp_path):
    service = BookService(str(tmp_path / "book.sock"))
    await service.start()
    first, again = worker(0, service.path), worker(0, service.path)
    try:
        first.make_locator(lambda: info("worker0"))
        await first.locator.start()
        put = web.json_response({"app": "live", "name": "x", "until": 4e9, "remaining_s": 60, "reason": "kicked"})
        await first._book_block("PUT", "live/x", [None, web.json_response({"error": "?"}, status=400), put])
        await first._book_block("PUT", "live/y", [web.Response(text='{"app":"live","name":"y","until":4e9}')])
        await first._book_block("DELETE", "live/y", [])  # lifted: must not come back with a restart
        await first.locator.close()  # the worker died
        again.make_locator(lambda: info("worker0"))
        await again.locator.start()
        policy = again.admin.policy
        assert policy.block_of("live", "x", now=1e9) == Block("live", "x", 4e9, "kicked")
        assert policy.block_of("live", "y", now=1e9) is None
        await again.locator.close()
    finally:
        for setup in (first, again):
            setup._private.close()
            setup.outbox.close()
        await service.close()


async def test_a_block_kept_or_lifted_in_the_book_reaches_every_other_worker_at_once(tmp_path):
    """A worker (re)starting while a sibling blocks a name is missed by the sibling's forwards (it has not
    recorded itself yet) and may have copied the book's blocks already: the book passes the block on."""
    service = BookService(str(tmp_path / "book.sock"))
    await service.start()
    sender, starting = worker(0, service.path), worker(1, service.path)
    try:
        for index, setup in enumerate((sender, starting)):
            setup.make_locator(lambda index=index: info(f"worker{index}"))
            await setup.locator.start()
        policy = starting.admin.policy
        put = web.json_response({"app": "live", "name": "x", "until": 4e9, "reason": "kicked"})
        await sender._book_block("PUT", "live/x", [put])  # no forward reached `starting`
        for _ in range(100):
            if policy.block_of("live", "x", now=1e9) is not None:
                break
            await asyncio.sleep(0.01)
        assert policy.block_of("live", "x", now=1e9) == Block("live", "x", 4e9, "kicked")
        assert sender.admin.policy.block_of("live", "x", now=1e9) is None, "the sender's own came by HTTP"
        await sender._book_block("DELETE", "live/x", [])
        for _ in range(100):
            if policy.block_of("live", "x", now=1e9) is None:
                break
            await asyncio.sleep(0.01)
        assert policy.block_of("live", "x", now=1e9) is None
    finally:
        for setup in (sender, starting):
            if setup.locator is not None:
                await setup.locator.close()
            setup._private.close()
            setup.outbox.close()
        await service.close()


async def test_a_lift_read_with_the_copy_of_the_blocks_is_applied_after_the_copy(tmp_path):
    """The book answers the starting worker's `blocks` with X, then passes on a sibling's lift of X: both
    lines may arrive in one read, before start() applies the copy. The lift must win."""
    from mediaserver.workers.protocol import decode, encode

    async def book(reader, writer):
        while line := await reader.readline():
            asked = decode(line)
            if asked["op"] == "blocks":
                writer.write(encode({"id": asked["id"], "ok": [{"app": "live", "name": "x", "until": 4e9,
                                                                 "reason": "kicked"}]})
                             + encode({"unblock": {"id": 9, "app": "live", "name": "x"}}))
            else:
                writer.write(encode({"id": asked["id"], "ok": None}))
            await writer.drain()

    path = str(tmp_path / "book.sock")
    server = await asyncio.start_unix_server(book, path)
    starting = worker(1, path)
    try:
        starting.make_locator(lambda: info("worker1"))
        await starting.locator.start()
        assert starting.admin.policy.block_of("live", "x", now=1e9) is None
    finally:
        await starting.locator.close()
        starting._private.close()
        starting.outbox.close()
        server.close()


def test_the_book_drops_expired_blocks_as_new_ones_come():
    book = StreamBook()
    for i in range(50):
        book.handle("worker0", Request(1, "block", {"op": "block", "now": 100.0 + i,
                                                    "block": {"app": "live", "name": f"n{i}", "until": 101.0 + i}}))
    assert list(book.blocks) == [("live", "n49")]  # each earlier one had expired when the next came


# ----- a restart's start deadline, and the restart count ----------------------------------------------

async def test_kill_unless_ready_kills_a_silent_start_and_spares_a_ready_one():
    silent = await asyncio.create_subprocess_exec(*SLEEPER)
    assert await kill_unless_ready(silent, asyncio.Event(), 0.2) is True
    assert await asyncio.wait_for(silent.wait(), 5) == -9
    ready = asyncio.Event()
    fine = await asyncio.create_subprocess_exec(*SLEEPER)
    asyncio.get_running_loop().call_later(0.05, ready.set)
    try:
        assert await kill_unless_ready(fine, ready, 2.0) is False
        assert fine.returncode is None
    finally:
        fine.kill()
        await fine.wait()


async def test_a_restarted_worker_that_never_listens_is_killed_and_started_again(monkeypatch):
    monkeypatch.setattr(supervisor, "BACKOFF_S", (0.05,))
    sup = Supervisor(Config(), [], 1)
    sup.start_timeout_s = 0.3
    sup.book = SimpleNamespace(book=StreamBook(restarts={0: 0}))  # type: ignore[assignment]

    async def spawn(index: int) -> None:  # a worker that hangs before it says it listens
        sup.procs[index] = await asyncio.create_subprocess_exec(*SLEEPER)

    sup._spawn = spawn  # type: ignore[method-assign]
    sup.procs[0] = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")  # exits: restarted
    watch = asyncio.get_running_loop().create_task(sup._watch(0))
    try:
        for _ in range(100):
            if sup.restarts >= 3:
                break
            await asyncio.sleep(0.05)
        assert sup.restarts >= 3, "the hung restart was not killed and started again"
        assert sup.book.book.restarts[0] == sup.restarts
    finally:
        sup._stopping.set()
        watch.cancel()
        for task in sup._deadlines.values():
            task.cancel()
        for proc in sup.procs.values():
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_the_node_metrics_show_each_workers_restarts_from_the_book(tmp_path):
    service = BookService(str(tmp_path / "book.sock"))
    service.book.restarts = {0: 2, 1: 0}
    await service.start()
    locator = LocalLocator(service.path, lambda: info("worker1"), 1, on_lost=lambda: None)
    try:
        await locator.start()
        text = restarts_family(await locator.restarts())
    finally:
        await locator.close()
        await service.close()
    assert "# TYPE mediaserver_worker_restarts_total counter" in text
    assert 'mediaserver_worker_restarts_total{worker="0"} 2\n' in text
    assert 'mediaserver_worker_restarts_total{worker="1"} 0\n' in text
    assert restarts_family({}) == ""


# ----- the route's load ----------------------------------------------------------------------------

async def test_the_workers_route_load_adds_up_the_workers_without_sibling_pulls(tmp_path):
    service = BookService(str(tmp_path / "book.sock"))
    await service.start()
    # worker0 publishes live/s to 3 viewers and its sibling's pull; worker1 pulls it for 2 viewers
    records = {0: info("worker0", viewers=4, egress_bps=4000), 1: info("worker1", 2, 2000, pulling=("live/s",))}
    setups = [worker(i, service.path) for i in (0, 1)]
    try:
        for i, setup in enumerate(setups):
            setup.config = Config()
            setup.make_locator(lambda i=i: records[i])
            await setup.locator.start()
        node, _ = await setups[0].route()
        assert (node.viewers, node.egress_bps) == (5, 6000)
    finally:
        for setup in setups:
            await setup.locator.close()
            setup._private.close()
            setup.outbox.close()
        await service.close()


async def test_the_standalone_route_load_counts_viewers_and_measures_egress():
    streams = [SimpleNamespace(subscribers=[1, 2]), SimpleNamespace(subscribers=[3])]
    sent = {"flv": 0, "other": 10**9}
    metrics = SimpleNamespace(clock=lambda: 100.0, hls_clients={"a": 99.0, "b": 98.0, "gone": 1.0},
                              egress=lambda: dict(sent))
    app = web.Application()
    app[METRICS], app[REGISTRY] = metrics, SimpleNamespace(streams=lambda: streams)
    route = load_routing(Config(), None, app)
    node, _ = await route()
    assert (node.viewers, node.egress_bps) == (5, 0)  # 3 subscribers, 2 recent HLS clients; one reading of egress
    await asyncio.sleep(0.6)
    sent["flv"] += 100_000
    node, _ = await route()
    assert 0 < node.egress_bps <= 100_000 * 8 / 0.6


def test_a_flood_of_route_requests_reads_the_standalone_egress_at_most_twice_a_second():
    from mediaserver.wiring.cluster import READ_EVERY_S, StandaloneLoad

    now = {"t": 0.0}
    reads = []
    load = StandaloneLoad(SimpleNamespace(streams=lambda: []), lambda: 0,
                          lambda: reads.append(now["t"]) or 1000 * len(reads), clock=lambda: now["t"])
    for _ in range(10_000):  # the route is public: 10,000 asks within a tenth of a second
        load.egress_bps()
        now["t"] += 0.1 / 10_000
    assert len(reads) == 1
    now["t"] += READ_EVERY_S
    assert load.egress_bps() > 0 and len(reads) == 2
