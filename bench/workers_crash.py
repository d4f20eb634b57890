"""How a worker's crash shows to viewers ([server] workers = 2), on loopback.

    .venv/bin/python bench/workers_crash.py [--viewers 40] [--rounds 2] [--reconnect-s 0.5]

Each round: a server with two workers, an ffmpeg publisher (640x360 25 fps, re-started 0.3 s after it
exits, as an encoder that reconnects), and N HTTP-FLV viewers spread over both workers by SO_REUSEPORT.
Then SIGKILL of the worker holding the publisher. Per viewer: whether its response survived, the longest
time without bytes, and, for those cut off, how long until a new request (one every --reconnect-s) got
media again. Also: the supervisor's restart time (kill -> the new worker's "ready"). Prints a table;
--json FILE writes the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from support.server import ServerProcess  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from cluster_pull import start_publisher, stop  # noqa: E402

ADMIN = "bench-workers-admin-0123456789abcdef"


class Viewer:
    def __init__(self, url: str) -> None:
        self.url = url
        self.last_byte = 0.0
        self.longest_gap = 0.0
        self.cut_at: float | None = None
        self.back_at: float | None = None
        self.bytes = 0

    async def run(self, http: aiohttp.ClientSession, crash: asyncio.Event, reconnect_s: float, until: float) -> None:
        while time.monotonic() < until:
            try:
                async with http.get(self.url, timeout=aiohttp.ClientTimeout(total=None, sock_read=5)) as resp:
                    if resp.status == 200:
                        async for chunk in resp.content.iter_any():
                            now = time.monotonic()
                            if self.last_byte:
                                self.longest_gap = max(self.longest_gap, now - self.last_byte)
                            if self.cut_at is not None and self.back_at is None:
                                self.back_at = now
                            self.last_byte = now
                            self.bytes += len(chunk)
                            if now >= until:
                                return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            if crash.is_set() and self.cut_at is None:
                self.cut_at = time.monotonic()  # this response ended after the crash
            await asyncio.sleep(reconnect_s)


async def keep_publishing(url: str, done: asyncio.Event) -> None:
    while not done.is_set():
        proc = await start_publisher(url)
        waiter = asyncio.ensure_future(proc.wait())
        finished = asyncio.ensure_future(done.wait())
        await asyncio.wait([waiter, finished], return_when=asyncio.FIRST_COMPLETED)
        finished.cancel()
        if done.is_set():
            await stop(proc)
            return
        await asyncio.sleep(0.3)


async def round_(workdir: Path, viewers_n: int, reconnect_s: float) -> dict:
    os.environ["MEDIASERVER_ADMIN_TOKEN"] = ADMIN
    server = ServerProcess(workdir, {"server.workers": "2", "record.mode": "off", "log.level": "info"},
                           ready_timeout_s=60)
    done = asyncio.Event()
    crash = asyncio.Event()
    try:
        for _ in range(600):
            if "workers_ready" in server.log_text():
                break
            await asyncio.sleep(0.1)
        publishing = asyncio.ensure_future(keep_publishing(server.rtmp_url("crash"), done))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as http:
            for _ in range(100):
                async with http.get(f"{server.http_base}/api/v1/streams", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                    streams = (await r.json()).get("streams", [])
                if streams and streams[0].get("worker") is not None:
                    break
                await asyncio.sleep(0.2)
            owner = streams[0]["worker"]
            pid = int(re.findall(rf"event=ready .*worker={owner} pid=(\d+)", server.log_text())[-1])
            until = time.monotonic() + 20.0
            viewers = [Viewer(server.flv_url("crash")) for _ in range(viewers_n)]
            tasks = [asyncio.ensure_future(v.run(http, crash, reconnect_s, until)) for v in viewers]
            await asyncio.sleep(5.0)
            killed_at = time.monotonic()
            readies = len(re.findall(rf"event=ready .*worker={owner} ", server.log_text()))
            os.kill(pid, signal.SIGKILL)
            crash.set()
            restart_s = None
            while time.monotonic() < until:
                if len(re.findall(rf"event=ready .*worker={owner} ", server.log_text())) > readies:
                    restart_s = time.monotonic() - killed_at
                    break
                await asyncio.sleep(0.05)
            await asyncio.gather(*tasks)
        done.set()
        await publishing
    finally:
        server.terminate(timeout_s=20)
    cut = [v for v in viewers if v.cut_at is not None]
    back = [v.back_at - killed_at for v in cut if v.back_at is not None]
    kept = [v for v in viewers if v.cut_at is None]
    return {"viewers": viewers_n, "owner_worker": owner, "survived": len(kept),
            "survivors_longest_gap_s": round(max((v.longest_gap for v in kept), default=0), 2),
            "cut_off": len(cut), "cut_back_p50_s": round(statistics.median(back), 2) if back else None,
            "cut_back_max_s": round(max(back), 2) if back else None, "cut_never_back": len(cut) - len(back),
            "worker_restart_s": round(restart_s, 2) if restart_s is not None else None}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reconnect-s", type=float, default=0.5)
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="workers-crash-") as tmp:
        for i in range(args.rounds):
            result = await round_(Path(tmp) / f"r{i}", args.viewers, args.reconnect_s)
            results.append(result)
            print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
