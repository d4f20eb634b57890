"""[server] workers = 2: two processes share the RTMP and HTTP ports. A viewer on the worker without the
publisher is served through a pull from its sibling; /metrics and the API show the node; a kick reaches
the publisher's worker; a worker killed with SIGKILL is started again and serves new viewers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys

import aiohttp
import pytest

from support.checks import wait_live
from support.decode import decode_media
from support.player import ffmpeg_play
from support.server import free_port

ADMIN = "admin-token-workers-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
VIEWERS = 12
MORE_VIEWERS = 24


async def wait_for(predicate, timeout_s: float, what: str, server) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if await predicate():
            return
        server.check()
        await asyncio.sleep(0.1)
    pytest.fail(f"{what} within {timeout_s} s; log:\n{server.log_tail()}", pytrace=False)


def flv_viewers_by_worker(metrics: str) -> dict[str, float]:
    return {w: float(v) for w, v in re.findall(r'^mediaserver_viewers\{worker="(\d+)",format="flv"\} (\S+)$', metrics, re.M)}


async def hls_from_any_worker(fresh: aiohttp.ClientSession, server, name: str) -> None:
    """Every connection (so both workers) lists the same segments, and each segment listed loads from
    every connection: one packager per stream, on the publisher's worker."""
    playlists = []
    for _ in range(40):
        async with fresh.get(server.hls_url(name)) as resp:
            if resp.status == 200:
                playlists.append(await resp.text())
                if len(playlists) == 6:
                    break
                continue
        server.check()
        await asyncio.sleep(0.25)
    assert len(playlists) == 6, f"no HLS playlist; log:\n{server.log_tail()}"
    listed = [[line for line in p.splitlines() if line.endswith(".ts")] for p in playlists]
    assert all(listed) and len({names[0] for names in listed}) <= 2, listed  # at most one segment closed meanwhile
    for uri in listed[-1][:2] * 3:
        async with fresh.get(f"{server.http_base}/live/{name}/{uri}") as resp:
            data = await resp.read()
            assert resp.status == 200 and data[:1] == b"\x47", (resp.status, data[:200])


