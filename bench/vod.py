"""VOD fan-out: what the server spends per viewer-minute serving a recording over HLS byte ranges.

    python -m bench.vod --viewers 500 --seconds 60 --client-procs 2
    python -m bench.vod --viewers 50 --seconds 20                       a quick check
    python -m bench.vod --viewers 200 --seconds 60 --cold 1             ranges read from the disk
    python -m bench.vod --viewers 200 --seconds 60 --cold 1 --disk-read-mbps 100    ... a slower disk

The server is started as bench/load.py starts it (free loopback ports, its CPU read from /proc over its
whole process tree), with `record.mode = "all"` and `record.path` = bench/.cache/vod-recordings. The
recording: the newest complete one of stream live/vod-src there at least `--record-seconds` long, or else
one made now (the benchmark media published with ffmpeg `-re -c copy` for `--record-seconds`, then the
recording stopped through the admin API); `--fresh` always makes a new one.

Viewers (bench/_vod_viewers.py, in `--client-procs` processes of their own, so the server's CPU is
measured alone) each play sessions: GET /vod/ID/index.m3u8, the init range, then from a random segment one
byte-range GET per segment duration (real time), for `--session-min`..`--session-max` s, then, once what
it fetched has played, a new session. They start spread over `--ramp` s; after `--warmup` the window of `--seconds` is measured.
Reported: server CPU-s per viewer-minute (to set against `load.py hls` at as many viewers, run beside it), the
requests per second of each kind and their latency, wrong answers (not 206 with the bytes asked for),
stalls (a segment that arrived after it was due to play), and, measured in this process, what building the
playlist from the file costs per request (record/vod.py `index_file` + `hls_playlist`). `--cold S` drops the
recording from the page cache every S s, as a DVR viewer's newest fragments (written with O_DIRECT) or a long
unwatched recording are: the small answers' latency then shows whether the event loop waited on the disk.
`--disk-read-mbps MB` holds the server's reads from that disk to MB MB/s (a cgroup of its own; root only),
as a network volume reads: this VM's disk answers from the host's memory, faster than most.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from bench import load  # also puts bench/ on sys.path, where its modules import one another by bare name

from _report import fmt_dist, summary  # noqa: E402
from mediaserver.record.vod import hls_playlist, index_file  # noqa: E402

ADMIN_TOKEN = "bench-vod-admin-token"
STREAM = "vod-src"
RECORDINGS_DIR = load._media.CACHE_DIR / "vod-recordings"


class Admin:
    """The few admin API calls the benchmark makes."""

    def __init__(self, server: load.Server) -> None:
        self.base = f"http://{server.host}:{server.http_port}"
        self.headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def call(self, method: str, path: str) -> tuple[int, dict]:
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.base + path, headers=self.headers) as resp:
                body = await resp.json(content_type=None) if resp.content_length != 0 else {}
                return resp.status, body or {}

    async def recordings(self) -> list[dict]:
        status, body = await self.call("GET", f"/api/v1/recordings?stream={STREAM}&limit=100")
        if status != 200:
            raise load.BenchError(f"GET /api/v1/recordings answered {status}: {body}")
        return body["recordings"]


async def find_or_make_recording(args, server: load.Server, children: load.Children, media: Path) -> dict:
    admin = Admin(server)
    if not args.fresh:
        for row in sorted(await admin.recordings(), key=lambda r: r["started_at"], reverse=True):
            if row["status"] == "complete" and row["duration_s"] >= args.record_seconds - 5:
                load.say(f"reusing recording {row['id']} ({row['duration_s']:.0f} s, {row['bytes'] / 1e6:.1f} MB)")
                return row
    load.say(f"recording {args.record_seconds} s of the benchmark media (once; --fresh to redo)")
    await load.start_publishers(server, [STREAM], media, children)
    await load.wait_streams(server, [STREAM], timeout_s=30)
    await asyncio.sleep(args.record_seconds)
    rows = [r for r in await admin.recordings() if r["status"] == "recording"]
    if not rows:
        raise load.BenchError(f"no recording of live/{STREAM} is being written; see {server.log_path}")
    status, body = await admin.call("DELETE", f"/api/v1/streams/{server.app}/{STREAM}/record")
    if status not in (200, 204):
        raise load.BenchError(f"stopping the recording answered {status}: {body}")
    for c in children.items:
        if c.role == "publisher" and c.proc.returncode is None:
            c.proc.terminate()
    for _ in range(50):
        status, row = await admin.call("GET", f"/api/v1/recordings/{rows[0]['id']}")
        if status == 200 and row["status"] == "complete":
            return row
        await asyncio.sleep(0.2)
    raise load.BenchError(f"recording {rows[0]['id']} was not complete 10 s after it was stopped")


def playlist_build_cost(path: Path, rec_id: str, runs: int = 20) -> dict:
    """CPU per playlist built from the file, as serve_playlist does on each request (in its thread)."""
    t = time.process_time()
    for _ in range(runs):
        with open(path, "rb") as f:
            text = hls_playlist(index_file(f), f"../{rec_id}.mp4", live=False)
    cpu = (time.process_time() - t) / runs
    return {"cpu_ms_per_playlist": round(cpu * 1000, 3), "playlist_bytes": len(text),
            "segments": text.count("#EXTINF")}


async def spawn_viewers(args, server: load.Server, path: str, plan: load.Plan, children: load.Children) -> list:
    procs = max(1, min(args.client_procs, args.viewers))
    base, extra = divmod(args.viewers, procs)
    first = 0
    workers = []
    log = open(load.RESULTS_DIR / "workers.log", "ab")
    for w in range(procs):
        count = base + (1 if w < extra else 0)
        cfg = {"host": server.host, "port": server.http_port, "path": path, "first_index": first, "count": count,
               "total_viewers": args.viewers, "t0": plan.t0, "ramp_s": args.ramp, "seed": args.seed,
               "session_min_s": args.session_min, "session_max_s": args.session_max, "buffer_s": args.buffer,
               "window_start": plan.t_ws, "window_end": plan.t_we}
        workers.append(await children.spawn("viewers", [sys.executable, str(load.BENCH / "_vod_viewers.py"),
                                                        json.dumps(cfg)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log))
        first += count
    log.close()
    return workers


def analyze(outs: list[dict], wall_s: float) -> dict:
    players = [p for o in outs for p in o["players"]]
    lat: dict[str, list[float]] = {}
    for o in outs:
        for k, v in o["latency_ms"].items():
            lat.setdefault(k, []).extend(v)
    total = {k: sum(p[k] for p in players) for k in ("sessions", "playlists", "segments", "bytes", "errors",
                                                   "wrong_answers", "stalls")}
    errs = sorted({p["last_error"] for p in players if p["last_error"]})[:5]
    return {
        "viewers": len(players),
        **total,
        "viewers_with_errors": sum(1 for p in players if p["errors"] or p["wrong_answers"]),
        "viewers_that_stalled": sum(1 for p in players if p["stalls"]),
        "error_examples": errs,
        "in_window_per_s": {k: round(len(v) / wall_s, 1) for k, v in lat.items()},
        "latency_ms": {k: summary(v) for k, v in lat.items()},
    }


BLKIO_V1 = Path("/sys/fs/cgroup/blkio")
CGROUP_V2 = Path("/sys/fs/cgroup")
THROTTLE_GROUP = "mediaserver-bench-vod"


def _disk_of(path: Path) -> str:
    """MAJOR:MINOR of the disk holding `path` (a partition's disk: throttles apply to whole disks)."""
    dev = os.stat(path).st_dev
    node = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if (node / "partition").exists():
        return (node.resolve().parent / "dev").read_text().strip()
    return f"{os.major(dev)}:{os.minor(dev)}"


def throttle_reads(pid: int, path: Path, mbps: float) -> Path:
    """The server's reads from the disk holding `path` held to `mbps` MB/s (`--disk-read-mbps`), as a network
    volume or a busy disk reads, by a cgroup of its own (v1 blkio or v2 io.max; root only). Returns the group
    (removed by `unthrottle` once the server is gone)."""
    disk, rate = _disk_of(path), int(mbps * 1e6)
    v1 = BLKIO_V1.is_dir()
    group = (BLKIO_V1 if v1 else CGROUP_V2) / THROTTLE_GROUP
    try:
        group.mkdir(exist_ok=True)
        if v1:
            (group / "blkio.throttle.read_bps_device").write_text(f"{disk} {rate}")
        else:
            (group / "io.max").write_text(f"{disk} rbps={rate}")
        (group / "cgroup.procs").write_text(str(pid))
    except OSError as err:
        unthrottle(group)
        raise load.BenchError(f"--disk-read-mbps needs root and a cgroup blkio (v1) or io (v2) controller: {err}")
    return group


def unthrottle(group: Path) -> None:
    try:
        group.rmdir()
    except OSError:
        pass


async def evict_every(seconds: float, path: Path) -> None:
    """Drop the recording from the page cache every `seconds` (`--cold`), so ranges are read from the disk as
    a recording's newest fragments (written past the cache with O_DIRECT) or long-unwatched ones are."""
    while True:
        await asyncio.sleep(seconds)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


async def run(args, ctx: load.Run, media: Path) -> dict:
    ns = argparse.Namespace(
        http_url=None, rtmp_url=None, pid=None, server="mediaserver", log_level="warning", app="live",
        server_set=["record.mode=all", f"record.path={RECORDINGS_DIR}", *args.server_set])
    os.environ["MEDIASERVER_ADMIN_TOKEN"] = ADMIN_TOKEN
    server = ctx.server = await load.start_server(ns, ctx.children, ctx.name)
    row = await find_or_make_recording(args, server, ctx.children, media)
    rec_id = row["id"]
    path = f"/vod/{rec_id}/index.m3u8"
    if await load.http_status(server.host, server.http_port, path, 10) != 200:
        raise load.BenchError(f"{path} did not answer 200; see {server.log_path}")
    files = [p for p in RECORDINGS_DIR.glob(f"{server.app}/{STREAM}/*.mp4") if p.stat().st_size == row["bytes"]]
    build = playlist_build_cost(files[0], rec_id) if files else None
    sampler = load.Sampler(server.pid, ctx.children)
    await asyncio.sleep(2)  # the recording's catalog writes and the publisher's end settle
    base_a = sampler.sample()
    await asyncio.sleep(3)
    idle = load.window_usage(base_a, sampler.sample())
    plan = load.Plan(time.monotonic() + 1.5, max(1, int(args.warmup)), max(1, int(args.warmup)) + args.seconds,
                     args.seconds)
    load.say(f"{args.viewers} VOD players in {args.client_procs} process(es) on recording {rec_id} "
             f"({row['duration_s']:.0f} s); ramp {args.ramp} s, warm-up {plan.ws_tick} s, window {plan.duration_s} s")
    rss_before = sampler.rows[-1].server_rss
    workers = await spawn_viewers(args, server, path, plan, ctx.children)
    if args.disk_read_mbps:
        ctx.throttle = throttle_reads(server.pid, RECORDINGS_DIR, args.disk_read_mbps)
        load.say(f"the server's disk reads held to {args.disk_read_mbps} MB/s")
    if args.cold and not files:
        raise load.BenchError(f"--cold: the recording's file ({row['bytes']} bytes) is not in {RECORDINGS_DIR}")
    evicting = asyncio.create_task(evict_every(args.cold, files[0])) if args.cold else None
    try:
        ws, we = await load.run_window(plan, sampler, server, ctx.children)
    finally:
        if evicting is not None:
            evicting.cancel()
    usage = load.window_usage(ws, we)
    outs = await load.collect_workers(workers)
    viewers = analyze(outs, usage["wall_s"])
    mem = load.rss_in(sampler.rows, plan.t_ws, plan.t_we)
    if rss_before is not None and "server_rss_peak_mib" in mem:
        mem["rss_per_viewer_kib"] = round((max(r.server_rss for r in sampler.rows) - rss_before) / 1024
                                          / args.viewers, 1)
    return {
        "recording": {k: row.get(k) for k in ("id", "duration_s", "bytes", "codecs", "width", "height")},
        "playlist_build": build,
        "cpu": {**usage, "server_cpu_s_per_viewer_minute": load.per_minute(usage.get("server_cpu_s"), args.viewers,
                                                                           usage["wall_s"]),
                "idle_before_viewers": idle},
        "memory": mem,
        "viewers": viewers,
        "throughput_gbit_s": round(viewers["bytes"] * 8 / 1e9 / max(1.0, usage["wall_s"] + args.warmup), 3),
    }


def print_summary(out: dict, path: Path) -> None:
    r = out["results"]
    c, v = r["cpu"], r["viewers"]
    print(f"\nVOD fan-out: {v['viewers']} HLS byte-range players, recording {r['recording']['id']} "
          f"({r['recording']['duration_s']} s), window {c['wall_s']} s")
    print(f"  server CPU {c.get('server_cpu_s')} s ({c.get('server_cpu_pct_of_one_core')}% of a core) = "
          f"{c['server_cpu_s_per_viewer_minute']} CPU-s per viewer-minute "
          f"(set it against `bench/load.py hls --viewers {v['viewers']}` run beside it)")
    print(f"  viewer processes {c['viewers_cpu_pct_of_one_core']}% of a core; server idle before "
          f"{c['idle_before_viewers'].get('server_cpu_pct_of_one_core')}%")
    print(f"  requests per s in the window: {v['in_window_per_s']}")
    for k, d in v["latency_ms"].items():
        print(f"  {k} latency: {fmt_dist(d)}")
    print(f"  sessions {v['sessions']}, segments {v['segments']}, {v['bytes'] / 1e9:.2f} GB; errors {v['errors']}, "
          f"wrong answers {v['wrong_answers']}, stalls {v['stalls']} ({v['viewers_that_stalled']} viewers) "
          f"{v['error_examples'] or ''}")
    if r["playlist_build"]:
        b = r["playlist_build"]
        print(f"  playlist built from the file: {b['cpu_ms_per_playlist']} ms CPU each ({b['segments']} segments)")
    print(f"  memory: {r['memory']}")
    print(f"  results: {path}")


async def amain(args) -> int:
    media = load._media.ensure_media(log=load.say)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    load.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    RECORDINGS_DIR.mkdir(parents=True, exist_ok=True)
    ctx = load.Run(f"vod-{args.viewers}v-{stamp}")
    try:
        results = await run(args, ctx, media)
    except load.BenchError as err:
        load.say(f"error: {err}")
        return 1
    finally:
        await ctx.children.stop_all()
        if getattr(ctx, "throttle", None) is not None:
            unthrottle(ctx.throttle)
    out = {"name": ctx.name, "argv": sys.argv[1:], "options": vars(args), "machine": load.machine_info("asyncio"),
           "load_average_at_end": os.getloadavg(), "server": ctx.server.describe() if ctx.server else None,
           "results": results}
    path = load.RESULTS_DIR / f"{ctx.name}.json"
    path.write_text(json.dumps(out, indent=2))
    print_summary(out, path)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.vod", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=500, help="VOD players (default 500)")
    ap.add_argument("--seconds", type=int, default=60, help="measurement window in s (default 60)")
    ap.add_argument("--warmup", type=float, default=10.0, help="from the first player's start, in s (default 10)")
    ap.add_argument("--ramp", type=float, default=5.0, help="spread the players' starts over this many s (default 5)")
    ap.add_argument("--client-procs", type=int, default=2, help="player processes (default 2)")
    ap.add_argument("--session-min", type=float, default=20.0, help="shortest session, s of media (default 20)")
    ap.add_argument("--session-max", type=float, default=60.0, help="longest session, s of media (default 60)")
    ap.add_argument("--buffer", type=float, default=4.0,
                    help="a segment is due to play this many s after it is fetched on schedule (default 4)")
    ap.add_argument("--record-seconds", type=int, default=90, help="length of the recording made (default 90)")
    ap.add_argument("--fresh", action="store_true", help="make a new recording even if one is there")
    ap.add_argument("--cold", type=float, default=0.0, metavar="S",
                    help="drop the recording from the page cache every S s of the run, so ranges come from the disk")
    ap.add_argument("--disk-read-mbps", type=float, default=0.0, metavar="MB",
                    help="hold the server's reads from the recordings' disk to MB MB/s (a cgroup; root only)")
    ap.add_argument("--seed", type=int, default=1, help="the players' random start points and session lengths")
    ap.add_argument("--server-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="extra --set for the server (repeatable)")
    args = ap.parse_args(argv)
    if args.viewers < 1 or args.seconds < 1 or args.ramp > args.warmup or args.session_min > args.session_max:
        ap.error("--viewers and --seconds must be at least 1, --ramp at most --warmup, "
                 "--session-min at most --session-max")
    load.raise_nofile_limit()
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        load.say("interrupted; the processes this run started were stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
