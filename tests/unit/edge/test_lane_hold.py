"""What a connection sends while the fast lane holds its request (an LL-HLS blocking reload): kept, in
order, for after the answer; bounded (reading pauses); and, when what follows goes to a sibling worker,
handed over whole, so no request of it is left behind in a process that no longer has the connection."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from mediaserver.edge.connections import LANE_WAITING_MAX, ConnectionGate, ConnectionLimits, GuardedRequestHandler, \
    HandOff
from mediaserver.edge.stuck import StuckWriters

HELD = b"GET /live/a/cmaf-muxed.m3u8?_HLS_msn=9&_HLS_part=0 HTTP/1.1\r\nHost: x\r\n\r\n"
SIBLINGS = b"GET /live/b/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n"
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


class Lane:
    """Holds the request it is given first, as the lane holds a reload whose part has not appeared."""

    def __init__(self) -> None:
        self.taken: list[bytes] = []

    def take(self, conn, data: bytes) -> bool:
        if data == HELD:
            self.taken.append(data)
            conn.lane_hold(asyncio.get_running_loop().time() + 6)
            return True
        return False


async def _connection(handoff: HandOff | None, limits: ConnectionLimits = ConnectionLimits(10, 10, 10),
                      body: bytes = b"full stack", stuck: StuckWriters | None = None):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body)

    a, b = socket.socketpair()
    a.setblocking(False)
    loop = asyncio.get_running_loop()
    server = web.Server(handler)
    conn = GuardedRequestHandler(server, ConnectionGate(limits), Lane(), handoff=handoff, stuck=stuck, loop=loop)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
    transport.set_protocol(conn)
    conn.connection_made(transport)
    return conn, transport, server, b


async def test_what_came_behind_a_held_request_goes_to_the_sibling_whole():
    handed: list[bytes] = []

    def send(worker: int, fd: int, data: bytes) -> bool:
        handed.append(data)
        return True

    handoff = HandOff(target=lambda data: 1 if data.startswith(b"GET /live/b/") else None, send=send)
    conn, transport, server, peer = await _connection(handoff)
    try:
        conn.data_received(HELD)
        conn.data_received(SIBLINGS)  # two more requests, each in its own read, while the lane holds
        conn.data_received(HEALTH)
        assert handed == [] and not conn._messages
        conn.lane_release()
        assert handed == [SIBLINGS + HEALTH]  # not only the first: the sibling answers both, in order
        assert not conn._messages and conn._payload_parser is None  # nothing left for this process's aiohttp
        assert transport.is_closing()
        conn.data_received(HEALTH)  # a late read (none comes after the abort; if one did)
        assert not conn._messages
    finally:
        transport.close()
        peer.close()
        await server.shutdown(0.1)


async def test_a_client_sending_on_while_its_request_is_held_is_paused_then_read_again():
    conn, transport, server, peer = await _connection(None)
    try:
        conn.data_received(HELD)
        chunk = b"GET /x HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 4000 + b"\r\n\r\n"
        for _ in range(LANE_WAITING_MAX // len(chunk)):
            conn.data_received(chunk)
        assert transport.is_reading()  # a few pipelined heads: read on
        conn.data_received(chunk)
        assert not transport.is_reading()  # more: nothing more is read until the held request is answered
        conn.lane_release()
        assert transport.is_reading()
        assert len(conn._messages) >= 1  # aiohttp answers what was pipelined, in order
    finally:
        transport.close()
        peer.close()
        await server.shutdown(0.1)


async def test_a_held_request_is_not_cut_off_by_the_head_deadline():
    """The head arrived whole: a blocking reload held longer than http.header_timeout is answered, not reset."""
    conn, transport, server, peer = await _connection(None, ConnectionLimits(10, 10, header_timeout_s=0.2))
    try:
        conn.data_received(HELD)
        await asyncio.sleep(0.5)
        assert not transport.is_closing()
    finally:
        transport.close()
        peer.close()
        await server.shutdown(0.1)


async def test_a_full_stack_answer_nobody_reads_is_reset_after_the_write_timeout():
    """aiohttp waits for a drain for ever: what it leaves queued is watched as the lane's own answers are."""
    stuck = StuckWriters(lambda: 0.4)  # the site makes it with twice write_timeout_s
    conn, transport, server, peer = await _connection(
        None, ConnectionLimits(10, 10, 10, write_timeout_s=0.4), body=b"s" * (16 << 20), stuck=stuck)
    try:
        conn.data_received(b"GET /live/a/1.ts HTTP/1.1\r\nHost: x\r\n\r\n")  # not the lane's: aiohttp answers
        loop = asyncio.get_running_loop()
        end = loop.time() + 5
        while not transport.is_closing() and loop.time() < end:
            await asyncio.sleep(0.05)
        assert transport.is_closing() and stuck.aborted == 1
    finally:
        stuck.close()
        transport.close()
        peer.close()
        await server.shutdown(0.1)
