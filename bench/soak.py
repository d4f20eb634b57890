#!/usr/bin/env python3
"""Soak: does the server hold over time under clients that come and go and bad inputs now and then?

    python -m bench.soak --duration 1200                  20 minutes, the defaults below
    python -m bench.soak --duration 60 --publishers 2     a short look
    python -m bench.soak --help                           every option

It starts `python -m mediaserver` on free loopback ports (short packager timeouts via --set, so the
quiet end comes soon; its log goes next to the JSON), primes it once with every kind of client, and
takes the baseline of the idle server. Then, for --duration seconds, all in this process: publishers
(the project's RTMP client playing a small 320x240 file at real-time pace) that publish for a while,
then drop and come back within hub.reconnect_grace, or stop for good and a new name appears; viewers
of HTTP-FLV, WebSocket-FLV, HLS (TS) and LL-HLS (cmaf.m3u8, blocking reloads and parts) that join a
live stream and leave; and, every --bad-every seconds, one of issue 9's bad inputs (a frame whose
NALU length overruns it, an AVC config whose SPS claims 0 bytes, mid-stream metadata, a huge AMF0
command, garbage mid-stream, a trickled RTMP connect, HTTP clients that send nothing or trickle their
head, WebSocket-FLV Close, FLV viewers that never read, POST /healthz).

Every --sample-every seconds it reads the server's RSS, open fds and threads from /proc and its
streams, subscribers, packagers and asyncio tasks from /metrics. After the run every client stops
and the soak waits for the quiet end (no streams, subscribers or packagers; fds and tasks back to the
baseline, or --quiet-timeout). Then it stops the server and judges: RSS after the warm-up within
±--rss-tolerance % of its first sample, fds and tasks back to the baseline, no packager, subscriber
or stream left, zero tracebacks and ERROR lines in the server log, a clean exit. Exit code 0 when
every criterion passed, 1 when one failed, 2 when the soak itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import _media  # noqa: E402
import load  # noqa: E402
from _aio import install_fast_loop, raise_nofile_limit  # noqa: E402
from _hls_viewers import HttpClient  # noqa: E402
from _soak_bad_inputs import BadInputs  # noqa: E402
from _soak_clients import (  # noqa: E402
    NET_ERRORS,
    LivePublisher,
    Tally,
    Target,
    publish_session,
    sleep_unless,
    watch,
)
from _soak_watch import Reading, is_quiet, judge, passed, rss_drift, rss_steps, scan_log, take_reading  # noqa: E402
from load import BenchError, say  # noqa: E402

SOAK_RECIPE = _media.Recipe(width=320, height=240, fps=25, video_kbps=300, gop_frames=50, audio_kbps=64,
                            duration_s=20)
"""Small media, so that a 2-core machine carries the publishers, the viewers and the server."""
VIEWER_KINDS = ("flv", "ws-flv", "hls", "llhls")
SWEEP_S = 5.0
"""How often the server's packager pool sweeps (edge/packagers.py); the quiet end waits for it."""


