"""RTMP clients that stall or flood the setup phase (issue 9, defects 6 and 7), seen from raw sockets:
a connect trickled byte by byte is closed at the connect deadline, an oversized command is refused from
its header, and a huge AMF0 object cannot hold the event loop while another stream plays."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import urllib.request

import pytest
from e2e.test_auth_publish import rtmp_attempt
from e2e.test_auth_webhooks import Hook
from support.checks import wait_live
from support.raw_net import closed_by_peer, rtmp_connect, rtmp_handshake

from mediaserver.media import amf0

CONNECT_TIMEOUT_S = 2.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _chunk0(type_id: int, length: int, csid: int = 3, msid: int = 0) -> bytes:
    """A fmt-0 chunk header announcing a message of `length` bytes (payload not included)."""
    return bytes((csid,)) + bytes(3) + length.to_bytes(3, "big") + bytes((type_id,)) + msid.to_bytes(4, "little")


def _chunked(type_id: int, payload: bytes, csid: int = 3) -> bytes:
    """A whole message in 128-byte chunks (the default chunk size): fmt 0, then fmt-3 continuations."""
    out = bytearray(_chunk0(type_id, len(payload), csid))
    for offset in range(0, len(payload), 128):
        if offset:
            out.append(0xC0 | csid)
        out += payload[offset : offset + 128]
    return bytes(out)


def _trickle_connect(port: int, byte_interval_s: float, give_up_s: float) -> tuple[bool, float]:
    """Handshake, then send a connect command one byte at a time: (closed by the server, seconds after
    the handshake when that was seen)."""
    s = rtmp_connect(port)
    try:
        rtmp_handshake(s)
        start = time.monotonic()
        wire = _chunked(20, amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"}))
        for i in range(len(wire)):
            if time.monotonic() - start > give_up_s:
                return False, time.monotonic() - start
            try:
                s.sendall(wire[i : i + 1])
            except OSError:
                return True, time.monotonic() - start
            if closed_by_peer(s, byte_interval_s):
                return True, time.monotonic() - start
        return False, time.monotonic() - start
    finally:
        s.close()


async def test_a_trickled_connect_is_closed_at_the_connect_deadline(server_factory):
    server = server_factory(**{"rtmp.connect_timeout": str(CONNECT_TIMEOUT_S)})
    # Ten clients at once, a thread each (asyncio.to_thread's pool has fewer threads on a small machine).
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(pool, _trickle_connect, server.rtmp_port, 0.3, CONNECT_TIMEOUT_S + 6)
              for _ in range(10))
        )
    for closed, after_s in results:
        assert closed, f"a client trickling its connect was still open {after_s:.1f} s after the handshake"
        assert CONNECT_TIMEOUT_S - 0.5 <= after_s <= CONNECT_TIMEOUT_S + 2.0, f"closed after {after_s:.1f} s"
    assert "rtmp_connect_timeout" in server.log_text()
    server.assert_alive()


@pytest.fixture
async def slow_hook():
    hook = Hook()  # "slow-*" streams are answered (allowed) after 3 s
    await hook.server.start_server()
    yield hook
    await hook.server.close()


async def test_the_deadline_waits_for_our_own_slow_webhook(server_factory, slow_hook):
    # The connect deadline is the client's time; a webhook we are still asking is ours.
    server = server_factory(**{"rtmp.connect_timeout": "1", "webhooks.on_publish": slow_hook.url,
                               "webhooks.timeout": "5"})  # fmt: skip
    attempt = await rtmp_attempt(server.rtmp_port, "slow-cam", timeout_s=8)
    assert attempt.codes == ["NetStream.Publish.Start"], attempt
    assert "rtmp_connect_timeout" not in server.log_text()


class _HealthProbe:
    """Polls /healthz from a thread and keeps the slowest answer: how long the event loop was held."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest_s = 0.0
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with _NO_PROXY.open(self.url, timeout=10) as resp:
                resp.read()
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)
            self.answers += 1
            self._stop.wait(0.02)

    def __enter__(self) -> _HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def _send_command_after_connect(port: int, payload: bytes, type_id: int = 20) -> tuple[bool, float]:
    """Handshake, connect, then send one command message: (closed by the server, seconds it took)."""
    s = rtmp_connect(port)
    try:
        rtmp_handshake(s)
        s.sendall(_chunked(20, amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})))
        started = time.monotonic()
        try:
            s.sendall(_chunked(type_id, payload))
        except OSError:
            return True, time.monotonic() - started  # reset while we were still sending: refused early
        return closed_by_peer(s, 5.0), time.monotonic() - started
    finally:
        s.close()


async def test_a_command_over_64_kib_is_refused_while_another_stream_keeps_flowing(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with server.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_video_frames(10, timeout_s=5)
        before = viewer.video_frame_count
        s = rtmp_connect(server.rtmp_port)
        try:
            rtmp_handshake(s)
            # Only the header of a 64 KiB + 1 FCPublish: the server must refuse it without waiting for the body.
            s.sendall(_chunk0(20, 64 * 1024 + 1) + amf0.encode("FCPublish", 2.0, None))
            started = time.monotonic()
            assert await asyncio.to_thread(closed_by_peer, s, 3.0), "a 64 KiB + 1 command was not refused"
            assert time.monotonic() - started < 1.0
        finally:
            s.close()
        legal, _ = await asyncio.to_thread(
            _send_command_after_connect, server.rtmp_port, amf0.encode("FCPublish", 2.0, None, "x" * 60_000)
        )
        assert not legal, "a 60 KB command (under the limit) closed the connection"
        assert await viewer.wait_video_frames(before + 50, timeout_s=5), "the viewer stopped receiving"
    assert "65537 bytes (type 20)" in server.log_text()
    server.assert_alive()


async def test_a_million_key_amf0_object_does_not_stall_other_streams(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    keys = 1_800_000
    huge = amf0.encode("FCPublish", 2.0) + b"\x03" + b"".join(b"\x00\x03k%02x\x05" % (i % 256) for i in range(keys))
    huge += b"\x00\x00\x09"
    async with server.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_video_frames(10, timeout_s=5)
        before = viewer.video_frame_count
        with _HealthProbe(f"{server.http_base}/healthz") as probe:
            await asyncio.sleep(0.3)
            closed, _ = await asyncio.to_thread(_send_command_after_connect, server.rtmp_port, huge)
            await asyncio.sleep(0.5)
        assert probe.answers >= 5
        assert probe.slowest_s < 0.8, f"/healthz took {probe.slowest_s:.2f} s: the event loop was held"
        assert closed, "a 14 MB FCPublish was accepted"
        assert await viewer.wait_video_frames(before + 30, timeout_s=5), "the viewer stopped receiving"
    server.assert_alive()
