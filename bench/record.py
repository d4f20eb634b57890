"""What recording costs per stream: the same publishers with record.mode = "off", then "all".

    python -m bench.record --streams 50 --seconds 60            off, all (one run each)
    python -m bench.record --streams 50 --seconds 60 --repeat 2 off, all, off, all
    python -m bench.record --streams 5 --seconds 20             a quick check
    python -m bench.record --streams 50 --seconds 30 --toggle 4 one server, recording switched on and off
    python -m bench.record --streams 50 --seconds 40 --toggle 2 --probe   and the recording's own CPU, timed inside
    python -m bench.record --pool RUN1.json RUN2.json ...          toggle runs of one build (bench/results), together

Each run starts the server (bench/load.py's `start_server`, on free loopback ports, here with
`record.mode`, `record.path` in the run's directory and `record.fsync_interval`), publishes `--streams`
copies of the benchmark media (bench/_media.py: 720p30 H.264 2.5 Mbit/s + AAC, GOP 2 s) with one
`ffmpeg -re -stream_loop -1 -c copy` each, waits until every stream serves a keyframe, lets `--warmup`
pass and measures the server's CPU (its whole process tree, /proc) over `--seconds`, as `load.py publish
--no-hls-touch` does. Also read over the window: the server's /proc/PID/io (`wchar`, `syscw`: bytes and
write calls, sockets included; `write_bytes`: what reached the block layer), its RSS, and its main thread's
CPU (/proc/PID/task/PID/stat: the event loop's thread; the rest is the other threads': the recording
writer's, the catalog's), so the cost of recording splits into the loop's part and the writer's.

Then the publishers stop, and the admin API says how many frames each stream received (`frames_in`, less
the two sequence headers, the onMetaData and the end-of-sequence tag of its trailer that ffmpeg sends
once each, which are not samples); the server is
stopped (SIGINT: the recordings close), and every file is read back: samples per track, holes in each
track's timeline, and the fragment index VOD serves from (mediaserver/record/vod.py `index_file`).
No frame lost = every stream's samples == its media frames received, and no hole.

With `--toggle`, `--probe` also times the recording's own work inside the server (bench/_recprobe: the
event loop's `Recorder.on_frames` and the recording writer's jobs, with `time.thread_time`) over each
window: µs per frame on the loop, ms per MB in the writer, and both as CPU-s per stream-minute. The whole
server's figure moves by about ±0.003 between runs of the same code; this one by about ±5 %.

Results: a summary on stdout and bench/results/record-STREAMSs-TIMESTAMP.json; the recordings are removed
afterwards unless `--keep-files`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

import aiohttp

from bench import load  # also puts bench/ on sys.path, where its modules import one another by bare name

from _recfiles import check_recording  # noqa: E402
from _report import mib  # noqa: E402
from mediaserver.errors import MediaError  # noqa: E402
from mediaserver.record.vod import index_file  # noqa: E402

ADMIN_TOKEN = "bench-record-token"
NON_SAMPLE_FRAMES = 4
"""Frames ffmpeg's FLV muxer sends once per publish that are not samples: onMetaData, the AVC and AAC
sequence headers, and the AVC end-of-sequence tag its trailer writes when it is stopped (the admin API's
frames_in counts them all)."""


def read_io(pid: int) -> dict[str, int]:
    """/proc/PID/io of one process (its threads included), or {} when unreadable."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k.strip()] = int(v)
    except (OSError, ValueError):
        return {}
    return out


def user_system_s(pid: int) -> tuple[float, float] | None:
    """(utime, stime) of one process, all its threads, in seconds: Python's work against the kernel's."""
    stat = load._procstats.read_stat(pid)
    return (stat.user_s, stat.system_s) if stat is not None else None


