"""Relays in a cluster: two origins (a real redis-server) both configured with the same "always" pull and
a push of the pulled stream. One origin pulls, the other waits in standby; the push runs only where the
stream is published; when the pulling origin dies the other claims the stream, pulls and pushes."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request


from e2e.test_cluster import ADMIN, redis  # noqa: F401  (fixture)
from support.server import free_port, start_server

QUICK = {"record.mode": "off"}


def _api(server, path: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"{server.http_base}/api/v1{path}", headers={"Authorization": f"Bearer {ADMIN}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, {}


def _pull_state(server) -> str:
    return _api(server, "/pulls")[1]["pulls"][0]["state"]


def _pushes(server) -> list[dict]:
    code, body = _api(server, "/streams/live/cam/relays")
    return body.get("relays", []) if code == 200 else []


async def _until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_an_always_pull_runs_on_one_origin_its_push_too_and_the_other_takes_over(
        redis, publish, media, stream_name, tmp_path):
    source_port, source_http = free_port(), free_port()  # known before it runs: the three servers start at once
    relay = {
        "relay.pull": f'[{{app = "live", stream = "cam", url = "rtmp://127.0.0.1:{source_port}/live/{stream_name}", '
                      'mode = "always"}]',
        "relay.push": f'[{{app = "live", stream = "cam", url = "rtmp://127.0.0.1:{source_port}/live/cam-copy"}}]',
        "relay.pull_retry_max": "1", "relay.push_retry_min": "0.5", "relay.push_retry_max": "1",
    }
    # the three servers start at once (each takes seconds on a busy machine); the pulls retry until the source runs
    starts = [asyncio.to_thread(start_server, tmp_path / "source", QUICK, ports=(source_port, source_http))]
    starts += [asyncio.to_thread(start_server, tmp_path / f"origin-{i}", {**QUICK, **relay, **{
        "cluster.role": "origin", "cluster.redis_url": redis.url, "cluster.node_id": f"origin-{i}",
        "cluster.claim_ttl": "3", "cluster.node_ttl": "1"}}) for i in (1, 2)]
    servers = await asyncio.gather(*starts, return_exceptions=True)
    running = [s for s in servers if not isinstance(s, BaseException)]
    try:
        await _takeover(servers, publish, media, stream_name)
    finally:
        codes = await asyncio.gather(*(asyncio.to_thread(s.terminate) for s in running if not s.stopped))
    assert codes == [0] * len(codes), [s.log_tail() for s in running]  # the survivors shut down cleanly


async def _takeover(servers, publish, media, stream_name: str) -> None:
    for server in servers:
        if isinstance(server, BaseException):
            raise server
    source, *origins = servers
    publish(source, stream_name, media.low, loop=True)

    await _until(lambda: sorted(_pull_state(o) for o in origins) == ["live", "standby"], 20,
                 f"not one live pull and one standby: {[_api(o, '/pulls')[1] for o in origins]}")
    holder, standby = sorted(origins, key=lambda o: _pull_state(o) != "live")
    standby_pull = _api(standby, "/pulls")[1]["pulls"][0]
    assert "origin-" in standby_pull["last_error"] and stream_name not in json.dumps(standby_pull)
    # the push runs on the holder only: the copy is published once at the target
    await _until(lambda: [p["state"] for p in _pushes(holder)] == ["live"], 15, f"holder's push: {_pushes(holder)}")
    assert _pushes(standby) == []
    code, streams = _api(source, "/streams")
    assert [s["name"] for s in streams["streams"]].count("cam-copy") == 1

    holder.kill()  # the pulling origin dies: the other claims the stream once its claim lapses
    await _until(lambda: _pull_state(standby) == "live", 20, f"no takeover: {_api(standby, '/pulls')[1]}")
    await _until(lambda: [p["state"] for p in _pushes(standby)] == ["live"], 20, f"pushes: {_pushes(standby)}")
    async with standby.flv_viewer("cam") as viewer:
        assert await viewer.wait_video_frames(10, timeout_s=10), viewer.describe_start()
