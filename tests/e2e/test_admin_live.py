"""The admin API on a live server: what it reports about real streams, kicking publishers and viewers,
blocking a name, and hostile paths on every route that takes a name."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest

from e2e.test_auth_publish import rtmp_attempt
from support.checks import wait_live
from support.raw_net import closed_by_peer, stalled_viewer

ADMIN = "admin-token-e2e-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def admin_server(server_factory, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    return server_factory(**{"auth.failure_delay_ms": "50"})


async def api(http: aiohttp.ClientSession, server, method: str, path: str, **kwargs) -> tuple[int, dict]:
    kwargs.setdefault("headers", AUTH)
    async with http.request(method, f"{server.http_base}/api/v1{path}", **kwargs) as resp:
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()


async def test_the_api_answers_503_without_a_token_configured_and_401_to_a_wrong_one(server_factory, monkeypatch):
    monkeypatch.delenv("MEDIASERVER_ADMIN_TOKEN", raising=False)
    plain = server_factory()
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    guarded = server_factory()
    async with aiohttp.ClientSession() as http:
        status, body = await api(http, plain, "GET", "/streams")
        assert status == 503 and "MEDIASERVER_ADMIN_TOKEN" in body["hint"]
        for headers in ({}, {"Authorization": "Bearer nope-nope-nope-nope"}, {"Authorization": ADMIN}):
            async with http.get(f"{guarded.http_base}/api/v1/streams", headers=headers) as resp:
                assert resp.status == 401 and "Bearer" in resp.headers["WWW-Authenticate"]
        status, body = await api(http, guarded, "GET", "/streams")
        assert status == 200 and body == {"streams": []}
        status, _ = await api(http, guarded, "POST", "/streams/live/x/kick", data=b"{bad json",
                              headers={**AUTH, "Content-Type": "application/json"})
        assert status == 400


async def test_streams_report_publisher_codecs_resolution_bit_rate_and_viewers(admin_server, publish, media, stream_name):
    server = admin_server
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    viewers = [server.flv_viewer(stream_name) for _ in range(2)]
    async with aiohttp.ClientSession() as http:
        try:
            await asyncio.gather(*(v.start() for v in viewers))
            await asyncio.sleep(4.5)  # the bit rate is measured over a few seconds
            status, body = await api(http, server, "GET", "/streams")
            assert status == 200
            (stream,) = body["streams"]
            assert stream["name"] == stream_name and stream["state"] == "live"
            assert stream["publisher"].startswith("127.0.0.1:")
            assert stream["video"]["codec"] == "h264"
            assert (stream["video"]["width"], stream["video"]["height"]) == (media.av.width, media.av.height)
            assert stream["audio"]["codec"] == "aac" and stream["audio"]["sample_rate"] == media.av.sample_rate
            assert stream["viewers"] == {"flv": 2} and stream["uptime_s"] > 3
            measured = stream["bitrate_kbps"]["measured"]
            assert measured is not None and 0.3 < measured / (media.av.bitrate_bps / 1000) < 3, stream["bitrate_kbps"]
            status, detail = await api(http, server, "GET", f"/streams/live/{stream_name}")
            assert status == 200 and len(detail["viewer_list"]) == 2
            assert all(v["bytes_sent"] > 0 and v["format"] == "flv" for v in detail["viewer_list"])
        finally:
            await asyncio.gather(*(v.close() for v in viewers))


async def test_a_kicked_viewers_socket_closes_while_the_others_keep_playing(admin_server, publish, media, stream_name):
    server = admin_server
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    raw = await asyncio.to_thread(stalled_viewer, server.http_port, f"/live/{stream_name}.flv", 1 << 20)
    port = raw.getsockname()[1]
    try:
        async with server.flv_viewer(stream_name) as other, aiohttp.ClientSession() as http:
            assert await other.wait_video_frames(10, timeout_s=10)
            for _ in range(50):
                _, listing = await api(http, server, "GET", f"/streams/live/{stream_name}/viewers")
                mine = [v for v in listing["viewers"] if v["peer"].endswith(f":{port}")]
                if mine:
                    break
                await asyncio.sleep(0.1)
            status, body = await api(http, server, "POST", f"/streams/live/{stream_name}/viewers/{mine[0]['id']}/kick")
            assert status == 200 and body["viewer_kicked"] == mine[0]["id"]
            assert await asyncio.to_thread(closed_by_peer, raw, 5.0, 64 << 20), "the kicked viewer's socket stayed open"
            before = other.video_frame_count
            assert await other.wait_video_frames(before + 25, timeout_s=5), "the other viewer stopped receiving"
            assert not other.done
            status, _ = await api(http, server, "POST", f"/streams/live/{stream_name}/viewers/{mine[0]['id']}/kick")
            assert status == 404
    finally:
        raw.close()
    assert "reason=kicked" in server.log_text()


async def test_a_kicked_publishers_viewers_get_the_end_and_a_block_keeps_it_out(admin_server, publish, media, stream_name):
    server = admin_server
    publisher = publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with server.flv_viewer(stream_name) as viewer, aiohttp.ClientSession() as http:
        assert await viewer.wait_video_frames(10, timeout_s=10)
        # A kicked encoder exits, cleanly or with "connection reset" when the close meets its next write.
        publisher.expect_exit = True
        status, body = await api(http, server, "POST", f"/streams/live/{stream_name}/kick",
                                 json={"block_seconds": 2, "reason": "test"})
        assert status == 200 and body["viewers_ended"] >= 1 and body["blocked_until"]
        assert await viewer.wait_end(5.0) and viewer.ended and viewer.error is None, "the viewer got no clean end"
        assert await publisher.wait_async(10.0) is not None, "the kicked publisher is still connected"
        # The stream just ended: it is unknown now, and so is a second kick.
        assert (await api(http, server, "GET", f"/streams/live/{stream_name}"))[0] == 404
        assert (await api(http, server, "POST", f"/streams/live/{stream_name}/kick"))[0] == 404
        # An encoder that reconnects is refused while the block lasts, and admitted after it.
        attempt = await rtmp_attempt(server.rtmp_port, stream_name)
        assert attempt.codes == ["NetStream.Publish.Unauthorized"]
        status, body = await api(http, server, "GET", "/blocks")
        assert [b["name"] for b in body["blocks"]] == [stream_name]
        await asyncio.sleep(2.1)
        attempt = await rtmp_attempt(server.rtmp_port, stream_name)
        assert attempt.codes == ["NetStream.Publish.Start"]
    assert "reason=blocked" in server.log_text()


def _raw_request(port: int, method: bytes, target: bytes, body: bytes = b"") -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                  b"Authorization: Bearer " + ADMIN.encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        data = b""
        while len(data) < 1 << 20:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


API_TRICKS = [
    b"/api/v1/streams/live/../../../etc/passwd", b"/api/v1/streams/%2e%2e/%2e%2e/etc/passwd",
    b"/api/v1/streams/live/a%2Fb", b"/api/v1/streams/live/a%2fb/kick", b"/api/v1/streams/live/x/viewers/..%2f1/kick",
    b"/api/v1/streams/live/" + b"a" * 5000, b"/api/v1/streams/live/\xff\xfe", b"/api/v1/streams/live/%ff%fe/viewers",
    b"/api/v1/streams/live/%00", b"/api/v1/blocks/live/%2e%2e", b"/api/v1/blocks/..%2f..%2f/x",
    b"/api/v1/streams/live/.hidden/kick", b"/api/v1/../../etc/passwd", b"/api/v1/streams/live/x/viewers/%31%2f2/kick",
    b"/api/v1/streams/live/x%20y/viewers", b"/api/v1/%2e%2e/metrics",
]


async def test_path_tricks_on_api_routes_get_4xx_json_and_never_a_file(admin_server):
    wrong = []
    for target in API_TRICKS:
        for method in (b"GET", b"POST", b"PUT", b"DELETE"):
            status, body = await asyncio.to_thread(_raw_request, admin_server.http_port, method, target,
                                                   json.dumps({"seconds": 5}).encode())
            if not 400 <= status < 500 or b"root:" in body:
                wrong.append(f"{method.decode()} {target[:70]!r}: {status} {body[:80]!r}")
    assert wrong == [], "\n".join(wrong)
    assert "Traceback" not in admin_server.log_text()
