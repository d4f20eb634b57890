#!/usr/bin/env python3
"""Load and latency benchmarks: what a live server costs per viewer and per stream, and how late it is.

    python bench/load.py flv --viewers 500 --duration 60      HTTP-FLV fan-out
    python bench/load.py hls --viewers 1000                   HLS (MPEG-TS) fan-out
    python bench/load.py publish --publishers 50              ingest + FLV + HLS packaging per stream
    python bench/load.py latency                              live delay, late-joiner first keyframe, HLS listing

By default the tool starts the server itself (`python -m mediaserver --set ...` on free loopback
ports) so it knows its PID; `--http-url/--rtmp-url/--pid` attach to a server already running (any
server with the same URL layout), and `--server fake` runs against a minimal stand-in to check the
tool. Each run is bounded: publishers start, the stream is checked, viewers ramp up, a warm-up passes
(--warmup, 10 s), then the measurement window (--duration) runs; server CPU is utime+stime of the
server's whole process tree read from /proc at the window's two ends. Every process the tool starts
is stopped when it ends, on Ctrl-C or on error (and dies with it if the tool is killed). A human
summary goes to stdout and everything measured to bench/results/NAME-TIMESTAMP.json.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import math
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

import _media  # noqa: E402
import _procstats  # noqa: E402
from _aio import install_fast_loop, raise_nofile_limit  # noqa: E402
from _flv_viewers import first_keyframe_ms, open_viewer  # noqa: E402
from _hls_viewers import HttpClient, ListingProbe  # noqa: E402
from _latency import SendLog, client_session_available, listing_delays, match_delays, publish_realtime  # noqa: E402
from _report import fmt, fmt_dist, mib, summary  # noqa: E402

RESULTS_DIR = BENCH / "results"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """The run cannot go on; the message says why and what to check."""


# ---------------------------------------------------------------- child processes

try:
    _LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If the tool is killed without a chance to clean up, its children get SIGTERM from the kernel,
    # so an `ffmpeg -stream_loop -1` publisher never outlives it.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    role: str
    proc: asyncio.subprocess.Process
    args: list[str]


class Children:
    """Every process the run started, stopped in order: viewers, publishers, helpers, the server."""

    STOP_ORDER = ("viewers", "publisher", "fake-server", "server")

    def __init__(self) -> None:
        self.items: list[Child] = []

    async def spawn(self, role: str, args: list[str], *, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=None, cwd: Path | None = None) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd,
            preexec_fn=_die_with_parent, start_new_session=True,
        )
        self.items.append(Child(role, proc, args))
        return proc

    def pids(self, role: str) -> list[int]:
        return [c.proc.pid for c in self.items if c.role == role and c.proc.returncode is None]

    def alive(self, role: str) -> int:
        return sum(1 for c in self.items if c.role == role and c.proc.returncode is None)

    async def stop_all(self) -> None:
        for role in self.STOP_ORDER + tuple({c.role for c in self.items} - set(self.STOP_ORDER)):
            group = [c for c in self.items if c.role == role and c.proc.returncode is None]
            if not group:
                continue
            sig, grace = {"server": (signal.SIGINT, 15.0), "fake-server": (signal.SIGINT, 5.0)}.get(
                role, (signal.SIGTERM, 5.0))
            for c in group:
                if role == "viewers" and c.proc.stdin is not None and not c.proc.stdin.is_closing():
                    c.proc.stdin.close()  # a worker stops on end of stdin
                else:
                    _signal(c.proc, sig)
            await _wait_all(group, grace)
            for c in group:
                if c.proc.returncode is None:
                    say(f"{role} pid {c.proc.pid} did not stop within {grace:.0f} s; killing it")
                    _signal(c.proc, signal.SIGKILL)
            await _wait_all(group, 5.0)


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


async def _wait_all(group: list[Child], timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(c.proc.wait() for c in group))
    except TimeoutError:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the server under test


@dataclass
class Server:
    kind: str
    """"mediaserver" (started here), "fake" (the stand-in) or "attached"."""
    pid: int | None
    host: str
    http_port: int
    rtmp_port: int | None
    app: str
    log_path: Path | None = None
    cmd: list[str] | None = None
    proc: asyncio.subprocess.Process | None = None

    def flv_path(self, name: str) -> str:
        return f"/{self.app}/{name}.flv"

    def hls_path(self, name: str) -> str:
        return f"/{self.app}/{name}/index.m3u8"

    def rtmp_url(self, name: str) -> str:
        return f"rtmp://{self.host}:{self.rtmp_port}/{self.app}/{name}"

    def describe(self) -> dict:
        return {"kind": self.kind, "pid": self.pid, "host": self.host, "http_port": self.http_port,
                "rtmp_port": self.rtmp_port, "app": self.app, "cmd": self.cmd,
                "log": str(self.log_path) if self.log_path else None}

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            raise BenchError(f"the server exited with code {self.proc.returncode} during the run; "
                             f"see its log {self.log_path}:\n{_tail(self.log_path)}")


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def http_status(host: str, port: int, path: str, timeout_s: float = 2.0) -> int | None:
    client = HttpClient(host, port)
    try:
        status, _, _, _ = await client.get(path, keep_body=False, timeout_s=timeout_s)
        return status
    except (OSError, TimeoutError, ConnectionError, ValueError):
        return None
    finally:
        client.close()


async def start_server(args, children: Children, run_name: str) -> Server:
    if args.http_url:
        host, http_port = _host_port(args.http_url, 80)
        rtmp_port = _host_port(args.rtmp_url, 1935)[1] if args.rtmp_url else None
        if args.pid is None:
            say("no --pid given: server CPU and memory will not be measured")
        elif _procstats.read_stat(args.pid) is None:
            raise BenchError(f"--pid {args.pid}: no such process")
        return Server("attached", args.pid, host, http_port, rtmp_port, args.app)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS_DIR / f"{run_name}.server.log"
    http_port = free_port()
    if args.server == "fake":
        media = _media.ensure_media(log=say)
        cmd = [sys.executable, str(BENCH / "_fake_server.py"), "--http-port", str(http_port), "--media", str(media)]
        rtmp_port = None
        role = "fake-server"
    else:
        rtmp_port = free_port()
        cmd = [sys.executable, "-m", "mediaserver",
               "--set", "rtmp.bind=127.0.0.1", "--set", f"rtmp.port={rtmp_port}",
               "--set", "http.bind=127.0.0.1", "--set", f"http.port={http_port}",
               "--set", f"log.level={args.log_level}"]
        for kv in args.server_set:
            cmd += ["--set", kv]
        role = "server"
    with open(log_path, "wb") as log:
        proc = await children.spawn(role, cmd, stderr=log, stdout=log, cwd=ROOT)
    server = Server("fake" if args.server == "fake" else "mediaserver", proc.pid, "127.0.0.1", http_port, rtmp_port,
                    args.app, log_path, cmd, proc)
    deadline = time.monotonic() + 30
    while True:
        if proc.returncode is not None:
            raise BenchError(f"the server exited with code {proc.returncode} at start; its log {log_path}:\n"
                             f"{_tail(log_path)}")
        if await http_status(server.host, http_port, "/healthz", 1.0) == 200:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"the server did not answer GET /healthz within 30 s; its log {log_path}:\n"
                             f"{_tail(log_path)}")
        await asyncio.sleep(0.1)
    say(f"server pid {proc.pid} ready: rtmp {rtmp_port}, http {http_port} (log {log_path})")
    return server


def _host_port(url: str, default: int) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    if not host:
        return rest, default
    return host.strip("[]"), int(port)


async def start_publishers(server: Server, names: list[str], media: Path, children: Children) -> float:
    """One `ffmpeg -re -stream_loop -1 ... -c copy -f flv` per name; returns when they were launched."""
    if server.kind == "fake":
        return time.monotonic()
    if server.rtmp_port is None:
        raise BenchError("publishing needs the server's RTMP address: give --rtmp-url rtmp://HOST:PORT")
    log = open(RESULTS_DIR / "publishers.log", "ab")
    t = time.monotonic()
    for n in names:
        await children.spawn("publisher", [
            _media.ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
            "-i", str(media), "-c", "copy", "-f", "flv", server.rtmp_url(n),
        ], stderr=log)
    log.close()
    return t


async def wait_streams(server: Server, names: list[str], timeout_s: float = 30.0) -> dict[str, float]:
    """Wait until every stream serves a video keyframe over HTTP-FLV; returns each one's probe time (ms)."""
    deadline = time.monotonic() + timeout_s
    ready: dict[str, float] = {}

    async def one(name: str) -> None:
        while time.monotonic() < deadline:
            server.check_alive()
            ms = await first_keyframe_ms(server.host, server.http_port, server.flv_path(name), 3.0)
            if ms is not None:
                ready[name] = ms
                return
            await asyncio.sleep(0.25)

    sem = asyncio.Semaphore(20)

    async def bounded(name: str) -> None:
        async with sem:
            await one(name)

    await asyncio.gather(*(bounded(n) for n in names))
    missing = [n for n in names if n not in ready]
    if missing:
        raise BenchError(f"{len(missing)} of {len(names)} streams never served a keyframe over HTTP-FLV within "
                         f"{timeout_s:.0f} s (first: {server.flv_path(missing[0])}); see {server.log_path} and "
                         f"{RESULTS_DIR / 'publishers.log'}")
    return ready