class Soak:
    def __init__(self, args, server: load.Server, tags: list, rng: random.Random) -> None:
        self.args = args
        self.server = server
        self.t = Target(server.host, server.rtmp_port, server.http_port, args.app)
        self.tags = tags
        self.rng = rng
        self.live: dict[str, LivePublisher] = {}
        self.tally = Tally()
        self.stop = asyncio.Event()
        self.readings: list[Reading] = []
        self.timeline: list[tuple[float, str]] = []
        """(seconds since the start, bad input) for each bad input sent."""
        self.phase = "cold"
        self.t0 = time.monotonic()
        self._metrics = HttpClient(server.host, server.http_port)
        self._names = 0
        self.bad = BadInputs(self.t, self.live, tags, self.tally, rng, args.bad_hold, args.huge_command_kib * 1024)

    # ----- readings ---------------------------------------------------------------------------------

    async def _metrics_body(self) -> bytes | None:
        try:
            status, body, _, _ = await self._metrics.get("/metrics", keep_body=True, timeout_s=5)
        except NET_ERRORS:
            return None
        return body if status == 200 else None

    async def reading(self, phase: str | None = None) -> Reading:
        r = await take_reading(self.server.pid, self._metrics_body, time.monotonic() - self.t0, phase or self.phase)
        self.readings.append(r)
        return r

    async def sample_forever(self) -> None:
        while True:
            await self.reading()
            if self.server.proc is not None and self.server.proc.returncode is not None:
                say(f"the server exited with code {self.server.proc.returncode} during the soak")
                self.stop.set()
                return
            await asyncio.sleep(self.args.sample_every)

    async def settle(self, target: Reading | None, timeout_s: float, phase: str) -> Reading:
        """Read every second until the server is quiet: nothing in the hub or pools and, given a target,
        fds and tasks back to it; without one, fds and tasks the same twice in a row. The last reading
        when the timeout passes."""
        deadline = time.monotonic() + timeout_s
        last: Reading | None = None
        while True:
            r = await self.reading(phase)
            if target is not None:
                if is_quiet(r, target):
                    return r
            elif last is not None and r.streams == r.subscribers == r.packagers == 0 and (r.fds, r.tasks) == (
                    last.fds, last.tasks):
                return r
            if time.monotonic() >= deadline or r.fds is None:
                return r
            last = r
            await asyncio.sleep(1.0)

    # ----- clients ----------------------------------------------------------------------------------

    def new_name(self) -> str:
        self._names += 1
        return f"{self.args.stream_prefix}{self._names}"

    async def publisher_slot(self) -> None:
        a = self.args
        name = self.new_name()
        while not self.stop.is_set():
            hold = self.rng.uniform(a.session_min, a.session_max)
            r = self.rng.random()
            end = "unpublish" if r < a.stop_share else "garbage" if a.bad_every and r < a.stop_share + 0.1 else "drop"
            try:
                outcome = await publish_session(self.t, name, self.tags, hold, end, self.live, self.stop)
                self.tally.note("publisher", outcome.split(":")[0] if end != "garbage" else outcome)
            except NET_ERRORS as err:
                self.tally.note("publisher", "failed", f"{type(err).__name__}: {err}")
                end = "failed"
            if end == "unpublish":
                name = self.new_name()
                pause = self.rng.uniform(1.0, 5.0)
            else:  # back within the grace, as an encoder reconnects
                pause = self.rng.uniform(0.5, max(0.6, a.reconnect_grace * 0.6))
                self.tally.note("publisher", "reconnects")
            if await sleep_unless(self.stop, pause):
                return

    async def viewer_slot(self, kind: str) -> None:
        a = self.args
        while not self.stop.is_set():
            if not self.live:
                if await sleep_unless(self.stop, 0.5):
                    return
                continue
            name = self.rng.choice(sorted(self.live))
            await watch(self.t, kind, name, self.rng.uniform(a.view_min, a.view_max), self.tally, self.stop)
            if await sleep_unless(self.stop, self.rng.uniform(0.5, 3.0)):
                return

    async def bad_inputs(self) -> None:
        a = self.args
        running: set[asyncio.Task] = set()
        todo: list[str] = []
        try:
            while not await sleep_unless(self.stop, self.rng.uniform(0.5, 1.5) * a.bad_every):
                if not todo:  # every kind once per round, in a random order
                    todo = list(a.bad_kinds)
                    self.rng.shuffle(todo)
                if len(running) >= 3:
                    self.tally.note("bad inputs", "skipped: 3 still running")
                    continue
                kind = todo.pop()
                self.timeline.append((round(time.monotonic() - self.t0, 2), kind))
                task = asyncio.ensure_future(self.bad.run(kind))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def prime(self) -> None:
        """One publisher, one viewer of each kind and a look at /metrics: what the server creates once
        (thread pools, caches) is then in the baseline, not counted as a leak."""
        name = f"{self.args.stream_prefix}prime"
        pub = asyncio.ensure_future(publish_session(self.t, name, self.tags, 8.0, "unpublish", self.live))
        deadline = time.monotonic() + 10
        while name not in self.live and not pub.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if name not in self.live:
            pub.cancel()
            await asyncio.gather(pub, return_exceptions=True)
            raise BenchError(f"the priming publisher could not publish: {self.tally.as_dict()}; see "
                             f"{self.server.log_path}")
        await asyncio.sleep(1.0)
        await asyncio.gather(*(watch(self.t, kind, name, 4.0, Tally(), asyncio.Event()) for kind in VIEWER_KINDS))
        await asyncio.gather(pub, return_exceptions=True)


# ----- the run -------------------------------------------------------------------------------------


def server_settings(args) -> list[str]:
    return [f"hub.reconnect_grace={args.reconnect_grace:g}", f"hls.idle_timeout={args.packager_idle:g}",
            f"hls.ended_linger={args.ended_linger:g}", *args.server_set]


