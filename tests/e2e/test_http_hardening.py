"""The HTTP side under hostile or careless clients (issue 9): connections that never finish a request head,
one host opening too many connections, WebSocket viewers that close, ping or send garbage, viewers that
stop reading, a disallowed method, egress counted for viewers that come and go between scrapes, and the
README's curl commands run as written."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediaserver.rtmp.client import ClientSession
from mediaserver.rtmp.events import VideoReceived
from support.checks import wait_live
from support.raw_net import stalled_viewer

README = Path(__file__).resolve().parents[2] / "README.md"
ADMIN = "admin-token-e2e-0123456789abcdef"
TCP_ESTABLISHED = 1


def tcp_state(s: socket.socket) -> int:
    """The kernel's TCP state of our end (tcpi_state), read without consuming anything."""
    return struct.unpack("B", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]


def raw_connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def stalled_ws_viewer(port: int, path: str, rcvbuf: int = 4096) -> socket.socket:
    """A WebSocket-FLV viewer with a tiny receive buffer that upgrades and then never reads."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    return s


def stalled_rtmp_player(port: int, name: str, rcvbuf: int = 4096) -> socket.socket:
    """An RTMP player with a tiny receive buffer that stops reading after its first video message."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    client = ClientSession()
    client.connect("live", f"rtmp://127.0.0.1:{port}/live")
    client.play(name)
    for _ in range(1000):
        out = client.data_to_send()
        if out:
            s.sendall(out)
        data = s.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection before sending video")
        client.receive_data(data)
        if any(isinstance(e, VideoReceived) for e in client.events()):
            return s
    raise AssertionError("no video message in 1000 reads")


