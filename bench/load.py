#!/usr/bin/env python3
"""Load and latency benchmarks: what a live server costs per viewer and per stream, and how late it is.

    python bench/load.py flv --viewers 500 --duration 60      HTTP-FLV fan-out
    python bench/load.py ws-flv --viewers 200 [--ws-deflate]  WebSocket-FLV fan-out
    python bench/load.py rtmp --viewers 200                   RTMP play fan-out
    python bench/load.py hls --viewers 1000                   HLS (MPEG-TS) fan-out
    python bench/load.py llhls --viewers 200                  LL-HLS fan-out (blocking reloads + parts)
    python bench/load.py dash --viewers 200                   DASH fan-out
    python bench/load.py publish --publishers 50              ingest + packaging per stream
    python bench/load.py publish --publishers 5 --viewers-per-output 3   the same with every output watched
    python bench/load.py latency                              publisher -> viewer delay of every output

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
from _hls_viewers import HlsPlayer, HttpClient, ListingProbe, PlayerStats  # noqa: E402
from _latency import (  # noqa: E402
    SendLog,
    SentIndex,
    client_session_available,
    dash_delays,
    hls_delays,
    listing_delays,
    match_delays,
    part_delays,
    publish_realtime,
    starting_gop_ms,
)
from _outputs import (  # noqa: E402
    DashPlayer,
    DashRecorder,
    LlhlsPlayer,
    LlhlsRecorder,
    PullStats,
    join_burst,
    open_rtmp_viewer,
    open_ws_viewer,
)
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

    def llhls_path(self, name: str) -> str:
        return f"/{self.app}/{name}/cmaf.m3u8"

    def mpd_path(self, name: str) -> str:
        return f"/{self.app}/{name}/manifest.mpd"

    def rtmp_play_path(self, name: str) -> str:
        """What RtmpViewer takes: APP/NAME (on the RTMP port)."""
        return f"{self.app}/{name}"

    def viewer_target(self, kind: str, name: str) -> tuple[int, str]:
        """(port, path) a viewer of output `kind` connects to."""
        if kind == "rtmp":
            if self.rtmp_port is None:
                raise BenchError("RTMP play needs the server's RTMP address: give --rtmp-url rtmp://HOST:PORT")
            return self.rtmp_port, self.rtmp_play_path(name)
        path = {"flv": self.flv_path, "ws-flv": self.flv_path, "hls": self.hls_path, "llhls": self.llhls_path,
                "dash": self.mpd_path}[kind](name)
        return self.http_port, path

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
               "--set", f"log.level={args.log_level}",
               "--set", "http.max_connections_per_ip=0"]  # every bench viewer comes from 127.0.0.1
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


WORKER_SCRIPTS = {"flv": "_flv_viewers.py", "hls": "_hls_viewers.py", "ws-flv": "_outputs.py", "rtmp": "_outputs.py",
                  "llhls": "_outputs.py", "dash": "_outputs.py"}
PUSH_OUTPUTS = ("flv", "ws-flv", "rtmp")
PULL_OUTPUTS = ("hls", "llhls", "dash")
ALL_OUTPUTS = PUSH_OUTPUTS + PULL_OUTPUTS


async def spawn_workers(kind: str, args, server: Server, names: list[str], plan: Plan, children: Children, *,
                        viewers: int | None = None, procs: int | None = None, ramp: float | None = None) -> list:
    """Viewer worker processes for output `kind`: `viewers` (default --viewers) spread over the streams."""
    viewers = args.viewers if viewers is None else viewers
    procs = max(1, min(args.client_procs if procs is None else procs, viewers))
    ramp = args.ramp if ramp is None else ramp
    script = BENCH / WORKER_SCRIPTS[kind]
    targets = [server.viewer_target(kind, n) for n in names]
    base, extra = divmod(viewers, procs)
    first = 0
    workers = []
    log = open(RESULTS_DIR / "workers.log", "ab")
    for w in range(procs):
        count = base + (1 if w < extra else 0)
        cfg = {
            "kind": kind, "ws_deflate": bool(getattr(args, "ws_deflate", False)),
            "host": server.host, "port": targets[0][0], "paths": [p for _, p in targets], "stream_count": len(names),
            "first_index": first, "count": count, "total_viewers": viewers,
            "t0": plan.t0, "tick_s": 1.0, "ramp_s": ramp, "ws_tick": plan.ws_tick, "we_tick": plan.we_tick,
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


def viewer_opener(kind: str, ws_deflate: bool = False):
    """open(host, port, path, on_tag=..., on_close=...) for a push output, all with the same counters."""
    if kind == "flv":
        return open_viewer
    if kind == "ws-flv":
        return lambda host, port, path, **kw: open_ws_viewer(host, port, path, deflate=ws_deflate, **kw)
    if kind == "rtmp":
        return open_rtmp_viewer
    raise ValueError(f"{kind!r} is not a push output; expected one of {PUSH_OUTPUTS}")


async def late_joiners(server: Server, name: str, count: int, kind: str = "flv", ws_deflate: bool = False) -> dict:
    """`count` new viewers of a push output, one after another: request sent -> first keyframe received,
    and the cached GOP that came with it (how far behind live a player starting at the keyframe is)."""
    times, backlog, failed = [], [], 0
    rnd = random.Random(7)
    port, path = server.viewer_target(kind, name)
    opener = viewer_opener(kind, ws_deflate)
    for _ in range(count):
        res = await join_burst(opener, server.host, port, path, 10.0)
        if res is None:
            failed += 1
        else:
            times.append(res[0])
            backlog.append(res[1])
        await asyncio.sleep(0.1 + rnd.random() * 0.3)  # land at different points of the GOP
    return {"first_keyframe_ms": summary(times), "starting_gop_ms": summary(backlog), "failed": failed, "output": kind}


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


def analyze_pull(outs: list[dict], plan: Plan, grace_s: float) -> dict:
    """LL-HLS parts or DASH segments: every item first listed in the window (but its last GRACE s) must
    have been fetched by each player of its stream; lateness is fetch completion minus the first time
    any player saw the item listed."""
    players = [p for o in sorted(outs, key=lambda o: o["pid"]) for p in o["players"]]
    first_seen: dict[int, dict[str, float]] = {}
    for o in outs:
        for s, d in o["first_seen"].items():
            fs = first_seen.setdefault(int(s), {})
            for key, t in d.items():
                fs[key] = min(t, fs.get(key, t))
    required = {s: [k for k, t in fs.items() if plan.t_ws <= t <= plan.t_we - grace_s] for s, fs in first_seen.items()}
    kept = 0
    bytes_total = 0
    errors: Counter = Counter()
    statuses: Counter = Counter()
    lateness: dict[str, list[float]] = {}
    missing_total = 0
    for p in players:
        fetched = p["fetched"]
        need = required.get(p["stream"], [])
        missing = [k for k in need if k not in fetched or fetched[k] > plan.t_we + grace_s]
        missing_total += len(missing)
        if need and not missing:
            kept += 1
        fs = first_seen.get(p["stream"], {})
        for k in need:
            if k in fetched:
                lateness.setdefault(k[0], []).append((fetched[k] - fs[k]) * 1000.0)
        bytes_total += p["bytes"]
        if p["last_error"]:
            errors[p["last_error"][:80]] += 1
        statuses.update(p["statuses"])
    lat_manifest = [x for o in outs for x in o["latency_ms"]["manifest"]]
    lat_media = [x for o in outs for x in o["latency_ms"]["media"]]
    late = [x for o in outs for x in o["tick_late_ms"][plan.ws_tick: plan.we_tick + 1]]
    return {
        "viewers": len(players),
        "kept_up": kept,
        "kept_up_share": round(kept / len(players), 4) if players else None,
        "items_required_per_stream": {s: len(v) for s, v in sorted(required.items())},
        "items_missing": missing_total,
        "fetch_after_first_listed_ms": {("video" if k == "v" else "audio" if k == "a" else k): summary(v, 1)
                                         for k, v in sorted(lateness.items())},
        "gaps": sum(p["gaps"] for p in players),
        "errors": sum(p["errors"] for p in players),
        "error_kinds": dict(errors.most_common(10)),
        "statuses": dict(statuses),
        "connections_opened": sum(p["connects"] for p in players),
        "manifest_latency_ms": summary(lat_manifest, 2),
        "media_latency_ms": summary(lat_media, 2),
        "requests_in_window": len(lat_manifest) + len(lat_media),
        "bytes_whole_run": bytes_total,
        "client_tick_late_ms": summary(late, 1),
    }


def per_minute(cpu_s: float | None, units: int, duration_s: float) -> float | None:
    if cpu_s is None or units <= 0:
        return None
    return round(cpu_s / (units * duration_s / 60), 5)


# ---------------------------------------------------------------- commands


def _needs_real_server(args, what: str) -> None:
    if args.server == "fake":
        raise BenchError(f"the fake server serves only HTTP-FLV and MPEG-TS HLS; run {what} against the real server")


async def cmd_flv(args, ctx: "Run") -> dict:
    """HTTP-FLV, WebSocket-FLV or RTMP play fan-out (args.command)."""
    kind = args.command
    if kind != "flv":
        _needs_real_server(args, f"`{kind}`")
    names = [f"{args.stream_prefix}{i}" for i in range(args.streams)]
    media = _media.ensure_media(log=say)
    server = ctx.server = await start_server(args, ctx.children, ctx.name)
    if kind == "rtmp":
        server.viewer_target("rtmp", names[0])  # fails early without an RTMP address
    await start_publishers(server, names, media, ctx.children)
    await wait_streams(server, names)
    sampler = Sampler(server.pid, ctx.children)
    base_a = sampler.sample()
    await asyncio.sleep(3)
    base = window_usage(base_a, sampler.sample())
    plan = make_plan(args)
    ws_deflate = getattr(args, "ws_deflate", False)
    label = {"flv": "HTTP-FLV", "ws-flv": "WebSocket-FLV" + (" (deflate offered)" if ws_deflate else ""),
             "rtmp": "RTMP"}[kind]
    say(f"{args.viewers} {label} viewers on {len(names)} stream(s) in {args.client_procs} process(es); "
        f"ramp {args.ramp} s, warm-up {plan.ws_tick} s, window {plan.duration_s} s")
    rss_before = sampler.rows[-1].server_rss
    workers = await spawn_workers(kind, args, server, names, plan, ctx.children)
    ws, we = await run_window(plan, sampler, server, ctx.children)
    usage = window_usage(ws, we)
    lj = await late_joiners(server, names[0], args.late_joiners, kind, ws_deflate) if args.late_joiners else None
    outs = await collect_workers(workers)
    res = analyze_flv(outs, plan, args.tolerance)
    mem = rss_in(sampler.rows, plan.t_ws, plan.t_we)
    if rss_before is not None and "server_rss_peak_mib" in mem:
        mem["server_rss_before_viewers_mib"] = mib(rss_before)
        mem["rss_per_viewer_kib"] = round((max(r.server_rss for r in sampler.rows) - rss_before) / 1024 / args.viewers, 1)
    return {
        "output": kind,
        "ws_deflate": ws_deflate if kind == "ws-flv" else None,
        "streams": len(names),
        "publishers_alive_at_end": ctx.children.alive("publisher"),
        "cpu": {**usage, "server_cpu_s_per_viewer_minute": per_minute(usage.get("server_cpu_s"), args.viewers,
                                                                      usage["wall_s"]),
                "before_viewers_publishers_only": base},
        "memory": mem,
        "viewers": res,
        "late_joiner": lj,
    }


async def wait_manifests(server: Server, kind: str, names: list[str], timeout_s: float = 30.0) -> None:
    """Wait until every stream's LL-HLS multivariant playlist or MPD answers 200."""
    deadline = time.monotonic() + timeout_s
    for n in names:
        _, path = server.viewer_target(kind, n)
        while await http_status(server.host, server.http_port, path, 8.0) != 200:
            server.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{path} did not answer 200 within {timeout_s:.0f} s of publishing; see {server.log_path}")
            await asyncio.sleep(0.25)