def quiet_wait_s(args) -> float:
    """Long enough for a dropped publisher's grace, a packager's idle timeout or linger, and two sweeps."""
    return args.quiet_timeout or args.reconnect_grace + max(args.packager_idle, args.ended_linger) + 2 * SWEEP_S + 15


async def run_soak(args, ctx: load.Run) -> dict:
    media = _media.ensure_media(log=say, recipe=SOAK_RECIPE)
    tags = _media.read_flv(media)
    server_args = argparse.Namespace(http_url=None, server="mediaserver", log_level=args.log_level,
                                     server_set=server_settings(args), app=args.app)
    server = ctx.server = await load.start_server(server_args, ctx.children, ctx.name)
    soak = Soak(args, server, tags, random.Random(args.seed))
    cold = await soak.reading("cold")
    await soak.prime()
    baseline = await soak.settle(None, quiet_wait_s(args), "baseline")
    if baseline.streams != 0 or baseline.packagers != 0:
        raise BenchError(f"the server did not go quiet after priming: {baseline}")
    say(f"baseline: RSS {baseline.rss_bytes / 2**20:.1f} MiB, {baseline.fds} fds, {baseline.tasks} tasks, "
        f"{baseline.threads} threads; soak for {args.duration} s (warm-up {args.warmup:g} s)")

    soak.phase = "warmup"
    sampler = asyncio.ensure_future(soak.sample_forever())
    clients = [asyncio.ensure_future(soak.publisher_slot()) for _ in range(args.publishers)]
    clients += [asyncio.ensure_future(soak.viewer_slot(k)) for k in VIEWER_KINDS for _ in range(args.viewers)]
    if args.bad_every:
        clients.append(asyncio.ensure_future(soak.bad_inputs()))
    try:
        if not await sleep_unless(soak.stop, args.warmup):
            soak.phase = "run"
            await sleep_unless(soak.stop, args.duration - args.warmup)
            await soak.reading("run")  # the run's last sample, just before the clients stop
        soak.stop.set()
        say("stopping every client")
        done, pending = await asyncio.wait(clients, timeout=30)
        for task in pending:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                say(f"a client task failed: {task.exception()!r}")
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    soak.phase = "quiet"
    wait_s = quiet_wait_s(args)
    say(f"waiting up to {wait_s:.0f} s for the quiet end")
    end = await soak.settle(baseline, wait_s, "quiet")
    soak._metrics.close()
    say("stopping the server")
    await ctx.children.stop_all()
    exit_code = server.proc.returncode if server.proc is not None else None
    log = scan_log(server.log_path)
    verdicts = judge(soak.readings, baseline, end, log, rss_tolerance_pct=args.rss_tolerance, fd_slack=args.fd_slack,
                     task_slack=args.task_slack, min_rss_span_s=args.min_rss_span, server_exit=exit_code)

    def peak(field: str) -> int | None:
        values = [getattr(r, field) for r in soak.readings if r.phase in ("warmup", "run")
                  and getattr(r, field) is not None]
        return max(values) if values else None

    return {
        "media": {"file": str(media), "recipe": " ".join(_media.ffmpeg_encode_args(Path("OUT.flv"),
                                                                                  recipe=SOAK_RECIPE)[1:])},
        "server_settings": server_settings(args),
        "rss_after_warmup": rss_drift(soak.readings),
        "rss_steps": rss_steps(soak.readings, soak.timeline),
        "cold": cold.row(),
        "baseline": baseline.row(),
        "quiet_end": end.row(),
        "peaks": {f: peak(f) for f in ("rss_bytes", "fds", "threads", "streams", "subscribers", "hls_clients",
                                       "packagers", "tasks")},
        "server_log": log,
        "server_exit_code": exit_code,
        "clients": soak.tally.as_dict(),
        "verdicts": [{"criterion": v.criterion, "outcome": v.outcome, "detail": v.detail} for v in verdicts],
        "passed": passed(verdicts),
        "bad_inputs_timeline": soak.timeline,
        "readings": [r.row() for r in soak.readings],
    }


