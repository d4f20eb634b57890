"""[server] workers = 2 and the fast lane: a connection reaching the worker without the stream's packager is
handed to the publisher's worker (workers/handoff.py), whose fast lane answers it like its own viewers'
(each worker trusts loopback as a proxy, and a viewer's own requests still take the lane), with the same bytes."""

from __future__ import annotations

import asyncio

import aiohttp

from e2e.test_workers import ADMIN, AUTH, samples_by_worker, two_workers
from support.checks import wait_live

CONNECTIONS = 16
"""Fresh connections, so both workers take some (the kernel spreads them)."""
HANDED = "mediaserver_worker_connections_handed_total"


async def test_with_two_workers_the_publishers_worker_answers_every_viewer_through_the_fast_lane(
        server_factory, publish, media, stream_name, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = await two_workers(server_factory)
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    lane, full = [], []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        segment = None
        for _ in range(CONNECTIONS * 4):
            async with fresh.get(server.hls_url(stream_name)) as resp:
                text = await resp.text()
            segments = [line for line in text.splitlines() if line.endswith(".ts")] if resp.status == 200 else []
            if segments:
                segment = segments[0]
                break
            server.check()
            await asyncio.sleep(0.25)
        assert segment is not None, f"no HLS segment; log:\n{server.log_tail()}"
    for _ in range(CONNECTIONS):  # a session each: one connection, kept alive as a player's
        async with aiohttp.ClientSession() as player:
            async with player.get(server.hls_url(stream_name)) as resp:
                assert resp.status == 200 and segment in await resp.text()
            async with player.get(f"{server.http_base}/live/{stream_name}/{segment}") as resp:
                data = await resp.read()
            assert resp.status == 200 and data[:1] == b"\x47", (resp.status, data[:200])
            (full if "Server" in resp.headers else lane).append(data)  # aiohttp names itself; the lane does not
    # The sibling proxies its first request of the stream (it asks the book who has it), and a request arriving
    # while aiohttp still finishes the one before stays with aiohttp: a connection or two; without the hand-off,
    # half of them (every one reaching the sibling)
    assert lane and len(full) <= CONNECTIONS // 4, (
        f"{len(full)} of {CONNECTIONS} segments came through a proxy and the full stack, not from the packager's "
        f"fast lane; log:\n{server.log_tail()}")
    assert {bytes(d) for d in lane + full} == {lane[0]}, "the same segment, whichever worker the connection reached"
    async with aiohttp.ClientSession() as http, http.get(f"{server.http_base}/metrics", headers=AUTH) as resp:
        metrics = await resp.text()
    handed = {way: sum(samples_by_worker(metrics, HANDED, f'way="{way}"').values()) for way in ("out", "in", "failed")}
    # all 16 connections on the publisher's worker has odds 2^-16
    assert handed["out"] >= 1 and handed["in"] == handed["out"] and handed["failed"] == 0, handed
