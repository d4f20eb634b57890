"""Hostile or broken clients: odd request paths get a 4xx (never a 500, never a hang), and garbage on the
RTMP port closes that one connection while other streams carry on."""

from __future__ import annotations

import asyncio
import os
import socket

from support.checks import wait_live
from support.raw_net import closed_by_peer, raw_http_get, rtmp_chunk_type0, rtmp_connect, rtmp_handshake

PATH_TRICKS: list[bytes] = [
    b"/live/../live/x.flv",
    b"/live/%2e%2e/%2e%2e/etc/passwd",
    b"/live/x/../../../etc/passwd",
    b"/live/a%2Fb.flv",
    b"/live/a%2fb/index.m3u8",
    b"/live/x/..%2f..%2fetc%2fpasswd",
    b"/live/x/index.m3u8/../../y.flv",
    b"//live//x.flv",
    b"/live/.flv",
    b"/live/x/",
    b"/live/x/seg-1.ts",
    b"/live/x/segment0.ts",
    b"/live/" + b"a" * 300 + b".flv",
    b"/live/" + b"a" * 300 + b"/index.m3u8",
    b"/live/" + b"a" * 10000 + b".flv",
    b"/live/\xff\xfe.flv",
    b"/live/\xc3\x28/index.m3u8",
    b"/live/%ff%fe.flv",
    b"/live/%c3%28/index.m3u8",
    b"/live/x.flv%00",
    b"/live/%00/index.m3u8",
    b"/live/x%20y.flv",
    b"/live/x.flv?" + b"q" * 3000,
    b"/%2e%2e/%2e%2e/proc/self/environ",
]


async def test_unknown_streams_and_path_tricks_get_4xx_never_500(server):
    wrong = []
    for target in PATH_TRICKS:
        try:
            resp = await raw_http_get(server.http_port, target, timeout_s=5)
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError) as err:
            wrong.append(f"{target[:60]!r}: no answer ({type(err).__name__})")
            continue
        if not 400 <= resp.status < 500:
            wrong.append(f"{target[:60]!r}: {resp.status} {resp.reason}")
    assert wrong == [], "\n".join(wrong)
    assert server.healthy(), "the server stopped answering /healthz"
    assert "Traceback" not in server.log_text(), server.log_tail()


def _send_and_expect_close(port: int, kind: str) -> str | None:
    """One hostile RTMP client; returns what went wrong, or None if the server closed the connection."""
    s = rtmp_connect(port)
    try:
        if kind == "random bytes":
            s.sendall(b"\xfa" + os.urandom(4095))  # C0 must be 3; 0xfa is not
        elif kind == "an HTTP request":
            s.sendall(b"GET /live/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        elif kind == "a truncated handshake":
            s.sendall(b"\x03" + os.urandom(100))
            s.shutdown(socket.SHUT_WR)
        elif kind == "a truncated chunk":
            rtmp_handshake(s)
            # A command message (type 20) declaring 200 bytes, of which only 10 arrive before EOF.
            s.sendall(rtmp_chunk_type0(3, 20, b"\x02\x00\x07connect", declared_length=200))
            s.shutdown(socket.SHUT_WR)
        elif kind == "a chunk size of 0":
            rtmp_handshake(s)
            s.sendall(rtmp_chunk_type0(2, 1, b"\x00\x00\x00\x00"))  # Set Chunk Size 0: invalid
        else:
            raise AssertionError(kind)
        if not closed_by_peer(s, timeout_s=5):
            return f"{kind}: the connection was still open after 5 s"
        return None
    except OSError as err:  # a reset while sending is a close too
        if isinstance(err, (ConnectionResetError, BrokenPipeError)):
            return None
        return f"{kind}: {err!r}"
    finally:
        s.close()


GARBAGE = ["random bytes", "an HTTP request", "a truncated handshake", "a truncated chunk", "a chunk size of 0"]


async def test_garbage_rtmp_connections_are_closed_while_other_viewers_keep_receiving(server, publish, media, stream_name):
    publisher = publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with server.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_video_frames(10, timeout_s=5)
        before = viewer.video_frame_count
        problems = await asyncio.gather(*(asyncio.to_thread(_send_and_expect_close, server.rtmp_port, k) for k in GARBAGE))
        assert [p for p in problems if p] == []
        assert await viewer.wait_video_frames(before + 50, timeout_s=5), "the viewer stopped receiving"
        assert not viewer.done, f"the viewer's response ended: {viewer.error!r}"
    assert publisher.running, f"the publisher was disconnected: {publisher.log_text()[-1500:]}"
    server.assert_alive()
    assert server.healthy()