# ---------------------------------------------------------------- sampling /proc


@dataclass
class Sample:
    t: float
    server_cpu_s: float | None
    server_rss: int | None
    server_hwm: int | None
    server_procs: int
    role_cpu_s: dict[str, float]


@dataclass
class Sampler:
    server_pid: int | None
    children: Children
    rows: list[Sample] = field(default_factory=list)

    def sample(self) -> Sample:
        stats = _procstats.all_stats()
        cpu = rss = hwm = None
        n = 0
        if self.server_pid is not None:
            tree = _procstats.sample_tree(self.server_pid, stats)
            if tree.pids:
                cpu, rss, hwm, n = tree.cpu_s, tree.rss_bytes, tree.hwm_bytes, len(tree.pids)
        roles = {}
        for role in ("viewers", "publisher"):
            roles[role] = _procstats.sample_many([c.proc.pid for c in self.children.items if c.role == role], stats)
        own = os.times()
        roles["bench"] = own.user + own.system
        s = Sample(time.monotonic(), cpu, rss, hwm, n, roles)
        self.rows.append(s)
        return s


def window_usage(a: Sample, b: Sample) -> dict:
    wall = b.t - a.t
    out = {"wall_s": round(wall, 3)}
    if a.server_cpu_s is not None and b.server_cpu_s is not None:
        cpu = b.server_cpu_s - a.server_cpu_s
        out["server_cpu_s"] = round(cpu, 3)
        out["server_cpu_pct_of_one_core"] = round(100 * cpu / wall, 1)
    for role in a.role_cpu_s:
        cpu = b.role_cpu_s[role] - a.role_cpu_s[role]
        out[f"{role}_cpu_s"] = round(cpu, 3)
        out[f"{role}_cpu_pct_of_one_core"] = round(100 * cpu / wall, 1)
    return out


