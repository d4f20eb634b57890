"""Limits: connections per address (RTMP and HTTP together), viewers per stream, publishers per app. A
request over a limit gets a clear 429/503 (or an RTMP error status) and the log names the limit."""

from __future__ import annotations

import asyncio

import aiohttp

from e2e.test_auth_publish import rtmp_attempt
from support.checks import wait_live
from support.raw_net import closed_by_peer, rtmp_connect


async def _idle_viewers_gone(server, http: aiohttp.ClientSession) -> None:
    """Wait until short-lived viewers (wait_live's) have left, so only the test's own connections count."""
    for _ in range(100):
        async with http.get(f"{server.http_base}/metrics") as resp:
            text = await resp.text()
        if 'mediaserver_viewers{format="flv"} 0.0' in text:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("a viewer of wait_live is still connected after 10 s")


async def test_connections_per_address_are_limited_over_rtmp_and_http(server_factory, publish, media, stream_name):
    server = server_factory(**{"limits.max_connections_per_ip": "3"})
    publish(server, stream_name, media.av, loop=True)  # connection 1 (RTMP)
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http:
        await _idle_viewers_gone(server, http)
        async with server.flv_viewer(stream_name) as a, server.flv_viewer(stream_name) as b:  # 2 and 3
            assert await a.wait_video_frames(5, timeout_s=10) and await b.wait_video_frames(5, timeout_s=10)
            async with http.get(server.flv_url(stream_name)) as resp:
                body = await resp.json()
                assert resp.status == 429 and resp.headers["Retry-After"]
                assert "limits.max_connections_per_ip = 3" in body["error"]
            s = await asyncio.to_thread(rtmp_connect, server.rtmp_port)
            try:
                assert await asyncio.to_thread(closed_by_peer, s, 3.0), "an RTMP connection over the limit stayed open"
            finally:
                s.close()
        await asyncio.sleep(0.5)
        async with http.get(server.flv_url(stream_name)) as resp:  # below the limit again
            assert resp.status == 200
    log = server.log_text()
    assert "event=limit_reached" in log and "limit=limits.max_connections_per_ip" in log


async def test_viewers_per_stream_and_publishers_per_app_are_limited(server_factory, publish, media, stream_name):
    server = server_factory(**{"limits.max_viewers_per_stream": "1", "limits.max_publishers_per_app": "1"})
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http:
        await _idle_viewers_gone(server, http)
        async with server.flv_viewer(stream_name) as first:
            assert await first.wait_video_frames(5, timeout_s=10)
            async with http.get(server.flv_url(stream_name)) as resp:
                body = await resp.json()
                assert resp.status == 503 and resp.headers["Retry-After"]
                assert "limits.max_viewers_per_stream" in body["error"]
            played = await rtmp_attempt(server.rtmp_port, stream_name, play=True)
            assert played.codes == ["NetStream.Play.Failed"], played.codes
            async with http.get(server.hls_url(stream_name)) as resp:
                assert resp.status == 200, "HLS has no per-viewer state and is not limited"
    second = await rtmp_attempt(server.rtmp_port, "another")
    assert second.codes == ["NetStream.Publish.Rejected"] and second.closed_by_server
    other_app = await rtmp_attempt(server.rtmp_port, "another", app="live2")
    assert other_app.codes == ["NetStream.Publish.Start"]
    log = server.log_text()
    assert "limit=limits.max_viewers_per_stream" in log and "limit=limits.max_publishers_per_app" in log