def loop_thread_s(pid: int) -> float | None:
    """utime + stime of the server's main thread (its event loop; the thread whose id is the process's), in
    seconds. The process's figure less this is what its other threads took: the recording writer's, the
    catalog's database thread, the default executor's."""
    stat = load._procstats.read_stat(pid, tid=pid)
    return stat.cpu_s if stat is not None else None


def io_delta(a: dict[str, int], b: dict[str, int], seconds: float) -> dict:
    if not a or not b:
        return {}
    d = {k: b[k] - a[k] for k in ("wchar", "syscw", "write_bytes") if k in a and k in b}
    return {
        "write_calls_per_s": round(d.get("syscw", 0) / seconds, 1),
        "written_mb_per_s": round(d.get("wchar", 0) / seconds / 1e6, 2),
        "to_disk_mb_per_s": round(d.get("write_bytes", 0) / seconds / 1e6, 2),
    }


async def frames_received(server: load.Server, names: list[str]) -> dict[str, int]:
    """frames_in of each stream, once it stops growing (its publisher gone, the stream in its grace)."""
    url = f"http://{server.host}:{server.http_port}/api/v1/streams"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    last: dict[str, int] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(20):
            async with http.get(url, headers=headers) as resp:
                if resp.status != 200:
                    raise load.BenchError(f"GET /api/v1/streams answered {resp.status}: {await resp.text()}")
                body = await resp.json()
            now = {s["name"]: s["frames_in"] for s in body["streams"] if s["app"] == server.app}
            if now == last and all(n in now for n in names):
                return now
            last = now
            await asyncio.sleep(1.0)
    missing = [n for n in names if n not in last]
    raise load.BenchError(f"frames_in did not settle within 20 s after the publishers stopped "
                          f"({len(missing)} streams missing from /api/v1/streams)")


async def stop_role(children: load.Children, role: str) -> None:
    group = [c for c in children.items if c.role == role and c.proc.returncode is None]
    for c in group:
        load._signal(c.proc, signal.SIGTERM)
    await load._wait_all(group, 10.0)


def check_files(rec_dir: Path, app: str, names: list[str], received: dict[str, int]) -> dict:
    """Read every stream's recording(s) back and set the samples against the frames received."""
    per_stream = []
    for name in names:
        files = sorted((rec_dir / app / name).glob("*.mp4"))
        samples = holes = trailing = fragments = size = 0
        errors = []
        duration = 0.0
        for path in files:
            data = path.read_bytes()
            c = check_recording(data)
            if c.error:
                errors.append(f"{path.name}: {c.error}")
            samples += c.samples
            holes += c.holes
            size += c.bytes
            duration += max((t.duration_s for t in c.tracks.values()), default=0.0)
            try:
                idx = index_file(data)
                trailing += idx.trailing_bytes
                fragments += len(idx.fragments)
            except MediaError as err:
                errors.append(f"{path.name}: index_file: {err}")
        media_frames = received.get(name, 0) - NON_SAMPLE_FRAMES
        per_stream.append({"stream": name, "files": len(files), "bytes": size, "duration_s": round(duration, 3),
                           "frames_received": media_frames, "samples_written": samples,
                           "lost": media_frames - samples, "holes": holes, "vod_segments": fragments,
                           "trailing_bytes": trailing, "errors": errors})
    lost = [s for s in per_stream if s["lost"] or s["holes"] or s["errors"] or not s["files"]]
    return {
        "streams": len(per_stream),
        "files": sum(s["files"] for s in per_stream),
        "frames_received": sum(s["frames_received"] for s in per_stream),
        "samples_written": sum(s["samples_written"] for s in per_stream),
        "streams_with_loss_or_damage": len(lost),
        "bytes": sum(s["bytes"] for s in per_stream),
        "media_s": round(sum(s["duration_s"] for s in per_stream), 1),
        "vod_segments": sum(s["vod_segments"] for s in per_stream),
        "trailing_bytes": sum(s["trailing_bytes"] for s in per_stream),
        "bad": lost[:5],
    }


