"""ABR transcode cost: CPU-seconds per stream-minute of the default ladder, our worker against ffmpeg.

    python -m bench.abr                                  # 720p and 1080p sources, 60 s each
    python -m bench.abr --seconds 20 --sources 720p      # a quick check
    python -m bench.abr --realtime 3                     # 3 workers fed in real time: do they keep up?

For each source (720p30 H.264 2.5 Mbit/s + AAC, GOP 2 s; 1080p30 the same at 5 Mbit/s) the ladder is what
the server would plan from the default config (480p+360p+240p for 720p; 720p+480p+360p+240p for 1080p):

- ours: `python -m mediaserver.transcode.worker --job ...`, fed the FLV file on stdin as fast as it takes
  it, its output read and counted; CPU = the child's rusage (user + sys) from wait4;
- ffmpeg: one process doing the same work on the same file: one decode, `split`, `scale` with the same
  interpolation (bilinear), libx264 with the same preset, bit rate, VBV (maxrate 1.2x, bufsize 2x),
  threads, no B-frames, keyframes at the source's keyframes and no scene cuts, audio copied (not
  re-encoded) into each output; outputs to FLV on /dev/null.

Both run one after the other in the same invocation, so they share the machine's state. The goal is ours
within 1.1x of ffmpeg's CPU: the Python side should add almost nothing to the codec work.

`--realtime N` starts N workers at once, each fed the 720p file at real time (tags written at their
timestamps), and reports from their STATS whether each kept up (no rung shed; backlog and lateness against
the wall clock under 3 s after the first 5 s): how many 720p ladders this machine sustains.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench._media import CACHE_DIR, Recipe, ensure_media, ffmpeg_exe
from mediaserver.config import DEFAULT_LADDER
from mediaserver.remux.flv import FlvReader
from mediaserver.transcode import wire
from mediaserver.transcode.encoder import BUFSIZE_FACTOR, FFMPEG_SCALE_FLAGS, MAXRATE_FACTOR
from mediaserver.transcode.ladder import Rendition, plan_ladder

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {
    "720p": Recipe(width=1280, height=720, video_kbps=2500),
    "1080p": Recipe(width=1920, height=1080, video_kbps=5000),
}
MAX_KEYFRAME_INTERVAL_MS = 10000


@dataclass(frozen=True, slots=True)
class Run:
    cpu_s: float
    wall_s: float
    frames_out: int


def job_for(rungs: list[Rendition]) -> dict:
    return {
        "stream": "bench/abr", "rungs": [r.to_job() for r in rungs], "watermark": None,
        "max_keyframe_interval_ms": MAX_KEYFRAME_INTERVAL_MS, "stats_interval_s": 1.0, "max_backlog_ms": 3000,
    }


def worker_command(rungs: list[Rendition]) -> list[str]:
    return [sys.executable, "-m", "mediaserver.transcode.worker", "--job", json.dumps(job_for(rungs))]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _wait_cpu(proc: subprocess.Popen) -> float:
    """Reap the child and return its CPU seconds (user + sys, its own threads included)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def run_ours(source: Path, rungs: list[Rendition]) -> Run:
    data = source.read_bytes()
    started = time.monotonic()
    proc = subprocess.Popen(worker_command(rungs), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=_env())

    def feed() -> None:
        try:
            proc.stdin.write(data)  # type: ignore[union-attr]
        finally:
            proc.stdin.close()  # type: ignore[union-attr]

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    reader = wire.MessageReader()
    frames = 0
    errors = []
    last_stats: dict = {}
    while chunk := proc.stdout.read1(1 << 16):  # type: ignore[union-attr]
        for message in reader.feed(chunk):
            if message.kind == wire.TAG and message.track != wire.AUDIO_TRACK:
                frames += 1
            elif message.kind == wire.STATS:
                last_stats = message.json()
            elif message.kind == wire.ERROR:
                errors.append(message.json())
    feeder.join()
    cpu = _wait_cpu(proc)
    if proc.returncode != 0 or errors:
        raise RuntimeError(f"the worker failed (exit {proc.returncode}): {errors}")
    if last_stats.get("shed"):
        raise RuntimeError(f"the worker shed {last_stats['shed']}: the comparison would not be of the same work")
    return Run(cpu_s=cpu, wall_s=time.monotonic() - started, frames_out=frames)


