"""WHEP viewers for the benchmark: aiortc peer connections, most of them lean, a sampled few complete.

Every viewer does ICE (with consent checks), DTLS and RTCP as a browser does: aiortc's receivers send their
receiver reports, and the server's sender reports arrive through the normal path. What differs is RTP:

- a lean viewer (the default) counts each RTP datagram as it arrives at the ICE socket (its payload type,
  read from the clear RTP header, says video or audio) and drops it: no SRTP decryption, no jitter buffer.
  aiortc in Python spends tens of microseconds per packet on those; at 100 viewers of 2.5 Mbit/s (25,000
  packets/s) the viewers, not the server, would be measured. Its RTCP goes on (aiortc's receiver reports,
  the server's sender reports, consent) since only RTP datagrams are taken;
- a sampled viewer (the first of the first worker process, and the measuring viewer of the delay bench) takes
  the full path: SRTP, jitter buffer, NACKs, and decodes its first `SAMPLE_DECODE` video and audio frames with
  aiortc's decoders (H.264, Opus) to check the media is right; then it only counts the frames assembled.

The RTP packets of video of a sampled viewer can be noted as they arrive: (RTP timestamp, marker bit, arrival
time, keyframe start, abs-send-time), for the delay measurement.

As a worker process (`python -m bench._webrtc_viewers URL COUNT [SAMPLED]`, from the repository's root, on
uvloop when installed): COUNT viewers of URL, the first SAMPLED (default 1) complete, until a "stop" line or the
end of stdin, then one JSON line: per viewer, whether it connected and the bytes and packets of video and audio
it received, and what the sampled ones assembled and decoded.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import aiortc.rtcrtpreceiver as receiver_module
from aioice import ice as aioice_ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import get_decoder
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from bench._aio import install_fast_loop, watch_stdin_for_stop
from mediaserver.config import WebrtcConfig
from mediaserver.webrtc.peer import bind_candidates

ARRIVALS: dict[int, list[tuple[int, int, float, bool, int | None]]] = {}
"""id(receiver) -> [(RTP timestamp, marker, monotonic arrival, starts a keyframe, abs-send-time)] of its video
packets, when asked to note them. A keyframe's first packet carries the SPS (alone, or first in a STAP-A);
abs-send-time is the sender's wall clock when it sent the packet (6.18 fixed point seconds, modulo 64 s)."""
NOTE_ARRIVALS = False
SAMPLE_DECODE = 60
"""Frames of each kind a sampled viewer decodes (2 s of video at 30 fps) before it only counts them."""
DECODED: collections.Counter[str] = collections.Counter()
"""Per process: "video_assembled", "video_decoded", "audio_decoded", "video_decode_errors", "video_WxH"..."""


def _sampling_decoder(loop, input_q, output_q, decode_error) -> None:
    """Stands in for aiortc's decoder thread: decodes the first frames (the media check), then counts."""
    decoders = {}
    while (task := input_q.get()) is not None:
        codec, encoded = task
        kind = codec.mimeType.split("/")[0]
        DECODED[f"{kind}_assembled"] += 1
        if DECODED[f"{kind}_decoded"] >= SAMPLE_DECODE:
            continue
        decoder = decoders.get(codec.name) or decoders.setdefault(codec.name, get_decoder(codec))
        try:
            frames = decoder.decode(encoded)
        except Exception:
            DECODED[f"{kind}_decode_errors"] += 1  # a frame the jitter buffer gave out incomplete (loss)
            continue
        for frame in frames:
            DECODED[f"{kind}_decoded"] += 1
            if kind == "video":
                DECODED[f"video_{frame.width}x{frame.height}"] += 1


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
receiver_module.decoder_worker = _sampling_decoder
RTCRtpReceiver._handle_rtp_packet = _noting_handle