def rss_in(rows: list[Sample], t_from: float, t_to: float) -> dict:
    sel = [r for r in rows if t_from - 0.01 <= r.t <= t_to + 0.01 and r.server_rss is not None]
    if not sel:
        return {}
    return {"server_rss_peak_mib": mib(max(r.server_rss for r in sel)),
            "server_rss_end_mib": mib(sel[-1].server_rss),
            "server_vmhwm_sum_mib": mib(max(r.server_hwm for r in sel)),
            "server_processes": max(r.server_procs for r in sel)}


async def run_window(plan: "Plan", sampler: Sampler, server: Server, children: Children,
                     on_tick=None) -> tuple[Sample, Sample]:
    """Tick once a second from plan.t0 through the window's end, sampling /proc at each tick."""
    ws = we = None
    for k in range(plan.we_tick + 1):
        delay = plan.t0 + k - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        server.check_alive()
        s = sampler.sample()
        if k == plan.ws_tick:
            ws = s
            say(f"measurement window starts ({plan.duration_s} s)")
        if k == plan.we_tick:
            we = s
        if on_tick is not None:
            on_tick(k, s)
        if k and k % 10 == 0 and len(sampler.rows) >= 11:
            prev = sampler.rows[-11]
            u = window_usage(prev, s)
            say(f"t+{k} s: server {u.get('server_cpu_pct_of_one_core', 'n/a')}% of a core, viewer clients "
                f"{u['viewers_cpu_pct_of_one_core']}%, publishers {u['publisher_cpu_pct_of_one_core']}%")
        for c in children.items:
            if c.role == "viewers" and c.proc.returncode not in (None, 0):
                raise BenchError(f"a viewer worker (pid {c.proc.pid}) failed with code {c.proc.returncode}; "
                                 f"see {RESULTS_DIR / 'workers.log'}")
    return ws, we


@dataclass
class Plan:
    t0: float
    ws_tick: int
    we_tick: int
    duration_s: int

    @property
    def t_ws(self) -> float:
        return self.t0 + self.ws_tick

    @property
    def t_we(self) -> float:
        return self.t0 + self.we_tick


def make_plan(args, startup_s: float = 1.5) -> Plan:
    ws = max(1, math.ceil(args.warmup))
    return Plan(time.monotonic() + startup_s, ws, ws + int(args.duration), int(args.duration))


# ---------------------------------------------------------------- viewer workers