def ffmpeg_command(source: Path, rungs: list[Rendition]) -> list[str]:
    """ffmpeg doing the same ladder: one decode, split, scale, libx264 per rung, audio copied."""
    labels = [f"v{i}" for i in range(len(rungs))]
    graph = f"[0:v]split={len(rungs)}" + "".join(f"[s{i}]" for i in range(len(rungs))) + ";"
    graph += ";".join(
        f"[s{i}]scale={r.width}:{r.height}:flags={FFMPEG_SCALE_FLAGS},format=yuv420p[{labels[i]}]"
        for i, r in enumerate(rungs)
    )
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(source),
           "-filter_complex", graph]
    for i, r in enumerate(rungs):
        keyint = MAX_KEYFRAME_INTERVAL_MS * 30 // 1000
        cmd += [
            "-map", f"[{labels[i]}]", "-map", "0:a",
            "-c:v", "libx264", "-preset", r.preset, "-threads", str(r.threads), "-bf", "0",
            "-b:v", f"{r.video_kbps}k", "-maxrate", f"{int(r.video_kbps * MAXRATE_FACTOR)}k",
            "-bufsize", f"{int(r.video_kbps * BUFSIZE_FACTOR)}k",
            "-g", str(keyint), "-sc_threshold", "0", "-force_key_frames", "source",
            "-x264-params", f"scenecut=0:keyint={keyint}:min-keyint=1", "-forced-idr", "1",
            "-c:a", "copy", "-f", "flv", os.devnull,
        ]
    return cmd


