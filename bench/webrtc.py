"""WebRTC (WHEP) playback: delay to the viewer's RTP packets, the server's CPU per viewer-minute, and the cost of
the shared AAC -> Opus transcode.

The media is the bench file (bench/_media.py: 720p30, 2.5 Mbit/s CBR, GOP 2 s, AAC 128k) encoded again by the same
recipe without B-frames (`-bf 0`), which WebRTC cannot carry; it is cached beside the bench file.

    python -m bench.webrtc delay --viewers 10 --seconds 20
        The publisher is in this process (bench/_latency.py publish_realtime: the bench file at real-time pace
        over RTMP, noting when each tag left), and so is one viewer, on the same clock; the other viewers run in
        worker processes. The viewer notes the arrival of every video RTP packet that ends a frame (marker bit);
        its RTP timestamp is the frame's pts in 90 kHz plus the sender's random origin (found by matching
        keyframes); the delay of a frame = its last packet's arrival - the publisher's write of its tag. The
        packet's abs-send-time header extension (the server's wall clock at its send) gives the server's part
        alone: on a loaded machine the viewer processes themselves lag, and that is not the server's delay.
    python -m bench.webrtc cost --viewers 10,50,100 --seconds 60
        ffmpeg publishes; a baseline window with the publisher alone, then for each N, N viewers in worker
        processes of 10, niced (bench/_webrtc_viewers.py: ICE, DTLS, RTCP like a browser; RTP counted at the
        socket, and one viewer takes the full path and decodes its first frames). Per
        viewer-minute = (server CPU-s in the window - the baseline's rate x the window) / N / window minutes.
        Each viewer's received rate is reported (min/median against the stream's): whether every one kept up.
        The AAC -> Opus transcode runs once in every phase (one stream), so it is in each phase's figure, divided by N.
    python -m bench.webrtc opus --seconds 60
        The transcode alone (mediaserver/webrtc/opus_feed.py OpusEncoder: decode, resample, libopus) over the
        bench file's audio, in this process: CPU-seconds per stream-minute.

Viewers and the server share the machine: the report gives the machine's busy share and load average.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from bench import _media, load
from bench import _webrtc_viewers as viewers_mod
from bench._latency import SendLog, publish_realtime
from bench._report import summary
from bench.relay import Window  # server CPU, machine busy share and load average over a window

STREAM = "bench"
VIEWERS_PER_PROCESS = 10
SERVER_SET = ["webrtc.public_ip=127.0.0.1", "webrtc.max_sessions=0", "abr.mode=off", "record.mode=off",
              "hls.enabled=false"]


def say(msg: str) -> None:
    load.say(msg)


def ensure_webrtc_media(log=say) -> Path:
    """The bench file's recipe encoded without B-frames, cached beside it."""
    recipe = _media.BENCH_RECIPE
    path = _media.CACHE_DIR / recipe.file_name.replace(".flv", "-nobf.flv")
    if path.exists() and path.stat().st_size > 0:
        return path
    _media.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    args = _media.ffmpeg_encode_args(partial)
    args[args.index("-c:a"):args.index("-c:a")] = ["-bf", "0"]
    log(f"encoding {path.name} (the bench recipe without B-frames)…")
    subprocess.run(args, check=True, timeout=900)
    os.replace(partial, path)
    return path


def server_args(extra: list[str]) -> argparse.Namespace:
    return argparse.Namespace(http_url=None, rtmp_url=None, pid=None, server="mediaserver", log_level="info",
                              server_set=SERVER_SET + list(extra), app="live")


async def spawn_viewers(children: load.Children, url: str, n: int, nice: int = 0,
                        sampled: int = 1) -> list[asyncio.subprocess.Process]:
    """`n` viewers in worker processes of VIEWERS_PER_PROCESS, the first `sampled` complete (they decode)."""
    procs = []
    for i in range(math.ceil(n / VIEWERS_PER_PROCESS)):
        count = min(VIEWERS_PER_PROCESS, n - i * VIEWERS_PER_PROCESS)
        cmd = [sys.executable, "-m", "bench._webrtc_viewers", url, str(count), str(sampled if i == 0 else 0)]
        procs.append(await children.spawn("viewers", (["nice", "-n", str(nice)] if nice else []) + cmd,
                                          stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                          cwd=load.ROOT))
    for proc in procs:  # a loaded machine takes seconds per viewer (certificates, ICE, DTLS on both sides)
        line = await asyncio.wait_for(proc.stdout.readline(), 60 + 6 * n)
        started = json.loads(line)["started"]
        if any(s != 201 for s in started):
            raise load.BenchError(f"WHEP POSTs answered {started}")
    return procs


async def stop_viewers(procs: list[asyncio.subprocess.Process]) -> list[dict]:
    for proc in procs:
        proc.stdin.write(b"stop\n")
        await proc.stdin.drain()
    out = []
    for proc in procs:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        out.append(json.loads(line))
        await proc.wait()
    return out


