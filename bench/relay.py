"""Push relays: the source server's CPU per relay-minute, against an RTMP play viewer measured the same way.

One server (ours, started here) and one publisher of the bench media (ffmpeg -re -c copy). Phases, each a
warm-up then a window of --seconds: the publisher alone (the baseline, at the start and again at the end);
then for each N in --targets, N pushes (POST /api/v1/streams/live/bench/relays) to a cheap RTMP sink in a
process of its own (bench/_rtmp_sink.py), then N RTMP play viewers (bench/_outputs.py RtmpViewer, in this
process) instead. Per relay-minute = (server CPU-s in the window - the baseline's, scaled to the window)
/ N / window minutes; the same for viewers. Each target must have received the stream's bit rate and no
push may have reconnected; each viewer must have received it too.

    python -m bench.relay --targets 1,5,10 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp

from bench import load
from bench import _media, _procstats
from bench._outputs import open_rtmp_viewer

TOKEN = "bench-relay-admin-token"
STREAM = "bench"


def say(msg: str) -> None:
    load.say(msg)


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class Window:
    """Server CPU, the machine's busy share and the load average over one measured window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> "Window":
        self.t0 = time.monotonic()
        self.cpu0 = _procstats.sample_tree(self.pid, memory=False).cpu_s
        self.busy0 = cpu_busy()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.monotonic() - self.t0
        self.cpu = _procstats.sample_tree(self.pid, memory=False).cpu_s - self.cpu0
        b1 = cpu_busy()
        self.machine_busy_pct = 100 * (b1[0] - self.busy0[0]) / max(1, b1[1] - self.busy0[1])
        self.loadavg = os.getloadavg()[0]

    def as_dict(self) -> dict:
        return {"wall_s": round(self.wall, 2), "server_cpu_s": round(self.cpu, 3),
                "server_cpu_pct_of_one_core": round(100 * self.cpu / self.wall, 1),
                "machine_busy_pct_of_all_cores": round(self.machine_busy_pct, 1), "loadavg_1m": self.loadavg}