def run_ffmpeg(source: Path, rungs: list[Rendition]) -> Run:
    started = time.monotonic()
    proc = subprocess.Popen(ffmpeg_command(source, rungs), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = proc.stderr.read()  # type: ignore[union-attr]
    cpu = _wait_cpu(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed (exit {proc.returncode}): {err.decode(errors='replace')[-1500:]}")
    return Run(cpu_s=cpu, wall_s=time.monotonic() - started, frames_out=0)


def ladder_for(recipe: Recipe) -> list[Rendition]:
    return plan_ladder(DEFAULT_LADDER, recipe.width, recipe.height)


def cpu_comparison(name: str, seconds: int) -> dict:
    recipe = _recipe(name, seconds)
    source = ensure_media(CACHE_DIR, recipe=recipe, log=lambda m: print(m, file=sys.stderr))
    rungs = ladder_for(recipe)
    ours = run_ours(source, rungs)
    theirs = run_ffmpeg(source, rungs)
    per_minute = 60.0 / seconds
    result = {
        "source": name, "seconds": seconds, "ladder": [r.label for r in rungs],
        "preset": rungs[0].preset, "threads": rungs[0].threads,
        "ours_cpu_s_per_min": round(ours.cpu_s * per_minute, 1),
        "ffmpeg_cpu_s_per_min": round(theirs.cpu_s * per_minute, 1),
        "ratio": round(ours.cpu_s / theirs.cpu_s, 3) if theirs.cpu_s else None,
        "ours_wall_s": round(ours.wall_s, 1), "ffmpeg_wall_s": round(theirs.wall_s, 1),
        "ours_frames_out": ours.frames_out,
    }
    print(
        f"{name} ({'+'.join(result['ladder'])}, {result['preset']}, {result['threads']} threads/rung): "
        f"ours {result['ours_cpu_s_per_min']} CPU-s/stream-min, ffmpeg {result['ffmpeg_cpu_s_per_min']}, "
        f"ratio {result['ratio']} (wall {result['ours_wall_s']} s vs {result['ffmpeg_wall_s']} s for {seconds} s of media)"
    )
    return result


def _recipe(name: str, seconds: int) -> Recipe:
    base = SOURCES[name]
    return Recipe(width=base.width, height=base.height, video_kbps=base.video_kbps, duration_s=seconds)


# -- real time ----------------------------------------------------------------------------------------


def _paced_feed(proc: subprocess.Popen, source: Path) -> None:
    """Write the file's tags at their timestamps (the FLV header at once)."""
    data = source.read_bytes()
    tags = FlvReader().feed(data)
    start = time.monotonic()
    try:
        proc.stdin.write(data[:13])  # type: ignore[union-attr]
        for tag in tags:
            delay = tag.timestamp_ms / 1000.0 - (time.monotonic() - start)
            if delay > 0:
                time.sleep(delay)
            proc.stdin.write(tag.encode())  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
    except BrokenPipeError:
        pass
    finally:
        try:
            proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass


def realtime(workers: int, seconds: int) -> dict:
    recipe = _recipe("720p", seconds)
    source = ensure_media(CACHE_DIR, recipe=recipe, log=lambda m: print(m, file=sys.stderr))
    rungs = ladder_for(recipe)
    procs = [
        subprocess.Popen(worker_command(rungs), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=_env())
        for _ in range(workers)
    ]
    stats: list[list[dict]] = [[] for _ in procs]

    def drain(i: int, proc: subprocess.Popen) -> None:
        reader = wire.MessageReader()
        while chunk := proc.stdout.read1(1 << 16):  # type: ignore[union-attr]
            for message in reader.feed(chunk):
                if message.kind == wire.STATS:
                    stats[i].append(message.json())

    threads = [threading.Thread(target=_paced_feed, args=(p, source), daemon=True) for p in procs]
    threads += [threading.Thread(target=drain, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpus = [_wait_cpu(p) for p in procs]
    rows = []
    for i, s in enumerate(stats):
        steady = [x for x in s[:-1] if x["media_ms"] > 5000]  # after the start, before the final flush
        worst_backlog = max((x["backlog_ms"] for x in steady), default=0)
        worst_late = max((x.get("late_ms", 0) for x in steady), default=0)
        shed = s[-1]["shed"] if s else []
        kept_up = bool(s) and not shed and min(worst_backlog, worst_late) < 3000
        rows.append({"worker": i, "kept_up": kept_up, "shed": shed, "worst_backlog_ms": worst_backlog,
                     "worst_late_ms": worst_late,
                     "min_speed": min((x["speed"] for x in steady), default=None),
                     "cpu_s_per_min": round(cpus[i] * 60.0 / seconds, 1)})
        print(f"worker {i}: {'kept up' if kept_up else 'FELL BEHIND'}; worst backlog {worst_backlog} ms, "
              f"late {worst_late} ms, "
              f"shed {shed or 'nothing'}, {rows[-1]['cpu_s_per_min']} CPU-s/stream-min")
    sustained = sum(1 for r in rows if r["kept_up"])
    print(f"{sustained} of {workers} 720p ladders ({'+'.join(r.label for r in rungs)}) kept up in real time "
          f"on {os.cpu_count()} CPUs")
    return {"workers": workers, "seconds": seconds, "kept_up": sustained, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.abr", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="media length per run (default 60)")
    parser.add_argument("--sources", default="720p,1080p", help="comma-separated: 720p, 1080p")
    parser.add_argument("--realtime", type=int, default=0, metavar="N",
                        help="instead: N workers fed the 720p source in real time at once")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.realtime:
        result: object = realtime(args.realtime, args.seconds)
    else:
        names = [n.strip() for n in args.sources.split(",") if n.strip()]
        unknown = [n for n in names if n not in SOURCES]
        if unknown:
            parser.error(f"unknown source {unknown}; choose from {', '.join(SOURCES)}")
        result = [cpu_comparison(n, args.seconds) for n in names]
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