async def one_run(args, mode: str, run_name: str, media: Path) -> dict:
    names = [f"rec-{i}" for i in range(args.streams)]
    rec_dir = load.RESULTS_DIR / f"{run_name}-files"
    ns = argparse.Namespace(
        http_url=None, rtmp_url=None, pid=None, server="mediaserver", log_level="warning", app="live",
        server_set=[f"record.mode={mode}", f"record.path={rec_dir}",
                    f"record.fsync_interval={args.fsync_interval}", *args.server_set])
    ctx = load.Run(run_name)
    os.environ["MEDIASERVER_ADMIN_TOKEN"] = ADMIN_TOKEN  # the server inherits it: /api/v1/streams for frames_in
    try:
        server = ctx.server = await load.start_server(ns, ctx.children, run_name)
        sampler = load.Sampler(server.pid, ctx.children)
        await asyncio.sleep(1)
        idle = sampler.sample()
        await load.start_publishers(server, names, media, ctx.children)
        await load.wait_streams(server, names, timeout_s=120)
        plan = load.Plan(time.monotonic() + 0.2, max(1, int(args.warmup)), max(1, int(args.warmup)) + args.seconds,
                         args.seconds)
        io: dict[int, dict[str, int]] = {}
        split: dict[int, tuple[float, float] | None] = {}
        loop_s: dict[int, float | None] = {}

        def on_tick(k: int, _sample) -> None:
            if k in (plan.ws_tick, plan.we_tick):
                io[k] = read_io(server.pid)
                split[k] = user_system_s(server.pid)
                loop_s[k] = loop_thread_s(server.pid)

        load.say(f"record.mode={mode}: {len(names)} publishers; warm-up {plan.ws_tick} s, window {plan.duration_s} s")
        ws, we = await load.run_window(plan, sampler, server, ctx.children, on_tick=on_tick)
        usage = load.window_usage(ws, we)
        alive = ctx.children.alive("publisher")
        await stop_role(ctx.children, "publisher")
        received = await frames_received(server, names)
        mem = load.rss_in(sampler.rows, plan.t_ws, plan.t_we)
        peak = max(r.server_rss for r in sampler.rows if plan.t_ws - 0.01 <= r.t <= plan.t_we + 0.01)
        mem["server_rss_idle_mib"] = mib(idle.server_rss)
        mem["rss_per_stream_mib"] = round((peak - idle.server_rss) / len(names) / (1024 * 1024), 2)
    finally:
        await ctx.children.stop_all()
        if sys.exc_info()[0] is not None and not args.keep_files:
            shutil.rmtree(rec_dir, ignore_errors=True)  # a failed run leaves no gigabyte behind
    result = {
        "mode": mode,
        "publishers_alive_at_window_end": alive,
        "cpu": {**usage, "server_cpu_s_per_stream_minute": load.per_minute(usage.get("server_cpu_s"), len(names),
                                                                           usage["wall_s"])},
        "io": io_delta(io.get(plan.ws_tick, {}), io.get(plan.we_tick, {}), usage["wall_s"]),
        "server_user_system_s": [round(b - a, 2) for a, b in zip(split[plan.ws_tick], split[plan.we_tick])]
        if split.get(plan.ws_tick) and split.get(plan.we_tick) else None,
        **_threads(loop_s.get(plan.ws_tick), loop_s.get(plan.we_tick), usage.get("server_cpu_s"), len(names),
                   usage["wall_s"]),
        "memory": mem,
        "frames_received": sum(received.get(n, 0) - NON_SAMPLE_FRAMES for n in names),
        "server_log": str(server.log_path),
    }
    if mode != "off":
        result["files"] = check_files(rec_dir, "live", names, received)
        if not args.keep_files:
            shutil.rmtree(rec_dir, ignore_errors=True)
    return result


