"""What the recordings catalog's progress writes cost: N growing files' rows, one transaction each or all in one.

    python -m bench.catalog --rows 50 --rounds 7
    python -m bench.catalog --rows 50 --database-url postgresql+asyncpg://USER:PW@127.0.0.1:5432/DB

RecordingManager reports every recording's size and duration every PROGRESS_S (30 s). This opens a catalog
(a fresh SQLite file by default, as the server makes next to its recordings; or `--database-url`), adds
`--rows` rows, then per round updates them one by one with `Catalog.update` (what the manager did before)
and all at once with `Catalog.progress` (what it does now), and reports the process's CPU time (every
thread's: aiosqlite's thread does the SQLite work) and wall time per round, and the CPU-s per stream-minute
each way costs at one report every PROGRESS_S. The database server's own CPU (PostgreSQL) is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediaserver.record.catalog import Catalog, Recording  # noqa: E402
from mediaserver.record.manager import PROGRESS_S  # noqa: E402


async def run(rows: int, rounds: int, url: str) -> dict[str, list[float]]:
    catalog = await Catalog.open(url)
    try:
        ids = []
        for i in range(rows):
            row = Recording.start("bench", f"s{i}", "bench-node", f"/rec/bench/s{i}.mp4", datetime.now(timezone.utc),
                                  video_codec="h264", audio_codec="aac", width=1280, height=720)
            await catalog.add(row)
            ids.append(row.id)
        out: dict[str, list[float]] = {"one_by_one_cpu": [], "one_by_one_wall": [], "batch_cpu": [], "batch_wall": []}
        for n in range(1, rounds + 1):
            cpu, wall = time.process_time(), time.perf_counter()
            for k, rec_id in enumerate(ids):
                await catalog.update(rec_id, bytes=n * 1_000_000 + k, duration_s=float(n))
            out["one_by_one_cpu"].append(time.process_time() - cpu)
            out["one_by_one_wall"].append(time.perf_counter() - wall)
            cpu, wall = time.process_time(), time.perf_counter()
            await catalog.progress({rec_id: (n * 2_000_000 + k, float(n)) for k, rec_id in enumerate(ids)})
            out["batch_cpu"].append(time.process_time() - cpu)
            out["batch_wall"].append(time.perf_counter() - wall)
        check = await catalog.get(ids[-1])
        assert check is not None and check.bytes == rounds * 2_000_000 + rows - 1, "the batch wrote every row"
        for rec_id in ids:
            await catalog.delete(rec_id)
        return out
    finally:
        await catalog.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50, help="recordings reporting progress (default 50)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file in a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/catalog.db"
        try:
            import uvloop
            results = uvloop.run(run(args.rows, args.rounds, url))
        except ImportError:
            results = asyncio.run(run(args.rows, args.rounds, url))
    per_minute = 60 / PROGRESS_S / args.rows  # reports per stream-minute, over the rows of one report
    print(f"{args.rows} rows, {args.rounds} rounds, {url.split(':')[0]}")
    for way in ("one_by_one", "batch"):
        cpu = statistics.median(results[f"{way}_cpu"])
        wall = statistics.median(results[f"{way}_wall"])
        print(f"  {way:11s} median {cpu * 1000:7.2f} ms CPU, {wall * 1000:7.2f} ms wall per report of all rows; "
              f"{cpu * per_minute:.5f} CPU-s per stream-minute at one report every {PROGRESS_S:g} s")


if __name__ == "__main__":
    main()