async def scrape(server) -> dict[tuple, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{server.http_base}/metrics") as resp:
        assert resp.status == 200, await resp.text()
        text = await resp.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def wait_for_log(server, pattern: str, timeout_s: float, count: int = 1) -> list[re.Match[str]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = list(re.finditer(pattern, server.log_text()))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


# ----- request-head deadline and connection caps (defect 5) ---------------------------------------------


async def test_connections_that_send_nothing_trickle_the_head_or_idle_are_closed_at_their_deadline(
        server_factory, publish, media, stream_name):
    # keep-alive longer than the head deadline: aiohttp arms its keep-alive timer at accept as well
    server = server_factory(**{"http.header_timeout": "1", "http.keepalive_timeout": "2"})
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with server.flv_viewer(stream_name) as viewer:  # a long response outlives the head deadline
        silent = [raw_connect(server.http_port) for _ in range(30)]
        trickling = [raw_connect(server.http_port) for _ in range(5)]
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        t0 = time.monotonic()
        try:
            for i in range(8):  # one byte per 0.5 s: 4 s for 8 bytes, never a complete head
                for s in trickling:
                    try:
                        s.send(head[i:i + 1])
                    except OSError:
                        pass  # closed already: what we want
                await asyncio.sleep(0.5)
            open_left = [s for s in silent + trickling if tcp_state(s) == TCP_ESTABLISHED]
            assert open_left == [], f"{len(open_left)} of 35 connections still open {time.monotonic() - t0:.1f} s " \
                                    "after connecting, with a 1 s head deadline"
            frames_before = viewer.video_frame_count
            await asyncio.sleep(1.0)
            assert not viewer.done, f"the FLV viewer was cut off: {viewer.error!r}"
            assert viewer.video_frame_count > frames_before, "the FLV viewer stopped receiving after the head deadline"
        finally:
            for s in silent + trickling:
                s.close()
    assert server.healthy()
    kept = raw_connect(server.http_port)  # a complete request, then silence: the keep-alive timer ends it
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert kept.recv(4096).startswith(b"HTTP/1.1 200 ")
    await asyncio.sleep(3.5)
    assert tcp_state(kept) != TCP_ESTABLISHED, "an idle kept-alive connection outlived http.keepalive_timeout"
    kept.close()
    samples = await scrape(server)
    assert sample(samples, "mediaserver_http_connections_refused_total", reason="header_timeout") == 35
    assert "Traceback" not in server.log_text(), server.log_tail()


async def test_one_address_cannot_take_every_connection_and_refusals_are_counted(server_factory):
    server = server_factory(**{"http.max_connections_per_ip": "5", "http.max_connections": "8",
                               "http.header_timeout": "30"})
    held = [raw_connect(server.http_port) for _ in range(5)]
    try:
        refused = raw_connect(server.http_port)
        answer = refused.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"http.max_connections_per_ip" in answer, answer[:200]
        assert refused.recv(4096) == b"", "a refused connection must be closed"
        refused.close()
        other = raw_connect(server.http_port, source="127.0.0.2")  # another host is still served
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert other.recv(4096).startswith(b"HTTP/1.1 200 "), "another address was refused too"
        other.close()
        held += [raw_connect(server.http_port, source="127.0.0.2") for _ in range(3)]  # 8 open: the total cap
        await asyncio.sleep(0.2)
        third = raw_connect(server.http_port, source="127.0.0.3")
        answer = third.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"http.max_connections " in answer, answer[:200]
        third.close()
    finally:
        for s in held:
            s.close()
    await asyncio.sleep(0.5)
    for _ in range(30):  # until the server has seen the closes (a scrape before that may meet the cap)
        await asyncio.sleep(0.1)
        try:
            samples = await scrape(server)
        except AssertionError:
            continue
        if sample(samples, "mediaserver_http_connections") == 1:
            break
    assert sample(samples, "mediaserver_http_connections_refused_total", reason="max_connections_per_ip") == 1
    # the third address above, plus any scrape that met the cap before the server saw the closes
    assert sample(samples, "mediaserver_http_connections_refused_total", reason="max_connections") >= 1
    assert sample(samples, "mediaserver_http_connections") == 1  # the scrape's own
    assert "Traceback" not in server.log_text(), server.log_tail()


# ----- WebSocket-FLV reads its socket (defect 3) ----------------------------------------------------------


async def test_a_websocket_viewers_close_is_answered_at_once_and_ends_the_viewer(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    url = server.flv_url(stream_name).replace("http://", "ws://")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=10)) as ws:
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            t0 = time.monotonic()
            await ws.close()  # waits for the server's Close (RFC 6455 5.5.1)
            took = time.monotonic() - t0
    assert took < 1.0, f"the closing handshake took {took:.1f} s: the server did not answer Close"
    assert ws.close_code == 1000
    left = await wait_for_log(server, r"event=viewer_leave .*format=ws-flv .*reason=viewer_left", 3)
    assert left, server.log_tail()


async def test_a_websocket_viewer_gets_pongs_and_is_closed_for_sending_data(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    url = server.flv_url(stream_name).replace("http://", "ws://")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, autoping=False, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
            await ws.ping(b"are-you-there")
            async with asyncio.timeout(5):
                while (msg := await ws.receive()).type == aiohttp.WSMsgType.BINARY:
                    pass
            assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"are-you-there", msg
            await ws.send_str("hello")
            async with asyncio.timeout(5):
                while (msg := await ws.receive()).type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.PONG):
                    pass
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.UNSUPPORTED_DATA, msg
    assert await wait_for_log(server, r"event=viewer_leave .*format=ws-flv .*reason=unexpected_message", 3)


# ----- viewers that stop reading lose their socket (defect 4) ---------------------------------------------


async def test_viewers_that_never_read_are_aborted_after_the_write_timeout(server_factory, publish, media, stream_name):
    server = server_factory(**{"http.write_timeout": "2"})
    publish(server, stream_name, media.heavy, loop=True)  # ~6 Mbit/s: socket buffers fill within seconds
    await wait_live(server, stream_name)
    path = f"/live/{stream_name}.flv"
    stalled = [stalled_viewer(server.http_port, path) for _ in range(3)]
    stalled += [stalled_ws_viewer(server.http_port, path) for _ in range(2)]
    try:
        deadline = time.monotonic() + 25  # buffers filling (a few s) + write_timeout + slack
        while time.monotonic() < deadline:
            still = [s for s in stalled if tcp_state(s) == TCP_ESTABLISHED]
            if not still:
                break
            server.assert_alive()
            await asyncio.sleep(0.5)
        assert not still, f"{len(still)} of {len(stalled)} stalled viewers still connected 25 s on; log:\n" \
                          f"{server.log_tail()}"
    finally:
        for s in stalled:
            s.close()
    ended = re.findall(r"event=viewer_leave .*format=(ws-flv|flv) .*reason=(write_timeout|slow_consumer)",
                       server.log_text())
    assert sorted(f for f, _ in ended).count("flv") == 3 and len(ended) == 5, ended


async def test_rtmp_players_that_never_read_are_reset(server_factory, publish, media, stream_name):
    server = server_factory(**{"rtmp.idle_timeout": "2"})
    publish(server, stream_name, media.heavy, loop=True)
    await wait_live(server, stream_name)
    stalled = [await asyncio.to_thread(stalled_rtmp_player, server.rtmp_port, stream_name) for _ in range(2)]
    try:
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and any(tcp_state(s) == TCP_ESTABLISHED for s in stalled):
            server.assert_alive()
            await asyncio.sleep(0.5)
        still = sum(tcp_state(s) == TCP_ESTABLISHED for s in stalled)
        assert still == 0, f"{still} stalled RTMP players still connected 25 s on; log:\n{server.log_tail()}"
    finally:
        for s in stalled:
            s.close()


# ----- a disallowed method (defect 8) ---------------------------------------------------------------------


async def test_a_disallowed_method_answers_405_with_allow_and_no_traceback(server):
    async with aiohttp.ClientSession() as http:
        for method, path in (("POST", "/healthz"), ("DELETE", "/metrics"), ("PUT", "/live/x.flv")):
            async with http.request(method, f"{server.http_base}{path}") as resp:
                body = await resp.json()
                assert resp.status == 405, (method, path, resp.status, body)
                assert "GET" in resp.headers["Allow"] and body["error"] and body["hint"]
    assert "Traceback" not in server.log_text(), server.log_tail()


# ----- egress counted as sent (defect 12) -----------------------------------------------------------------


async def test_viewers_that_come_and_go_between_scrapes_are_counted_in_egress(server, publish, media, stream_name, ffmpeg):
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    first = await scrape(server)
    for _ in range(2):  # RTMP players that leave before the next scrape
        proc = await asyncio.create_subprocess_exec(
            ffmpeg, "-hide_banner", "-loglevel", "error", "-i", server.rtmp_url(stream_name), "-t", "1.5",
            "-c", "copy", "-f", "null", "-", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode(errors="replace")
    async with server.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_until(lambda v: len(v.tags) > 50, 10)
    leaves = await wait_for_log(server, r"event=viewer_leave .*format=(rtmp|flv) .*bytes=(\d+)", 5, count=4)
    second = await scrape(server)
    sent = {"rtmp": 0, "flv": 0}
    for m in leaves:
        sent[m.group(1)] += int(m.group(2))
    assert sent["rtmp"] > 20_000 and sent["flv"] > 0, leaves
    assert sample(first, "mediaserver_egress_bytes_total", format="rtmp") == 0
    # Every FLV and RTMP viewer has left: the counters hold exactly what their leave lines say they were sent.
    assert sample(second, "mediaserver_egress_bytes_total", format="rtmp") == sent["rtmp"]
    assert sample(second, "mediaserver_egress_bytes_total", format="flv") == sent["flv"]


# ----- the README's curl commands (defect 13) -------------------------------------------------------------


def readme_curl_commands() -> list[list[str]]:
    """Every `curl` command in README.md, continuation lines joined, split as a shell would."""
    text = re.sub(r"\\\n\s*", " ", README.read_text(encoding="utf-8"))
    return [shlex.split(line.strip(), comments=True) for line in text.splitlines() if line.strip().startswith("curl ")]


async def test_the_readmes_curl_commands_work_as_written(server_factory, monkeypatch, publish, media, stream_name):
    curl = shutil.which("curl")
    if curl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is needed to run the README's commands")
        pytest.skip("no curl on PATH")
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"abr.mode": "on_demand"})  # the README starts a transcode too
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    commands = readme_curl_commands()
    assert len(commands) >= 3, commands
    async with server.flv_viewer(stream_name) as viewer, aiohttp.ClientSession() as http:
        assert await viewer.wait_until(lambda v: len(v.tags) > 5, 10)
        async with http.get(f"{server.http_base}/api/v1/streams/live/{stream_name}/viewers",
                            headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
            # The newest viewer is ours: wait_live's short-lived viewer may not have been seen leaving yet.
            viewer_id = str(max(int(v["id"]) for v in (await resp.json())["viewers"]))
        # Kicking the stream ends it: the commands that act on one viewer first, the stream's kick last.
        def order(args: list[str]) -> int:
            line = " ".join(args)
            return 0 if "/viewers/" in line else 2 if line.endswith("/NAME/kick") else 1

        for args in sorted(commands, key=order):
            args = [a.replace("$MEDIASERVER_ADMIN_TOKEN", ADMIN).replace("HOST:8080", f"127.0.0.1:{server.http_port}")
                    .replace("/NAME/", f"/{stream_name}/").replace("/ID/", f"/{viewer_id}/")
                    .replace("live.example:443", "127.0.0.1:9")  # a push target on loopback (nothing listens)
                    for a in args]
            proc = await asyncio.create_subprocess_exec(
                curl, "-sS", "-o", "-", "-w", "\n%{http_code}", *args[1:],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 15)
            body, _, status = out.decode().rpartition("\n")
            assert status.startswith("2"), f"{shlex.join(args)} -> {status} {body} {err.decode()}"