def _threads(loop0: float | None, loop1: float | None, process_s: float | None, streams: int,
             wall_s: float) -> dict:
    """A window's CPU split between the event loop's thread and the others, per stream-minute too."""
    if loop0 is None or loop1 is None or process_s is None:
        return {}
    loop = loop1 - loop0
    return {"loop_thread_cpu_s": round(loop, 2), "other_threads_cpu_s": round(process_s - loop, 2),
            "loop_thread_cpu_s_per_stream_minute": load.per_minute(loop, streams, wall_s),
            "other_threads_cpu_s_per_stream_minute": load.per_minute(process_s - loop, streams, wall_s)}


def machine_steal_s() -> float | None:
    """CPU time the hypervisor gave other guests (steal, all CPUs), from /proc/stat, in seconds."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / load._procstats.CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


def kernel_threads_cpu_s() -> float:
    """utime + stime of the kernel's own threads (kthreadd's children: the flusher's kworkers that write dirty
    pages back, kswapd, ksoftirqd), summed, in seconds. A kworker that exits within a window takes its time
    with it, so this is a floor; it shows what writeback a server leaves to the kernel rather than doing itself."""
    return sum(stat.cpu_s for stat in load._procstats.all_stats().values() if stat.ppid == 2 or stat.pid == 2)


def read_probe(path: Path | None) -> dict | None:
    """bench/_recprobe's running totals in the server (written every second), or None."""
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def probe_window(a: dict | None, b: dict | None, streams: int) -> dict | None:
    """The recording's own work between two probe readings: µs per frame on the event loop, ms per MB in the
    writer's thread, and both as CPU-s per stream-minute (over the readings' own interval); and where each
    went: the frames' push and the Recorder's hand-over, the video cuts, the audio fragments; the writer's copy
    into its buffer, its pwrite calls, the rest of its jobs (fsyncs, opens, closes)."""
    if not a or not b or b["at"] <= a["at"]:
        return None

    def spent(key: str) -> float:
        return b.get(key, 0.0) - a.get(key, 0.0)  # (a key an older probe did not write: 0)

    frames, written = b["frames"] - a["frames"], b["bytes"] - a["bytes"]
    loop_s, writer_s = spent("loop_s"), spent("writer_s")
    video_cut_s, audio_cut_s, direct_s, pwrite_s = (spent(k) for k in ("video_cut_s", "audio_cut_s", "direct_s",
                                                                         "pwrite_s"))

    def per_frame(seconds: float) -> float | None:
        return round(seconds / frames * 1e6, 3) if frames else None

    def per_mb(seconds: float) -> float | None:
        return round(seconds / written * 1e9, 3) if written else None

    return {"frames": frames, "mb": round(written / 1e6, 1),
            "loop_us_per_frame": per_frame(loop_s),
            "writer_ms_per_mb": per_mb(writer_s),
            "cpu_s_per_stream_minute": load.per_minute(loop_s + writer_s, streams, b["at"] - a["at"]),
            # Where they went: the loop's µs per frame (every frame's share, so the first three add up to the
            # whole; views and moofs are within the cuts) and the writer's ms per MB (adding up likewise).
            "loop_split": {"push_and_store": per_frame(loop_s - video_cut_s - audio_cut_s),
                           "video_cut": per_frame(video_cut_s), "audio_cut": per_frame(audio_cut_s),
                           "of_which_views": per_frame(spent("views_s")), "of_which_moofs": per_frame(spent("moof_s"))},
            "writer_split": {"copy": per_mb(direct_s - pwrite_s), "pwrite": per_mb(pwrite_s),
                             "other": per_mb(writer_s - direct_s)}}


_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
"""Student's t, two-sided 95 %, for 1 to 30 degrees of freedom (1.96 beyond)."""