class Sink:
    """The RTMP sink process: its port and its newest counts."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc, self.port = proc, port
        self.keys: dict[str, dict] = {}
        self.t = 0.0
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while line := await self.proc.stdout.readline():
            report = json.loads(line)
            self.t, self.keys = report["t"], report["keys"]

    async def fresh(self) -> tuple[float, dict[str, dict]]:
        """(the sink's clock, counts per stream name) of a report made after now."""
        await asyncio.sleep(1.1)
        return self.t, dict(self.keys)


async def start_sink(children: load.Children) -> Sink:
    proc = await children.spawn("sink", [sys.executable, str(load.BENCH / "_rtmp_sink.py")],
                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=load.ROOT)
    port = int(await asyncio.wait_for(proc.stdout.readline(), 10))
    return Sink(proc, port)


def stream_kbps(media: Path) -> float:
    tags = _media.read_flv(media)
    return sum(len(t.body) for t in tags) * 8 / _media.loop_duration_ms(tags)


async def measure(server: load.Server, seconds: float) -> Window:
    with Window(server.pid) as w:
        await asyncio.sleep(seconds)
    server.check_alive()
    return w


async def push_phase(http: aiohttp.ClientSession, api: str, server: load.Server, sink: Sink, n: int,
                     args) -> dict:
    names = [f"t{n}-{i}" for i in range(n)]
    ids = []
    for name in names:
        async with http.post(api, json={"url": f"rtmp://127.0.0.1:{sink.port}/sink/{name}"}) as resp:
            body = await resp.json()
            if resp.status not in (200, 201):
                raise load.BenchError(f"POST {api}: {resp.status} {body}")
            ids.append(body["id"])
    deadline = time.monotonic() + 20
    while True:
        async with http.get(api) as resp:
            listing = await resp.json()
        relays = listing if isinstance(listing, list) else listing.get("relays", listing)
        live = [r for r in relays if r["id"] in ids and r["state"] == "live"]
        if len(live) == n and all(sink.keys.get(k, {}).get("frames", 0) > 0 for k in names):
            break
        if time.monotonic() > deadline:
            raise load.BenchError(f"{n - len(live)} of {n} pushes not live within 20 s: {relays}")
        await asyncio.sleep(0.5)
    await asyncio.sleep(args.warmup)
    t0, before = await sink.fresh()
    w = await measure(server, args.seconds)
    t1, after = await sink.fresh()
    async with http.get(api) as resp:
        listing = await resp.json()
    relays = [r for r in (listing if isinstance(listing, list) else listing.get("relays", listing)) if r["id"] in ids]
    for rid in ids:
        async with http.delete(f"{api}/{rid}") as resp:
            if resp.status >= 300:
                raise load.BenchError(f"DELETE {api}/{rid}: {resp.status}")
    per_target = []
    for name in names:
        a, b = before.get(name, {}), after.get(name, {})
        per_target.append({"name": name,
                           "kbps": round((b.get("bytes", 0) - a.get("bytes", 0)) * 8 / (t1 - t0) / 1000, 1),
                           "connections": b.get("connections", 0)})
    await asyncio.sleep(2)  # let the pushes close before the next phase
    return {"n": n, "window": w.as_dict(), "targets": per_target,
            "states": sorted({r["state"] for r in relays}), "reconnects": sum(r["reconnects"] for r in relays),
            "server_cpu_s": w.cpu, "wall_s": w.wall}


async def viewer_phase(server: load.Server, n: int, args) -> dict:
    viewers = [await open_rtmp_viewer(server.host, server.rtmp_port, f"live/{STREAM}") for _ in range(n)]
    try:
        deadline = time.monotonic() + 20
        while not all(v.status == 200 for v in viewers):
            if time.monotonic() > deadline or any(v.error for v in viewers):
                raise load.BenchError(f"RTMP viewers did not start: {[v.error for v in viewers if v.error]}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(args.warmup)
        b0 = [v.scanner.bytes for v in viewers]
        w = await measure(server, args.seconds)
        kbps = [round((v.scanner.bytes - b) * 8 / w.wall / 1000, 1) for v, b in zip(viewers, b0)]
        dropped = sum(1 for v in viewers if v.ended or v.error or v.transport.is_closing())
    finally:
        for v in viewers:
            if v.transport is not None:
                v.transport.close()
    await asyncio.sleep(2)
    return {"n": n, "window": w.as_dict(), "viewers_kbps": kbps, "dropped": dropped,
            "server_cpu_s": w.cpu, "wall_s": w.wall}


def per_minute(phase: dict, base_cpu_per_s: float) -> float:
    extra = phase["server_cpu_s"] - base_cpu_per_s * phase["wall_s"]
    return extra / phase["n"] / (phase["wall_s"] / 60)


async def run(args) -> dict:
    os.environ["MEDIASERVER_ADMIN_TOKEN"] = TOKEN
    media = _media.ensure_media(log=say)
    kbps = stream_kbps(media)
    children = load.Children()
    run_name = f"relay-{time.strftime('%Y%m%d-%H%M%S')}"
    sargs = argparse.Namespace(http_url=None, rtmp_url=None, pid=None, server="mediaserver", log_level="warning",
                               server_set=list(args.server_set), app="live")
    result: dict = {"command": " ".join(sys.argv), "stream_kbps": round(kbps, 1), "cores": os.cpu_count()}
    try:
        server = await load.start_server(sargs, children, run_name)
        sink = await start_sink(children)
        await load.start_publishers(server, [STREAM], media, children)
        await load.wait_streams(server, [STREAM])
        api = f"http://{server.host}:{server.http_port}/api/v1/streams/live/{STREAM}/relays"
        phases: dict = {"baseline": []}
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            await asyncio.sleep(args.warmup)
            say(f"baseline: publisher only, {args.seconds:.0f} s")
            phases["baseline"].append((await measure(server, args.seconds)).as_dict())
            for n in args.targets:
                say(f"{n} push(es) to the sink")
                phases.setdefault("push", []).append(await push_phase(http, api, server, sink, n, args))
                say(f"{n} RTMP play viewer(s)")
                phases.setdefault("viewers", []).append(await viewer_phase(server, n, args))
            say("baseline again")
            phases["baseline"].append((await measure(server, args.seconds)).as_dict())
        base = sum(b["server_cpu_s"] for b in phases["baseline"]) / sum(b["wall_s"] for b in phases["baseline"])
        result["baseline_cpu_s_per_minute"] = round(base * 60, 3)
        result["phases"] = phases
        rows = []
        for p, v in zip(phases["push"], phases["viewers"]):
            low = [t for t in p["targets"] if t["kbps"] < 0.9 * kbps]
            rows.append({"n": p["n"], "push_cpu_s_per_relay_minute": round(per_minute(p, base), 4),
                         "viewer_cpu_s_per_viewer_minute": round(per_minute(v, base), 4),
                         "push_kbps_min": min(t["kbps"] for t in p["targets"]),
                         "viewer_kbps_min": min(v["viewers_kbps"]), "push_reconnects": p["reconnects"],
                         "push_connections_max": max(t["connections"] for t in p["targets"]),
                         "targets_below_90pct_of_stream": len(low), "viewers_dropped": v["dropped"],
                         "machine_busy_pct": [p["window"]["machine_busy_pct_of_all_cores"],
                                              v["window"]["machine_busy_pct_of_all_cores"]]})
        result["rows"] = rows
    finally:
        await children.stop_all()
    load.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = load.RESULTS_DIR / f"{run_name}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"stream {kbps:.0f} kbit/s; baseline (publisher only) {result['baseline_cpu_s_per_minute']:.3f} CPU-s/min; "
          f"{os.cpu_count()} cores")
    print(f"{'N':>3} {'push CPU-s/relay-min':>21} {'viewer CPU-s/viewer-min':>24} {'push kbps min':>14} "
          f"{'reconn':>6} {'machine busy %':>15}")
    for r in result["rows"]:
        print(f"{r['n']:>3} {r['push_cpu_s_per_relay_minute']:>21.4f} {r['viewer_cpu_s_per_viewer_minute']:>24.4f} "
              f"{r['push_kbps_min']:>14.0f} {r['push_reconnects']:>6} {str(r['machine_busy_pct']):>15}")
    print(f"written: {out}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=lambda s: [int(x) for x in s.split(",")], default=[1, 5, 10])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--server-set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    load.install_fast_loop()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
