"""RTMPS ingest against plain RTMP: the server's CPU per stream-minute with --publishers streams over each.

One server (ours, started here) with both listeners: rtmp and rtmps (a self-signed P-256 certificate made
here, tests/support/certs.py). Per round: --publishers ffmpeg publishers (`-re -stream_loop -1 -c copy` of the
bench media) over rtmp://, a warm-up, a window of --seconds, the publishers stopped; then the same over
rtmps:// (ffmpeg verifies the certificate: -ca_file, -tls_verify 1). The server's CPU is utime+stime of its
process tree from /proc over the window; per stream-minute = CPU-s / publishers / window minutes. Socket
reads: the server process's read() calls over the window (/proc/PID/io syscr) per publisher per second.

    python -m bench.rtmps_ingest --publishers 20 --seconds 60 [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import load
from bench import _media
from bench.relay import measure, say

sys.path.insert(0, str(load.ROOT / "tests"))
from support.certs import make_cert  # noqa: E402


async def publish_phase(server: load.Server, scheme: str, port: int, n: int, media: Path, ca_file: Path,
                        args) -> dict:
    names = [f"{scheme}-{i}" for i in range(n)]
    pubs = load.Children()
    tls = ["-ca_file", str(ca_file), "-tls_verify", "1"] if scheme == "rtmps" else []
    log = open(load.RESULTS_DIR / "publishers.log", "ab")
    try:
        for name in names:
            await pubs.spawn("publisher", [
                _media.ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
                "-i", str(media), "-c", "copy", *tls, "-f", "flv", f"{scheme}://127.0.0.1:{port}/live/{name}",
            ], stderr=log)
        await load.wait_streams(server, names)
        await asyncio.sleep(args.warmup)
        reads_before = read_syscalls(server.pid)
        w = await measure(server, args.seconds)
        reads = read_syscalls(server.pid) - reads_before
        alive = pubs.alive("publisher")
        if alive < n:
            raise load.BenchError(f"{n - alive} {scheme} publisher(s) exited during the window; see "
                                  f"{load.RESULTS_DIR / 'publishers.log'}")
    finally:
        await pubs.stop_all()
        log.close()
    await asyncio.sleep(3)  # the streams end before the next phase
    return {"scheme": scheme, "publishers": n, "window": w.as_dict(),
            "server_cpu_s_per_stream_minute": round(w.cpu / n / (w.wall / 60), 4),
            "server_reads_per_publisher_second": round(reads / n / w.wall, 1)}


def read_syscalls(pid: int | None) -> int:
    """read() calls the server's main process has made (its sockets' reads; /proc/PID/io syscr)."""
    if pid is None:
        return 0
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    return 0


async def run(args) -> dict:
    media = _media.ensure_media(log=say)
    children = load.Children()
    run_name = f"rtmps-ingest-{args.publishers}-{time.strftime('%Y%m%d-%H%M%S')}"
    result: dict = {"command": " ".join(sys.argv), "cores": os.cpu_count(), "rounds": []}
    with tempfile.TemporaryDirectory(prefix="bench-rtmps-") as tmp:
        cert = make_cert(Path(tmp))
        rtmps_port = load.free_port()
        sargs = argparse.Namespace(
            http_url=None, rtmp_url=None, pid=None, server="mediaserver", log_level="warning", app="live",
            server_set=[f"rtmps.port={rtmps_port}", f"rtmps.cert_file={cert.cert_file}",
                        f"rtmps.key_file={cert.key_file}", *args.server_set])
        try:
            server = await load.start_server(sargs, children, run_name)
            for r in range(args.rounds):
                for scheme, port in (("rtmp", server.rtmp_port), ("rtmps", rtmps_port)):
                    say(f"round {r + 1}: {args.publishers} publishers over {scheme}")
                    phase = await publish_phase(server, scheme, port, args.publishers, media, cert.cert_file, args)
                    result["rounds"].append(phase)
                    say(f"  {phase['server_cpu_s_per_stream_minute']:.4f} CPU-s per stream-minute "
                        f"(machine busy {phase['window']['machine_busy_pct_of_all_cores']} %)")
        finally:
            await children.stop_all()
    by = {s: [p["server_cpu_s_per_stream_minute"] for p in result["rounds"] if p["scheme"] == s]
          for s in ("rtmp", "rtmps")}
    plain, tls = sum(by["rtmp"]) / len(by["rtmp"]), sum(by["rtmps"]) / len(by["rtmps"])
    result.update(rtmp_cpu_s_per_stream_minute=round(plain, 4), rtmps_cpu_s_per_stream_minute=round(tls, 4),
                  rtmps_extra_cpu_s_per_stream_minute=round(tls - plain, 4),
                  rtmps_extra_pct=round(100 * (tls - plain) / plain, 1))
    load.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = load.RESULTS_DIR / f"{run_name}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"{args.publishers} publishers, {args.seconds:.0f} s windows, {args.rounds} round(s), {os.cpu_count()} cores")
    for p in result["rounds"]:
        print(f"  {p['scheme']:<5} {p['server_cpu_s_per_stream_minute']:.4f} CPU-s/stream-min  "
              f"server {p['window']['server_cpu_pct_of_one_core']} % of a core, machine busy "
              f"{p['window']['machine_busy_pct_of_all_cores']} %, load {p['window']['loadavg_1m']:.2f}, "
              f"{p['server_reads_per_publisher_second']} socket reads per publisher-second")
    print(f"rtmp {plain:.4f}, rtmps {tls:.4f} CPU-s per stream-minute: RTMPS costs {tls - plain:+.4f} "
          f"({result['rtmps_extra_pct']:+.1f} %)")
    print(f"written: {out}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="plain then RTMPS, this many times")
    parser.add_argument("--server-set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    load.install_fast_loop()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