def mean_interval(values: list[float]) -> dict | None:
    """The mean of the windows' figures and the half-width of its 95 % interval (Student's t over the windows'
    spread), or None for fewer than two. Neighbouring windows share an off-window, so they are not wholly
    independent: the interval is a guide to how far runs of the same code may fall apart, not a proof."""
    n = len(values)
    if n < 2:
        return None
    t = _T95[n - 2] if n - 1 <= len(_T95) else 1.96
    return {"windows": n, "mean": round(statistics.fmean(values), 4),
            "plus_minus": round(t * statistics.stdev(values) / n ** 0.5, 4)}


def pool_runs(paths: list[Path]) -> dict:
    """The recording windows of several `--toggle` runs (their JSON results) taken together."""
    values, runs = [], []
    for path in paths:
        try:
            result = json.loads(path.read_text())
            figures = [float(v) for v in result["toggle"]["recording_cpu_s_per_stream_minute"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise load.BenchError(f"{path} is not a bench.record --toggle result: {err!r}") from None
        machine = result.get("machine")
        runs.append({"path": str(path), "commit": machine.get("commit") if isinstance(machine, dict) else None,
                     "windows": figures})
        values += figures
    return {"runs": runs, "median": median(values), "interval": mean_interval(values)}


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


async def set_recording(server: load.Server, names: list[str], on: bool) -> None:
    """Start (POST) or stop (DELETE) every stream's recording through the admin API."""
    base = f"http://{server.host}:{server.http_port}/api/v1/streams/{server.app}"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        for name in names:
            async with http.request("POST" if on else "DELETE", f"{base}/{name}/record", headers=headers) as resp:
                if resp.status >= 300:
                    raise load.BenchError(f"{'POST' if on else 'DELETE'} .../{name}/record answered {resp.status}: "
                                          f"{(await resp.text())[:200]}")


async def toggle_run(args, run_name: str, media: Path) -> dict:
    """One server (record.mode = "api"), the publishers up throughout; windows of `--seconds` alternate
    between no recording and every stream recording (started and stopped through the admin API, `--settle`
    s before each window), `--toggle` times each. Each "on" window is set against the "off" windows beside
    it, so the server's start and slow drifts of the machine cancel out."""
    names = [f"rec-{i}" for i in range(args.streams)]
    rec_dir = load.RESULTS_DIR / f"{run_name}-files"
    ns = argparse.Namespace(
        http_url=None, rtmp_url=None, pid=None, server="mediaserver", log_level="warning", app="live",
        server_set=["record.mode=api", f"record.path={rec_dir}", f"record.fsync_interval={args.fsync_interval}",
                    *args.server_set])
    ctx = load.Run(run_name)
    os.environ["MEDIASERVER_ADMIN_TOKEN"] = ADMIN_TOKEN
    probe = load.RESULTS_DIR / f"{run_name}-probe.json" if args.probe else None
    pythonpath = os.environ.get("PYTHONPATH")
    if probe is not None:  # the server inherits these: bench/_recprobe/sitecustomize.py
        os.environ["MEDIASERVER_BENCH_RECPROBE"] = str(probe)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parent / "_recprobe"), pythonpath) if p)
    windows: list[dict] = []
    try:
        server = ctx.server = await load.start_server(ns, ctx.children, run_name)
        await load.start_publishers(server, names, media, ctx.children)
        await load.wait_streams(server, names, timeout_s=120)
        load.say(f"toggle: {len(names)} publishers up; warm-up {args.warmup:.0f} s")
        await asyncio.sleep(args.warmup)
        for k in range(2 * args.toggle + 1):
            on = k % 2 == 1  # off, on, off, ..., off: every "on" window has an "off" on each side
            if k:
                await set_recording(server, names, on)
                await asyncio.sleep(args.settle)
            a, t0, io0, steal0 = user_system_s(server.pid), time.monotonic(), read_io(server.pid), machine_steal_s()
            kernel0, loop0, probe0 = kernel_threads_cpu_s(), loop_thread_s(server.pid), read_probe(probe)
            await asyncio.sleep(args.seconds)
            b, t1, io1, steal1 = user_system_s(server.pid), time.monotonic(), read_io(server.pid), machine_steal_s()
            kernel1, loop1, probe1 = kernel_threads_cpu_s(), loop_thread_s(server.pid), read_probe(probe)
            if a is None or b is None:
                raise load.BenchError("the server's /proc/PID/stat could not be read")
            alive = ctx.children.alive("publisher")
            if alive < len(names):
                raise load.BenchError(f"only {alive} of {len(names)} publishers alive")
            user, system = b[0] - a[0], b[1] - a[1]
            per = load.per_minute(user + system, len(names), t1 - t0)
            windows.append({"recording": on, "wall_s": round(t1 - t0, 3), "user_s": round(user, 2),
                            "system_s": round(system, 2), "cpu_s_per_stream_minute": per,
                            "io": io_delta(io0, io1, t1 - t0),
                            **_threads(loop0, loop1, user + system, len(names), t1 - t0),
                            "kernel_threads_cpu_s": round(kernel1 - kernel0, 2),
                            "kernel_threads_cpu_s_per_stream_minute": load.per_minute(kernel1 - kernel0, len(names),
                                                                                      t1 - t0),
                            "machine_steal_s": round(steal1 - steal0, 2) if steal0 is not None and steal1 is not None
                            else None,
                            **({"probe": probe_window(probe0, probe1, len(names))} if probe is not None else {})})
            load.say(f"window {k + 1}/{2 * args.toggle + 1}, recording {'on ' if on else 'off'}: {per} CPU-s per "
                     f"stream-minute (user {user:.2f} s, system {system:.2f} s; kernel threads "
                     f"{kernel1 - kernel0:.2f} s; machine steal "
                     f"{windows[-1]['machine_steal_s']} s)")
            if on and probe is not None:
                load.say(f"  timed inside: {windows[-1]['probe']}")
    finally:
        await ctx.children.stop_all()
        if not args.keep_files:
            shutil.rmtree(rec_dir, ignore_errors=True)
        if probe is not None:
            os.environ.pop("MEDIASERVER_BENCH_RECPROBE", None)
            if pythonpath is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = pythonpath
            probe.unlink(missing_ok=True)
    deltas, kernel, loop, other = [], [], [], []
    for i in range(1, len(windows), 2):
        for key, out in (("cpu_s_per_stream_minute", deltas), ("kernel_threads_cpu_s_per_stream_minute", kernel),
                         ("loop_thread_cpu_s_per_stream_minute", loop),
                         ("other_threads_cpu_s_per_stream_minute", other)):
            if all(windows[j].get(key) is not None for j in (i - 1, i, i + 1)):
                off = (windows[i - 1][key] + windows[i + 1][key]) / 2
                out.append(round(windows[i][key] - off, 4))
    probed = [w["probe"] for w in windows if w["recording"] and w.get("probe")]
    return {"windows": windows, "recording_cpu_s_per_stream_minute": deltas,
            "recording_cpu_s_per_stream_minute_interval": mean_interval(deltas),
            "recording_timed_inside": probed,
            "kernel_threads_cpu_s_per_stream_minute": kernel,
            "recording_loop_thread_cpu_s_per_stream_minute": loop,
            "recording_other_threads_cpu_s_per_stream_minute": other,
            "recording_cpu_s_per_stream_minute_mean": round(sum(deltas) / len(deltas), 4),
            "recording_cpu_s_per_stream_minute_median": median(deltas)}


