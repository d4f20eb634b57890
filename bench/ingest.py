"""CPU cost of ingest in one process, without sockets: RTMP bytes in, hub, FLV tags and HLS segments out.

The bench media (bench/_media.py) is published through our RTMP client session into bytes, one socket read
per RTMP message (as a real-time publisher's reads arrive), and fed to the server's own connection object
(`RtmpConnection.data_received`) with a stand-in transport, the hub and the HLS packager attached, exactly
as in the server. Reports µs per frame and CPU-seconds per stream-minute of media; `--profile` prints the
top of a cProfile run. `--record DIR` also attaches the server's Recorder (record/recorder.py) to the stream,
writing the fMP4 file under DIR, so the difference with a run without it is recording's own cost (its fsyncs,
every `--fsync-interval` s of wall time as the manager's thread does them, are run inline and counted).

    .venv/bin/python bench/ingest.py [--seconds 60] [--profile] [--no-hls] [--record DIR]
    .venv/bin/python bench/ingest.py --recorder-alone [--batch 20] [--runs 5] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench._media import ensure_media  # noqa: E402
from mediaserver.config import Config, HlsConfig, RtmpConfig  # noqa: E402
from mediaserver.edge.packagers import PackagerPool  # noqa: E402
from mediaserver.remux.flv import FlvReader  # noqa: E402
from mediaserver.rtmp.server import RtmpConnection, RtmpServer  # noqa: E402
from mediaserver.cli import build_registry  # noqa: E402
from mediaserver.record.recorder import Recorder  # noqa: E402
from support.rtmp_bytes import StubTransport, published, publishing_client  # noqa: E402
from support.sinks import CollectingSink  # noqa: E402


def publish_bytes(path: Path, seconds: float) -> tuple[list[bytes], list[bytes], int]:
    """(handshake+setup reads, one read per media message, media frame count) for `seconds` of media."""
    client, setup = publishing_client("live", "bench")
    tags = FlvReader().feed(path.read_bytes())
    reads: list[bytes] = []
    frames = 0
    limit = seconds * 1000
    for tag in tags:
        if tag.timestamp_ms > limit:
            break
        if tag.kind == 9:
            client.send_video(tag.timestamp_ms, tag.body)
        elif tag.kind == 8:
            client.send_audio(tag.timestamp_ms, tag.body)
        else:
            client.send_data(tag.timestamp_ms, b"\x02\x00\x0d@setDataFrame" + tag.body)
        frames += 1
        reads.append(client.data_to_send())
    return setup, reads, frames


async def run(args: argparse.Namespace) -> None:
    media = ensure_media()
    setup, reads, frames = publish_bytes(media, args.seconds)
    config = Config(hls=HlsConfig(enabled=not args.no_hls))
    registry = build_registry(config)
    packagers = PackagerPool(registry, config.hls)
    server = RtmpServer(RtmpConfig(), registry)
    conn = RtmpConnection(server, 1)
    await published(conn, StubTransport(), setup)
    # Started before the media (as a touched playlist starts it in the server), so the packager's cost
    # is counted per frame rather than as one replay of the history at the end.
    packager = packagers.hls(conn.stream.key)
    recorder = None
    if args.record:
        recorder = Recorder(conn.stream.key, args.record, fsync_interval_s=args.fsync_interval)
        for frame in conn.stream.history():
            recorder.on_frame(frame)
        conn.stream.add_sink(recorder)
    profiler = cProfile.Profile() if args.profile else None
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    if profiler:
        profiler.enable()
    for data in reads:
        conn.data_received(data)
        if recorder is not None:
            for job in recorder.take_sync_jobs():
                job()
    if recorder is not None:
        recorder.stop()
        for job in recorder.take_sync_jobs():
            job()
    if profiler:
        profiler.disable()
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    media_s = args.seconds
    total = sum(len(r) for r in reads)
    print(f"media: {media_s:.0f} s, {frames} frames, {total / 1e6:.1f} MB of RTMP; HLS segments: "
          f"{len(packager.window) if packager else 0}")
    print(f"cpu: {cpu:.3f} s ({wall:.3f} s wall) = {cpu / frames * 1e6:.1f} µs per frame = "
          f"{cpu / media_s * 60:.4f} CPU-s per stream-minute")
    if recorder is not None:
        written = sum(f.bytes for f in recorder.files)
        print(f"recorded: {len(recorder.files)} file(s), {written / 1e6:.1f} MB ({recorder.files[0].path})")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


async def recorder_alone(args: argparse.Namespace) -> None:
    """The Recorder by itself: the hub's frames of the media collected first, then handed to a fresh
    Recorder `--batch` at a time (what Stream.flush_sinks hands it per socket read: about 20 frames when
    a stream only recorded is read every 250 ms), `--runs` times; writes go to /dev/null-like nowhere with
    --no-write, else to a file under a temporary directory, with no fsync."""
    setup, reads, _ = publish_bytes(ensure_media(), args.seconds)
    registry = build_registry(Config(hls=HlsConfig(enabled=False)))
    conn = RtmpConnection(RtmpServer(RtmpConfig(), registry), 1)
    await published(conn, StubTransport(), setup)
    sink = CollectingSink()  # the Recorder's input
    conn.stream.add_sink(sink)
    for data in reads:
        conn.data_received(data)
    conn.stream.flush_sinks()
    frames = sink.frames
    batch = max(1, args.batch)
    results = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="recorder-alone-") as tmp:
            # The Recorder writes with os.writev (a fragment's pieces in one call).
            write = (lambda fd, buffers: sum(map(len, buffers))) if args.no_write else os.writev
            recorder = Recorder(conn.stream.key, tmp, fsync_interval_s=0, write=write)
            feed = getattr(recorder, "on_frames", None)
            cpu0 = time.process_time()
            if feed is not None:
                for i in range(0, len(frames), batch):
                    feed(frames[i:i + batch])
            else:  # a Recorder without batches (an older build, for A/B runs)
                for frame in frames:
                    recorder.on_frame(frame)
            recorder.stop()
            results.append(time.process_time() - cpu0)
    best = min(results)
    median = sorted(results)[len(results) // 2]
    print(f"recorder alone: {len(frames)} frames of {args.seconds:.0f} s in batches of {batch}, "
          f"{'no writes' if args.no_write else 'written'}; {args.runs} runs: median {median * 1e3:.1f} ms "
          f"({median / len(frames) * 1e6:.2f} µs per frame = {median / args.seconds * 60:.4f} CPU-s per "
          f"stream-minute), best {best / args.seconds * 60:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-hls", action="store_true")
    parser.add_argument("--record", metavar="DIR", help="also record the stream to an fMP4 file under DIR "
                        "('tmp': a temporary directory, removed after)")
    parser.add_argument("--fsync-interval", type=float, default=10.0,
                        help="with --record: seconds between fsyncs of the file (record.fsync_interval; default 10)")
    parser.add_argument("--recorder-alone", action="store_true",
                        help="measure only the Recorder, fed the hub's frames in --batch sized batches")
    parser.add_argument("--batch", type=int, default=20, help="with --recorder-alone: frames per call (default 20)")
    parser.add_argument("--runs", type=int, default=5, help="with --recorder-alone: runs, median reported (default 5)")
    parser.add_argument("--no-write", action="store_true", help="with --recorder-alone: drop the bytes, no file")
    args = parser.parse_args()
    if args.recorder_alone:
        asyncio.run(recorder_alone(args))
    elif args.record == "tmp":
        with tempfile.TemporaryDirectory(prefix="ingest-record-") as tmp:
            args.record = tmp
            asyncio.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
