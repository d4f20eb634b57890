"""A stand-in for the transcoder worker that speaks its protocol (mediaserver/transcode/wire.py) without
transcoding: every source video tag comes back as each rung's tag, the source audio as AUDIO_TRACK, and
STATS about once a second. Options make it misbehave the ways a real worker can:

    --crash-once FILE   exit with code 1 after --after video tags, unless FILE exists (it creates it):
                        the restarted worker then runs normally
    --crash-always      exit with code 1 after --after video tags, every time
    --error REASON      send ERROR {reason} after --after video tags, then exit 3
    --garbage-once FILE write bytes that are no message after --after video tags (once, as --crash-once)
    --shed LABEL        report LABEL shed in every STATS after --after video tags
    --stall-once FILE   stop reading stdin after --after video tags (once, as --crash-once): it falls behind
    --speed X           the speed STATS report (default 1.0)
    --ignore-eof        keep running when stdin ends (the pool must terminate it)

Run as `python tests/support/fake_worker.py [options] --job JSON`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from mediaserver.remux.flv import FlvReader
from mediaserver.transcode import wire


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", required=True)
    parser.add_argument("--after", type=int, default=20)
    parser.add_argument("--crash-once")
    parser.add_argument("--crash-always", action="store_true")
    parser.add_argument("--error")
    parser.add_argument("--garbage-once")
    parser.add_argument("--shed")
    parser.add_argument("--stall-once")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--ignore-eof", action="store_true")
    args = parser.parse_args()
    job = json.loads(args.job)
    labels = [r["label"] for r in job["rungs"]]
    interval = float(job.get("stats_interval_s", 1.0))
    out = sys.stdout.buffer
    reader = FlvReader()
    frames_in = 0
    frames_out = {label: 0 for label in labels}
    first_ts = last_ts = None
    last_stats = time.monotonic()
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        batch = []
        for tag in reader.feed(data):
            if tag.kind == 9:
                frames_in += 1
                if not tag.is_sequence_header:
                    first_ts = tag.timestamp_ms if first_ts is None else first_ts
                    last_ts = tag.timestamp_ms
                if frames_in == args.after:
                    if args.crash_always or (args.crash_once and _once(args.crash_once)):
                        out.write(b"".join(batch))
                        out.flush()
                        return 1
                    if args.error:
                        out.write(b"".join(batch) + wire.encode_json(wire.ERROR, {
                            "reason": args.error, "message": f"cannot decode this source ({args.error})"}))
                        out.flush()
                        return 3
                    if args.garbage_once and _once(args.garbage_once):
                        batch.append(b"this is not a message\n")
                    if args.stall_once and _once(args.stall_once):
                        while True:
                            time.sleep(1)
                for i, label in enumerate(labels):
                    batch.append(wire.encode(wire.TAG, i, tag.encode()))
                    frames_out[label] += 1
            elif tag.kind == 8:
                batch.append(wire.encode(wire.TAG, wire.AUDIO_TRACK, tag.encode()))
        now = time.monotonic()
        if now - last_stats >= interval:
            last_stats = now
            shed = [args.shed] if args.shed and frames_in >= args.after else []
            batch.append(wire.encode_json(wire.STATS, {
                "frames_in": frames_in, "frames_out": frames_out, "skipped": 0,
                "media_ms": (last_ts - first_ts) if first_ts is not None else 0, "speed": args.speed,
                "backlog_ms": 0, "cpu_s": time.process_time(), "shed": shed,
            }))
        if batch:
            out.write(b"".join(batch))
            out.flush()
    if args.ignore_eof:
        while True:
            time.sleep(1)
    return 0


def _once(path: str) -> bool:
    if os.path.exists(path):
        return False
    open(path, "w").close()
    return True


if __name__ == "__main__":
    sys.exit(main())
