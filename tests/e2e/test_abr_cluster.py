"""ABR in a cluster on loopback (a real redis-server): an origin takes the publisher, two transcoder nodes
wait for jobs, an edge serves viewers. The edge's first request for a rendition asks the cluster; one
transcoder claims the job, pulls the source from the origin and serves the rendition, which the edge pulls
like any stream. When that transcoder is killed, the other takes the job over and the edge's viewer goes
on after a discontinuity."""

from __future__ import annotations

import time

import aiohttp
import m3u8

from e2e.test_cluster import cluster, redis, stream_owner, wait_owner  # noqa: F401  (fixtures)
from support.decode import decode_media

LADDER = '[{label = "180p", height = 180, video_kbps = 300, preset = "ultrafast", threads = 1}]'


async def test_a_transcoder_makes_the_ladder_for_the_edges_and_another_takes_over_when_it_dies(
        cluster, redis, publish, media, stream_name):  # noqa: F811
    abr = {"abr.mode": "on_demand", "abr.ladder": LADDER, "abr.wait": "10", "hub.reconnect_grace": "10"}
    origin = cluster("origin", "origin-1", **abr)
    transcoders = {name: cluster("transcoder", name, **abr) for name in ("trans-1", "trans-2")}
    edge = cluster("edge", "edge-1", **abr)
    publish(origin, stream_name, media.av, loop=True)
    await wait_owner(redis, stream_name)

    async with aiohttp.ClientSession() as http:
        url = f"{edge.http_base}/live/{stream_name}/master.m3u8"
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            assert resp.status == 200, await resp.text()
            master = m3u8.loads(await resp.text(), uri=url)
    assert [p.uri.split("?")[0] for p in master.playlists] == ["index.m3u8", f"../{stream_name}@180p/index.m3u8"]
    job = stream_owner(redis, stream_name + "@")
    assert job is not None and job["node"] in transcoders, job
    rendition = stream_owner(redis, f"{stream_name}@180p")
    assert rendition is not None and rendition["node"] == job["node"], rendition
    assert "cluster_transcode" not in origin.log_text() + edge.log_text()

    async with edge.flv_viewer(f"{stream_name}@180p", live_timeout_s=30) as viewer:
        assert await viewer.wait_video_frames(40, timeout_s=20), viewer.describe_start()
        report = decode_media(viewer.complete_flv(), "flv")
        assert (report.width, report.height) == (320, 180) and not report.errors, report.summary()

        dying = transcoders.pop(job["node"])
        survivor_name, survivor = next(iter(transcoders.items()))
        before = viewer.video_frame_count
        dying.kill()  # SIGKILL: its claims stay in Redis until the node's heartbeat lapses
        lost_at = time.monotonic()
        assert await viewer.wait_until(lambda v: v.video_frame_count > before + 5, timeout_s=20), edge.log_tail()
        failover_s = time.monotonic() - lost_at
        assert not viewer.ended and viewer.error is None
    assert "cluster_transcode_taken_over" in survivor.log_text(), survivor.log_tail()
    moved = stream_owner(redis, stream_name + "@")
    assert moved is not None and moved["node"] == survivor_name, moved
    print(f"rendition back on the edge {failover_s:.2f} s after its transcoder was killed")
    assert failover_s < 8, failover_s  # about node_ttl + a scan + a GOP on an idle machine



async def test_without_transcoder_nodes_the_node_that_needs_the_renditions_makes_them_once(
        cluster, redis, publish, media, stream_name):  # noqa: F811
    abr = {"abr.mode": "on_demand", "abr.ladder": LADDER, "abr.wait": "10"}
    origin = cluster("origin", "origin-1", **abr)
    edges = [cluster("edge", f"edge-{i}", **abr) for i in (1, 2)]
    publish(origin, stream_name, media.av, loop=True)
    await wait_owner(redis, stream_name)
    async with edges[0].flv_viewer(f"{stream_name}@180p", live_timeout_s=30) as first:
        assert await first.wait_video_frames(20, timeout_s=20), first.describe_start()
        async with edges[1].flv_viewer(f"{stream_name}@180p", live_timeout_s=30) as second:
            assert await second.wait_video_frames(20, timeout_s=20), second.describe_start()
    job = stream_owner(redis, stream_name + "@")
    assert job is not None and job["node"] == "edge-1", job
    # The second edge pulled the rendition from the first instead of transcoding it again.
    assert "transcode_started" not in edges[1].log_text(), edges[1].log_tail()
    assert f"event=pull_start stream=live/{stream_name}@180p" in edges[1].log_text(), edges[1].log_tail()