def summarize(runs: list[dict], streams: int) -> dict:
    by_mode: dict[str, list[float]] = {}
    for r in runs:
        by_mode.setdefault(r["mode"], []).append(r["cpu"]["server_cpu_s_per_stream_minute"])
    off, on = by_mode.get("off", []), by_mode.get("all", [])
    out = {"streams": streams, "cpu_s_per_stream_minute": by_mode}
    if off and on:
        # Runs alternate off, all, off, all: each "all" is set against the "off" just before it.
        pairs = [round(b - a, 4) for a, b in zip(off, on)]
        out["recording_cpu_s_per_stream_minute"] = pairs
        out["recording_cpu_s_per_stream_minute_mean"] = round(sum(pairs) / len(pairs), 4)
        for key in ("loop_thread_cpu_s_per_stream_minute", "other_threads_cpu_s_per_stream_minute"):
            offs = [r.get(key) for r in runs if r["mode"] == "off"]
            ons = [r.get(key) for r in runs if r["mode"] == "all"]
            out["recording_" + key] = [round(b - a, 4) for a, b in zip(offs, ons) if a is not None and b is not None]
    return out


def print_summary(out: dict, path: Path) -> None:
    print(f"\nrecording benchmark: {out['streams']} streams, {out['seconds']} s window, "
          f"record.fsync_interval {out['fsync_interval']} s")
    for r in out["runs"]:
        c, m = r["cpu"], r["memory"]
        line = (f"  record.mode={r['mode']:<3}: server {c.get('server_cpu_s')} CPU-s in {c['wall_s']} s "
                f"({c.get('server_cpu_pct_of_one_core')}% of a core) = {c['server_cpu_s_per_stream_minute']} "
                f"CPU-s/stream-min; publishers {c['publisher_cpu_pct_of_one_core']}%; "
                f"RSS {m.get('rss_per_stream_mib')} MiB/stream; user/system {r.get('server_user_system_s')} s; "
                f"io {r['io']}")
        print(line)
        f = r.get("files")
        if f:
            print(f"      files: {f['files']}, {f['bytes'] / 1e6:.0f} MB, {f['media_s']} s of media "
                  f"({f['bytes'] * 8 / max(f['media_s'], 1e-9) / 1e6:.2f} Mbit/s per stream-second); frames received "
                  f"{f['frames_received']}, samples written {f['samples_written']}; streams with loss or damage: "
                  f"{f['streams_with_loss_or_damage']}; trailing bytes {f['trailing_bytes']}")
    s = out["summary"]
    if "recording_cpu_s_per_stream_minute" in s:
        print(f"  recording costs {s['recording_cpu_s_per_stream_minute']} CPU-s per stream-minute "
              f"(mean {s['recording_cpu_s_per_stream_minute_mean']}; goal at most 0.02)")
        print(f"    of which the event loop's thread {s.get('recording_loop_thread_cpu_s_per_stream_minute')}, the "
              f"other threads (the recording writer's, the catalog's) "
              f"{s.get('recording_other_threads_cpu_s_per_stream_minute')}")
    print(f"  results: {path}")