def print_summary(doc: dict, out=sys.stdout) -> None:
    r = doc["results"]
    o = doc["options"]

    def p(line: str = "") -> None:
        print(line, file=out)

    p(f"soak {doc['name']}: {o['duration']} s, {o['publishers']} publishers, {o['viewers']} viewer(s) of each of "
      f"{', '.join(VIEWER_KINDS)}, a bad input every ~{o['bad_every']:g} s (seed {o['seed']})")
    p(f"  command: {doc['command_line']}")
    p(f"  server: {doc['server']['cmd'] and ' '.join(doc['server']['cmd'][2:])}")
    p(f"  server log: {doc['server']['log']}")
    d = r["rss_after_warmup"]
    if d.get("samples"):
        p(f"RSS after warm-up: first {d['first_after_warmup_mib']} MiB; min {d['min_mib']} ({d['min_pct']:+.2f} %), "
          f"max {d['max_mib']} ({d['max_pct']:+.2f} %), last {d['last_mib']} ({d['last_pct']:+.2f} %); "
          f"{d['samples']} samples over {d['span_s']:.0f} s")
    for step in r["rss_steps"][:5]:
        p(f"  RSS +{step['rise_mib']} MiB at {step['t']:.0f} s, after: {', '.join(step['bad_inputs_before']) or '-'}")
    c, b, e, pk = r["cold"], r["baseline"], r["quiet_end"], r["peaks"]
    p(f"{'':12s}{'cold':>8s}{'baseline':>10s}{'peak':>8s}{'quiet end':>11s}")
    for field in ("fds", "tasks", "threads", "streams", "subscribers", "packagers", "hls_clients"):
        p(f"  {field:10s}{_v(c[field]):>8s}{_v(b[field]):>10s}{_v(pk[field]):>8s}{_v(e[field]):>11s}")
    p(f"  {'RSS MiB':10s}{_mib(c['rss_bytes']):>8s}{_mib(b['rss_bytes']):>10s}{_mib(pk['rss_bytes']):>8s}"
      f"{_mib(e['rss_bytes']):>11s}")
    log = r["server_log"]
    p(f"server log: {log['lines']} lines, {log['tracebacks']} tracebacks, {log['error_lines']} ERROR lines")
    for what, n in log["errors_by_event"].items():
        p(f"  x{n:<4d} {what}")
    if log["warnings_by_event"]:
        p("  warnings: " + ", ".join(f"{k} x{v}" for k, v in log["warnings_by_event"].items()))
    p("clients:")
    for who, outcomes in r["clients"]["outcomes"].items():
        p(f"  {who}: " + ", ".join(f"{k} x{v}" for k, v in outcomes.items()))
    for who, errors in r["clients"]["errors"].items():
        p(f"  {who} errors: " + "; ".join(f"{k} x{v}" for k, v in errors.items()))
    p("criteria:")
    for v in r["verdicts"]:
        p(f"  {v['outcome']:4s} {v['criterion']}: {v['detail']}")
    p(f"RESULT: {'PASS' if r['passed'] else 'FAIL'}  (JSON: {doc['json']})")


def _v(x) -> str:
    return "n/a" if x is None else str(x)


def _mib(x) -> str:
    return "n/a" if x is None else f"{x / 2**20:.1f}"


