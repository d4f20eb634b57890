"""The HTTP connection gate's bookkeeping: caps in total and per address, refusals counted by reason."""

from __future__ import annotations

import resource

from mediaserver.edge.connections import (
    HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_PER_IP, ConnectionGate, ConnectionLimits, connection_limits,
)


def test_one_address_is_capped_while_others_are_admitted_up_to_the_total():
    gate = ConnectionGate(ConnectionLimits(max_connections=5, max_per_address=2, header_timeout_s=10))
    assert [gate.opened("10.0.0.1") for _ in range(3)] == [None, None, MAX_PER_IP]
    assert [gate.opened("10.0.0.2") for _ in range(2)] == [None, None]
    assert gate.opened("10.0.0.3") is None and gate.open == 5
    assert gate.opened("10.0.0.4") == MAX_CONNECTIONS
    gate.closed("10.0.0.1")
    assert gate.opened("10.0.0.4") is None
    assert gate.refused == {MAX_PER_IP: 1, MAX_CONNECTIONS: 1}


def test_closed_connections_are_forgotten_so_the_table_stays_small():
    gate = ConnectionGate(ConnectionLimits(0, 0, 10))
    for i in range(1000):
        assert gate.opened(f"10.0.{i // 256}.{i % 256}") is None
    for i in range(1000):
        gate.closed(f"10.0.{i // 256}.{i % 256}")
    assert gate.open == 0 and gate._by_address == {}


def test_a_refusal_is_a_complete_503_naming_the_key_to_raise():
    gate = ConnectionGate(ConnectionLimits(100, 3, 10))
    answer = gate.answer(MAX_PER_IP)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head and b"http.max_connections_per_ip = 3" in body
    assert b"http.max_connections = 100" in gate.answer(MAX_CONNECTIONS)
    gate.head_timed_out()
    assert gate.refused[HEADER_TIMEOUT] == 1


def test_the_default_total_cap_is_half_the_open_file_limit():
    limits = connection_limits(0, 256, 10)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limits.max_connections == max(64, soft // 2)
    assert connection_limits(300, 0, 10).max_connections == 300


def test_trusted_proxies_are_spared_the_per_address_cap_but_not_the_total():
    gate = ConnectionGate(ConnectionLimits(max_connections=5, max_per_address=1, header_timeout_s=10),
                          uncapped=lambda address: address == "10.0.0.9")
    assert [gate.opened("10.0.0.9") for _ in range(3)] == [None, None, None]
    assert [gate.opened("10.0.0.1") for _ in range(2)] == [None, MAX_PER_IP]
    assert [gate.opened("10.0.0.9") for _ in range(2)] == [None, MAX_CONNECTIONS]


async def test_a_connections_first_request_may_take_the_lane_before_aiohttps_task_has_run():
    """The request of a new connection can arrive before aiohttp's task reaches its wait for one: aiohttp has
    nothing in flight then, so the fast lane may answer it; a request that arrives while aiohttp still works
    on the one before goes to aiohttp (it answers in order)."""
    import asyncio
    import socket

    from aiohttp import web

    from mediaserver.edge.connections import GuardedRequestHandler

    class Lane:
        def __init__(self):
            self.taken: list[bytes] = []

        def take(self, conn, data: bytes) -> bool:
            self.taken.append(data)
            return True

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="full stack")

    a, b = socket.socketpair()
    a.setblocking(False)
    loop = asyncio.get_running_loop()
    gate = ConnectionGate(ConnectionLimits(10, 10, 10))
    lane = Lane()
    server = web.Server(handler)
    conn = GuardedRequestHandler(server, gate, lane, loop=loop)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
    try:
        transport.set_protocol(conn)
        conn.connection_made(transport)  # and its first bytes in the same loop turn, as a read can bring them
        head = b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n"
        assert conn._waiter is None and conn._request_count == 0  # aiohttp's task has not run yet
        conn.data_received(head)
        assert lane.taken == [head]  # taken, not left for aiohttp's parser
        conn._request_count = 1  # aiohttp has answered a request, and its task has not come back to wait
        conn.data_received(head)
        assert lane.taken == [head] and len(conn._messages) == 1  # aiohttp's: it answers in order
    finally:
        transport.close()
        b.close()
        await server.shutdown(0.1)