async def cmd_pull(args, ctx: "Run") -> dict:
    """LL-HLS (hls.js low-latency players) or DASH (dash.js-like players) fan-out (args.command)."""
    kind = args.command
    _needs_real_server(args, f"`{kind}`")
    names = [f"{args.stream_prefix}{i}" for i in range(args.streams)]
    media = _media.ensure_media(log=say)
    server = ctx.server = await start_server(args, ctx.children, ctx.name)
    await start_publishers(server, names, media, ctx.children)
    await wait_streams(server, names)
    await wait_manifests(server, kind, names)
    sampler = Sampler(server.pid, ctx.children)
    base_a = sampler.sample()
    await asyncio.sleep(3)
    base = window_usage(base_a, sampler.sample())
    rss_before = sampler.rows[-1].server_rss
    plan = make_plan(args)
    label = {"llhls": "LL-HLS (blocking reload + parts)", "dash": "DASH (MPD every minimumUpdatePeriod)"}[kind]
    say(f"{args.viewers} {label} players on {len(names)} stream(s) in {args.client_procs} process(es); "
        f"warm-up {plan.ws_tick} s, window {plan.duration_s} s")
    workers = await spawn_workers(kind, args, server, names, plan, ctx.children)
    ws, we = await run_window(plan, sampler, server, ctx.children)
    usage = window_usage(ws, we)
    await asyncio.sleep(args.grace)  # let fetches of the window's last items finish
    outs = await collect_workers(workers)
    res = analyze_pull(outs, plan, args.grace)
    mem = rss_in(sampler.rows, plan.t_ws, plan.t_we)
    if rss_before is not None and "server_rss_peak_mib" in mem:
        mem["server_rss_before_viewers_mib"] = mib(rss_before)
    return {
        "output": kind,
        "streams": len(names),
        "publishers_alive_at_end": ctx.children.alive("publisher"),
        "cpu": {**usage, "server_cpu_s_per_viewer_minute": per_minute(usage.get("server_cpu_s"), args.viewers,
                                                                      usage["wall_s"]),
                "before_viewers_publishers_only": base},
        "memory": mem,
        "viewers": res,
    }


