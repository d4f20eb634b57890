"""WHIP ingest cost: Opus -> AAC per stream, and a WHIP publisher's whole cost in the server.

    python -m bench.whip transcode --seconds 60 --runs 2     # the Opus -> AAC chain alone, in this process
    python -m bench.whip publish --streams 2 --seconds 30   # WHIP publishers (aiortc, here) into a server process

`transcode` feeds 20 ms Opus packets (libopus, 64 kbit/s stereo, a tone over noise so the encoders work)
through the server's own chain (mediaserver/webrtc/ingest_audio.py: decode, resample, AAC encode at
128 kbit/s) and reports CPU-seconds per stream-minute (process CPU time, not wall time), and the Opus
decode alone for comparison.

`publish` starts the server (bench/load.py's start_server), then for each phase publishes N WHIP streams
from aiortc clients in this process (audio only: the WebRTC receive path + Opus -> AAC; then audio and
video: a 720p30 H.264 2.5 Mbit/s clip without B-frames, made once with ffmpeg and sent by aiortc as
encoded packets, so the client costs little) and measures the server's CPU over the window from /proc,
with the machine's load, per stream-minute.

The WHIP client (`WhipClient`) is also the tests' publisher (tests/e2e/test_webrtc_whip.py): an aiortc peer
connection sending H.264 (a moving test pattern) and Opus (a tone). Loopback only: the peer connection gets
no ICE server (aiortc's default would be Google's STUN).
"""

from __future__ import annotations

import asyncio
import fractions
import math
import subprocess
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import av
import numpy as np
from aiortc import (
    AudioStreamTrack,
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)

_AUDIO_RATE = 48000
_AUDIO_SAMPLES = 960  # 20 ms


