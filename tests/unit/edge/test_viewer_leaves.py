"""A viewer that leaves in the middle of a large answer (a segment through the full stack, a VOD range) is
ordinary: the connection ends, nothing is logged as an error, and the server answers the next viewer."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mediaserver.edge.common import send_shared
from mediaserver.edge.sendfile import serve_file

uvloop = pytest.importorskip("uvloop")

BODY = os.urandom(16 << 20)


def _leave_mid_answer(port: int, path: str) -> None:
    """Ask, take a few kB, then reset the connection (SO_LINGER 0) with most of the answer unread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    sock.settimeout(5)
    got = 0
    while got < 8192:
        got += len(sock.recv(4096))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("path", ["/shared", "/file"])
def test_a_viewer_leaving_mid_answer_is_not_an_error(tmp_path, caplog, path):
    file = tmp_path / "rec.mp4"
    file.write_bytes(BODY)

    async def shared(request: web.Request) -> web.StreamResponse:
        return await send_shared(request, BODY, {"Content-Type": "video/mp2t"})

    async def whole_file(request: web.Request) -> web.StreamResponse:
        return await serve_file(request, file, {"Content-Type": "video/mp4"})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/shared", shared)
        app.router.add_get("/file", whole_file)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        port = server.port
        try:
            for _ in range(3):
                await asyncio.to_thread(_leave_mid_answer, port, path)
            await asyncio.sleep(0.5)  # the server meets the resets
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /shared HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(BODY[-1000:])
        finally:
            await server.close()

    with caplog.at_level(logging.DEBUG):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage()[:200] for r in errors]
