"""Benchmark: what thumbnails and stream health cost, on a 720p30 H.264 + AAC stream made by ffmpeg.

Thumbnails (GET /APP/STREAM/thumbnail.jpg through the edge application over loopback HTTP, aiohttp server
and client in one process):
  - uncached: a keyframe the server has not decoded yet: decode it (PyAV, in a thread), scale, encode JPEG;
  - cached: the same URL again (the JPEG comes from memory);
  - the thread's work alone (decode + scale + encode), without HTTP.

Health sampling: a HealthMonitor samples the stream every `--interval` s of media (the default 2 s) while
the clip is fed into a hub as a publisher would, a keyframe every `--gop` s: each sample decodes the newest
keyframe into a small luma plane and the audio since the last sample into one level. Reported as CPU
seconds per stream-minute (the sampling thread's CPU time), and the event loop's own share per sample.

    python -m bench.media_pipeline [--width 1280 --height 720] [--requests 30] [--minutes 1] [--interval 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from mediaserver.config import Config, HealthConfig
from mediaserver.edge.app import make_app
from mediaserver.edge.keys import THUMBNAILS
from mediaserver.edge.packagers import PackagerPool
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import Stream, StreamKey
from mediaserver.media.flv_body import audio_frame, video_frame
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.transcode.health_monitor import HealthMonitor
from mediaserver.transcode.thumbnail import Keyframe, decode_keyframe, render_thumbnail

from ._media import ffmpeg_exe


class BenchPublisher:
    peer = "127.0.0.1:1935"

    def close(self, reason: str) -> None:
        pass


def make_clip(workdir: Path, width: int, height: int, seconds: float, gop_s: float) -> list[Frame]:
    path = workdir / f"clip-{width}x{height}.flv"
    subprocess.run([
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
        "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2800k", "-pix_fmt", "yuv420p",
        "-g", str(round(30 * gop_s)), "-keyint_min", str(round(30 * gop_s)), "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "flv", str(path),
    ], check=True, timeout=300, capture_output=True)
    return read_frames(path.read_bytes())


def read_frames(data: bytes) -> list[Frame]:
    pos = int.from_bytes(data[5:9], "big") + 4
    frames: list[Frame] = []
    while pos + 11 <= len(data):
        kind, size = data[pos] & 0x1F, int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        body = data[pos + 11 : pos + 11 + size]
        pos += 15 + size
        frame = video_frame(body, ts) if kind == 9 else audio_frame(body, ts) if kind == 8 else None
        if frame is not None and not frame.is_end:
            frames.append(frame)
    return frames


def publish(stream: Stream, frames: list[Frame], offset_ms: int, until_ms: int | None = None,
            start: int = 0) -> int:
    """Feed frames[start:] with their timestamps moved by `offset_ms`, up to media time `until_ms`."""
    i = start
    while i < len(frames):
        f = frames[i]
        ts = f.dts_ms + offset_ms
        if until_ms is not None and ts > until_ms:
            break
        if f.kind == FrameKind.VIDEO:
            stream.publish_video(ts, bytes(f.body), 0.0)
        else:
            stream.publish_audio(ts, bytes(f.body), 0.0)
        i += 1
    return i


# ----- thumbnails ------------------------------------------------------------------------------------


async def thumbnail_costs(frames: list[Frame], requests: int, width: int) -> dict[str, float]:
    config = Config()
    registry = StreamRegistry(call_later=lambda delay, fn: None)
    app = make_app(config, registry, PackagerPool(registry, config.hls))
    service = app[THUMBNAILS]
    stream = registry.claim_publisher(StreamKey("live", "bench"), BenchPublisher())
    publish(stream, frames, 0)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/live/bench/thumbnail.jpg?width={width}"
    uncached: list[float] = []
    cached: list[float] = []
    size = 0
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(requests + 2):
                service._streams.clear()  # forget the decoded picture: the next request decodes again
                started = time.perf_counter()
                async with http.get(url) as resp:
                    body = await resp.read()
                    assert resp.status == 200, body[:200]
                took = time.perf_counter() - started
                started = time.perf_counter()
                async with http.get(url) as resp:
                    await resp.read()
                again = time.perf_counter() - started
                if i >= 2:  # the first ones warm up code and connection
                    uncached.append(took)
                    cached.append(again)
                size = len(body)
    finally:
        await runner.cleanup()
    config_frame = stream.info.video_config
    key = stream.gop.newest_keyframe
    assert key is not None
    keyframe = Keyframe.of(key, config_frame)
    work: list[float] = []
    for _ in range(requests):
        started = time.perf_counter()
        render_thumbnail(decode_keyframe(keyframe), width, 1920, 80)
        work.append(time.perf_counter() - started)
    return {
        "uncached_ms": statistics.median(uncached) * 1000, "cached_ms": statistics.median(cached) * 1000,
        "work_ms": statistics.median(work) * 1000, "jpeg_bytes": size, "keyframe_bytes": len(keyframe.payload),
    }


# ----- health sampling -------------------------------------------------------------------------------


async def health_costs(frames: list[Frame], minutes: float, interval: float) -> dict[str, float]:
    registry = StreamRegistry(call_later=lambda delay, fn: None)
    stream = registry.claim_publisher(StreamKey("live", "bench"), BenchPublisher())
    clock = [0.0]
    monitor = HealthMonitor(stream, HealthConfig(enabled=True, interval=interval), lambda s, c: None,
                            clock=lambda: clock[0])
    clip_ms = frames[-1].dts_ms + 33
    media_ms = int(minutes * 60_000)
    step_ms = int(interval * 1000)
    loop_cpu = 0.0
    offset, index, now_ms = 0, 0, 0
    while now_ms < media_ms:
        now_ms += step_ms
        while True:  # feed media up to now, looping the clip
            index = publish(stream, frames, offset, until_ms=now_ms, start=index)
            if index < len(frames):
                break
            index, offset = 0, offset + clip_ms
        clock[0] = now_ms / 1000
        started = time.thread_time()
        await monitor.sample_once()
        loop_cpu += time.thread_time() - started
    samples = max(1, monitor.samples)
    return {
        "cpu_s_per_minute": monitor.cpu_s / (media_ms / 60_000), "samples": monitor.samples,
        "ms_per_sample": monitor.cpu_s / samples * 1000, "loop_ms_per_sample": loop_cpu / samples * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--thumb-width", type=int, default=320)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=1.0, help="media time sampled for the health figure")
    parser.add_argument("--interval", type=float, default=2.0, help="health.interval")
    parser.add_argument("--gop", type=float, default=2.0, help="seconds between keyframes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="media-pipeline-") as tmp:
        frames = make_clip(Path(tmp), args.width, args.height, 10.0, args.gop)
    label = f"{args.width}x{args.height}p30 H.264 2.8 Mbit/s + AAC, keyframe every {args.gop:g} s"
    thumbs = asyncio.run(thumbnail_costs(frames, args.requests, args.thumb_width))
    print(f"{label}; thumbnails {args.thumb_width} px wide ({thumbs['jpeg_bytes']} bytes JPEG from a "
          f"{thumbs['keyframe_bytes']} byte keyframe)")
    print(f"thumbnail, uncached (GET):      {thumbs['uncached_ms']:7.2f} ms per request (median)")
    print(f"thumbnail, cached (GET):        {thumbs['cached_ms']:7.2f} ms per request (median)")
    print(f"  decode + scale + JPEG alone:  {thumbs['work_ms']:7.2f} ms")
    health = asyncio.run(health_costs(frames, args.minutes, args.interval))
    print(f"health sampling every {args.interval:g} s:    {health['cpu_s_per_minute']:7.3f} CPU-s per stream-minute "
          f"({health['cpu_s_per_minute'] / 60 * 100:.2f} % of a core per stream; {health['samples']} samples)")
    print(f"  per sample: {health['ms_per_sample']:.2f} ms in the sampling thread, "
          f"{health['loop_ms_per_sample']:.2f} ms on the event loop")


if __name__ == "__main__":
    main()