async def wait_renditions(server: Server, names: list[str], timeout_s: float = 60.0) -> None:
    """Ask each rendition's playlist until every one answers 200 (the first asks start the transcodes)."""
    deadline = time.monotonic() + timeout_s
    for name in names:
        while True:
            status = await http_status(server.host, server.http_port, server.hls_path(name))
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{server.hls_path(name)} answered {status} for {timeout_s:.0f} s: is abr.mode on "
                                 f"and the label in abr.ladder? See {server.log_path}")
            server.check_alive()
            await asyncio.sleep(0.5)


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
    watched = [f"{n}@{args.rendition}" for n in names] if args.rendition else names
    if args.rendition:  # the renditions' transcodes start with their first request: running before the baseline
        await wait_renditions(server, watched)
        base_a = sampler.sample()
        await asyncio.sleep(3)
        base = window_usage(base_a, sampler.sample())
    workers = await spawn_workers("hls", args, server, watched, plan, ctx.children)
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
    per_output = args.viewers_per_output
    outputs = parse_outputs(args.outputs, ALL_OUTPUTS) if per_output else []
    if "llhls" in outputs or "dash" in outputs:
        await wait_manifests(server, "llhls" if "llhls" in outputs else "dash", names, timeout_s=60)
    plan = make_plan(args, startup_s=0.2)
    workers: dict[str, list] = {}
    for kind in outputs:
        workers[kind] = await spawn_workers(kind, args, server, names, plan, ctx.children,
                                            viewers=per_output * len(names), procs=1, ramp=1.0)
    say(f"{len(names)} publishers" + (f", {per_output} viewer(s) per stream of each of {', '.join(outputs)}"
                                      if outputs else "") + f"; warm-up {plan.ws_tick} s, window {plan.duration_s} s")
    ws, we = await run_window(plan, sampler, server, ctx.children)
    usage = window_usage(ws, we)
    stop_touch.set()
    if touch_task is not None:
        await touch_task
    viewers_by_output = {}
    if workers:
        await asyncio.sleep(3.0)  # let pull players finish the window's last fetches
        for kind, procs in workers.items():
            outs = await collect_workers(procs)
            if kind in PUSH_OUTPUTS:
                v = analyze_flv(outs, plan, 1.0)
                viewers_by_output[kind] = {k: v[k] for k in ("viewers", "kept_up", "kept_up_share", "errors",
                                                             "lag_ms", "throughput_gbit_s")}
            elif kind == "hls":
                v = analyze_hls(outs, plan, 3.0)
                viewers_by_output[kind] = {k: v[k] for k in ("viewers", "kept_up", "kept_up_share", "errors",
                                                             "missed_segments", "error_kinds")}
            else:
                v = analyze_pull(outs, plan, 3.0)
                viewers_by_output[kind] = {k: v[k] for k in ("viewers", "kept_up", "kept_up_share", "errors",
                                                             "items_missing", "statuses", "error_kinds")}
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
        "viewers_per_output_per_stream": per_output,
        "viewers_by_output": viewers_by_output,
    }


