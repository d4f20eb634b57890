"""Chunk decoder throughput on a realistic publish stream.

The stream mirrors what OBS sends once publishing: ~10 KB video messages (30 fps, with a larger
keyframe every 2 s) on one chunk stream, interleaved with ~370-byte AAC messages (~47 per second) on
another, all type-1/2/3 headers after the first. It is encoded once per chunk size (128, the
default, and 4096, as OBS sets; a Set Chunk Size message starts the stream) and fed to a fresh
ChunkDecoder in 64 KiB reads, the size the server reads from its socket. Prints the best of 3 runs.

    .venv/bin/python bench/chunk_decode.py [seconds_of_media]
"""

from __future__ import annotations

import random
import sys
import time

from mediaserver.rtmp.chunk import ChunkDecoder, ChunkEncoder
from mediaserver.rtmp.messages import encode_set_chunk_size

READ_SIZE = 64 * 1024


def build_stream(chunk_size: int, seconds: int, rng: random.Random) -> tuple[bytes, int]:
    """Encode `seconds` of interleaved audio/video; return (wire bytes, message count)."""
    encoder = ChunkEncoder()
    out = bytearray()
    # Set Chunk Size first, as OBS does before connect.
    encoder.write(out, 2, 1, 0, 0, encode_set_chunk_size(chunk_size))
    encoder.set_chunk_size(chunk_size)
    messages = 1
    video_ms = 0.0
    audio_ms = 0.0
    frame = 0
    end_ms = seconds * 1000
    while video_ms < end_ms:
        # Audio messages due before the next video frame, as a muxer interleaves them.
        while audio_ms <= video_ms:
            encoder.write(out, 6, 8, 1, int(audio_ms), rng.randbytes(rng.randint(340, 400)))
            audio_ms += 1024 / 48
            messages += 1
        size = 60_000 if frame % 60 == 0 else rng.randint(8_000, 12_000)
        encoder.write(out, 7, 9, 1, int(video_ms), rng.randbytes(size))
        video_ms += 1000 / 30
        frame += 1
        messages += 1
    return bytes(out), messages


def measure(data: bytes, expected: int, rounds: int) -> float:
    """Best time over `rounds` to decode all of `data` in READ_SIZE reads."""
    best = float("inf")
    reads = [data[i : i + READ_SIZE] for i in range(0, len(data), READ_SIZE)]
    for _ in range(rounds):
        decoder = ChunkDecoder()
        count = 0
        started = time.perf_counter()
        for piece in reads:
            count += len(decoder.feed(piece))
        elapsed = time.perf_counter() - started
        if count != expected:
            raise SystemExit(f"decoded {count} messages, expected {expected}")
        best = min(best, elapsed)
    return best


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    rng = random.Random(1935)
    print(f"chunk decoder, {seconds} s of 30 fps video (~10 KB frames) + AAC, {READ_SIZE // 1024} KiB reads")
    for chunk_size in (128, 4096):
        data, messages = build_stream(chunk_size, seconds, rng)
        elapsed = measure(data, messages, rounds=3)
        mb_s = len(data) / elapsed / 1e6
        print(
            f"  chunk size {chunk_size:5d}: {len(data) / 1e6:7.1f} MB, {messages} messages, "
            f"{mb_s:8.1f} MB/s, {messages / elapsed:10.0f} messages/s, "
            f"{seconds / elapsed:7.0f}x real time ({elapsed * 1000:.1f} ms)"
        )


if __name__ == "__main__":
    main()