async def test_two_workers_serve_one_stream_count_it_once_kick_it_and_survive_a_killed_worker(
        server_factory, publish, media, stream_name, ffmpeg, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = await two_workers(server_factory)
    publish(server, stream_name, media.av, loop=True, expect_failure=True)  # kicked below
    await wait_live(server, stream_name)
    viewers = [server.flv_viewer(stream_name) for _ in range(VIEWERS)]
    async with aiohttp.ClientSession() as http:
        try:
            await asyncio.gather(*(v.start() for v in viewers))
            got = await asyncio.gather(*(v.wait_video_frames(30, timeout_s=15) for v in viewers))
            assert all(got), [v.video_frame_count() for v in viewers]
            for viewer in viewers[:3]:
                report = decode_media(viewer.complete_flv(), "flv")
                assert report.errors == [] and report.video_codec == "h264" and report.first_video_frame_key, \
                    report.summary()

            async def counted() -> bool:
                async with http.get(f"{server.http_base}/metrics", headers=AUTH) as resp:
                    by_worker = flv_viewers_by_worker(await resp.text())
                return sum(by_worker.values()) == len(viewers) and len(by_worker) == 2

            # SO_REUSEPORT hashes each connection's addresses: 12 connections all land on one worker once in
            # 2,048 runs, so a few more are opened then (bounded) until both workers serve viewers
            for _ in range(MORE_VIEWERS // 4 + 1):
                await wait_for(counted, 5, f"/metrics counting {len(viewers)} FLV viewers across 2 workers", server)
                async with http.get(f"{server.http_base}/metrics", headers=AUTH) as resp:
                    by_worker = flv_viewers_by_worker(await resp.text())
                if all(n > 0 for n in by_worker.values()) or len(viewers) >= VIEWERS + MORE_VIEWERS:
                    break
                more = [server.flv_viewer(stream_name) for _ in range(4)]
                viewers += more
                await asyncio.gather(*(v.start() for v in more))
                got = await asyncio.gather(*(v.wait_video_frames(30, timeout_s=15) for v in more))
                assert all(got), [v.video_frame_count() for v in more]
            assert all(n > 0 for n in by_worker.values()), f"SO_REUSEPORT gave every viewer to one worker: {by_worker}"
            watching = len(viewers)

            async def no_internal() -> bool:  # a sibling's pull is no other node's (once the book has its record)
                async with http.get(f"{server.http_base}/metrics", headers=AUTH) as resp:
                    found = re.findall(r'^mediaserver_(?:internal_viewers|pulled_streams)\{worker="\d+"\} (\S+)$',
                                       await resp.text(), re.M)
                return len(found) == 4 and all(float(v) == 0 for v in found)

            await wait_for(no_internal, 10, "/metrics counting no internal viewers nor pulled streams", server)

            # The console's views are the node's too: one node, the stream's history once with every viewer.
            async def console_views() -> bool:
                async with http.get(f"{server.http_base}/api/v1/nodes", headers=AUTH) as resp:
                    nodes = (await resp.json())["nodes"]
                async with http.get(f"{server.http_base}/console/history.json", headers=AUTH) as resp:
                    history = [s for s in (await resp.json())["streams"] if s["name"] == stream_name]
                return (len(nodes) == 1 and nodes[0]["viewers"] == watching and nodes[0]["workers"] == 2
                        and len(history) == 1 and history[0]["viewers"][-1:] == [watching])

            await wait_for(console_views, 15, "/api/v1/nodes and /console/history.json for the whole node", server)

            async def listed() -> bool:
                async with http.get(f"{server.http_base}/api/v1/streams", headers=AUTH) as resp:
                    body = await resp.json()
                mine = [s for s in body["streams"] if s["name"] == stream_name]
                return (len(mine) == 1 and mine[0]["viewers_total"] == watching
                        and len(mine[0]["viewers_by_worker"]) == 2)

            await wait_for(listed, 5, f"/api/v1/streams listing the stream once with {watching} viewers", server)

            plays = await asyncio.gather(*(ffmpeg_play(server.rtmp_url(stream_name), tmp_path / f"p{i}.flv")
                                           for i in range(2)))
            for out in plays:
                report = decode_media(out.read_bytes(), "flv")
                assert report.errors == [] and report.video_frames >= 25, report.summary()

            # a new connection each: SO_REUSEPORT sends them to both workers; each answers for the stream
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
                await hls_from_any_worker(fresh, server, stream_name)
                for _ in range(6):
                    async with fresh.get(f"{server.http_base}/api/v1/streams/live/{stream_name}", headers=AUTH) as resp:
                        body = await resp.json()
                        assert resp.status == 200 and body["publisher"].startswith("127.0.0.1:"), body
                async with fresh.post(f"{server.http_base}/api/v1/streams/live/{stream_name}/kick", headers=AUTH,
                                      json={"reason": "test", "block_seconds": 60}) as resp:
                    assert resp.status == 200 and not (await resp.json()).get("forwarded"), await resp.text()
                for _ in range(6):  # the name is blocked on every worker
                    async with fresh.get(f"{server.http_base}/api/v1/blocks", headers=AUTH) as resp:
                        blocks = (await resp.json())["blocks"]
                        assert [b["name"] for b in blocks] == [stream_name], blocks
            ended = await asyncio.gather(*(v.wait_end(timeout_s=10) for v in viewers))
            assert all(ended), "a viewer was still served after the kick"
        finally:
            await asyncio.gather(*(v.close() for v in viewers))

        pids = re.search(r"event=workers_ready workers=2 pids=(\d+),(\d+)", server.log_text())
        assert pids, server.log_tail()
        os.kill(int(pids.group(1)), signal.SIGKILL)
        await wait_for(lambda: asyncio.sleep(0, "event=worker_restarted worker=0" in server.log_text()), 10,
                       "the killed worker started again", server)
        await wait_for(lambda: asyncio.sleep(0, len(re.findall(r"event=ready .*worker=0", server.log_text())) == 2),
                       20, "the restarted worker listening", server)
        # the restarted worker got the block from the supervisor before it listened: every worker refuses
        assert "event=worker_blocks_copied worker=0 blocks=1" in server.log_text(), server.log_tail()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
            for _ in range(10):  # a new connection each: both workers answer
                async with fresh.get(f"{server.http_base}/api/v1/blocks", headers=AUTH) as resp:
                    blocks = (await resp.json())["blocks"]
                    assert [b["name"] for b in blocks] == [stream_name], blocks
            async with fresh.get(f"{server.http_base}/metrics", headers=AUTH) as resp:
                restarts = samples_by_worker(await resp.text(), "mediaserver_worker_restarts_total")
            assert restarts == {"0": 1.0, "1": 0.0}, restarts
        again = stream_name + "b"
        publish(server, again, media.av, loop=True)
        await wait_live(server, again)
        await every_viewer_plays(server, again, frames=25)


async def viewers_on_both_workers(server, http: aiohttp.ClientSession, name: str, viewers: list,
                                  at_least: int = 1) -> None:
    """Add HTTP-FLV viewers of `name` to `viewers` until both workers serve some (at least `at_least` in
    all): SO_REUSEPORT spreads new connections, so one soon lands on each worker."""

    async def on_both_workers() -> bool:
        async with http.get(f"{server.http_base}/api/v1/streams", headers=AUTH) as resp:
            mine = [s for s in (await resp.json())["streams"] if s["name"] == name]
        # (a worker that only holds the stream's copy for its viewers lists 0 of its own)
        if mine and sum(1 for n in mine[0]["viewers_by_worker"].values() if n) == 2 and len(viewers) >= at_least:
            return True
        if len(viewers) < 16:
            viewers.append(server.flv_viewer(name))
            await viewers[-1].start()
        return False

    await wait_for(on_both_workers, 20, "FLV viewers on both workers", server)


async def every_viewer_plays(server, name: str, frames: int, viewers: int = 6) -> None:
    """`viewers` HTTP-FLV viewers (the kernel spreads them over the workers) each get `frames` video frames."""
    players = [server.flv_viewer(name) for _ in range(viewers)]
    try:
        await asyncio.gather(*(p.start() for p in players))
        got = await asyncio.gather(*(p.wait_video_frames(frames, timeout_s=15) for p in players))
        assert all(got), [p.video_frame_count() for p in players]
    finally:
        await asyncio.gather(*(p.close() for p in players))


def test_workers_on_a_busy_port_stop_the_start_with_one_clear_line(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "mediaserver", "--set", "server.workers=2", "--set", "http.bind=127.0.0.1",
             "--set", f"http.port={port}", "--set", "rtmp.bind=127.0.0.1", "--set", f"rtmp.port={free_port()}",
             "--set", "record.mode=off"],
            capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("mediaserver:")]
    assert len(errors) == 1 and f"http port 127.0.0.1:{port}" in errors[0], done.stderr


async def workers_ready(server) -> None:
    await wait_for(lambda: asyncio.sleep(0, "workers_ready" in server.log_text()), 20, "both workers listening", server)


async def two_workers(server_factory, **settings: str):
    """A server of two workers (no recording), once both listen; `settings` are more --set pairs."""
    server = server_factory(**{"server.workers": "2", "record.mode": "off", **settings})
    await workers_ready(server)
    return server


async def test_workers_route_and_serve_players_on_the_url_they_came_by_never_a_private_port(
        server_factory, publish, media, stream_name):
    server = await two_workers(server_factory, **{"cluster.max_viewers": "1"})
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    base = server.http_base
    held = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        try:
            for _ in range(8):  # a new connection each: both workers answer
                async with fresh.get(f"{base}/api/v1/route/live/{stream_name}") as resp:
                    body = await resp.json()
                assert resp.status == 200 and body["standalone"] and body["base"] == base and body["live"], body
                assert body["player"].startswith(f"{base}/play/"), body
                assert all(u.startswith((base, "ws" + base[4:], "rtmp://127.0.0.1:")) for u in body["urls"].values()), body
                # viewers one by one past the ceiling: a worker at it would have sent them to its sibling
                resp = await fresh.get(server.flv_url(stream_name), allow_redirects=False)
                held.append(resp)
                assert resp.status == 200, (resp.status, resp.headers.get("Location"))

            async def loaded() -> bool:  # the node's viewers, whichever worker answers (no sibling's pull)
                async with fresh.get(f"{base}/api/v1/route/live/{stream_name}") as resp:
                    return (await resp.json())["load"]["viewers"] == len(held)

            await wait_for(loaded, 5, f"the route's load counting the {len(held)} viewers", server)
        finally:
            for resp in held:
                resp.close()


async def test_the_public_stream_list_shows_the_whole_node_whichever_worker_answers(
        server_factory, publish, media, stream_name, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = await two_workers(server_factory)
    publish(server, stream_name, media.av, loop=True)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:

        async def published() -> bool:  # not played: no worker but the publisher's holds the stream
            async with fresh.get(f"{server.http_base}/api/v1/streams", headers=AUTH) as resp:
                return [s["name"] for s in (await resp.json())["streams"]] == [stream_name]

        await wait_for(published, 10, "the stream published", server)
        for _ in range(8):  # a new connection each: both workers answer, one of them without the publisher
            async with fresh.get(f"{server.http_base}/streams.json") as resp:
                body = await resp.json()
            assert resp.status == 200 and not body["truncated"], body
            assert [(s["name"], s["live"]) for s in body["streams"]] == [(stream_name, True)], body


def samples_by_worker(metrics: str, name: str, labels: str = "") -> dict[str, float]:
    pattern = rf'^{name}\{{worker="(\d+)"{"," + labels if labels else ""}\}} (\S+)$'
    return {w: float(v) for w, v in re.findall(pattern, metrics, re.M)}


async def test_the_node_metrics_count_no_sibling_pull_as_traffic_or_viewer(
        server_factory, publish, media, stream_name, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    # the sibling's pull outlives its viewers by cluster.pull_grace: then it is the node's only FLV traffic
    server = await two_workers(server_factory, **{"cluster.pull_grace": "60"})
    publish(server, stream_name, media.av, loop=True)
    viewers = []
    async with aiohttp.ClientSession() as http:

        async def scrape() -> str:
            async with http.get(f"{server.http_base}/metrics", headers=AUTH) as resp:
                return await resp.text()

        try:
            await viewers_on_both_workers(server, http, stream_name, viewers)
            got = await asyncio.gather(*(v.wait_video_frames(10, timeout_s=15) for v in viewers))
            assert all(got), [v.video_frame_count() for v in viewers]
            assert sum(flv_viewers_by_worker(await scrape()).values()) == len(viewers)
        finally:
            await asyncio.gather(*(v.close() for v in viewers))

        async def no_viewers() -> bool:
            return sum(flv_viewers_by_worker(await scrape()).values()) == 0

        await wait_for(no_viewers, 5, "no FLV viewers counted once they left (the pull is none)", server)
        before = await scrape()
        await asyncio.sleep(2.0)
        after = await scrape()
    egress = [sum(samples_by_worker(m, "mediaserver_egress_bytes_total", 'format="flv"').values())
              for m in (before, after)]
    assert egress[0] == egress[1], f"FLV egress grew with no viewer: {egress}"
    ingress = [samples_by_worker(m, "mediaserver_ingress_bytes_total") for m in (before, after)]
    grew = [w for w in ingress[1] if ingress[1][w] > ingress[0].get(w, 0)]
    assert len(grew) == 1, f"ingress counted on more than the publisher's worker: {ingress}"


async def test_every_viewer_of_the_node_is_listed_and_kicked_whichever_worker_serves_it(
        server_factory, publish, media, stream_name, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = await two_workers(server_factory)
    publish(server, stream_name, media.av, loop=True)
    viewers = []
    api = f"{server.http_base}/api/v1/streams/live/{stream_name}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:

        try:
            await viewers_on_both_workers(server, fresh, stream_name, viewers, at_least=4)
            assert all(await asyncio.gather(*(v.wait_video_frames(5, timeout_s=15) for v in viewers)))
            for _ in range(4):  # a new connection each: both workers answer for the whole node
                async with fresh.get(f"{api}/viewers", headers=AUTH) as resp:
                    listed = (await resp.json())["viewers"]
                assert resp.status == 200 and len(listed) == len(viewers), listed  # no sibling's pull
                assert len({v["id"] for v in listed}) == len(viewers) and {v["worker"] for v in listed} == {0, 1}
            for viewer in listed:
                async with fresh.post(f"{api}/viewers/{viewer['id']}/kick", headers=AUTH, json={}) as resp:
                    assert resp.status == 200 and (await resp.json())["viewer_kicked"] == viewer["id"], \
                        await resp.text()
            ended = await asyncio.gather(*(v.wait_end(timeout_s=10) for v in viewers))
            assert all(ended), "a viewer was still served after its kick"
        finally:
            await asyncio.gather(*(v.close() for v in viewers))


async def test_a_hung_worker_is_killed_and_started_again(server_factory, publish, media, stream_name):
    server = await two_workers(server_factory)
    pids = re.search(r"event=workers_ready workers=2 pids=(\d+),(\d+)", server.log_text())
    assert pids, server.log_tail()
    os.kill(int(pids.group(2)), signal.SIGSTOP)  # alive, holding its share of the ports, answering nothing
    await wait_for(lambda: asyncio.sleep(0, "event=worker_hung worker=1" in server.log_text()), 20,
                   "the stopped worker found hung", server)
    assert server.log_text().count("event=worker_hung") == 1, server.log_tail()
    await wait_for(lambda: asyncio.sleep(0, len(re.findall(r"event=ready .*worker=1", server.log_text())) == 2),
                   20, "the hung worker started again and listening", server)
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    await every_viewer_plays(server, stream_name, frames=10)


async def test_a_webrtc_session_is_ended_by_its_location_whichever_worker_the_delete_reaches(
        server_factory, publish, stream_name, tmp_path):
    from support.whep import WhepViewer, baseline_clip

    server = await two_workers(server_factory, **{"webrtc.public_ip": "127.0.0.1",
                                                  "webrtc.udp_port_range": "43000-43999"})
    publish(server, stream_name, baseline_clip(tmp_path), loop=True)
    await wait_live(server, stream_name)
    viewers = [WhepViewer(f"{server.http_base}/live/{stream_name}/whep") for _ in range(4)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        try:
            for viewer in viewers:  # a new connection each: the POSTs and DELETEs land on either worker
                answer = await viewer.play(fresh)
                assert answer.status == 201 and viewer.location, answer.body
                assert re.fullmatch(rf"/live/{stream_name}/whep/[\w-]+\.[01]", viewer.location), viewer.location
            for viewer in viewers:
                async with fresh.delete(f"{server.http_base}{viewer.location}") as resp:
                    assert resp.status == 200, (viewer.location, await resp.text())
                async with fresh.delete(f"{server.http_base}{viewer.location}") as resp:
                    assert resp.status == 404, await resp.text()  # ended, on the worker that held it
        finally:
            await asyncio.gather(*(v.close() for v in viewers))