class LeanStunProtocol(aioice_ice.StunProtocol):
    """aioice's socket protocol that counts RTP datagrams by payload type and drops them (RTCP, STUN and DTLS
    pass on). SRTP leaves the RTP header in clear."""

    rtp_counts: dict[int, list[int]]

    def datagram_received(self, data, addr) -> None:
        if len(data) >= 12 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223:  # RTP, not RTCP (RFC 5761)
            counts = self.rtp_counts.get(data[1] & 0x7F)
            if counts is None:
                counts = self.rtp_counts[data[1] & 0x7F] = [0, 0]
            counts[0] += 1
            counts[1] += len(data)
            return
        super().datagram_received(data, addr)


def _payload_kinds(sdp: str) -> dict[int, str]:
    """payload type -> "video"/"audio", from an SDP's m= lines."""
    kinds = {}
    for m in re.finditer(r"^m=(video|audio) \d+ \S+ ([\d ]+)", sdp, re.M):
        for pt in m.group(2).split():
            kinds[int(pt)] = m.group(1)
    return kinds


@dataclass
class BenchViewer:
    url: str
    lean: bool = True
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[])))
    status: int = 0
    error: str = ""
    rtp_counts: dict[int, list[int]] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)

    async def start(self, http: aiohttp.ClientSession) -> None:
        pc = self.pc
        pc.addTransceiver("video", direction="recvonly")
        if not VIDEO_ONLY:
            pc.addTransceiver("audio", direction="recvonly")
        bind_candidates(pc, WebrtcConfig(public_ip="127.0.0.1"))
        await pc.setLocalDescription(await pc.createOffer())
        if self.lean:
            for transceiver in pc.getTransceivers():
                for protocol in transceiver.receiver.transport.transport.iceGatherer._connection._protocols:
                    protocol.__class__ = LeanStunProtocol
                    protocol.rtp_counts = self.rtp_counts
        async with http.post(self.url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as r:
            self.status = r.status
            body = await r.text()
        if self.status != 201:
            self.error = body[:300]
            return
        self.kinds = _payload_kinds(body)
        await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))

    def received(self) -> dict:
        out = {"status": self.status, "state": self.pc.connectionState, "error": self.error, "lean": self.lean}
        if self.lean:
            for pt, (packets, size) in self.rtp_counts.items():
                kind = self.kinds.get(pt, "other")
                out[f"{kind}_packets"] = out.get(f"{kind}_packets", 0) + packets
                out[f"{kind}_bytes"] = out.get(f"{kind}_bytes", 0) + size
            return out
        for r in self.pc.getReceivers():
            kind, packets, size = COUNTS.get(id(r), [r.track.kind if r.track else "?", 0, 0])
            out[f"{kind}_packets"] = packets
            out[f"{kind}_bytes"] = size
        return out


async def open_viewers(url: str, count: int, http: aiohttp.ClientSession, at_once: int = 5,
                       sampled: int = 1) -> list[BenchViewer]:
    """`count` viewers, the first `sampled` of them complete, `at_once` of them negotiating at a time."""
    viewers = [BenchViewer(url, lean=i >= sampled) for i in range(count)]
    gate = asyncio.Semaphore(at_once)

    async def start(v: BenchViewer) -> None:
        async with gate:
            await v.start(http)
            # As players do, the next offer goes once this one connected (webrtc.max_connecting_per_ip).
            for _ in range(300):
                if v.status != 201 or v.pc.connectionState not in ("new", "connecting"):
                    break
                await asyncio.sleep(0.05)

    await asyncio.gather(*(start(v) for v in viewers))
    return viewers


async def _main(url: str, count: int, sampled: int) -> dict:
    stop = asyncio.Event()
    watch_stdin_for_stop(stop)
    async with aiohttp.ClientSession() as http:
        viewers = await open_viewers(url, count, http, sampled=sampled)
        print(json.dumps({"started": [v.status for v in viewers]}), flush=True)
        await stop.wait()
        result = {"viewers": [v.received() for v in viewers], "cpu_s": time.process_time(), "sampled": dict(DECODED)}
        await asyncio.gather(*(v.pc.close() for v in viewers), return_exceptions=True)
    return result


if __name__ == "__main__":
    install_fast_loop()
    sampled = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    print(json.dumps(asyncio.run(_main(sys.argv[1], int(sys.argv[2]), sampled))), flush=True)
