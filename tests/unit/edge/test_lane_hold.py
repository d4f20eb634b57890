"""What a connection sends while the fast lane holds its request (an LL-HLS blocking reload): kept, in
order, for after the answer; bounded (reading pauses); and, when what follows goes to a sibling worker,
handed over whole, so no request of it is left behind in a process that no longer has the connection."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from mediaserver.edge.connections import LANE_WAITING_MAX, ConnectionGate, ConnectionLimits, GuardedRequestHandler, \
    HandOff

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


async def _connection(handoff: HandOff | None):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="full stack")

    a, b = socket.socketpair()
    a.setblocking(False)
    loop = asyncio.get_running_loop()
    server = web.Server(handler)
    conn = GuardedRequestHandler(server, ConnectionGate(ConnectionLimits(10, 10, 10)), Lane(), handoff=handoff,
                                 loop=loop)
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
