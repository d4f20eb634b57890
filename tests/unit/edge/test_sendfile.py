"""serve_file under uvloop (the server's loop, which has no loop.sendfile): whole files and ranges are exact,
whether os.sendfile takes all of a range or a slow reader leaves the rest to the pread path, os.sendfile is
really used, conditional requests behave; and byte_range, the pure Range parser, on good and hostile input."""

from __future__ import annotations

import asyncio
import os
import socket

import aiohttp
import pytest
from aiohttp import web

from support.page_cache import calls_off_the_loop, evict

from mediaserver.edge import sendfile
from mediaserver.edge.sendfile import (
    ByteRange, Sent, Unsatisfiable, byte_range, in_page_cache, read_into_cache, serve_file,
)

uvloop = pytest.importorskip("uvloop")


@pytest.mark.parametrize("header, size, want", [
    (None, 100, None),
    ("bytes=0-9", 100, ByteRange(0, 10)),
    ("bytes=90-", 100, ByteRange(90, 100)),
    ("bytes=-10", 100, ByteRange(90, 100)),
    ("bytes=-1000", 100, ByteRange(0, 100)),
    ("bytes=5-5", 100, ByteRange(5, 6)),
    ("bytes=50-" + "9" * 40, 100, ByteRange(50, 100)),
    (" bytes = 1 - 2 ", 100, ByteRange(1, 3)),
    ("BYTES=0-9", 100, ByteRange(0, 10)),  # a range unit in any case (RFC 9110 14.1)
    ("Bytes=-10", 100, ByteRange(90, 100)),
])
def test_a_range_is_read_and_clipped_to_the_file(header, size, want):
    assert byte_range(header, size) == want


@pytest.mark.parametrize("header, size", [
    ("bytes=100-", 100), ("bytes=-0", 100), ("bytes=-00", 100), ("bytes=5-2", 100), ("bytes=-", 100),
    ("bytes=", 100), ("bytes=0-1,5-6", 100), ("items=0-10", 100), ("bytes=abc", 100), ("bytes=0-5", 0),
    ("bytes=-5", 0), ("bytes=" + "1" * 41 + "-", 100), ("bytes=\u0661-2", 100), ("bytes=0-1" + ",2-3" * 5000, 100),
])
def test_what_cannot_be_answered_is_unsatisfiable(header, size):
    with pytest.raises(Unsatisfiable):
        byte_range(header, size)


def _serve_and_check(path, checks) -> int:
    async def main() -> int:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await serve_file(request, path, {"Content-Type": "video/mp4"})

        app = web.Application()
        app.router.add_get("/f", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        before = Sent.direct
        try:
            await checks(f"http://127.0.0.1:{port}/f", port)
        finally:
            await runner.cleanup()
        return Sent.direct - before

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
                assert resp.headers["Content-Type"] == "video/mp4" and resp.headers["Accept-Ranges"] == "bytes"
                etag = resp.headers["ETag"]
            async with http.head(url) as resp:
                assert resp.status == 200 and resp.headers["Content-Length"] == str(len(data))
            for header, want in ((f"bytes=100-{100 + 700_000 - 1}", data[100:700_100]), ("bytes=-5000", data[-5000:]),
                                 ("bytes=0-99", data[:100]), (f"bytes={len(data) - 1}-", data[-1:])):
                async with http.get(url, headers={"Range": header}) as resp:
                    assert resp.status == 206 and await resp.read() == want, header
                    first, last = (int(x) for x in resp.headers["Content-Range"][6:].split("/")[0].split("-"))
                    assert resp.headers["Content-Range"].endswith(f"/{len(data)}") and last - first + 1 == len(want)
            for unsatisfiable in (f"bytes={len(data)}-", "bytes=-0", "bytes = -00", "bytes=0-1,4-5"):
                async with http.get(url, headers={"Range": unsatisfiable}) as resp:
                    assert resp.status == 416 and await resp.read() == b"", unsatisfiable
                    assert resp.headers["Content-Range"] == f"bytes */{len(data)}"
            for current in (etag, f'"other", W/{etag}', "*"):
                async with http.get(url, headers={"If-None-Match": current}) as resp:
                    assert resp.status == 304, current
            async with http.get(url, headers={"If-None-Match": '"other"'}) as resp:
                assert resp.status == 200
            async with http.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}) as resp:
                assert resp.status == 206 and await resp.read() == data[:10]
            async with http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"an-older-version"'}) as resp:
                assert resp.status == 200 and await resp.read() == data  # changed since: the whole file

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