def parse_outputs(text: str, allowed: tuple[str, ...]) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise BenchError(f"--outputs {text!r}: {', '.join(bad) or 'nothing'} is not an output; "
                         f"choose from {','.join(allowed)}")
    return items


LATENCY_OUTPUTS = ("flv", "ws-flv", "ws-flv-deflate", "rtmp", "hls", "llhls", "dash")
TARGET_MS = {"flv": 500, "ws-flv": 500, "ws-flv-deflate": 500, "rtmp": 500, "hls": 6000, "llhls": 2000, "dash": None}
"""Design targets: HTTP-FLV and RTMP under 0.5 s plus the starting GOP, HLS (2 s segments) under 6 s,
LL-HLS under 2 s behind the publisher. WebSocket-FLV is held to the FLV target; DASH has none."""


async def cmd_latency(args, ctx: "Run") -> dict:
    outputs = parse_outputs(args.outputs, LATENCY_OUTPUTS)
    if args.load:
        load_kind, load_n = parse_load(args.load)
    name = f"{args.stream_prefix}lat"
    media = _media.ensure_media(log=say)
    server = ctx.server = await start_server(args, ctx.children, ctx.name)
    why_not = "the fake server ingests nothing" if server.kind == "fake" else client_session_available()
    if server.kind != "fake" and server.rtmp_port is None:
        why_not = "no --rtmp-url given"
    if server.kind == "fake":
        outputs = [k for k in outputs if k in ("flv", "hls")]
    stop = asyncio.Event()
    probe = ListingProbe(server.host, server.http_port, server.hls_path(name), args.hls_poll_ms / 1000,
                         fetch_segments=True)
    probe_task = asyncio.ensure_future(probe.run(stop))
    log = SendLog()
    wall_offset = time.time() - time.monotonic()
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
    push: dict[str, tuple] = {}
    tasks: list[asyncio.Future] = []
    hls_seen: dict[int, float] = {}
    ll_rec = dash_rec = None
    ll_stats = PullStats(0)
    dash_stats = PullStats(0)
    lj = None
    background = None
    joiners: dict[str, dict] = {}
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

        load_workers: list = []
        if args.load:
            # Workers tick from t0; their window is the measurement, so analyze_* can judge them.
            plan = Plan(time.monotonic() + 0.5, 4, 4 + int(args.duration), int(args.duration))
            load_workers = await spawn_workers(load_kind, args, server, [name], plan, ctx.children, viewers=load_n,
                                               procs=args.load_procs, ramp=min(3.0, max(0.5, load_n / 500)))
            say(f"background load: {load_n} {load_kind} viewers in {args.load_procs} process(es); measuring from "
                f"t+{plan.ws_tick} s")
            await asyncio.sleep(max(0.0, plan.t_ws - time.monotonic()))
            cpu_a = Sampler(server.pid, ctx.children).sample()

        def recorder(arrivals: dict[tuple[int, int], float], first_key: list[int]):
            def on_tag(kind: int, ts: int, keyframe: bool) -> None:
                if (kind, ts) not in arrivals:
                    arrivals[(kind, ts)] = time.monotonic()
                if keyframe and not first_key:
                    first_key.append(ts)
            return on_tag

        for kind in outputs:
            if kind not in ("flv", "ws-flv", "ws-flv-deflate", "rtmp"):
                continue
            base = "ws-flv" if kind.startswith("ws-flv") else kind
            port, path = server.viewer_target(base, name)
            arrivals: dict[tuple[int, int], float] = {}
            first_key: list[int] = []
            viewer = await viewer_opener(base, kind == "ws-flv-deflate")(server.host, port, path,
                                                                         on_tag=recorder(arrivals, first_key))
            push[kind] = (viewer, arrivals, first_key)
        if "hls" in outputs:
            player = HlsPlayer(server.host, server.http_port, server.hls_path(name), PlayerStats(stream=0), hls_seen,
                               {"playlist": [], "segment": []}, (0.0, 0.0))
            tasks.append(asyncio.ensure_future(player.run(stop)))
        if "llhls" in outputs:
            ll_rec = LlhlsRecorder()
            ll = LlhlsPlayer(server.host, server.http_port, server.llhls_path(name), ll_stats, {}, keep_bodies=True,
                             wait_for_audio_s=5.0, on_playlist=ll_rec.on_playlist, on_item=ll_rec.on_item)
            tasks.append(asyncio.ensure_future(ll.run(stop)))
        if "dash" in outputs:
            dash_rec = DashRecorder(wall_offset)
            dash = DashPlayer(server.host, server.http_port, server.mpd_path(name), dash_stats, {}, keep_bodies=True,
                              poll_interval_s=args.dash_poll_ms / 1000, start_at_edge=True,
                              on_mpd=dash_rec.on_mpd, on_item=dash_rec.on_item)
            tasks.append(asyncio.ensure_future(dash.run(stop)))
        say(f"measuring {', '.join(outputs)} for {args.duration} s")
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            server.check_alive()
            if pub_task is not None and pub_task.done():
                pub_task.result()
                raise BenchError("the Python publisher stopped early")
            await asyncio.sleep(0.5)
        if load_workers:
            cpu_b = Sampler(server.pid, ctx.children).sample()
            usage = window_usage(cpu_a, cpu_b)
            outs = await collect_workers(load_workers)
            if load_kind in PUSH_OUTPUTS:
                v = analyze_flv(outs, plan, 1.0)
                health = {k: v[k] for k in ("viewers", "kept_up", "errors", "lag_ms")}
            elif load_kind == "hls":
                v = analyze_hls(outs, plan, 3.0)
                health = {k: v[k] for k in ("viewers", "kept_up", "errors", "missed_segments")}
            else:
                v = analyze_pull(outs, plan, 3.0)
                health = {k: v[k] for k in ("viewers", "kept_up", "errors", "items_missing", "statuses",
                                            "fetch_after_first_listed_ms")}
            background = {"output": load_kind, "viewers": load_n, **health,
                          "server_cpu_pct_of_one_core": usage.get("server_cpu_pct_of_one_core"),
                          "viewers_cpu_pct_of_one_core": usage.get("viewers_cpu_pct_of_one_core")}
        if args.late_joiners:
            for kind in outputs:
                if kind in ("flv", "ws-flv", "ws-flv-deflate", "rtmp"):
                    base = "ws-flv" if kind.startswith("ws-flv") else kind
                    joiners[kind] = await late_joiners(server, name, args.late_joiners, base, kind == "ws-flv-deflate")
            lj = joiners.get("flv") or (await late_joiners(server, name, args.late_joiners))
    finally:
        stop.set()
        for viewer, _, _ in push.values():
            viewer.close()
        for t in (probe_task, pub_task, *tasks):
            if t is not None:
                try:
                    async with asyncio.timeout(5):
                        await t
                except (TimeoutError, Exception) as err:  # report, but keep cleaning up
                    if not isinstance(err, TimeoutError):
                        say(f"{type(err).__name__}: {err}")
    out: dict = {"publisher": "python (mediaserver.rtmp.client)" if why_not is None else "ffmpeg",
                 "outputs_measured": outputs, "late_joiner": lj, "background_load": background}
    if why_not is not None:
        out["live_delay_ms"] = {"not_measured": why_not}
        out["hls"] = {"first_segment_listed_after_publisher_launch_s":
                      round(probe.first_listed_at - log.started_at, 3)
                      if probe.first_listed_at and server.kind != "fake" else None,
                      "segment_last_frame_to_listed_ms": {"not_measured": why_not}, "probe_polls": probe.polls}
        return out
    index = SentIndex(log)
    per: dict = {}
    for kind, (viewer, arrivals, first_key) in push.items():
        since = viewer.head_at or viewer.requested_at
        d = match_delays(log, arrivals, since=since)
        per[kind] = {"live_delay_ms": {"video": summary(d["video"]), "audio": summary(d["audio"])},
                     "unmatched_tags": len(d["unmatched"]),
                     "starting_gop_ms": starting_gop_ms(log, arrivals, viewer.requested_at,
                                                        first_key[0] if first_key else None),
                     "late_joiner": joiners.get(kind),
                     "status": viewer.status, "viewer_error": viewer.error}
        if kind.startswith("ws-flv"):
            per[kind]["deflate_negotiated"] = viewer.deflate
            per[kind]["wire_bytes_per_flv_byte"] = (round(viewer.wire_bytes / viewer.scanner.bytes, 3)
                                                    if viewer.scanner.bytes else None)
    if "flv" in per:
        out["live_delay_ms"] = {**per["flv"]["live_delay_ms"], "unmatched_tags": per["flv"]["unmatched_tags"],
                                "viewer_error": per["flv"]["viewer_error"]}
    out["hls"] = {
        "first_segment_listed_after_first_media_s":
            round(probe.first_listed_at - log.first_media_at, 3) if probe.first_listed_at and log.first_media_at else None,
    }
    lst = listing_delays(log, probe.first_seen, probe.first_pts, probe.durations)
    out["hls"]["segment_last_frame_to_listed_ms"] = summary(lst.pop("delays_ms"))
    out["hls"].update(lst)
    out["hls"]["probe_polls"] = probe.polls
    out["hls"]["probe_poll_ms"] = args.hls_poll_ms
    if "hls" in outputs:
        first_load = min(hls_seen.values(), default=0.0)
        live_seen = {m: t for m, t in hls_seen.items() if t > first_load}
        td = probe.target_duration_s
        per["hls"] = {**hls_delays(log, probe.first_pts, probe.durations,
                                   {"listed": probe.first_seen, "fetched": probe.fetched_at}, live_seen,
                                   3 * td if td else None),
                      "target_duration_s": td}
    if ll_rec is not None:
        per["llhls"] = {**part_delays(index, ll_rec.records, ll_rec.part_hold_back_s),
                        "part_hold_back_s": ll_rec.part_hold_back_s, "part_target_s": ll_rec.part_target_s,
                        "listed_part_duration_s": {t: summary(v, 3) for t, v in ll_rec.part_durations.items()},
                        "multivariant_loads_without_audio": ll.multivariant_loads_without_audio,
                        "playlists": ll_stats.manifests, "statuses": dict(ll_stats.statuses),
                        "errors": ll_stats.errors, "last_error": ll_stats.last_error,
                        "parse_errors": dict(ll_rec.errors)}
    if dash_rec is not None:
        mpd = dash_rec.mpd
        spd = mpd.suggested_presentation_delay_s if mpd is not None else None
        per["dash"] = {**dash_delays(index, dash_rec.records, spd),
                       "suggested_presentation_delay_s": spd,
                       "minimum_update_period_s": mpd.minimum_update_period_s if mpd is not None else None,
                       "mpd_polls": dash_rec.mpds, "mpds_without_audio": dash_rec.mpds_without_audio,
                       "poll_interval_ms": args.dash_poll_ms,
                       "statuses": dict(dash_stats.statuses), "errors": dash_stats.errors,
                       "last_error": dash_stats.last_error, "parse_errors": dict(dash_rec.errors)}
    out["outputs"] = per
    out["targets"] = latency_targets(per)
    return out


