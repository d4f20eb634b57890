"""Benchmark: CPU cost of cutting a live stream into HLS MPEG-TS segments.

Feeds a 720p30 2.5 Mbit/s H.264 + 128 kbit/s AAC stream through `TsSegmenter` (Annex B conversion,
ADTS, PES, TS packets, segment cuts) and prints CPU microseconds per frame, output MB/s, the share
of one core a single live stream costs, and the TS overhead.

Frames come from a clip encoded with ffmpeg at run time (libx264 + aac, written as FLV and read back
tag by tag into Frames, as ingest makes them), or with --synthetic from random payloads of realistic
size (no ffmpeg needed).

    python bench/ts_mux.py [--seconds 10] [--repeat 5] [--synthetic]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mediaserver.media.flv_body import audio_frame, data_frame, video_frame
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.media.h264 import build_avc_config
from mediaserver.remux.hls import TsSegmenter

WIDTH, HEIGHT, FPS, VIDEO_KBPS, AUDIO_KBPS, GOP_S = 1280, 720, 30, 2500, 128, 2


def encode_clip(seconds: float) -> list[Frame]:
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.flv"
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-bf", "2",
            "-b:v", f"{VIDEO_KBPS}k", "-maxrate", f"{VIDEO_KBPS}k", "-bufsize", f"{2 * VIDEO_KBPS}k",
            "-g", str(GOP_S * FPS), "-keyint_min", str(GOP_S * FPS), "-sc_threshold", "0",
            "-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k", "-ac", "2",
            "-f", "flv", str(path),
        ]
        subprocess.run(cmd, check=True, timeout=600)
        return read_flv(path.read_bytes())


def read_flv(data: bytes) -> list[Frame]:
    """The Frames of a complete FLV file (header, then tag + PreviousTagSize, FLV spec E.3)."""
    pos = int.from_bytes(data[5:9], "big") + 4
    frames = []
    while pos + 11 <= len(data):
        kind = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        body = data[pos + 11 : pos + 11 + size]
        pos += 11 + size + 4
        frame = (
            video_frame(body, timestamp) if kind == 9
            else audio_frame(body, timestamp) if kind == 8
            else data_frame(body, timestamp) if kind == 18
            else None
        )
        if frame is not None:
            frames.append(frame)
    return frames


def synthetic_clip(seconds: float) -> list[Frame]:
    """Random payloads sized like the encoded clip: keyframes ~8x a P-frame, 1024-sample AAC at 48 kHz."""
    rng = random.Random(1)
    sps = bytes.fromhex("674d401feca02802dd080000030008000003019078c18cb0")
    pps = bytes.fromhex("68ebecb22c")
    frames = [
        video_frame(b"\x17\x00\x00\x00\x00" + build_avc_config([sps], [pps]), 0),
        audio_frame(b"\xaf\x00\x11\x90", 0),
    ]
    gop = GOP_S * FPS
    bytes_per_gop = VIDEO_KBPS * 1000 // 8 * GOP_S
    p_size = bytes_per_gop // (gop + 7)
    audio_size = AUDIO_KBPS * 1000 // 8 * 1024 // 48000
    video_ms = [round(i * 1000 / FPS) for i in range(int(seconds * FPS))]
    audio_ms = [round(i * 1024 * 1000 / 48000) for i in range(int(seconds * 48000 / 1024))]
    events = sorted([(t, 9, i) for i, t in enumerate(video_ms)] + [(t, 8, i) for i, t in enumerate(audio_ms)])
    for t, kind, index in events:
        if kind == 9:
            key = index % gop == 0
            size = int((8 * p_size if key else p_size) * rng.uniform(0.7, 1.3))
            nal = bytes((0x65 if key else 0x41,)) + rng.randbytes(size)
            body = bytes((0x17 if key else 0x27, 1, 0, 0, 0)) + len(nal).to_bytes(4, "big") + nal
            frame = video_frame(body, t)
        else:
            frame = audio_frame(b"\xaf\x01" + rng.randbytes(int(audio_size * rng.uniform(0.8, 1.2))), t)
        assert frame is not None
        frames.append(frame)
    return frames


def run(frames: list[Frame], repeat: int) -> tuple[float, int, int]:
    """Best CPU seconds of `repeat` runs over all frames, bytes out, segments out."""
    best = float("inf")
    out_bytes = segments = 0
    for _ in range(repeat):
        segmenter = TsSegmenter()
        out_bytes = segments = 0
        start = time.process_time()
        for frame in frames:
            for segment in segmenter.push(frame, 0.0):
                out_bytes += len(segment.data)
                segments += 1
        last = segmenter.finish()
        if last is not None:
            out_bytes += len(last.data)
            segments += 1
        best = min(best, time.process_time() - start)
    return best, out_bytes, segments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the clip (default 10)")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the fastest counts (default 5)")
    parser.add_argument("--synthetic", action="store_true", help="random payloads instead of an ffmpeg encode")
    args = parser.parse_args()

    frames = synthetic_clip(args.seconds) if args.synthetic else encode_clip(args.seconds)
    media = [f for f in frames if not f.is_config and not f.is_end and f.kind != FrameKind.DATA]
    video = sum(1 for f in media if f.kind == FrameKind.VIDEO)
    payload = sum(len(f.payload) for f in media)
    duration_s = (max(f.dts_ms for f in media) - min(f.dts_ms for f in media)) / 1000 or 1.0
    cpu_s, out_bytes, segments = run(frames, args.repeat)

    source = "synthetic" if args.synthetic else "ffmpeg libx264+aac"
    print(f"ts_mux: {WIDTH}x{HEIGHT}p{FPS} H.264 ~{VIDEO_KBPS} kbit/s + AAC {AUDIO_KBPS} kbit/s, {source}")
    print(f"  input        {duration_s:.1f} s of media: {video} video + {len(media) - video} audio frames, "
          f"{payload * 8 / duration_s / 1e6:.2f} Mbit/s of payload")
    print(f"  output       {segments} segments, {out_bytes / 1e6:.2f} MB, TS overhead {100 * (out_bytes / payload - 1):.1f} %")
    print(f"  CPU          {cpu_s * 1e6 / len(media):.1f} us per frame (best of {args.repeat}, python {sys.version.split()[0]})")
    print(f"  throughput   {out_bytes / cpu_s / 1e6:.0f} MB/s of TS written")
    print(f"  per stream   {100 * cpu_s / duration_s:.3f} % of one core for one live stream")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
