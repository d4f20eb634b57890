"""What a late ABR viewer waits for: the first request for a live stream's master playlist until every
rendition is listed and has a segment to fetch.

    python -m bench.abr_start                 # 5 runs on the 720p30 bench clip, history kept 10 s
    python -m bench.abr_start --runs 3 --history 6 --playlist cmaf.m3u8

Each run publishes the bench clip (720p30 H.264 2.5 Mbit/s + AAC, `bench/_media.py`) to a fresh stream
with ffmpeg -re, waits `--history` seconds (so the hub keeps that much to transcode first), then times,
from the first GET of master.m3u8:
- `listed`: the answer lists the source and every rendition of the default ladder (480p, 360p, 240p);
- `segments`: every variant's media playlist lists a segment and that segment has been fetched.
The goal (issue 10): both within 1 s when history is kept. The job is stopped between runs (admin API).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from types import SimpleNamespace
from urllib.parse import urljoin

import aiohttp
import m3u8

from bench import load

ADMIN_TOKEN = "bench-abr-start-token-0123456789"


async def one_run(server, children, http: aiohttp.ClientSession, name: str, args) -> dict:
    media = load._media.ensure_media(log=load.say)
    await load.start_publishers(server, [name], media, children)
    await load.wait_streams(server, [name], 30)
    await asyncio.sleep(args.history)
    base = f"http://{server.host}:{server.http_port}/{server.app}/{name}/"
    url = urljoin(base, args.playlist)
    t0 = time.monotonic()
    async with http.get(url) as resp:
        text = await resp.text()
        status = resp.status
    listed_s = time.monotonic() - t0
    if status != 200:
        raise load.BenchError(f"GET {url} answered {status}: {text[:300]}")
    master = m3u8.loads(text, uri=url)
    variants = [urljoin(url, p.uri) for p in master.playlists]

    async def first_segment(variant: str) -> float:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            async with http.get(variant) as r:
                body = await r.text()
            pl = m3u8.loads(body, uri=variant)
            done = [s for s in pl.segments if s.uri]
            if r.status == 200 and done:
                async with http.get(urljoin(variant, done[0].uri)) as seg:
                    await seg.read()
                    if seg.status == 200:
                        return time.monotonic() - t0
            await asyncio.sleep(0.05)
        raise load.BenchError(f"{variant} listed no segment within 20 s")

    times = await asyncio.gather(*(first_segment(v) for v in variants))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.delete(f"http://{server.host}:{server.http_port}/api/v1/streams/{server.app}/{name}/abr",
                           headers=headers) as r:
        await r.read()
    for child in children.items:
        if child.role == "publisher" and child.proc.returncode is None:
            child.proc.terminate()
    return {"stream": name, "variants": len(variants), "listed_s": round(listed_s, 3),
            "segments_s": round(max(times), 3)}


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--history", type=float, default=10.0, help="seconds of stream before the first ABR request")
    p.add_argument("--playlist", default="master.m3u8", help="master.m3u8 (HLS-TS) or cmaf.m3u8")
    p.add_argument("--set", dest="server_set", action="append", default=[], help="extra server setting KEY=VALUE")
    args = p.parse_args(argv)
    import os
    os.environ["MEDIASERVER_ADMIN_TOKEN"] = ADMIN_TOKEN
    children = load.Children()
    server_args = SimpleNamespace(http_url=None, rtmp_url=None, pid=None, server="mediaserver", log_level="info",
                                  app="live", server_set=["abr.mode=on_demand", "abr.idle_grace=1",
                                                          "hub.reconnect_grace=0", *args.server_set])
    rows = []
    try:
        server = await load.start_server(server_args, children, f"abr-start-{int(time.time())}")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            for i in range(args.runs):
                row = await one_run(server, children, http, f"abr{i}", args)
                load.say(json.dumps(row))
                rows.append(row)
                await asyncio.sleep(2)
    finally:
        await children.stop_all()
    listed = [r["listed_s"] for r in rows]
    segs = [r["segments_s"] for r in rows]
    print(f"late ABR viewer, {args.playlist}, history {args.history:g} s, {len(rows)} runs, "
          f"{rows[0]['variants'] if rows else 0} variants:")
    print(f"  every rendition listed:   median {statistics.median(listed):.3f} s, max {max(listed):.3f} s")
    print(f"  a segment of each fetched: median {statistics.median(segs):.3f} s, max {max(segs):.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