def frame_delays(arrivals: list[tuple], sent: SendLog, since: float, wall_offset: float) -> dict[str, list[float]]:
    """Per frame whose last packet arrived after `since`: "arrival" = its arrival at the viewer - the publisher's
    write of its tag; "server_send" = the server's send of that packet (its abs-send-time header extension, the
    server's wall clock) - the publisher's write. `wall_offset` = time.time() - time.monotonic() here.

    Frames are matched through the RTP timestamp (pts x 90 + the sender's random origin). The origin is voted for
    by keyframes only: a keyframe's first packet carries the SPS, and keyframes are 2 s apart, so each arriving
    one matches exactly one keyframe the publisher sent in the 1.9 s before (frame intervals repeat every
    3 frames, so matching any frame would be ambiguous)."""
    keyframes = sent.keyframes
    times = [t for _, _, t in keyframes]
    votes: collections.Counter[int] = collections.Counter()
    for ts, _, t, key, _ in arrivals:
        if key and t >= since:
            lo, hi = bisect.bisect_left(times, t - 1.9), bisect.bisect_right(times, t)
            for _, pts, _ in keyframes[lo:hi]:
                votes[(ts - pts * 90) & 0xFFFFFFFF] += 1
    out: dict[str, list[float]] = {"arrival": [], "server_send": []}
    if not votes:
        return out
    origin = votes.most_common(1)[0][0]
    sent_at = {dts: at for dts, at in sent.video}
    for ts, marker, t, _, abs_send in arrivals:
        if not marker or t < since:
            continue
        ticks = (ts - origin) & 0xFFFFFFFF
        if ticks % 90 or ticks // 90 not in sent_at:
            continue
        published = sent_at[ticks // 90]
        out["arrival"].append(t - published)
        out.setdefault("series", []).append((round(t - since, 2), round((t - published) * 1000, 1)))
        if abs_send is not None:
            published_wall = (published + wall_offset) % 64.0
            out["server_send"].append((abs_send / (1 << 18) - published_wall + 32.0) % 64.0 - 32.0)
    return out


def _by_slice(series: list[tuple[float, float]], width_s: float) -> list[float]:
    """The median delay of each `width_s` slice of the window: a stall shows where it happened."""
    slices: dict[int, list[float]] = {}
    for t, ms in series:
        slices.setdefault(int(t // width_s), []).append(ms)
    return [sorted(v)[len(v) // 2] for _, v in sorted(slices.items())]


async def cmd_delay(args) -> dict:
    media = ensure_webrtc_media()
    tags = _media.read_flv(media)
    children = load.Children()
    result: dict = {"command": " ".join(sys.argv), "viewers": args.viewers, "media": media.name}
    try:
        server = await load.start_server(server_args(args.server_set), children, f"webrtc-delay-{int(time.time())}")
        if args.server_nice:  # on a machine shared with other work, the server's share of the CPU decides its delay
            os.setpriority(os.PRIO_PROCESS, server.pid, args.server_nice)
            os.setpriority(os.PRIO_PROCESS, 0, args.server_nice)  # the publisher and the measuring viewer, here
        result["server_nice"] = args.server_nice
        sent = SendLog()
        stop = asyncio.Event()
        publisher = asyncio.create_task(publish_realtime(server.host, server.rtmp_port, "live", STREAM, tags, stop, sent))
        await load.wait_streams(server, [STREAM])
        url = f"http://{server.host}:{server.http_port}/live/{STREAM}/whep"
        # The other viewers are load for the server: niced, so that on a small machine their own receiving (aiortc
        # in Python) does not starve the server and the measuring viewer of CPU.
        others = args.viewers - 1
        procs = await spawn_viewers(children, url, others, nice=args.nice, sampled=0) if others else []
        viewers_mod.NOTE_ARRIVALS = True
        async with aiohttp.ClientSession() as http:
            (viewer,) = await viewers_mod.open_viewers(url, 1, http)
            await asyncio.sleep(args.warmup)
            since = time.monotonic()
            with Window(server.pid) as w:
                await asyncio.sleep(args.seconds)
            server.check_alive()
            arrivals = next(iter(viewers_mod.ARRIVALS.values()), [])
            delays = frame_delays(arrivals, sent, since, time.time() - time.monotonic())
            received = viewer.received()
            await viewer.pc.close()
        others = await stop_viewers(procs)
        stop.set()
        publisher.cancel()
        frames_sent = sum(1 for _, t in sent.video if t >= since)
        result.update({
            "window": w.as_dict(), "frames_published_in_window": frames_sent,
            "publisher_to_server_send_ms": summary([d * 1000 for d in delays["server_send"]]),
            "publisher_to_viewer_arrival_ms": summary([d * 1000 for d in delays["arrival"]]),
            "arrival_ms_p50_by_2s": _by_slice(delays.get("series", []), 2.0),
            "measuring_viewer": received,
            "other_viewers_connected": sum(1 for o in others for v in o["viewers"] if v["state"] == "connected"),
        })
    finally:
        await children.stop_all()
    return result


async def cmd_cost(args) -> dict:
    media = ensure_webrtc_media()
    kbps = sum(len(t.body) for t in _media.read_flv(media)) * 8 / _media.loop_duration_ms(_media.read_flv(media))
    children = load.Children()
    result: dict = {"command": " ".join(sys.argv), "stream_kbps": round(kbps, 1), "cores": os.cpu_count(),
                    "media": media.name}
    try:
        server = await load.start_server(server_args(args.server_set), children, f"webrtc-cost-{int(time.time())}")
        await load.start_publishers(server, [STREAM], media, children)
        await load.wait_streams(server, [STREAM])
        url = f"http://{server.host}:{server.http_port}/live/{STREAM}/whep"
        await asyncio.sleep(args.warmup)
        say(f"baseline: publisher only, {args.seconds:.0f} s")
        with Window(server.pid) as base:
            await asyncio.sleep(args.seconds)
        base_rate = base.cpu / base.wall
        result["baseline"] = base.as_dict()
        phases = []
        for n in args.viewers:
            say(f"{n} WHEP viewers")
            procs = await spawn_viewers(children, url, n, nice=args.nice)
            await asyncio.sleep(args.warmup)
            with Window(server.pid) as w:
                await asyncio.sleep(args.seconds)
            server.check_alive()
            outs = await stop_viewers(procs)
            views = [v for o in outs for v in o["viewers"]]
            life = args.seconds + args.warmup
            per_min = (w.cpu - base_rate * w.wall) / n / (w.wall / 60)
            rates = sorted((v.get("video_bytes", 0) + v.get("audio_bytes", 0)) * 8 / life / 1000 for v in views)
            sampled: collections.Counter = collections.Counter()
            for o in outs:
                sampled.update(o.get("sampled", {}))
            phases.append({
                "viewers": n, "window": w.as_dict(), "cpu_s_per_viewer_minute": round(per_min, 4),
                "connected_at_end": sum(1 for v in views if v["state"] == "connected"),
                "viewer_kbps_min_median": [round(rates[0], 1), round(rates[len(rates) // 2], 1)] if rates else [],
                "sampled_viewers_decoded": dict(sampled),
                "viewer_processes_cpu_s": round(sum(o["cpu_s"] for o in outs), 1),
            })
            say(json.dumps(phases[-1]))
            await asyncio.sleep(3)  # sessions closed before the next phase
        result["phases"] = phases
        log = server.log_path.read_text(errors="replace") if server.log_path else ""
        result["opus_transcodes"] = [line.split("event=opus_transcode_stop ")[1] for line in log.splitlines()
                                     if "event=opus_transcode_stop" in line]
    finally:
        await children.stop_all()
    return result


def cmd_opus(args) -> dict:
    from mediaserver.webrtc.opus_feed import OpusEncoder

    tags = _media.read_flv(ensure_webrtc_media())
    audio = [t for t in tags if t.kind == _media.TAG_AUDIO]
    config = next(t for t in audio if len(t.body) > 1 and t.body[1] == 0)
    frames = [t for t in audio if len(t.body) > 1 and t.body[1] == 1]
    encoder = OpusEncoder()
    encoder.configure(bytes(config.body[2:]))
    media_ms = 0
    packets = 0
    loops = 0
    while media_ms < args.seconds * 1000:
        for t in frames:
            packets += len(encoder.encode(bytes(t.body[2:]), t.ts_ms + loops * 10_000_000))
        media_ms += frames[-1].ts_ms - frames[0].ts_ms + 21
        loops += 1
    return {"command": " ".join(sys.argv), "media_s": round(media_ms / 1000, 1), "opus_packets": packets,
            "cpu_s": round(encoder.cpu_s, 3),
            "cpu_s_per_stream_minute": round(encoder.cpu_s / (media_ms / 60_000), 4),
            "share_of_one_core_pct": round(100 * encoder.cpu_s / (media_ms / 1000), 2), "loadavg_1m": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webrtc", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("delay")
    d.add_argument("--viewers", type=int, default=10)
    d.add_argument("--nice", type=int, default=10, help="niceness of the other viewers' processes (0: none)")
    d.add_argument("--server-nice", type=int, default=0,
                   help="niceness of the server, the publisher and the measuring viewer (negative needs root)")
    c = sub.add_parser("cost")
    c.add_argument("--viewers", type=lambda s: [int(x) for x in s.split(",")], default=[10, 50, 100])
    c.add_argument("--nice", type=int, default=10, help="niceness of the viewers' processes (0: none)")
    o = sub.add_parser("opus")
    for p in (d, c, o):
        p.add_argument("--seconds", type=float, default=30.0)
        p.add_argument("--warmup", type=float, default=5.0)
        p.add_argument("--server-set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    from bench._aio import install_fast_loop, raise_nofile_limit
    raise_nofile_limit()
    if args.cmd == "opus":
        result = cmd_opus(args)
    else:
        install_fast_loop()
        result = asyncio.run(cmd_delay(args) if args.cmd == "delay" else cmd_cost(args))
    result["uptime"] = Path("/proc/loadavg").read_text().strip()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
