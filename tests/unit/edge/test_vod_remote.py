"""Fetching a recording from the node whose disk holds it (edge/vod_remote.py): which headers pass each
way, the loop guard, Range answers passed through, a node that is down or does not answer (503 at once),
a node that stalls mid-answer (the read deadline), a viewer who hangs up (the upstream request ends), and
the recording node taking the fetch by the cluster credential (origin_pull's internal middleware)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mediaserver.cluster.locator import NodeInfo
from mediaserver.config import Config
from mediaserver.edge.keys import CONFIG, RECORDINGS, REMOTE_VOD
from mediaserver.edge.common import PLAY_QUERY
from mediaserver.edge.origin_pull import CREDENTIAL_HEADER, INTERNAL_REQUEST, PullPool, PullSettings
from mediaserver.edge.vod_remote import (PROXIED_HEADER, RemoteVod, downstream_headers, fetch_remote, is_proxied,
                                         remote_row, upstream_headers, upstream_query)
from mediaserver.hub.registry import StreamRegistry
from mediaserver.record.catalog import Recording
from mediaserver.record.manager import on_other_node
from support.server import free_port

SECRET = "cluster-secret-0123456789abcdef"
BODY = bytes(range(256)) * 400  # 102400 bytes


def test_a_viewers_range_and_validators_pass_and_the_cluster_credential_and_loop_marker_are_added():
    sent = upstream_headers({"Range": "bytes=0-99", "If-Range": '"abc"', "Cookie": "session=1",
                             "Authorization": "Bearer viewer", "Host": "edge", "Accept-Encoding": "gzip"},
                            "edge-1", SECRET)
    assert sent == {"Range": "bytes=0-99", "If-Range": '"abc"', CREDENTIAL_HEADER: SECRET,
                    PROXIED_HEADER: "edge-1", "Accept-Encoding": "identity"}
    assert is_proxied(sent) and not is_proxied({"Range": "bytes=0-1"})


def test_the_recording_nodes_answer_passes_its_range_and_length_but_not_its_hop_headers_or_cookies():
    got = downstream_headers({"Content-Type": "video/mp4", "Content-Length": "100", "Content-Range": "bytes 0-99/500",
                              "Accept-Ranges": "bytes", "ETag": '"e"', "Connection": "keep-alive",
                              "Transfer-Encoding": "chunked", "Set-Cookie": "a=b",
                              "Access-Control-Allow-Origin": "https://other"})
    assert got == {"Content-Type": "video/mp4", "Content-Length": "100", "Content-Range": "bytes 0-99/500",
                   "Accept-Ranges": "bytes", "ETag": '"e"'}


def _row(node: str, location: str = "/rec/live/cam/1.mp4") -> Recording:
    return Recording.start("live", "cam", node, location, datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_only_files_on_another_nodes_disk_are_fetched_from_it():
    assert on_other_node(_row("origin-1"), "edge-1")
    assert not on_other_node(_row("edge-1"), "edge-1")
    assert not on_other_node(_row("origin-1", "s3://bucket/live/cam/1.mp4"), "edge-1")  # every node reads the bucket


class Upstream:
    """The recording node: serves BODY with Range, and records what it was sent and how its answers ended."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.stall = False
        self.endless_ended = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/vod/{file}", self.serve)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        if request.match_info["file"] == "endless.mp4":
            resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
            await resp.prepare(request)
            try:
                while True:
                    await resp.write(b"x" * 65536)
                    await asyncio.sleep(0.01)
            finally:
                self.endless_ended.set()
        if self.stall:
            resp = web.StreamResponse(headers={"Content-Type": "video/mp4", "Content-Length": str(len(BODY))})
            await resp.prepare(request)
            await resp.write(BODY[:1000])
            await asyncio.sleep(30)
        return web.Response(body=BODY, content_type="video/mp4") if "Range" not in request.headers else \
            await _ranged(request)


async def _ranged(request: web.Request) -> web.StreamResponse:
    try:
        rng = request.http_range
    except ValueError:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{len(BODY)}"}) from None
    start, stop, _ = rng.indices(len(BODY))
    if start >= len(BODY):
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{len(BODY)}"})
    return web.Response(status=206, body=BODY[start:stop], content_type="video/mp4",
                        headers={"Content-Range": f"bytes {start}-{stop - 1}/{len(BODY)}"})


async def _front(nodes: dict[str, str], **timeouts: float) -> tuple[web.Application, RemoteVod]:
    async def find(node: str) -> NodeInfo | None:
        url = nodes.get(node)
        return NodeInfo(id=node, role="origin", http=url, rtmp="", version="t") if url else None

    remote = RemoteVod("edge-1", SECRET, find, **timeouts)
    app = web.Application()
    app[CONFIG] = Config()

    async def fetch(request: web.Request) -> web.StreamResponse:
        return await remote.fetch(request, request.query.get("node", "origin-1"), "recording r1")

    app.router.add_get("/vod/{file}", fetch)
    return app, remote


@pytest.fixture
async def upstream():
    up = Upstream()
    async with TestServer(up.app, host="127.0.0.1") as server:
        up.base = str(server.make_url("")).rstrip("/")
        yield up