def parse_load(text: str) -> tuple[str, int]:
    kind, _, n = text.partition(":")
    if kind not in ALL_OUTPUTS or not n.isdigit() or int(n) < 1:
        raise BenchError(f"--load {text!r}: expected OUTPUT:VIEWERS with OUTPUT one of {','.join(ALL_OUTPUTS)}, "
                         f"e.g. llhls:200")
    return kind, int(n)


def latency_targets(per: dict) -> dict:
    """Each output's headline delay (p50, p95) against its design target."""
    rows = {}
    for kind, entry in per.items():
        if kind in ("flv", "ws-flv", "ws-flv-deflate", "rtmp"):
            d, what = entry["live_delay_ms"]["video"], "per-tag live delay, video (plus the starting GOP)"
        elif kind == "hls":
            d, what = entry.get("player_delay_at_hlsjs_start_ms", {}), "hls.js player, 3 target durations behind"
        elif kind == "llhls":
            d, what = entry["video"]["player_delay_at_part_hold_back_ms"], "hls.js low-latency player at PART-HOLD-BACK"
        else:
            d = entry["video"].get("player_delay_at_suggested_presentation_delay_ms", {})
            what = "dash.js player at suggestedPresentationDelay"
        target = TARGET_MS.get(kind)
        p95 = d.get("p95") if isinstance(d, dict) else None
        rows[kind] = {"measure": what, "p50_ms": d.get("p50") if isinstance(d, dict) else None, "p95_ms": p95,
                      "target_ms": target, "met": (p95 < target) if (target is not None and p95 is not None) else None}
        if "starting_gop_ms" in entry:
            joiner = entry.get("late_joiner") or {}
            gop = (joiner.get("starting_gop_ms") or {}).get("p50")
            rows[kind]["starting_gop_ms"] = gop if gop is not None else entry["starting_gop_ms"]
    return rows