async def amain(args) -> int:
    media = load._media.ensure_media(log=load.say)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    load.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    runs = []
    if args.toggle:
        try:
            result = await toggle_run(args, f"record-{args.streams}s-toggle-{stamp}", media)
        except load.BenchError as err:
            load.say(f"error: {err}")
            return 1
        out = {"streams": args.streams, "seconds": args.seconds, "fsync_interval": args.fsync_interval,
               "argv": sys.argv[1:], "machine": load.machine_info("asyncio"), "toggle": result,
               "load_average_at_end": os.getloadavg()}
        path = load.RESULTS_DIR / f"record-{args.streams}s-toggle-{stamp}.json"
        path.write_text(json.dumps(out, indent=2))
        print(f"\nrecording benchmark, one server: {args.streams} streams, {args.toggle} recording windows of "
              f"{args.seconds} s, each against the windows without recording beside it; record.fsync_interval "
              f"{args.fsync_interval} s")
        print(f"  recording costs {result['recording_cpu_s_per_stream_minute']} CPU-s per stream-minute (mean "
              f"{result['recording_cpu_s_per_stream_minute_mean']}, median "
              f"{result['recording_cpu_s_per_stream_minute_median']}; goal at most 0.02)")
        if result["recording_cpu_s_per_stream_minute_interval"]:
            iv = result["recording_cpu_s_per_stream_minute_interval"]
            print(f"    mean {iv['mean']} ± {iv['plus_minus']} (95 %, Student's t over the {iv['windows']} windows)")
        print(f"    of which the event loop's thread {result['recording_loop_thread_cpu_s_per_stream_minute']}, the "
              f"other threads (the recording writer's, the catalog's) "
              f"{result['recording_other_threads_cpu_s_per_stream_minute']}")
        print(f"  the kernel's own threads (writeback) meanwhile: {result['kernel_threads_cpu_s_per_stream_minute']} "
              f"CPU-s per stream-minute, not in the figure above")
        for p in result["recording_timed_inside"]:
            print(f"  timed inside the server (--probe): {p}")
        print(f"  results: {path}")
        return 0
    try:
        for k in range(args.repeat):
            for mode in args.modes:
                runs.append(await one_run(args, mode, f"record-{args.streams}s-{mode}-{k}-{stamp}", media))
    except load.BenchError as err:
        load.say(f"error: {err}")
        return 1
    out = {"streams": args.streams, "seconds": args.seconds, "fsync_interval": args.fsync_interval,
           "argv": sys.argv[1:], "machine": load.machine_info("asyncio"), "runs": runs,
           "load_average_at_end": os.getloadavg(), "summary": summarize(runs, args.streams)}
    path = load.RESULTS_DIR / f"record-{args.streams}s-{stamp}.json"
    path.write_text(json.dumps(out, indent=2))
    print_summary(out, path)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.record", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=50, help="publishers, one stream each (default 50)")
    ap.add_argument("--seconds", type=int, default=60, help="measurement window in s (default 60)")
    ap.add_argument("--warmup", type=float, default=10.0, help="after every stream is up, in s (default 10)")
    ap.add_argument("--repeat", type=int, default=1, help="run the modes this many times, alternating (default 1)")
    ap.add_argument("--modes", default="off,all", help="record.mode values, in order (default off,all)")
    ap.add_argument("--fsync-interval", type=float, default=10.0,
                    help="record.fsync_interval of the server, s (default 10, the config's default)")
    ap.add_argument("--server-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="extra --set for the server (repeatable)")
    ap.add_argument("--toggle", type=int, default=0, metavar="N",
                    help="one server instead (record.mode = api): N windows with every stream recording, each "
                         "between two without, switched through the admin API (no file check)")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="with --toggle: seconds after switching before a window starts (default 5)")
    ap.add_argument("--keep-files", action="store_true", help="keep the recordings (bench/results/...-files)")
    ap.add_argument("--pool", nargs="+", type=Path, metavar="RESULT.json",
                    help="run nothing: take the recording windows of these --toggle results together (mean, 95 %% "
                         "interval, median); each is listed with the commit it ran, to keep to one build")
    ap.add_argument("--probe", action="store_true",
                    help="with --toggle: also time the recording's own work inside the server (bench/_recprobe)")
    args = ap.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.streams < 1 or args.seconds < 1 or any(m not in ("off", "all") for m in args.modes):
        ap.error("--streams and --seconds must be at least 1; --modes takes off and all")
    if args.probe and not args.toggle:
        ap.error("--probe goes with --toggle")
    if args.pool:
        try:
            pooled = pool_runs(args.pool)
        except load.BenchError as err:
            load.say(f"error: {err}")
            return 1
        for run in pooled["runs"]:
            print(f"  {run['path']} (main at {run['commit']}): {run['windows']}")
        iv = pooled["interval"]
        print(f"recording costs, {sum(len(r['windows']) for r in pooled['runs'])} windows of {len(pooled['runs'])} "
              f"runs: median {pooled['median']}"
              + (f", mean {iv['mean']} ± {iv['plus_minus']} (95 %)" if iv else "") + " CPU-s per stream-minute")
        return 0
    load.raise_nofile_limit()
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        load.say("interrupted; the processes this run started were stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
