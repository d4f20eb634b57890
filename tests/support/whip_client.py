"""A WHIP publisher for tests and benches: an aiortc peer connection in this process sending H.264 (a
moving test pattern, encoded by aiortc with libx264) and Opus (a tone) to POST /APP/STREAM/whip.

Loopback only: the peer connection gets no ICE server (aiortc's default would be Google's STUN).
"""

from __future__ import annotations

import asyncio
import fractions
import math
from urllib.parse import urljoin

import aiohttp
import av
import numpy as np
from aiortc import (
    AudioStreamTrack,
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

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        y, x = np.mgrid[0:height, 0:width]
        self._base = ((x + y) % 256).astype(np.uint8)
        self._n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        self._n += 1
        luma = (self._base + self._n * 4).astype(np.uint8)
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


class WhipClient:
    """One WHIP publish. `publish()` returns the HTTP status and body; `location` is set on 201."""

    def __init__(self, url: str, token: str = "", *, video: bool = True, audio: bool = True,
                 video_codec: str = "H264") -> None:
        self.url = url
        self.token = token
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.location: str | None = None
        self.status: int | None = None
        self.body = ""
        self.video_track = PatternTrack() if video else None
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

    async def close(self) -> None:
        await self.pc.close()