class PatternTrack(VideoStreamTrack):
    """A moving gradient at `width`x`height`, 30 fps (aiortc paces it)."""

    def __init__(self, width: int = 320, height: int = 240, noise: bool = False) -> None:
        super().__init__()
        y, x = np.mgrid[0:height, 0:width]
        self._base = ((x + y) % 256).astype(np.uint8)
        self._n = 0
        self._noise = np.random.default_rng(1).integers(0, 24, (8, height, width), dtype=np.uint8) if noise else None
        """Temporal noise (8 frames cycled), so the encoder spends bits as on camera video."""

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        self._n += 1
        luma = self._base + np.uint8(self._n * 4 % 256)  # wraps, as uint8 arithmetic does
        if self._noise is not None:
            luma = luma + self._noise[self._n % 8]
        yuv = np.concatenate([luma, np.full((luma.shape[0] // 2, luma.shape[1]), 128, np.uint8)])
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneTrack(AudioStreamTrack):
    """A 440 Hz tone, stereo s16, 20 ms frames paced in real time."""

    def __init__(self) -> None:
        super().__init__()
        self._sent = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._sent / _AUDIO_RATE - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(_AUDIO_SAMPLES) + self._sent) / _AUDIO_RATE
        mono = (np.sin(2 * math.pi * 440 * t) * 6000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = _AUDIO_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, _AUDIO_RATE)
        self._sent += _AUDIO_SAMPLES
        return frame


class H264FileTrack(MediaStreamTrack):
    """Already-encoded H.264 from an Annex B file, paced at `fps` and looped: aiortc's sender packetizes the
    packets without encoding (bench: the client costs little, the server sees a real encoder's stream)."""

    kind = "video"

    def __init__(self, path: str, fps: int = 30) -> None:
        super().__init__()
        self.path, self.fps = path, fps
        self._packets = self._read()
        self._n = 0
        self._start: float | None = None

    def _read(self) -> list[bytes]:
        with av.open(self.path, format="h264") as container:
            return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]

    async def recv(self) -> av.Packet:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._n / self.fps - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        packet = av.Packet(self._packets[self._n % len(self._packets)])
        packet.pts = self._n * (90000 // self.fps)
        packet.time_base = fractions.Fraction(1, 90000)
        self._n += 1
        return packet


def ensure_h264_clip(cache_dir: Path, seconds: int = 10) -> Path:
    """A 720p30 H.264 clip at 2.5 Mbit/s CBR without B-frames (as WebRTC encoders and OBS's WHIP output send),
    a keyframe every 2 s, as raw Annex B; encoded once with ffmpeg (about 10 s of CPU)."""
    from bench import _media

    path = cache_dir / f"whip-720p30-h264-2500k-bf0-{seconds}s.h264"
    if path.exists() and path.stat().st_size > 0:
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([
        _media.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30,noise=alls=6:allf=t", "-t", str(seconds),
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-bf", "0", "-pix_fmt", "yuv420p",
        "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-b:v", "2500k", "-minrate", "2500k",
        "-maxrate", "2500k", "-bufsize", "2500k", "-x264-params", "nal-hrd=cbr:force-cfr=1:repeat-headers=1",
        "-f", "h264", str(path),
    ], check=True)
    return path


class WhipClient:
    """One WHIP publish. `publish()` returns the HTTP status and body; `location` is set on 201."""

    def __init__(self, url: str, token: str = "", *, video: bool = True, audio: bool = True,
                 video_codec: str = "H264", size: tuple[int, int] = (320, 240), noise: bool = False,
                 h264_file: str | None = None) -> None:
        self.url = url
        self.token = token
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.location: str | None = None
        self.status: int | None = None
        self.body = ""
        self.video_track: PatternTrack | H264FileTrack | None = None
        if video:
            self.video_track = H264FileTrack(h264_file) if h264_file else PatternTrack(*size, noise=noise)
        if self.video_track is not None:
            transceiver = self.pc.addTransceiver(self.video_track, direction="sendonly")
            codecs = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in codecs if c.mimeType.split("/")[1] in (video_codec, "rtx")])
        if audio:
            self.pc.addTransceiver(ToneTrack(), direction="sendonly")

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def publish(self, http: aiohttp.ClientSession, offer: str | None = None) -> tuple[int, str]:
        sdp = offer if offer is not None else await self.offer()
        headers = {"Content-Type": "application/sdp"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with http.post(self.url, data=sdp.encode(), headers=headers) as resp:
            self.status, self.body = resp.status, await resp.text()
            if resp.status == 201:
                self.location = resp.headers["Location"]
                await self.pc.setRemoteDescription(RTCSessionDescription(self.body, "answer"))
        return self.status, self.body

    async def delete(self, http: aiohttp.ClientSession) -> int:
        assert self.location is not None
        async with http.delete(urljoin(self.url, self.location)) as resp:
            return resp.status

    async def bytes_sent(self) -> int:
        """Media bytes sent so far (RTP payloads of every track), from the peer connection's stats."""
        stats = await self.pc.getStats()
        return sum(s.bytesSent for s in stats.values() if s.type == "outbound-rtp")

    async def close(self) -> None:
        await self.pc.close()


# ----- transcode: the Opus -> AAC chain alone -------------------------------------------------------


def bench_opus_packets(seconds: float, bit_rate: int = 64_000) -> list[tuple[int, bytes]]:
    """(pts at 48 kHz, packet) of `seconds` of a tone over noise, 20 ms libopus packets."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "stereo", "s16", bit_rate
    enc.time_base = fractions.Fraction(1, 48000)
    enc.open()
    rng = np.random.default_rng(7)
    out: list[tuple[int, bytes]] = []
    for i in range(0, int(48000 * seconds), 960):
        t = (np.arange(960) + i) / 48000
        left = np.sin(2 * math.pi * 440 * t) * 5000 + rng.normal(0, 1500, 960)
        right = np.sin(2 * math.pi * 660 * t) * 5000 + rng.normal(0, 1500, 960)
        pcm = np.stack([left, right], axis=1).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, i
        out.extend((p.pts, bytes(p)) for p in enc.encode(frame))
    return out


def transcode(seconds: float, runs: int) -> dict:
    import time

    from mediaserver.webrtc.ingest_audio import AacEncoderChain

    packets = bench_opus_packets(seconds)
    results = []
    for run in range(runs):
        decoder = av.CodecContext.create("opus", "r")
        decoder.sample_rate, decoder.layout = 48000, "stereo"
        t0 = time.process_time()
        for _, packet in packets:
            decoder.decode(av.Packet(packet))
        decode_s = time.process_time() - t0
        chain = AacEncoderChain()
        t0 = time.process_time()
        frames = sum(len(chain.push(pts, packet)) for pts, packet in packets)
        chain_s = time.process_time() - t0
        minutes = seconds / 60
        results.append({"run": run + 1, "aac_frames": frames,
                        "opus_decode_cpu_s_per_stream_minute": round(decode_s / minutes, 3),
                        "opus_to_aac_cpu_s_per_stream_minute": round(chain_s / minutes, 3),
                        "share_of_one_core_pct": round(100 * chain_s / seconds, 2)})
        print(results[-1], flush=True)
    return {"seconds_of_audio": seconds, "runs": results}


# ----- publish: WHIP publishers into a server process -------------------------------------------------


async def publish(streams: int, seconds: float, warmup: float, clip: Path) -> dict:
    import argparse as _argparse
    import os
    import time

    from bench import load
    from bench.relay import Window

    children = load.Children()
    sargs = _argparse.Namespace(http_url=None, rtmp_url=None, pid=None, server="mediaserver", log_level="warning",
                                server_set=[], app="live")
    result: dict = {"streams": streams, "seconds": seconds, "video": clip.name, "cores": os.cpu_count(), "phases": []}
    try:
        server = await load.start_server(sargs, children, f"whip-{time.strftime('%Y%m%d-%H%M%S')}")
        base = f"http://{server.host}:{server.http_port}"
        async with aiohttp.ClientSession() as http:
            with Window(server.pid) as idle:
                await asyncio.sleep(seconds / 2)
            result["idle"] = idle.as_dict()
            for phase, video in (("audio only", False), ("audio and video", True)):
                clients = [WhipClient(f"{base}/live/{phase[0]}{i}/whip", video=video, h264_file=str(clip))
                           for i in range(streams)]
                try:
                    for client in clients:
                        status, body = await client.publish(http)
                        if status != 201:
                            raise RuntimeError(f"WHIP publish refused: {status} {body}")
                    await asyncio.sleep(warmup)
                    frames0 = sum(c.video_track._n for c in clients if c.video_track is not None)
                    bytes0 = sum([await c.bytes_sent() for c in clients])
                    with Window(server.pid) as w:
                        await asyncio.sleep(seconds)
                    frames = sum(c.video_track._n for c in clients if c.video_track is not None) - frames0
                    sent = sum([await c.bytes_sent() for c in clients]) - bytes0
                    idle_cpu = idle.cpu / idle.wall * w.wall
                    per_minute = (w.cpu - idle_cpu) / streams / (w.wall / 60)
                    entry = {"phase": phase, "window": w.as_dict(),
                             "video_fps_per_stream_sent": round(frames / streams / w.wall, 1),
                             "kbps_per_stream_sent": round(sent * 8 / streams / w.wall / 1000),
                             "server_cpu_s_per_stream_minute": round(per_minute, 3)}
                    result["phases"].append(entry)
                    print(entry, flush=True)
                finally:
                    for client in clients:
                        if client.location:
                            await client.delete(http)
                        await client.close()
                await asyncio.sleep(3)
    finally:
        await children.stop_all()
    return result


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcode", help="the Opus -> AAC chain alone, CPU-s per stream-minute")
    t.add_argument("--seconds", type=float, default=60)
    t.add_argument("--runs", type=int, default=2)
    p = sub.add_parser("publish", help="WHIP publishers into a server process, its CPU-s per stream-minute")
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--cache", type=Path, default=Path(__file__).resolve().parent / ".cache",
                   help="where the 720p H.264 clip is kept (made once with ffmpeg)")
    args = parser.parse_args()
    if args.command == "transcode":
        out = transcode(args.seconds, args.runs)
    else:
        out = asyncio.run(publish(args.streams, args.seconds, args.warmup, ensure_h264_clip(args.cache)))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