# ---------------------------------------------------------------- output


def print_summary(cmd: str, args, result: dict, path: Path) -> None:
    r = result["results"]
    lines = [f"== {cmd}: {result['name']} ({result['server']['kind']} server, {platform.node()}, "
             f"{os.cpu_count()} CPUs)"]
    if cmd in ALL_OUTPUTS:
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
        if cmd in PUSH_OUTPUTS:
            lines.append(f"throughput {v['throughput_gbit_s']} Gbit/s; per viewer {fmt_dist(v['per_viewer_mbit_s'], 'Mbit/s')}")
            lines.append(f"lag behind the stream's newest viewer: {fmt_dist(v['lag_ms'])}; "
                         f"viewers ever > 1 s behind: {v['viewers_lagging_over_1s']}; "
                         f"disconnected in window: {v['disconnected_in_window']}")
            if r.get("late_joiner"):
                lines.append(f"late joiner, request -> first keyframe: {fmt_dist(r['late_joiner']['first_keyframe_ms'])}"
                             f", failed {r['late_joiner']['failed']}; cached GOP it starts with: "
                             f"{fmt_dist(r['late_joiner']['starting_gop_ms'])}")
        elif cmd == "hls":
            lines.append(f"playlist requests: {fmt_dist(v['playlist_latency_ms'])}")
            lines.append(f"segment requests: {fmt_dist(v['segment_latency_ms'])}")
            lines.append(f"missed segments {v['missed_segments']}, errors {v['errors']}, reconnects {v['reconnects']}; "
                         f"first segment listed {fmt(r['first_segment_listed_after_publisher_launch_s'], 's')} "
                         f"after publisher launch")
        else:
            what = "blocking playlist reloads (held until the part exists)" if cmd == "llhls" else "MPD requests"
            lines.append(f"{what}: {fmt_dist(v['manifest_latency_ms'])}")
            lines.append(f"{'part' if cmd == 'llhls' else 'segment'} requests: {fmt_dist(v['media_latency_ms'])}")
            for track, d in v["fetch_after_first_listed_ms"].items():
                lines.append(f"{track}: fetched after first listed by any player: {fmt_dist(d)}")
            lines.append(f"items missing {v['items_missing']}, gaps {v['gaps']}, errors {v['errors']}, "
                         f"non-200 {v['statuses'] or 'none'}")
        errs = v.get("errors") if cmd in PUSH_OUTPUTS else v.get("error_kinds")
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
        if r.get("viewers_by_output"):
            lines.append(f"viewers: {r['viewers_per_output_per_stream']} per stream of each output; viewer processes "
                         f"{c['viewers_cpu_pct_of_one_core']}% of a core")
            for kind, v in r["viewers_by_output"].items():
                lines.append(f"  {kind}: {v['viewers']} viewers, kept up {v['kept_up']}, errors {v['errors']}")
    elif cmd == "latency":
        d = r.get("live_delay_ms")
        if d is None:
            pass  # HTTP-FLV was not among --outputs
        elif "not_measured" in d:
            lines.append(f"live delay: not measured ({d['not_measured']})")
        else:
            lines.append(f"live delay publisher -> FLV viewer, video: {fmt_dist(d['video'])}")
            lines.append(f"live delay, audio: {fmt_dist(d['audio'])}; unmatched tags {d['unmatched_tags']}")
        if r.get("late_joiner"):
            lines.append(f"late joiner, request -> first keyframe: {fmt_dist(r['late_joiner']['first_keyframe_ms'])}, "
                         f"failed {r['late_joiner']['failed']}; cached GOP it starts with: "
                         f"{fmt_dist(r['late_joiner']['starting_gop_ms'])}")
        h = r["hls"]
        first = h.get("first_segment_listed_after_first_media_s", h.get("first_segment_listed_after_publisher_launch_s"))
        lines.append(f"HLS: first segment listed {fmt(first, 's')} after "
                     f"{'first media sent' if 'first_segment_listed_after_first_media_s' in h else 'publisher launch'}")
        seg = h["segment_last_frame_to_listed_ms"]
        lines.append("HLS: segment's last frame sent -> listed: "
                     + (f"not measured ({seg['not_measured']})" if "not_measured" in seg else fmt_dist(seg))
                     + (f" (TS PTS offset {h['ts_offset_ms']} ms)" if "ts_offset_ms" in h else ""))
        lines.extend(_latency_lines(r.get("outputs", {}), r.get("targets", {})))
        if r.get("background_load"):
            b = r["background_load"]
            lines.append(f"under background load: {b['viewers']} {b['output']} viewers (kept up {b['kept_up']}, errors "
                         f"{b['errors']}); server {b['server_cpu_pct_of_one_core']}% of a core, background viewers "
                         f"{b['viewers_cpu_pct_of_one_core']}%")
    lines.append(f"results: {path}")
    print("\n".join(lines), flush=True)


