"""Benchmark: CPU cost of cutting a live stream into CMAF parts and segments (LL-HLS and DASH).

Feeds a 720p30 2.5 Mbit/s video + 128 kbit/s AAC stream through `CmafSegmenter` (trun entries,
moof/mdat per part, segments joined from parts, init segments) and prints CPU microseconds per
frame, output MB/s, the share of one core one live stream costs, and the fMP4 overhead. It also
times what a packager does on every new part: add it to a CmafWindow and render both media
playlists and the MPD.

Frames come from a clip encoded with ffmpeg at run time (libx264 or libx265, + aac, written as
(Enhanced) FLV and read back tag by tag into Frames, as ingest makes them), or with --synthetic
from random payloads of realistic size (no ffmpeg needed).

    python bench/fmp4_mux.py [--seconds 10] [--repeat 5] [--codec h264|hevc] [--synthetic]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ts_mux import AUDIO_KBPS, FPS, GOP_S, HEIGHT, VIDEO_KBPS, WIDTH, read_flv, synthetic_clip

from mediaserver.media.frames import Frame, FrameKind
from mediaserver.remux.cmaf import AUDIO, VIDEO, CmafSegment, CmafSegmenter
from mediaserver.remux.cmaf_window import CmafWindow
from mediaserver.remux.dash import render_mpd
from mediaserver.remux.llhls import render_media_playlist

ENCODERS = {
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-bf", "2"],
    "hevc": ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"],
}


def encode_clip(seconds: float, codec: str) -> list[Frame]:
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.flv"
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(seconds),
            *ENCODERS[codec], "-pix_fmt", "yuv420p",
            "-b:v", f"{VIDEO_KBPS}k", "-maxrate", f"{VIDEO_KBPS}k", "-bufsize", f"{2 * VIDEO_KBPS}k",
            "-g", str(GOP_S * FPS), "-keyint_min", str(GOP_S * FPS), "-sc_threshold", "0",
            "-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k", "-ac", "2",
            "-f", "flv", str(path),
        ]
        subprocess.run(cmd, check=True, timeout=600)
        return read_flv(path.read_bytes())


def segment(frames: list[Frame], repeat: int) -> tuple[float, int, int, int]:
    """Best CPU seconds of `repeat` runs; bytes in segments, segments, parts."""
    best = float("inf")
    out_bytes = segments = parts = 0
    for _ in range(repeat):
        segmenter = CmafSegmenter()
        out_bytes = segments = parts = 0
        start = time.process_time()
        for frame in frames:
            for item in segmenter.push(frame, 0.0):
                if isinstance(item, CmafSegment):
                    out_bytes += len(item.data)
                    segments += 1
                else:
                    parts += 1
        for item in segmenter.finish():
            if isinstance(item, CmafSegment):
                out_bytes += len(item.data)
                segments += 1
            else:
                parts += 1
        best = min(best, time.process_time() - start)
    return best, out_bytes, segments, parts


def package(frames: list[Frame]) -> tuple[float, int]:
    """CPU seconds to segment, fill a window and render both playlists and the MPD at every part."""
    segmenter = CmafSegmenter()
    window = CmafWindow()
    renders = 0
    start = time.process_time()
    for frame in frames:
        items = segmenter.push(frame, 1e9 + frame.dts_ms / 1000)
        if items:
            window.extend(items)
            render_media_playlist(window, VIDEO, rendition_reports={"audio.m3u8": AUDIO})
            render_media_playlist(window, AUDIO, rendition_reports={"video.m3u8": VIDEO})
            render_mpd(window, now=1e9 + frame.dts_ms / 1000)
            renders += 1
    return time.process_time() - start, renders


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the clip (default 10)")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the fastest counts (default 5)")
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="h264", help="video codec (default h264)")
    parser.add_argument("--synthetic", action="store_true", help="random H.264-like payloads instead of an ffmpeg encode")
    args = parser.parse_args()

    frames = synthetic_clip(args.seconds) if args.synthetic else encode_clip(args.seconds, args.codec)
    media = [f for f in frames if not f.is_config and not f.is_end and f.kind != FrameKind.DATA]
    video = sum(1 for f in media if f.kind == FrameKind.VIDEO)
    payload = sum(len(f.payload) for f in media)
    duration_s = (max(f.dts_ms for f in media) - min(f.dts_ms for f in media)) / 1000 or 1.0
    cpu_s, out_bytes, segments, parts = segment(frames, args.repeat)
    package_s, renders = package(frames)

    source = "synthetic" if args.synthetic else f"ffmpeg {args.codec}+aac"
    print(f"fmp4_mux: {WIDTH}x{HEIGHT}p{FPS} ~{VIDEO_KBPS} kbit/s + AAC {AUDIO_KBPS} kbit/s, {source}")
    print(f"  input        {duration_s:.1f} s of media: {video} video + {len(media) - video} audio frames, "
          f"{payload * 8 / duration_s / 1e6:.2f} Mbit/s of payload")
    print(f"  output       {segments} segments from {parts} parts (both tracks), {out_bytes / 1e6:.2f} MB, "
          f"fMP4 overhead {100 * (out_bytes / payload - 1):.2f} %")
    print(f"  CPU          {cpu_s * 1e6 / len(media):.1f} us per frame (best of {args.repeat}, python {sys.version.split()[0]})")
    print(f"  throughput   {out_bytes / cpu_s / 1e6:.0f} MB/s of segments written (parts share the payload)")
    print(f"  per stream   {100 * cpu_s / duration_s:.3f} % of one core for one live stream")
    print(f"  packaging    {100 * package_s / duration_s:.3f} % of one core with 2 playlists + MPD rendered "
          f"at each of {renders} updates ({package_s * 1e6 / max(renders, 1):.0f} us per update)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
