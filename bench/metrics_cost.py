"""Benchmark: what a /metrics scrape costs with 1,000 viewers.

Builds a hub in process with `--streams` live streams sharing `--viewers` viewers (HTTP-FLV, WebSocket-FLV
and RTMP in a 6:3:1 mix, with byte counters set) and `--hls` recent HLS clients, then measures:

  - the collector and text rendering alone (`Metrics.render()`), best of --repeat runs of --scrapes;
  - a full `GET /metrics` through the edge application over loopback HTTP (aiohttp server and client in
    one process, so the figure includes both sides of the request).

Counting itself costs nothing per frame: the collector reads the hub's own counters at scrape time, so
the price of metrics is this, once per scrape interval (15-60 s in a usual Prometheus setup).

    python bench/metrics_cost.py [--viewers 1000] [--streams 10] [--hls 1000] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
from aiohttp import web

from mediaserver.config import Config
from mediaserver.edge.app import make_app
from mediaserver.edge.keys import METRICS
from mediaserver.edge.packagers import PackagerPool
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey


class BenchPublisher:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def close(self, reason: str) -> None:
        pass


def build(viewers: int, streams: int) -> StreamRegistry:
    registry = StreamRegistry(call_later=lambda delay, fn: None)
    kinds = ["flv"] * 6 + ["ws-flv"] * 3 + ["rtmp"]
    live = []
    for i in range(streams):
        stream = registry.claim_publisher(StreamKey("live", f"s{i}"), BenchPublisher(f"10.0.0.{i % 250}:1935"))
        stream.bytes_in, stream.frames_in = 10_000_000 + i, 5000 + i
        live.append(stream)
    for v in range(viewers):
        sub, _ = live[v % streams].subscribe(kinds[v % len(kinds)], f"10.1.{v // 250}.{v % 250}:4000", 0.0)
        sub.bytes_sent = 1_000_000 + v
    return registry


async def over_http(app: web.Application, scrapes: int) -> tuple[float, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/metrics"
            size = 0
            for _ in range(5):  # warm up the connection and the code
                async with http.get(url) as resp:
                    size = len(await resp.read())
            started = time.perf_counter()
            for _ in range(scrapes):
                async with http.get(url) as resp:
                    await resp.read()
            return (time.perf_counter() - started) / scrapes, size
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--hls", type=int, default=1000, help="recent HLS client addresses")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    config = Config()
    registry = build(args.viewers, args.streams)
    app = make_app(config, registry, PackagerPool(registry, config.hls))
    metrics = app[METRICS]
    for c in range(args.hls):
        metrics.hls_request(f"10.2.{c // 250}.{c % 250}", f"live/s{c % args.streams}")

    best = float("inf")
    for _ in range(args.repeat):
        started = time.perf_counter()
        for _ in range(args.scrapes):
            body = metrics.render()
        best = min(best, (time.perf_counter() - started) / args.scrapes)
    per_http, size = asyncio.run(over_http(app, args.scrapes))
    print(f"{args.viewers} viewers on {args.streams} streams, {args.hls} HLS clients; /metrics is {len(body)} bytes")
    print(f"collect + render:         {best * 1000:7.3f} ms per scrape")
    print(f"GET /metrics over HTTP:   {per_http * 1000:7.3f} ms per scrape (server and client in one process)")
    print(f"one scrape every 15 s:    {best / 15 * 100:7.4f} % of a core")
    assert size == len(body) or size > 0


if __name__ == "__main__":
    main()