async def test_ranges_are_answered_as_the_recording_node_answers_them(upstream):
    app, remote = await _front({"origin-1": upstream.base})
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/vod/r1.mp4")
        assert resp.status == 200 and await resp.read() == BODY and resp.headers["Content-Length"] == str(len(BODY))
        resp = await client.get("/vod/r1.mp4", headers={"Range": "bytes=0-99"})
        assert resp.status == 206 and await resp.read() == BODY[:100]
        assert resp.headers["Content-Range"] == f"bytes 0-99/{len(BODY)}"
        resp = await client.get("/vod/r1.mp4", headers={"Range": "bytes=-100"})
        assert resp.status == 206 and await resp.read() == BODY[-100:]
        resp = await client.get("/vod/r1.mp4", headers={"Range": f"bytes={len(BODY) + 5}-"})
        assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{len(BODY)}"
    await remote.close()
    assert upstream.headers[1]["Range"] == "bytes=0-99"
    assert all(h[CREDENTIAL_HEADER] == SECRET and h[PROXIED_HEADER] == "edge-1" for h in upstream.headers)


async def test_a_node_that_is_down_or_does_not_answer_is_503_at_once_with_a_hint():
    app, remote = await _front({"gone": f"http://127.0.0.1:{free_port()}"}, connect_timeout=1.0)
    async with TestClient(TestServer(app)) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        resp = await client.get("/vod/r1.mp4?node=not-up")
        body = await resp.json()
        assert resp.status == 503 and "not-up" in body["error"] and "record.storage" in body["hint"], body
        assert resp.headers["Retry-After"]
        resp = await client.get("/vod/r1.mp4?node=gone")
        body = await resp.json()
        assert resp.status == 503 and "does not answer" in body["error"], body
        assert loop.time() - started < 2.0
    await remote.close()
    assert remote.failures == 2


async def test_a_node_that_stalls_mid_answer_ends_the_viewers_answer_after_the_read_deadline(upstream):
    upstream.stall = True
    app, remote = await _front({"origin-1": upstream.base}, read_timeout=0.3)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/vod/r1.mp4")
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):  # short of its Content-Length: never taken for the file
            async with asyncio.timeout(5):
                await resp.read()
    await remote.close()
    assert remote.failures == 1


async def test_a_viewer_who_hangs_up_ends_the_request_to_the_recording_node(upstream):
    app, remote = await _front({"origin-1": upstream.base})
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/vod/endless.mp4")
        assert resp.status == 200
        await resp.content.readexactly(200_000)
        resp.close()  # the viewer leaves mid-file
        async with asyncio.timeout(5):
            await upstream.endless_ended.wait()
    await remote.close()


async def test_a_fetched_request_is_never_fetched_further(upstream):
    rows = {"r1": _row("origin-1"), "mine": _row("edge-1")}
    _, remote = await _front({"origin-1": upstream.base})
    app = web.Application()
    app[CONFIG] = Config()
    app[REMOTE_VOD] = remote
    app[RECORDINGS] = SimpleNamespace(row_of=lambda rec_id: asyncio.sleep(0, (rows[rec_id], None) if rec_id in rows
                                                                          else None))

    async def vod(request: web.Request) -> web.StreamResponse:  # as edge/vod.py: when the file is not here
        row = await remote_row(request, request.match_info["file"].removesuffix(".mp4"))
        return await fetch_remote(request, row) if row is not None else web.Response(text="local")

    app.router.add_get("/vod/{file}", vod)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/vod/r1.mp4", headers={"Range": "bytes=0-9"})
        assert resp.status == 206 and await resp.read() == BODY[:10]  # another node's file: fetched
        assert await (await client.get("/vod/unknown.mp4")).text() == "local"  # not in the catalog: the local 404
        assert await (await client.get("/vod/mine.mp4")).text() == "local"
        resp = await client.get("/vod/r1.mp4", headers={PROXIED_HEADER: "edge-2"})  # fetched once already
        assert await resp.text() == "local"
    await remote.close()
    assert remote.fetches == 1


def test_the_play_token_admitted_here_replaces_the_viewers_in_the_query_sent_on():
    assert upstream_query({"token": "t1", "x": "1"}, "token=t2") == "x=1&token=t2"
    assert upstream_query({"x": "1"}, "token=bearer%2Btoken") == "x=1&token=bearer%2Btoken"  # came as a bearer token
    assert upstream_query({"token": "t1"}, "") == ""  # an open app: no token to carry


async def test_the_recording_node_serves_a_fetch_by_the_cluster_credential_without_admitting_it_again():
    pool = PullPool(StreamRegistry(), None, PullSettings(node_id="origin-1", secret=SECRET))
    seen: list[dict] = []

    @web.middleware
    async def admission(request, handler):  # stands for the viewer admission that must not run
        raise web.HTTPUnauthorized(text="admission ran")

    async def answer(request: web.Request) -> web.Response:
        seen.append({"internal": request.get(INTERNAL_REQUEST), "query": request.get(PLAY_QUERY)})
        return web.Response(text="served")

    app = web.Application(middlewares=[pool.internal_middleware, admission])
    app.router.add_get("/vod/{file}", answer, name="vod-mp4")
    app.router.add_get("/{app}/{name}/{file}", answer, name="play-hls")
    fetch = {CREDENTIAL_HEADER: SECRET, PROXIED_HEADER: "edge-1"}
    async with TestClient(TestServer(app)) as client:
        assert await (await client.get("/vod/r1.mp4?token=abc", headers=fetch)).text() == "served"
        assert await (await client.get("/live/cam/dvr.m3u8", headers=fetch)).text() == "served"
        assert (await client.get("/vod/r1.mp4")).status == 401  # a viewer: admitted as usual
        assert (await client.get("/vod/r1.mp4", headers={**fetch, CREDENTIAL_HEADER: "wrong"})).status == 403
        assert (await client.get("/live/cam/index.m3u8", headers=fetch)).status == 404  # live: pulled as FLV only
    await pool.close()
    assert seen == [{"internal": True, "query": "token=abc"}, {"internal": True, "query": None}]
