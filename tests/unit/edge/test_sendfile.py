"""SendfileResponse under uvloop (the server's loop, which has no loop.sendfile): the bytes of whole files
and of ranges are exact, whether os.sendfile takes all of a range or a slow reader leaves the rest to the
ordinary path, and os.sendfile is really used."""

from __future__ import annotations

import asyncio
import os
import socket

import aiohttp
import pytest
from aiohttp import web

from mediaserver.edge.sendfile import SendfileResponse

uvloop = pytest.importorskip("uvloop")


def _serve_and_check(path, checks) -> int:
    async def main() -> int:
        async def handler(request: web.Request) -> web.StreamResponse:
            return SendfileResponse(path)

        app = web.Application()
        app.router.add_get("/f", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        before = SendfileResponse.sent_direct
        try:
            await checks(f"http://127.0.0.1:{port}/f", port)
        finally:
            await runner.cleanup()
        return SendfileResponse.sent_direct - before

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def test_whole_files_and_ranges_are_exact_and_sent_by_sendfile(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "rec.mp4"
    path.write_bytes(data)

    async def checks(url: str, port: int) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:
                assert resp.status == 200 and await resp.read() == data
            for header, want in ((f"bytes=100-{100 + 700_000 - 1}", data[100:700_100]), ("bytes=-5000", data[-5000:]),
                                 ("bytes=0-99", data[:100]), (f"bytes={len(data) - 1}-", data[-1:])):
                async with http.get(url, headers={"Range": header}) as resp:
                    assert resp.status == 206 and await resp.read() == want, header
            for unsatisfiable in (f"bytes={len(data)}-", "bytes=-0", "bytes = -00"):
                async with http.get(url, headers={"Range": unsatisfiable}) as resp:
                    assert resp.status == 416 and await resp.read() == b"", unsatisfiable
                    assert resp.headers["Content-Range"] == f"bytes */{len(data)}"

    assert _serve_and_check(path, checks) > 700_000


def test_a_slow_reader_gets_every_byte_in_order(tmp_path):
    data = os.urandom(8 * 1024 * 1024)
    path = tmp_path / "rec.mp4"
    path.write_bytes(data)

    async def checks(url: str, port: int) -> None:
        # A small receive buffer and pauses: os.sendfile fills the socket, the rest waits in the transport.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, b"GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await asyncio.sleep(0.3)
        received = bytearray()
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), 10):
            received += chunk
        sock.close()
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == data

    assert _serve_and_check(path, checks) > 0