def _latency_lines(per: dict, targets: dict) -> list[str]:
    lines = []
    for kind in ("flv", "ws-flv", "ws-flv-deflate", "rtmp"):
        if kind in per:
            e = per[kind]
            extra = f", deflate negotiated {e['deflate_negotiated']}" if "deflate_negotiated" in e else ""
            lines.append(f"{kind}: live delay video {fmt_dist(e['live_delay_ms']['video'])}; audio p50 "
                         f"{e['live_delay_ms']['audio']['p50']} ms; starting GOP {fmt(e['starting_gop_ms'], 'ms')}{extra}")
    if "hls" in per:
        e = per["hls"]
        lines.append(f"hls: last frame -> listed {fmt_dist(e.get('segment_last_frame_to_listed_ms', {}))}; -> fetched "
                     f"{fmt_dist(e.get('segment_last_frame_to_fetched_ms', {}))}")
        lines.append(f"hls: hls.js player {fmt(e.get('player_hold_back_s'), 's')} behind its edge: "
                     f"{fmt_dist(e.get('player_delay_at_hlsjs_start_ms', {}))}")
    if "llhls" in per:
        e = per["llhls"]
        for track in ("video", "audio"):
            t = e[track]
            lines.append(f"llhls {track}: part's last sample -> listed {fmt_dist(t['part_last_sample_to_listed_ms'])}; "
                         f"-> received {fmt_dist(t['part_last_sample_to_received_ms'])}")
        lines.append(f"llhls: hls.js low-latency player at PART-HOLD-BACK {fmt(e['part_hold_back_s'], 's')}: "
                     f"{fmt_dist(e['video']['player_delay_at_part_hold_back_ms'])}; non-200 {e['statuses'] or 'none'}")
    if "dash" in per:
        e = per["dash"]
        for track in ("video", "audio"):
            t = e[track]
            lines.append(f"dash {track}: last sample -> listed {fmt_dist(t['segment_last_sample_to_listed_ms'])}; "
                         f"listed - advertised {fmt_dist(t['listed_minus_advertised_availability_ms'])}")
        lines.append(f"dash: dash.js player at suggestedPresentationDelay {fmt(e['suggested_presentation_delay_s'], 's')}: "
                     f"{fmt_dist(e['video'].get('player_delay_at_suggested_presentation_delay_ms', {}))}")
    if targets:
        lines.append("targets (p95 vs design target):")
        for kind, t in targets.items():
            verdict = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
            gop = (f" + starting GOP (p50 of late joiners) {t['starting_gop_ms']} ms"
                   if t.get("starting_gop_ms") is not None else "")
            lines.append(f"  {kind:15s} p95 {fmt(t['p95_ms'], 'ms')}{gop} vs {fmt(t['target_ms'], 'ms')}: {verdict} "
                         f"({t['measure']})")
    return lines


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
    if args.command in ALL_OUTPUTS:
        size = f"{args.viewers}v" + ("-deflate" if getattr(args, "ws_deflate", False) else "")
    elif args.command == "publish":
        size = f"{args.publishers}p" + (f"-{args.viewers_per_output}vpo" if args.viewers_per_output else "")
    else:
        size = "lat"
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
    commands = {"flv": cmd_flv, "ws-flv": cmd_flv, "rtmp": cmd_flv, "hls": cmd_hls, "llhls": cmd_pull,
                "dash": cmd_pull, "publish": cmd_publish, "latency": cmd_latency}
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

    for kind, what in (("ws-flv", "WebSocket-FLV"), ("rtmp", "RTMP play")):
        p = sub.add_parser(kind, help=f"{what} fan-out: server CPU per viewer-minute, kept-up share, lag")
        viewers(p, 100)
        p.add_argument("--tolerance", type=float, default=1.0,
                       help="a viewer kept up if its media time advanced at least window - this many s (default 1)")
        p.add_argument("--late-joiners", type=int, default=20, help="first-keyframe probes after the window (default 20)")
        if kind == "ws-flv":
            p.add_argument("--ws-deflate", action="store_true",
                           help="offer permessage-deflate, as browsers do (the server then compresses every message)")
        common(p, 60)

    p = sub.add_parser("hls", help="HLS fan-out: server CPU per viewer-minute, kept-up share, request latency")
    viewers(p, 100)
    p.add_argument("--hls-grace", type=float, default=3.0,
                   help="segments listed in the window's last GRACE s are not required (default 3)")
    p.add_argument("--rendition", metavar="LABEL",
                   help="players play the ABR rendition NAME@LABEL instead of the source (set abr.mode and "
                        "abr.ladder with --server-set; the transcode's CPU counts in every figure)")
    common(p, 60)

    for kind, what in (("llhls", "LL-HLS (hls.js low-latency players: blocking reloads and parts, video and audio)"),
                       ("dash", "DASH (dash.js-like players: the MPD every minimumUpdatePeriod, every segment of "
                                "both tracks)")):
        p = sub.add_parser(kind, help=f"{what} fan-out: server CPU per viewer-minute, kept-up share")
        viewers(p, 100)
        p.add_argument("--grace", type=float, default=3.0,
                       help="items listed in the window's last GRACE s are not required (default 3)")
        common(p, 60)

    p = sub.add_parser("publish", help="ingest cost: server CPU per stream-minute and RSS per stream")
    p.add_argument("--publishers", type=int, default=10, help="ffmpeg publishers, one stream each (default 10)")
    p.add_argument("--no-hls-touch", dest="hls_touch", action="store_false",
                   help="do not request each stream's playlist every 2 s (on-demand packagers would then idle)")
    p.add_argument("--viewers-per-output", type=int, default=0,
                   help="viewers per stream of each of --outputs during the run (default 0: no viewers)")
    p.add_argument("--outputs", default=",".join(ALL_OUTPUTS),
                   help=f"outputs watched with --viewers-per-output (default {','.join(ALL_OUTPUTS)})")
    common(p, 60)

    p = sub.add_parser("latency", help="live delay publisher -> viewer per output, late-joiner first keyframe")
    p.add_argument("--late-joiners", type=int, default=10,
                   help="first-keyframe probes per push output after the window (default 10)")
    p.add_argument("--outputs", default=",".join(LATENCY_OUTPUTS),
                   help=f"outputs to measure (default {','.join(LATENCY_OUTPUTS)})")
    p.add_argument("--hls-poll-ms", type=float, default=20,
                   help="how often the HLS probe reloads index.m3u8 (default 20): a listing is seen up to this late")
    p.add_argument("--dash-poll-ms", type=int, default=20,
                   help="how often the DASH probe reloads the MPD, to see when segments appear (default 20)")
    p.add_argument("--load", metavar="OUTPUT:VIEWERS",
                   help="measure under load: VIEWERS background viewers of OUTPUT on the same stream, e.g. llhls:200")
    p.add_argument("--load-procs", type=int, default=1, help="processes for the background viewers (default 1)")
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
    if args.command in ALL_OUTPUTS and args.ramp > args.warmup:
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
