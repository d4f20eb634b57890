"""WHEP viewers for the benchmark: aiortc peer connections that receive but never decode.

A bench viewer does what a browser's network stack does (ICE, DTLS, SRTP decryption, RTCP receiver reports,
NACKs) and no more: aiortc's per-receiver decoder thread is replaced by one that drops the frames (decoding
100 streams of 720p would measure the viewers, not the server). The RTP packets of video are noted as they
arrive: (RTP timestamp, marker bit, arrival time), for the delay measurement.

As a worker process (`python -m bench._webrtc_viewers URL COUNT`, from the repository's root): COUNT viewers of URL, until a "stop"
line or the end of stdin, then one JSON line: per viewer, whether it connected and the bytes and packets
of video and audio it received.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import aiortc.rtcrtpreceiver as receiver_module
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from bench._aio import watch_stdin_for_stop
from mediaserver.config import WebrtcConfig
from mediaserver.webrtc.peer import bind_candidates

ARRIVALS: dict[int, list[tuple[int, int, float, bool, int | None]]] = {}
"""id(receiver) -> [(RTP timestamp, marker, monotonic arrival, starts a keyframe, abs-send-time)] of its video
packets, when asked to note them. A keyframe's first packet carries the SPS (alone, or first in a STAP-A);
abs-send-time is the sender's wall clock when it sent the packet (6.18 fixed point seconds, modulo 64 s)."""
NOTE_ARRIVALS = False


def _drain(loop, input_q, output_q, decode_error) -> None:
    while input_q.get() is not None:
        pass


def _starts_with_sps(payload: bytes) -> bool:
    nal = payload[0] & 0x1F if payload else 0
    return nal == 7 or (nal == 24 and len(payload) > 3 and payload[3] & 0x1F == 7)


_original_handle = RTCRtpReceiver._handle_rtp_packet


async def _noting_handle(self, packet, arrival_time_ms: int) -> None:
    if NOTE_ARRIVALS and self._RTCRtpReceiver__kind == "video":
        ARRIVALS.setdefault(id(self), []).append((packet.timestamp, packet.marker, time.monotonic(),
                                                  _starts_with_sps(packet.payload), packet.extensions.abs_send_time))
    counts = COUNTS.setdefault(id(self), [self._RTCRtpReceiver__kind, 0, 0])
    counts[1] += 1
    counts[2] += len(packet.payload)
    await _original_handle(self, packet, arrival_time_ms)


COUNTS: dict[int, list] = {}
VIDEO_ONLY = os.environ.get("BENCH_WEBRTC_VIDEO_ONLY") == "1"
"""Offer video alone (no audio section: the server then runs no AAC -> Opus transcode)."""
receiver_module.decoder_worker = _drain
RTCRtpReceiver._handle_rtp_packet = _noting_handle


@dataclass
class BenchViewer:
    url: str
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[])))
    status: int = 0
    error: str = ""

    async def start(self, http: aiohttp.ClientSession) -> None:
        pc = self.pc
        pc.addTransceiver("video", direction="recvonly")
        if not VIDEO_ONLY:
            pc.addTransceiver("audio", direction="recvonly")
        bind_candidates(pc, WebrtcConfig(public_ip="127.0.0.1"))
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(self.url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as r:
            self.status = r.status
            body = await r.text()
        if self.status != 201:
            self.error = body[:300]
            return
        await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))

    def received(self) -> dict:
        out = {"status": self.status, "state": self.pc.connectionState, "error": self.error}
        for r in self.pc.getReceivers():
            kind, packets, size = COUNTS.get(id(r), [r.track.kind if r.track else "?", 0, 0])
            out[f"{kind}_packets"] = packets
            out[f"{kind}_bytes"] = size
        return out


async def open_viewers(url: str, count: int, http: aiohttp.ClientSession, at_once: int = 5) -> list[BenchViewer]:
    """`count` viewers, `at_once` of them negotiating at a time."""
    viewers = [BenchViewer(url) for _ in range(count)]
    gate = asyncio.Semaphore(at_once)

    async def start(v: BenchViewer) -> None:
        async with gate:
            await v.start(http)

    await asyncio.gather(*(start(v) for v in viewers))
    return viewers


async def _main(url: str, count: int) -> dict:
    stop = asyncio.Event()
    watch_stdin_for_stop(stop)
    async with aiohttp.ClientSession() as http:
        viewers = await open_viewers(url, count, http)
        print(json.dumps({"started": [v.status for v in viewers]}), flush=True)
        await stop.wait()
        result = {"viewers": [v.received() for v in viewers], "cpu_s": time.process_time()}
        await asyncio.gather(*(v.pc.close() for v in viewers), return_exceptions=True)
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_main(sys.argv[1], int(sys.argv[2])))), flush=True)
