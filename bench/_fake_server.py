"""A stand-in live server for checking the benchmark tools themselves (`load.py ... --server fake`).

It ingests nothing: at start it plays the benchmark media file on one real-time timeline (looped, with
growing timestamps) that every stream name shares. HTTP-FLV viewers get the FLV header, metadata,
sequence headers and the GOP since the last keyframe, then live tags in writes merged every 100 ms.
HLS viewers get a sliding playlist of 2-second MPEG-TS segments cut once from the same file with ffmpeg,
each listed when the timeline passes its end. It is a minimal aiohttp fan-out, useful as a floor to
compare the real server's cost with, not a model of it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aiohttp import web  # noqa: E402

from _aio import install_fast_loop, raise_nofile_limit  # noqa: E402
from _media import CACHE_DIR, TAG_VIDEO, ffmpeg_exe, loop_duration_ms, read_flv  # noqa: E402

FLV_HEADER = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
PLAYLIST_LENGTH = 6


def flv_tag(kind: int, ts: int, body: bytes) -> bytes:
    size = len(body)
    ts &= 0xFFFFFFFF
    head = bytes((kind, size >> 16 & 255, size >> 8 & 255, size & 255, ts >> 16 & 255, ts >> 8 & 255, ts & 255,
                  ts >> 24, 0, 0, 0))
    return head + body + (size + 11).to_bytes(4, "big")


def ensure_segments(media: Path) -> tuple[Path, list[float]]:
    """Cut the media into ~2 s TS segments once; returns their folder and durations."""
    folder = CACHE_DIR / (media.stem + "-hls")
    playlist = folder / "index.m3u8"
    if not playlist.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(media), "-c", "copy",
             "-f", "hls", "-hls_time", "2", "-hls_list_size", "0", "-hls_segment_filename",
             str(folder / "seg%03d.ts"), str(playlist)],
            check=True, stdin=subprocess.DEVNULL, timeout=120,
        )
    durations = [float(line.split(":", 1)[1].split(",", 1)[0])
                 for line in playlist.read_text().splitlines() if line.startswith("#EXTINF:")]
    return folder, durations


class _Viewer:
    __slots__ = ("pending", "event")

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.event = asyncio.Event()


class Timeline:
    def __init__(self, media: Path, merge_ms: int) -> None:
        tags = read_flv(media)
        self.loop_ms = loop_duration_ms(tags)
        self.headers = [t for t in tags if t.is_config]
        self.media = [t for t in tags if not t.is_config]
        self.merge_s = merge_ms / 1000
        self.header_bytes = b"".join(flv_tag(t.kind, 0, t.body) for t in self.headers)
        self.gop: list[bytes] = []
        self.viewers: set[_Viewer] = set()
        self.start = time.monotonic()
        folder, self.seg_durations = ensure_segments(media)
        self.segments = [p.read_bytes() for p in sorted(folder.glob("seg*.ts"))]
        self.seg_ends = []
        acc = 0.0
        for d in self.seg_durations:
            acc += d
            self.seg_ends.append(acc)
        self.hls_loop_s = acc

    async def run(self) -> None:
        i, loop_n = 0, 0
        n = len(self.media)
        while True:
            elapsed_ms = (time.monotonic() - self.start) * 1000
            batch = []
            while True:
                t = self.media[i]
                ts = t.ts_ms + loop_n * self.loop_ms
                if ts > elapsed_ms:
                    break
                tag = flv_tag(t.kind, ts, t.body)
                if t.kind == TAG_VIDEO and t.is_video_keyframe:
                    self.gop = []
                self.gop.append(tag)
                batch.append(tag)
                i += 1
                if i == n:
                    i, loop_n = 0, loop_n + 1
            if batch:
                data = b"".join(batch)
                for v in self.viewers:
                    v.pending.append(data)
                    v.event.set()
            await asyncio.sleep(self.merge_s)

    def listed(self) -> list[tuple[int, float]]:
        """(msn, duration) of the segments listed now."""
        elapsed = time.monotonic() - self.start
        loops, within = divmod(elapsed, self.hls_loop_s)
        done = int(loops) * len(self.seg_ends) + sum(1 for e in self.seg_ends if e <= within)
        first = max(0, done - PLAYLIST_LENGTH)
        return [(m, self.seg_durations[m % len(self.seg_durations)]) for m in range(first, done)]


TIMELINE = web.AppKey("timeline", Timeline)


async def flv_handler(request: web.Request) -> web.StreamResponse:
    tl: Timeline = request.app[TIMELINE]
    resp = web.StreamResponse(headers={"Content-Type": "video/x-flv", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    v = _Viewer()
    v.pending.append(FLV_HEADER + tl.header_bytes + b"".join(tl.gop))
    v.event.set()
    tl.viewers.add(v)
    try:
        while True:
            await v.event.wait()
            v.event.clear()
            data = b"".join(v.pending)
            v.pending.clear()
            await resp.write(data)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        tl.viewers.discard(v)
    return resp


async def playlist_handler(request: web.Request) -> web.Response:
    tl: Timeline = request.app[TIMELINE]
    listed = tl.listed()
    if not listed:
        raise web.HTTPNotFound()
    nseg = len(tl.segments)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", f"#EXT-X-MEDIA-SEQUENCE:{listed[0][0]}"]
    for msn, dur in listed:
        if msn % nseg == 0 and msn > 0:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXTINF:{dur:.3f},")
        lines.append(f"seg-{msn}.ts")
    return web.Response(text="\n".join(lines) + "\n", content_type="application/vnd.apple.mpegurl")


async def segment_handler(request: web.Request) -> web.Response:
    tl: Timeline = request.app[TIMELINE]
    msn = int(request.match_info["msn"])
    listed = {m for m, _ in tl.listed()}
    if msn not in listed:
        raise web.HTTPNotFound()
    return web.Response(body=tl.segments[msn % len(tl.segments)], content_type="video/mp2t")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(media: Path, merge_ms: int) -> web.Application:
    app = web.Application()

    async def timeline_ctx(app: web.Application):
        app[TIMELINE] = Timeline(media, merge_ms)
        task = asyncio.ensure_future(app[TIMELINE].run())
        yield
        task.cancel()

    app.cleanup_ctx.append(timeline_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/live/{name}.flv", flv_handler)
    app.router.add_get("/live/{name}/index.m3u8", playlist_handler)
    app.router.add_get(r"/live/{name}/seg-{msn:\d+}.ts", segment_handler)
    return app


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--media", type=Path, required=True)
    ap.add_argument("--merge-ms", type=int, default=100)
    args = ap.parse_args()
    install_fast_loop()
    raise_nofile_limit()
    web.run_app(make_app(args.media, args.merge_ms), host=args.bind, port=args.http_port, print=None,
                access_log=None, handle_signals=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
