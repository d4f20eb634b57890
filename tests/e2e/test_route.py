"""Load balancing across edges on loopback: a real redis-server, an origin and two edges with a ceiling of
one viewer each. The route answers the less loaded edge; an edge at its ceiling sends a new HTTP-FLV viewer
to the other with a 302, and the viewer decodes there (PyAV); when both are full nothing bounces."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from e2e.test_cluster import redis  # noqa: F401  (fixture)
from support.checks import wait_live
from support.decode import decode_media


async def route_of(http: aiohttp.ClientSession, server, name: str) -> tuple[int, dict]:
    async with http.get(f"{server.http_base}/api/v1/route/live/{name}") as resp:
        return resp.status, await resp.json()


async def wait_route(http, server, name: str, want, timeout_s: float = 10.0) -> tuple[int, dict]:
    """Ask the route until `want(status, body)`: the edges' loads reach Redis every second."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = await route_of(http, server, name)
        if want(status, body) or time.monotonic() > deadline:
            return status, body
        await asyncio.sleep(0.25)


async def read_flv(http: aiohttp.ClientSession, url: str, nbytes: int = 300_000, timeout_s: float = 15.0) -> bytes:
    data = bytearray()
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        assert resp.status == 200, (url, resp.status, await resp.text())
        async for chunk in resp.content.iter_any():
            data += chunk
            if len(data) >= nbytes:
                break
    return bytes(data)


async def test_viewers_are_routed_and_redirected_to_the_less_loaded_edge_and_never_bounce(
        redis, server_factory, publish, media, stream_name):
    common = {"cluster.redis_url": redis.url, "cluster.claim_ttl": "3", "cluster.max_viewers": "1",
              "record.mode": "off"}
    origin = server_factory(**common, **{"cluster.role": "origin", "cluster.node_id": "origin-1"})
    edge_a = server_factory(**common, **{"cluster.role": "edge", "cluster.node_id": "edge-a"})
    edge_b = server_factory(**common, **{"cluster.role": "edge", "cluster.node_id": "edge-b"})
    publish(origin, stream_name, media.av, loop=True)
    await wait_live(origin, stream_name, timeout_s=15)

    async with aiohttp.ClientSession() as http:
        # Both edges idle: equal load, the tie goes to the first id. Every node answers alike.
        status, body = await wait_route(http, origin, stream_name, lambda s, b: s == 200 and b["node"] == "edge-a")
        assert (status, body["node"]) == (200, "edge-a"), body
        assert body["urls"]["flv"] == edge_a.flv_url(stream_name)
        assert body["urls"]["hls"] == edge_a.hls_url(stream_name)
        assert body["urls"]["rtmp"] == edge_a.rtmp_url(stream_name)
        assert set(body["urls"]) == {"flv", "ws-flv", "hls", "llhls", "dash", "rtmp", "webrtc"}
        assert (await route_of(http, edge_b, stream_name))[1]["node"] == "edge-a"
        assert body["live"] is True and (await route_of(http, edge_b, stream_name))[1]["live"] is True  # held by the origin
        assert (await route_of(http, edge_b, stream_name + "x"))[1]["live"] is False

        # One viewer fills edge-a: the route now answers edge-b.
        first = await http.get(edge_a.flv_url(stream_name))
        assert first.status == 200
        await first.content.readexactly(13)
        status, body = await wait_route(http, origin, stream_name, lambda s, b: b.get("node") == "edge-b")
        assert body["node"] == "edge-b" and body["base"] == edge_b.http_base, body

        # A new HLS player of the full edge-a is sent to edge-b too.
        async with http.get(edge_a.hls_url(stream_name), allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == f"{edge_b.hls_url(stream_name)}?balanced=1"

        # A new FLV viewer of the full edge-a is sent to edge-b, once (the marker), and plays there.
        async with http.get(edge_a.flv_url(stream_name), allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            location = resp.headers["Location"]
        assert location == f"{edge_b.flv_url(stream_name)}?balanced=1"
        second = await http.get(location)
        data = bytearray()
        async for chunk in second.content.iter_any():
            data += chunk
            if len(data) >= 60_000:
                break
        report = decode_media(bytes(data), "flv")
        assert report.errors == [] and report.video_codec == "h264" and report.first_video_frame_key, \
            report.summary()
        assert report.video_frames >= 10, report.summary()

        # Both edges full: the route says so, and edge-a serves a new viewer itself rather than bounce it.
        status, body = await wait_route(http, origin, stream_name, lambda s, b: s == 503)
        assert status == 503 and "ceiling" in body["error"], body
        await asyncio.sleep(1.1)  # edge-a's view of the others' loads is at most a second old
        async with http.get(edge_a.flv_url(stream_name), allow_redirects=False) as resp:
            assert resp.status == 200
            await resp.content.readexactly(13)
        # A redirected request is served whatever the load.
        async with http.get(f"{edge_b.flv_url(stream_name)}?balanced=1", allow_redirects=False) as resp:
            assert resp.status == 200
        first.close()
        second.close()
    assert "event=viewer_redirected" in edge_a.log_text()