async def spawn_workers(kind: str, args, server: Server, names: list[str], plan: Plan, children: Children) -> list:
    script = BENCH / ("_flv_viewers.py" if kind == "flv" else "_hls_viewers.py")
    paths = [server.flv_path(n) if kind == "flv" else server.hls_path(n) for n in names]
    procs = max(1, min(args.client_procs, args.viewers))
    base, extra = divmod(args.viewers, procs)
    first = 0
    workers = []
    log = open(RESULTS_DIR / "workers.log", "ab")
    for w in range(procs):
        count = base + (1 if w < extra else 0)
        cfg = {
            "host": server.host, "port": server.http_port, "paths": paths, "stream_count": len(names),
            "first_index": first, "count": count, "total_viewers": args.viewers,
            "t0": plan.t0, "tick_s": 1.0, "ramp_s": args.ramp, "ws_tick": plan.ws_tick, "we_tick": plan.we_tick,
            "window_start": plan.t_ws, "window_end": plan.t_we,
            "max_ticks": plan.we_tick + 600,
        }
        proc = await children.spawn("viewers", [sys.executable, str(script), json.dumps(cfg)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        workers.append(proc)
        first += count
    log.close()
    return workers


async def collect_workers(workers: list) -> list[dict]:
    async def one(proc) -> dict:
        try:
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
        except (ConnectionError, RuntimeError):
            pass
        try:
            async with asyncio.timeout(60):
                out, _ = await proc.communicate()
        except TimeoutError:
            _signal(proc, signal.SIGKILL)
            raise BenchError(f"viewer worker pid {proc.pid} did not report within 60 s after stop") from None
        if proc.returncode != 0 or not out:
            raise BenchError(f"viewer worker pid {proc.pid} failed (code {proc.returncode}); "
                             f"see {RESULTS_DIR / 'workers.log'}")
        return json.loads(out)

    return await asyncio.gather(*(one(p) for p in workers))


async def late_joiners(server: Server, name: str, count: int) -> dict:
    """`count` new HTTP-FLV connections, one after another: request sent -> first keyframe tag received."""
    times, failed = [], 0
    rnd = random.Random(7)
    for _ in range(count):
        ms = await first_keyframe_ms(server.host, server.http_port, server.flv_path(name), 10.0)
        if ms is None:
            failed += 1
        else:
            times.append(ms)
        await asyncio.sleep(0.1 + rnd.random() * 0.3)  # land at different points of the GOP
    return {"first_keyframe_ms": summary(times), "failed": failed}


# ---------------------------------------------------------------- analysis


def analyze_flv(outs: list[dict], plan: Plan, tolerance_s: float) -> dict:
    outs = sorted(outs, key=lambda o: o["first_index"])
    viewers = [v for o in outs for v in o["viewers"]]
    nt = min(len(o["ticks"]) for o in outs)
    have_window = nt > plan.we_tick and all("ws" in o["snap"] and "we" in o["snap"] for o in outs)
    newest = [[ts for o in outs for ts in o["ticks"][k]] for k in range(nt)]
    kept = 0
    lags: list[float] = []
    bytes_window = []
    per_viewer_mbps = []
    rows: list[list] = []
    disconnected = 0
    errors: Counter = Counter()
    for v in viewers:
        if v.get("error"):
            errors[v["error"][:80]] += 1
    if have_window:
        for o in outs:
            t_ws, t_we = o["tick_times"][plan.ws_tick], o["tick_times"][plan.we_tick]
            for j, v in enumerate(o["viewers"]):
                a, b = o["ticks"][plan.ws_tick][j], o["ticks"][plan.we_tick][j]
                closed = v.get("closed_at")
                alive = closed is None or closed > t_we
                if not alive and a >= 0:
                    disconnected += 1
                ok = a >= 0 and alive and v.get("status") == 200 and b - a >= (t_we - t_ws - tolerance_s) * 1000
                kept += ok
                we_snap, ws_snap = o["snap"]["we"][j], o["snap"]["ws"][j]
                nbytes = we_snap[0] - ws_snap[0]
                bytes_window.append(nbytes)
                per_viewer_mbps.append(nbytes * 8 / (t_we - t_ws) / 1e6)
                rows.append([v["stream"], nbytes, we_snap[1] - ws_snap[1], we_snap[3] - ws_snap[3],
                             b - a if a >= 0 else None, int(ok), v.get("error")])
        streams = [v["stream"] for v in viewers]
        for k in range(plan.ws_tick, plan.we_tick + 1):
            row = newest[k]
            best: dict[int, int] = {}
            for s, ts in zip(streams, row):
                if ts > best.get(s, -1):
                    best[s] = ts
            lags.extend(best[s] - ts for s, ts in zip(streams, row) if ts >= 0)
    total_bytes = sum(bytes_window)
    late = [x for o in outs for x in o["tick_late_ms"][plan.ws_tick: plan.we_tick + 1]]
    worst_lag = _per_viewer_max_lag(newest, viewers, plan)
    for row, lag in zip(rows, worst_lag):
        row.insert(5, lag)
    return {
        "viewers": len(viewers),
        "connected": sum(1 for v in viewers if v.get("status") == 200),
        "kept_up": kept,
        "kept_up_share": round(kept / len(viewers), 4) if viewers else None,
        "disconnected_in_window": disconnected,
        "errors": dict(errors.most_common(10)),
        "lag_ms": summary(lags, 0),
        "viewers_lagging_over_1s": sum(1 for lag in worst_lag if lag > 1000),
        "throughput_gbit_s": round(total_bytes * 8 / plan.duration_s / 1e9, 3),
        "per_viewer_mbit_s": summary(per_viewer_mbps, 3),
        "client_tick_late_ms": summary(late, 1),
        "window_complete": have_window,
        "per_viewer_columns": ["stream", "bytes", "tags", "keyframes", "media_advance_ms", "max_lag_ms", "kept_up",
                               "error"],
        "per_viewer": rows,
    }


def _per_viewer_max_lag(newest: list[list[int]], viewers: list[dict], plan: Plan) -> list[int]:
    if len(newest) <= plan.we_tick:
        return []
    streams = [v["stream"] for v in viewers]
    worst = [0] * len(viewers)
    for k in range(plan.ws_tick, plan.we_tick + 1):
        row = newest[k]
        best: dict[int, int] = {}
        for s, ts in zip(streams, row):
            best[s] = max(best.get(s, -1), ts)
        for i, (s, ts) in enumerate(zip(streams, row)):
            if ts >= 0:
                worst[i] = max(worst[i], best[s] - ts)
    return worst


def analyze_hls(outs: list[dict], plan: Plan, grace_s: float) -> dict:
    players = [p for o in sorted(outs, key=lambda o: o["pid"]) for p in o["players"]]
    first_seen: dict[int, dict[int, float]] = {}
    for o in outs:
        for s, d in o["first_seen"].items():
            fs = first_seen.setdefault(int(s), {})
            for msn, t in d.items():
                m = int(msn)
                fs[m] = min(t, fs.get(m, t))
    required = {s: [m for m, t in fs.items() if plan.t_ws <= t <= plan.t_we - grace_s] for s, fs in first_seen.items()}
    kept = 0
    bytes_total = 0
    errors = Counter()
    for p in players:
        fetched = {int(m): t for m, t in p["fetched"].items()}
        need = required.get(p["stream"], [])
        if need and all(m in fetched and fetched[m] <= plan.t_we + grace_s for m in need):
            kept += 1
        bytes_total += p["bytes"]
        if p["last_error"]:
            errors[p["last_error"][:80]] += 1
    lat_pl = [x for o in outs for x in o["latency_ms"]["playlist"]]
    lat_seg = [x for o in outs for x in o["latency_ms"]["segment"]]
    late = [x for o in outs for x in o["tick_late_ms"][plan.ws_tick: plan.we_tick + 1]]
    return {
        "viewers": len(players),
        "kept_up": kept,
        "kept_up_share": round(kept / len(players), 4) if players else None,
        "segments_required_per_stream": {s: len(v) for s, v in sorted(required.items())},
        "missed_segments": sum(p["missed"] for p in players),
        "errors": sum(p["errors"] for p in players),
        "error_kinds": dict(errors.most_common(10)),
        "reconnects": sum(max(0, p["connects"] - 1) for p in players),
        "playlist_latency_ms": summary(lat_pl, 2),
        "segment_latency_ms": summary(lat_seg, 2),
        "requests_in_window": len(lat_pl) + len(lat_seg),
        "bytes_whole_run": bytes_total,
        "client_tick_late_ms": summary(late, 1),
    }


def per_minute(cpu_s: float | None, units: int, duration_s: float) -> float | None:
    if cpu_s is None or units <= 0:
        return None
    return round(cpu_s / (units * duration_s / 60), 5)


# ---------------------------------------------------------------- commands


async def cmd_flv(args, ctx: "Run") -> dict:
    names = [f"{args.stream_prefix}{i}" for i in range(args.streams)]
    media = _media.ensure_media(log=say)
    server = ctx.server = await start_server(args, ctx.children, ctx.name)
    await start_publishers(server, names, media, ctx.children)
    await wait_streams(server, names)
    sampler = Sampler(server.pid, ctx.children)
    base_a = sampler.sample()
    await asyncio.sleep(3)
    base = window_usage(base_a, sampler.sample())
    plan = make_plan(args)
    say(f"{args.viewers} FLV viewers on {len(names)} stream(s) in {args.client_procs} process(es); "
        f"ramp {args.ramp} s, warm-up {plan.ws_tick} s, window {plan.duration_s} s")
    rss_before = sampler.rows[-1].server_rss
    workers = await spawn_workers("flv", args, server, names, plan, ctx.children)
    ws, we = await run_window(plan, sampler, server, ctx.children)
    usage = window_usage(ws, we)
    lj = await late_joiners(server, names[0], args.late_joiners) if args.late_joiners else None
    outs = await collect_workers(workers)
    res = analyze_flv(outs, plan, args.tolerance)
    mem = rss_in(sampler.rows, plan.t_ws, plan.t_we)
    if rss_before is not None and "server_rss_peak_mib" in mem:
        mem["server_rss_before_viewers_mib"] = mib(rss_before)
        mem["rss_per_viewer_kib"] = round((max(r.server_rss for r in sampler.rows) - rss_before) / 1024 / args.viewers, 1)
    return {
        "streams": len(names),
        "publishers_alive_at_end": ctx.children.alive("publisher"),
        "cpu": {**usage, "server_cpu_s_per_viewer_minute": per_minute(usage.get("server_cpu_s"), args.viewers,
                                                                      usage["wall_s"]),
                "before_viewers_publishers_only": base},
        "memory": mem,
        "viewers": res,
        "late_joiner": lj,
    }


async def cmd_hls(args, ctx: "Run") -> dict:
    names = [f"{args.stream_prefix}{i}" for i in range(args.streams)]
    media = _media.ensure_media(log=say)
    server = ctx.server = await start_server(args, ctx.children, ctx.name)
    stop_probe = asyncio.Event()
    probe = ListingProbe(server.host, server.http_port, server.hls_path(names[0]), 0.02, fetch_segments=False)
    probe_task = asyncio.ensure_future(probe.run(stop_probe))
    launched = await start_publishers(server, names, media, ctx.children)
    try:
        async with asyncio.timeout(30):
            while probe.first_listed_at is None:
                server.check_alive()
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise BenchError(f"no segment was listed in {server.hls_path(names[0])} within 30 s of publishing; "
                         f"see {server.log_path}") from None
    finally:
        stop_probe.set()
        await probe_task
    first_listed_s = round(probe.first_listed_at - launched, 3) if server.kind != "fake" else None
    await wait_streams(server, names)
    sampler = Sampler(server.pid, ctx.children)
    base_a = sampler.sample()
    await asyncio.sleep(3)
    base = window_usage(base_a, sampler.sample())
    rss_before = sampler.rows[-1].server_rss
    plan = make_plan(args)
    say(f"{args.viewers} HLS players on {len(names)} stream(s) in {args.client_procs} process(es); "
        f"warm-up {plan.ws_tick} s, window {plan.duration_s} s")
    workers = await spawn_workers("hls", args, server, names, plan, ctx.children)
    ws, we = await run_window(plan, sampler, server, ctx.children)
    usage = window_usage(ws, we)
    await asyncio.sleep(args.hls_grace)  # let fetches of the window's last segments finish
    outs = await collect_workers(workers)
    res = analyze_hls(outs, plan, args.hls_grace)
    mem = rss_in(sampler.rows, plan.t_ws, plan.t_we)
    if rss_before is not None and "server_rss_peak_mib" in mem:
        mem["server_rss_before_viewers_mib"] = mib(rss_before)
    return {
        "streams": len(names),
        "publishers_alive_at_end": ctx.children.alive("publisher"),
        "first_segment_listed_after_publisher_launch_s": first_listed_s,
        "cpu": {**usage, "server_cpu_s_per_viewer_minute": per_minute(usage.get("server_cpu_s"), args.viewers,
                                                                      usage["wall_s"]),
                "before_viewers_publishers_only": base},
        "memory": mem,
        "viewers": res,
    }


async def cmd_publish(args, ctx: "Run") -> dict:
    if args.server == "fake":
        raise BenchError("the fake server ingests nothing; run `publish` against the real server")
    names = [f"{args.stream_prefix}{i}" for i in range(args.publishers)]
    media = _media.ensure_media(log=say)
    server = ctx.server = await start_server(args, ctx.children, ctx.name)
    sampler = Sampler(server.pid, ctx.children)
    await asyncio.sleep(1)
    idle = sampler.sample()
    await start_publishers(server, names, media, ctx.children)
    ready = await wait_streams(server, names, timeout_s=60)
    stop_touch = asyncio.Event()
    touches = Counter()

    async def touch_hls() -> None:
        # Keep every stream's HLS packaging busy, as a server that packages on demand would need.
        client = HttpClient(server.host, server.http_port)
        try:
            while not stop_touch.is_set():
                for n in names:
                    try:
                        status, _, _, _ = await client.get(server.hls_path(n), keep_body=False, timeout_s=5)
                        touches[status] += 1
                    except (OSError, TimeoutError, ConnectionError, ValueError):
                        touches["error"] += 1
                try:
                    await asyncio.wait_for(stop_touch.wait(), 2.0)
                except TimeoutError:
                    pass
        finally:
            client.close()

    touch_task = asyncio.ensure_future(touch_hls()) if args.hls_touch else None
    plan = make_plan(args, startup_s=0.2)
    say(f"{len(names)} publishers; warm-up {plan.ws_tick} s, window {plan.duration_s} s")
    ws, we = await run_window(plan, sampler, server, ctx.children)
    usage = window_usage(ws, we)
    stop_touch.set()
    if touch_task is not None:
        await touch_task
    healthy = await wait_streams(server, names, timeout_s=20)
    hls_ok = 0
    for n in names:
        hls_ok += await http_status(server.host, server.http_port, server.hls_path(n), 5.0) == 200
    mem = rss_in(sampler.rows, plan.t_ws, plan.t_we)
    if idle.server_rss is not None and "server_rss_peak_mib" in mem:
        mem["server_rss_idle_mib"] = mib(idle.server_rss)
        peak = max(r.server_rss for r in sampler.rows if plan.t_ws - 0.01 <= r.t <= plan.t_we + 0.01)
        mem["rss_per_stream_mib"] = round((peak - idle.server_rss) / len(names) / (1024 * 1024), 2)
    return {
        "publishers": len(names),
        "publishers_alive_at_end": ctx.children.alive("publisher"),
        "streams_serving_flv_at_end": len(healthy),
        "streams_serving_hls_at_end": hls_ok,
        "hls_touch_statuses": {str(k): v for k, v in touches.items()},
        "stream_ready_first_keyframe_ms": summary(list(ready.values())),
        "cpu": {**usage, "server_cpu_s_per_stream_minute": per_minute(usage.get("server_cpu_s"), len(names),
                                                                      usage["wall_s"])},
        "memory": mem,
    }


async def cmd_latency(args, ctx: "Run") -> dict:
    name = f"{args.stream_prefix}lat"
    media = _media.ensure_media(log=say)
    server = ctx.server = await start_server(args, ctx.children, ctx.name)
    why_not = "the fake server ingests nothing" if server.kind == "fake" else client_session_available()
    if server.kind != "fake" and server.rtmp_port is None:
        why_not = "no --rtmp-url given"
    stop = asyncio.Event()
    probe = ListingProbe(server.host, server.http_port, server.hls_path(name), 0.02, fetch_segments=True)
    probe_task = asyncio.ensure_future(probe.run(stop))
    log = SendLog()
    pub_task = None
    if why_not is None:
        tags = _media.read_flv(media)
        pub_task = asyncio.ensure_future(publish_realtime(server.host, server.rtmp_port, server.app, name, tags,
                                                          stop, log))
        say("publishing with the Python RTMP publisher (mediaserver.rtmp.client)")
    elif server.kind == "fake":
        say("live delay not measured: the fake server ingests nothing")
    else:
        say(f"live delay not measured: no Python RTMP publisher ({why_not}); publishing with ffmpeg")
        log.started_at = await start_publishers(server, [name], media, ctx.children)
    viewer = None
    arrivals: dict[tuple[int, int], float] = {}
    try:
        deadline = time.monotonic() + 30
        while True:
            if pub_task is not None and pub_task.done():
                pub_task.result()  # raises the publisher's error
                raise BenchError("the Python publisher stopped early")
            if await first_keyframe_ms(server.host, server.http_port, server.flv_path(name), 2.0) is not None:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{server.flv_path(name)} served no keyframe within 30 s; see {server.log_path}")
            await asyncio.sleep(0.2)

        def on_tag(kind: int, ts: int, keyframe: bool) -> None:
            if (kind, ts) not in arrivals:
                arrivals[(kind, ts)] = time.monotonic()

        viewer = await open_viewer(server.host, server.http_port, server.flv_path(name), on_tag=on_tag)
        say(f"measuring for {args.duration} s")
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            server.check_alive()
            if pub_task is not None and pub_task.done():
                pub_task.result()
                raise BenchError("the Python publisher stopped early")
            await asyncio.sleep(0.5)
        lj = await late_joiners(server, name, args.late_joiners) if args.late_joiners else None
    finally:
        stop.set()
        if viewer is not None:
            viewer.close()
        for t in (probe_task, pub_task):
            if t is not None:
                try:
                    async with asyncio.timeout(5):
                        await t
                except (TimeoutError, Exception) as err:  # report, but keep cleaning up
                    if not isinstance(err, TimeoutError):
                        say(f"{type(err).__name__}: {err}")
    out: dict = {"publisher": "python (mediaserver.rtmp.client)" if why_not is None else "ffmpeg",
                 "late_joiner": lj}
    if why_not is None:
        d = match_delays(log, arrivals, since=viewer.head_at if viewer and viewer.head_at else 0)
        out["live_delay_ms"] = {"video": summary(d["video"]), "audio": summary(d["audio"]),
                                "unmatched_tags": len(d["unmatched"]), "viewer_error": viewer.error}
        out["hls"] = {
            "first_segment_listed_after_first_media_s":
                round(probe.first_listed_at - log.first_media_at, 3)
                if probe.first_listed_at and log.first_media_at else None,
        }
        lst = listing_delays(log, probe.first_seen, probe.first_pts, probe.durations)
        out["hls"]["segment_last_frame_to_listed_ms"] = summary(lst.pop("delays_ms"))
        out["hls"].update(lst)
    else:
        out["live_delay_ms"] = {"not_measured": why_not}
        out["hls"] = {"first_segment_listed_after_publisher_launch_s":
                      round(probe.first_listed_at - log.started_at, 3)
                      if probe.first_listed_at and server.kind != "fake" else None,
                      "segment_last_frame_to_listed_ms": {"not_measured": why_not}}
    out["hls"]["probe_polls"] = probe.polls
    return out


# ---------------------------------------------------------------- output


def print_summary(cmd: str, args, result: dict, path: Path) -> None:
    r = result["results"]
    lines = [f"== {cmd}: {result['name']} ({result['server']['kind']} server, {platform.node()}, "
             f"{os.cpu_count()} CPUs)"]
    if cmd in ("flv", "hls"):
        v, c, m = r["viewers"], r["cpu"], r["memory"]
        lines.append(f"viewers: {v['viewers']} on {r['streams']} stream(s), kept up {v['kept_up']} "
                     f"({fmt(v['kept_up_share'] * 100 if v['kept_up_share'] is not None else None, '%', 1)})")
        lines.append(f"server CPU in {c['wall_s']:.0f} s window: {fmt(c.get('server_cpu_s'), 's')} "
                     f"({fmt(c.get('server_cpu_pct_of_one_core'), '% of a core')}); "
                     f"{fmt(c.get('server_cpu_s_per_viewer_minute'), 'CPU-s per viewer-minute', 5)}")
        lines.append(f"before viewers (publishers only): server "
                     f"{fmt(c['before_viewers_publishers_only'].get('server_cpu_pct_of_one_core'), '% of a core')}")
        lines.append(f"clients: viewer processes {c['viewers_cpu_pct_of_one_core']}% of a core, publishers "
                     f"{c['publisher_cpu_pct_of_one_core']}%, tick lateness {fmt_dist(v['client_tick_late_ms'])}")
        lines.append(f"server memory: peak RSS {fmt(m.get('server_rss_peak_mib'), 'MiB')} (before viewers "
                     f"{fmt(m.get('server_rss_before_viewers_mib'), 'MiB')}), VmHWM sum "
                     f"{fmt(m.get('server_vmhwm_sum_mib'), 'MiB')}")
        if cmd == "flv":
            lines.append(f"throughput {v['throughput_gbit_s']} Gbit/s; per viewer {fmt_dist(v['per_viewer_mbit_s'], 'Mbit/s')}")
            lines.append(f"lag behind the stream's newest viewer: {fmt_dist(v['lag_ms'])}; "
                         f"viewers ever > 1 s behind: {v['viewers_lagging_over_1s']}; "
                         f"disconnected in window: {v['disconnected_in_window']}")
            if r.get("late_joiner"):
                lines.append(f"late joiner, request -> first keyframe: {fmt_dist(r['late_joiner']['first_keyframe_ms'])}"
                             f", failed {r['late_joiner']['failed']}")
        else:
            lines.append(f"playlist requests: {fmt_dist(v['playlist_latency_ms'])}")
            lines.append(f"segment requests: {fmt_dist(v['segment_latency_ms'])}")
            lines.append(f"missed segments {v['missed_segments']}, errors {v['errors']}, reconnects {v['reconnects']}; "
                         f"first segment listed {fmt(r['first_segment_listed_after_publisher_launch_s'], 's')} "
                         f"after publisher launch")
        errs = v.get("errors") if cmd == "flv" else v.get("error_kinds")
        if errs:
            lines.append(f"errors: {errs}")
    elif cmd == "publish":
        c, m = r["cpu"], r["memory"]
        lines.append(f"publishers: {r['publishers']} (alive at end {r['publishers_alive_at_end']}, serving FLV "
                     f"{r['streams_serving_flv_at_end']}, HLS {r['streams_serving_hls_at_end']})")
        lines.append(f"server CPU in {c['wall_s']:.0f} s window: {fmt(c.get('server_cpu_s'), 's')} "
                     f"({fmt(c.get('server_cpu_pct_of_one_core'), '% of a core')}); "
                     f"{fmt(c.get('server_cpu_s_per_stream_minute'), 'CPU-s per stream-minute', 5)}")
        lines.append(f"publishers (ffmpeg) {c['publisher_cpu_pct_of_one_core']}% of a core")
        lines.append(f"server memory: idle {fmt(m.get('server_rss_idle_mib'), 'MiB')}, peak "
                     f"{fmt(m.get('server_rss_peak_mib'), 'MiB')}, per stream {fmt(m.get('rss_per_stream_mib'), 'MiB')}")
    elif cmd == "latency":
        d = r["live_delay_ms"]
        if "not_measured" in d:
            lines.append(f"live delay: not measured ({d['not_measured']})")
        else:
            lines.append(f"live delay publisher -> FLV viewer, video: {fmt_dist(d['video'])}")
            lines.append(f"live delay, audio: {fmt_dist(d['audio'])}; unmatched tags {d['unmatched_tags']}")
        if r.get("late_joiner"):
            lines.append(f"late joiner, request -> first keyframe: {fmt_dist(r['late_joiner']['first_keyframe_ms'])}, "
                         f"failed {r['late_joiner']['failed']}")
        h = r["hls"]
        first = h.get("first_segment_listed_after_first_media_s", h.get("first_segment_listed_after_publisher_launch_s"))
        lines.append(f"HLS: first segment listed {fmt(first, 's')} after "
                     f"{'first media sent' if 'first_segment_listed_after_first_media_s' in h else 'publisher launch'}")
        seg = h["segment_last_frame_to_listed_ms"]
        lines.append("HLS: segment's last frame sent -> listed: "
                     + (f"not measured ({seg['not_measured']})" if "not_measured" in seg else fmt_dist(seg))
                     + (f" (TS PTS offset {h['ts_offset_ms']} ms)" if "ts_offset_ms" in h else ""))
    lines.append(f"results: {path}")
    print("\n".join(lines), flush=True)


@dataclass
class Run:
    name: str
    children: Children = field(default_factory=Children)
    server: Server | None = None


def machine_info(loop_name: str) -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"host": platform.node(), "cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "loop": loop_name, "commit": commit,
            "nofile_limit": raise_nofile_limit()}


async def amain(args, loop_name: str) -> int:
    size = {"flv": f"{getattr(args, 'viewers', 0)}v", "hls": f"{getattr(args, 'viewers', 0)}v",
            "publish": f"{getattr(args, 'publishers', 0)}p", "latency": "lat"}[args.command]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{args.name or args.command + '-' + size}-{stamp}"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    ctx = Run(name)
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    interrupted: list[int] = []

    def on_signal(sig: int) -> None:
        # Cancel the run once; its finally-blocks then stop every process it started.
        if not interrupted:
            interrupted.append(sig)
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    started = time.time()
    commands = {"flv": cmd_flv, "hls": cmd_hls, "publish": cmd_publish, "latency": cmd_latency}
    try:
        results = await commands[args.command](args, ctx)
    except BenchError as err:
        say(f"error: {err}")
        return 1
    finally:
        say("stopping the processes this run started")
        await ctx.children.stop_all()
    media = _media.CACHE_DIR / _media.MEDIA_NAME
    out = {
        "name": name,
        "command": args.command,
        "argv": sys.argv[1:],
        "options": {k: v for k, v in vars(args).items() if k != "func"},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": machine_info(loop_name),
        "media": {"file": str(media), "bytes": media.stat().st_size if media.exists() else None,
                  "recipe": " ".join(_media.ffmpeg_encode_args(Path("OUT.flv"))[1:])},
        "server": ctx.server.describe() if ctx.server else None,
        "results": results,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print_summary(args.command, args, out, path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python bench/load.py",
        description="Load and latency benchmarks for mediaserver (or any server with its URL layout).",
        epilog="Results: a summary on stdout and bench/results/NAME-TIMESTAMP.json. Media is generated once "
               "into bench/.cache/.",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, duration: int) -> None:
        g = p.add_argument_group("run")
        g.add_argument("--duration", type=int, default=duration, help=f"measurement window in s (default {duration})")
        g.add_argument("--warmup", type=float, default=10.0, help="warm-up before the window, in s (default 10)")
        g.add_argument("--name", help="results file prefix (default: COMMAND-SIZE)")
        g.add_argument("--results-dir", default=str(RESULTS_DIR), help="where the JSON and the logs go (default bench/results)")
        g.add_argument("--app", default="live", help="application name in URLs (default live)")
        g.add_argument("--stream-prefix", default="bench-", help="stream names are PREFIX0, PREFIX1, ...")
        s = p.add_argument_group("server")
        s.add_argument("--server", choices=("mediaserver", "fake"), default="mediaserver",
                       help="start `python -m mediaserver` (default) or the minimal stand-in that checks this tool")
        s.add_argument("--server-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="extra --set for the started server (repeatable)")
        s.add_argument("--log-level", default="warning", help="the started server's log level (default warning)")
        s.add_argument("--http-url", help="attach to a running server at this base URL instead (http://HOST:PORT)")
        s.add_argument("--rtmp-url", help="the attached server's RTMP base (rtmp://HOST:PORT)")
        s.add_argument("--pid", type=int, help="the attached server's PID, for CPU and memory")

    def viewers(p: argparse.ArgumentParser, default: int) -> None:
        g = p.add_argument_group("viewers")
        g.add_argument("--viewers", type=int, default=default, help=f"number of viewers (default {default})")
        g.add_argument("--streams", type=int, default=1, help="published streams; viewers spread evenly (default 1)")
        g.add_argument("--client-procs", type=int, default=1, help="viewer processes (default 1)")
        g.add_argument("--ramp", type=float, default=None, help="spread viewer starts over this many s "
                                                                "(default viewers/500, at most 5)")

    p = sub.add_parser("flv", help="HTTP-FLV fan-out: server CPU per viewer-minute, kept-up share, lag")
    viewers(p, 100)
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="a viewer kept up if its media time advanced at least window - this many s (default 1)")
    p.add_argument("--late-joiners", type=int, default=20, help="first-keyframe probes after the window (default 20)")
    common(p, 60)

    p = sub.add_parser("hls", help="HLS fan-out: server CPU per viewer-minute, kept-up share, request latency")
    viewers(p, 100)
    p.add_argument("--hls-grace", type=float, default=3.0,
                   help="segments listed in the window's last GRACE s are not required (default 3)")
    common(p, 60)

    p = sub.add_parser("publish", help="ingest cost: server CPU per stream-minute and RSS per stream")
    p.add_argument("--publishers", type=int, default=10, help="ffmpeg publishers, one stream each (default 10)")
    p.add_argument("--no-hls-touch", dest="hls_touch", action="store_false",
                   help="do not request each stream's playlist every 2 s (on-demand packagers would then idle)")
    common(p, 60)

    p = sub.add_parser("latency", help="live delay publisher -> viewer, late-joiner first keyframe, HLS listing")
    p.add_argument("--late-joiners", type=int, default=20, help="first-keyframe probes (default 20)")
    common(p, 30)
    return ap


def main(argv: list[str] | None = None) -> int:
    global RESULTS_DIR
    args = build_parser().parse_args(argv)
    RESULTS_DIR = Path(args.results_dir)
    if getattr(args, "ramp", 0) is None:
        args.ramp = min(5.0, max(0.5, args.viewers / 500))
    if getattr(args, "viewers", 1) < 1 or getattr(args, "publishers", 1) < 1:
        print("load.py: --viewers and --publishers must be at least 1", file=sys.stderr)
        return 2
    if args.duration < 1:
        print("load.py: --duration must be at least 1 s", file=sys.stderr)
        return 2
    if args.command in ("flv", "hls") and args.ramp > args.warmup:
        print(f"load.py: --ramp {args.ramp} must not exceed --warmup {args.warmup}: viewers would still be "
              f"joining in the window", file=sys.stderr)
        return 2
    loop_name = install_fast_loop()
    raise_nofile_limit()
    try:
        return asyncio.run(amain(args, loop_name))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; the processes this run started were stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