def test_in_page_cache_tells_a_cached_range_from_one_the_disk_must_read(tmp_path):
    """What decides between os.sendfile on the loop and a read in the thread: a range just written or read is
    cached; one dropped from the cache (a recording written with O_DIRECT) is not, nor is one whose other
    half, or last page, is not; a range past the end is not (the thread's read finds the file cut short)."""
    half = 1 << 20
    path = tmp_path / "rec.mp4"
    path.write_bytes(os.urandom(2 * half))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert in_page_cache(fd, 0, 2 * half)  # just written
        evict(path)
        assert not in_page_cache(fd, 0, 2 * half)
        evict(path)
        assert not in_page_cache(fd, half + 100, 10)
        assert os.pread(fd, half, 0) and in_page_cache(fd, 0, half)  # a viewer read the first half
        for offset, count in ((0, 2 * half), (half - 4096, 8192), (half - 10, 4096 + 10)):
            evict(path, half)  # (a probe's miss starts the kernel's readahead there: dropped again)
            assert in_page_cache(fd, 0, half) and not in_page_cache(fd, offset, count), (offset, count)
        assert os.pread(fd, 2 * half, 0) and in_page_cache(fd, 0, 2 * half)
        assert not in_page_cache(fd, 2 * half, 10) and not in_page_cache(fd, 2 * half - 5, 10)  # past the end
        assert in_page_cache(fd, 2 * half, 0)  # nothing to send
    finally:
        os.close(fd)


@pytest.mark.parametrize("to_devnull", [True, False])
def test_read_into_cache_caches_a_range_from_the_disk_and_stops_at_the_end(tmp_path, monkeypatch, to_devnull):
    """os.sendfile to /dev/null, or preads where the system refuses that; a range past the end reads what is
    there and stops."""
    if not to_devnull:
        def refused(*args):
            raise OSError(22, "Invalid argument")
        monkeypatch.setattr(sendfile.os, "sendfile", refused)
    path = tmp_path / "rec.mp4"
    path.write_bytes(os.urandom(3 << 20))
    evict(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert not in_page_cache(fd, 1 << 20, 1 << 20)
        evict(path)
        read_into_cache(fd, 1 << 20, 1 << 20)
        assert in_page_cache(fd, 1 << 20, 1 << 20)
        evict(path)
        read_into_cache(fd, (3 << 20) - 5000, 1 << 20)  # past the end
        assert in_page_cache(fd, (3 << 20) - 5000, 5000)
    finally:
        os.close(fd)


def test_a_range_on_the_disk_only_is_read_into_the_cache_in_a_thread_then_sent_by_sendfile(tmp_path, monkeypatch):
    """os.sendfile would wait on the disk inside the call, holding the event loop (every stream and viewer on
    it) for the disk's time: a recording's range that is not cached is read into the page cache in a thread
    first, then sent from it; the next viewer's finds it cached."""
    data = os.urandom(3 << 20)
    path = tmp_path / "rec.mp4"
    path.write_bytes(data)
    evict(path)
    want = data[1000:2_001_000]
    in_thread = calls_off_the_loop(monkeypatch, sendfile, "read_into_cache")

    async def checks(url: str, port: int) -> None:
        async with aiohttp.ClientSession() as http:
            uncached, direct = Sent.uncached, Sent.direct
            async with http.get(url, headers={"Range": "bytes=1000-2000999"}) as resp:
                assert resp.status == 206 and await resp.read() == want
            assert Sent.uncached == uncached + 1 and Sent.direct > direct  # read into the cache, then sendfile
            direct = Sent.direct
            async with http.get(url, headers={"Range": "bytes=1000-2000999"}) as resp:
                assert resp.status == 206 and await resp.read() == want
            assert Sent.uncached == uncached + 1 and Sent.direct > direct  # the first viewer's read cached it

    _serve_and_check(path, checks)
    assert in_thread == [True]


_TCPI_SEGS_OUT = 136
"""Offset of tcpi_segs_out in Linux's struct tcp_info."""


def _segments_sent(fileno: int) -> int:
    borrowed = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=fileno)
    try:
        info = borrowed.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    finally:
        borrowed.detach()
    return int.from_bytes(info[_TCPI_SEGS_OUT:_TCPI_SEGS_OUT + 4], "little")


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO") or not hasattr(socket, "MSG_MORE"), reason="Linux TCP_INFO")
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_an_answers_head_leaves_in_the_files_first_packet_and_a_queued_head_keeps_its_order(tmp_path, host):
    from mediaserver.edge.sendfile import send_fd

    body = os.urandom(1000)
    path = tmp_path / "seg.ts"
    path.write_bytes(body)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        got: asyncio.Queue = asyncio.Queue()

        class Sink(asyncio.Protocol):
            def connection_made(self, transport):
                got.put_nowait(transport)

        server = await loop.create_server(Sink, host, 0)
        reader, writer = await asyncio.open_connection(host, server.sockets[0].getsockname()[1])
        transport = await got.get()
        assert transport.get_extra_info("socket").family == (socket.AF_INET6 if ":" in host else socket.AF_INET)
        fileno = transport.get_extra_info("socket").fileno()
        fd = os.open(path, os.O_RDONLY)
        try:
            before = _segments_sent(fileno)
            assert send_fd(transport, fd, 0, len(body), head) == len(body)
            assert await reader.readexactly(len(head) + len(body)) == head + body
            assert _segments_sent(fileno) - before == 1  # head and file in one packet, not two

            earlier = os.urandom(16 << 20)  # more than the socket takes: the transport holds the rest
            transport.write(earlier)
            assert transport.get_write_buffer_size() > 0
            assert send_fd(transport, fd, 0, len(body), head) == 0  # nothing may jump the queue
            transport.write(body)
            assert await reader.readexactly(len(earlier) + len(head) + len(body)) == earlier + head + body
        finally:
            os.close(fd)
            writer.close()
            server.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
