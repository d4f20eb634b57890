"""[server] workers = 2 and the fast lane: each worker trusts loopback as a proxy (its sibling's proxied
requests name their client in X-Forwarded-For), yet a viewer's own requests to the publisher's worker are
still answered by the lane; the proxied ones by the full stack, with the same bytes."""

from __future__ import annotations

import asyncio

import aiohttp

from e2e.test_workers import two_workers
from support.checks import wait_live

CONNECTIONS = 16
"""Fresh connections, so both workers answer (the kernel spreads them): all 16 on one worker has odds 2^-15."""


async def test_with_two_workers_the_publishers_worker_answers_its_viewers_through_the_fast_lane(
        server_factory, publish, media, stream_name):
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
    for _ in range(CONNECTIONS):  # a session each (one connection, kept alive as a player's: no Connection: close)
        async with aiohttp.ClientSession() as player, player.get(f"{server.http_base}/live/{stream_name}/{segment}") as resp:
            data = await resp.read()
            assert resp.status == 200 and data[:1] == b"\x47", (resp.status, data[:200])
            (full if "Server" in resp.headers else lane).append(data)  # aiohttp names itself; the lane does not
    assert lane, f"no request of {CONNECTIONS} was answered by the fast lane; log:\n{server.log_tail()}"
    assert full, "the sibling's viewers are served through its proxy, by the full stack"
    assert {bytes(d) for d in lane + full} == {lane[0]}, "the same segment, whichever way it came"