async def amain(args) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    ctx = load.Run(f"{args.name or 'soak-' + str(args.duration) + 's'}-{stamp}")
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    interrupted: list[int] = []

    def on_signal(sig: int) -> None:
        if not interrupted:
            interrupted.append(sig)
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    started = time.time()
    try:
        results = await run_soak(args, ctx)
    except BenchError as err:
        say(f"error: {err}")
        return 2
    finally:
        await ctx.children.stop_all()
    path = load.RESULTS_DIR / f"{ctx.name}.json"
    doc = {
        "name": ctx.name,
        "command": "soak",
        "command_line": " ".join(["python -m bench.soak", *sys.argv[1:]]),
        "options": vars(args),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": load.machine_info(args.loop_name),
        "server": ctx.server.describe(),
        "json": str(path),
        "results": results,
    }
    path.write_text(json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc, indent=2))
        print_summary(doc, sys.stderr)
    else:
        print_summary(doc)
    return 0 if results["passed"] else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = ap.add_argument_group("run")
    g.add_argument("--duration", type=int, default=1200, help="seconds the clients run, warm-up included")
    g.add_argument("--warmup", type=float, default=None,
                   help="seconds before RSS is judged (default: a fifth of --duration, at most 240)")
    g.add_argument("--sample-every", type=float, default=5.0, help="seconds between readings of the server")
    g.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock; printed)")
    g.add_argument("--name", help="results file prefix (default soak-DURATIONs)")
    g.add_argument("--results-dir", default=str(load.RESULTS_DIR), help="where the JSON and the server log go")
    g.add_argument("--json", action="store_true", help="print the JSON document on stdout (the summary on stderr)")
    g = ap.add_argument_group("clients")
    g.add_argument("--publishers", type=int, default=4, help="publishers at a time")
    g.add_argument("--session-min", type=float, default=20.0, help="shortest publish before a drop or stop, s")
    g.add_argument("--session-max", type=float, default=120.0, help="longest publish before a drop or stop, s")
    g.add_argument("--stop-share", type=float, default=0.3,
                   help="share of publish sessions that stop for good (a new name follows); the rest drop and "
                        "reconnect within the grace")
    g.add_argument("--viewers", type=int, default=2, help=f"viewers at a time of each of {', '.join(VIEWER_KINDS)}")
    g.add_argument("--view-min", type=float, default=5.0, help="shortest viewing, s")
    g.add_argument("--view-max", type=float, default=45.0, help="longest viewing, s")
    g.add_argument("--bad-every", type=float, default=15.0, help="seconds between bad inputs (0: none)")
    g.add_argument("--bad-kinds", default=",".join(BadInputs.KINDS), help="which bad inputs")
    g.add_argument("--bad-hold", type=float, default=120.0,
                   help="longest a bad client holds its connection (trickles, silent and stalled clients), s; "
                        "with the soak's 300 kbit/s media an FLV viewer that never reads stalls the server's "
                        "writes only after ~60 s of filling socket buffers")
    g.add_argument("--huge-command-kib", type=int, default=1024, help="size of the huge AMF0 command")
    g.add_argument("--app", default="live", help="application name")
    g.add_argument("--stream-prefix", default="soak-", help="stream names are PREFIX1, PREFIX2, ...")
    g = ap.add_argument_group("server")
    g.add_argument("--reconnect-grace", type=float, default=10.0, help="hub.reconnect_grace for the server, s")
    g.add_argument("--packager-idle", type=float, default=5.0, help="hls.idle_timeout for the server, s")
    g.add_argument("--ended-linger", type=float, default=5.0, help="hls.ended_linger for the server, s")
    g.add_argument("--server-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra --set for the server (repeatable)")
    g.add_argument("--log-level", default="info", help="the server's log level")
    g = ap.add_argument_group("verdicts")
    g.add_argument("--rss-tolerance", type=float, default=5.0, help="RSS after warm-up may move this many %%")
    g.add_argument("--min-rss-span", type=float, default=60.0,
                   help="RSS is judged only over at least this many s after the warm-up (else SKIP)")
    g.add_argument("--fd-slack", type=int, default=0, help="fds allowed above the baseline at the quiet end")
    g.add_argument("--task-slack", type=int, default=0, help="asyncio tasks allowed above the baseline at the end")
    g.add_argument("--quiet-timeout", type=float, default=0.0,
                   help="longest wait for the quiet end, s (default: grace + packager timeouts + 25)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load.RESULTS_DIR = Path(args.results_dir)
    load.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    if args.seed is None:
        args.seed = int(time.time()) % 100_000
    if args.warmup is None:
        args.warmup = min(240.0, args.duration / 5)
    args.bad_kinds = [k.strip() for k in args.bad_kinds.split(",") if k.strip()]
    bad = [k for k in args.bad_kinds if k not in BadInputs.KINDS]
    problems = []
    if bad:
        problems.append(f"--bad-kinds: unknown {', '.join(bad)}; choose from {', '.join(BadInputs.KINDS)}")
    if args.duration < 5 or not 0 <= args.warmup < args.duration:
        problems.append("--duration must be at least 5 s and --warmup less than it")
    if args.publishers < 1 or args.viewers < 0 or args.session_min <= 0 or args.session_max < args.session_min:
        problems.append("--publishers must be at least 1, --viewers at least 0, 0 < --session-min <= --session-max")
    if args.view_min <= 0 or args.view_max < args.view_min:
        problems.append("0 < --view-min <= --view-max")
    if problems:
        for msg in problems:
            print(f"soak: {msg}", file=sys.stderr)
        return 2
    args.loop_name = install_fast_loop()
    raise_nofile_limit()
    try:
        return asyncio.run(amain(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; the processes this soak started were stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
