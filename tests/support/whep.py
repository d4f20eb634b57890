"""A WHEP viewer in the test process: an aiortc peer connection that offers recvonly video and audio, POSTs the
offer, and counts the frames its receivers decode (aiortc decodes H.264 and Opus with PyAV).

Loopback only: its host candidate is 127.0.0.1 (mediaserver.webrtc.peer.bind_candidates with public_ip), and
it is given no ICE server, so it never asks anybody outside the machine.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from mediaserver.config import WebrtcConfig
from mediaserver.webrtc.peer import bind_candidates

from .media import describe_clip, ffmpeg_exe


@dataclass
class WhepAnswer:
    status: int
    body: str
    headers: dict[str, str]


@dataclass
class WhepViewer:
    url: str
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[])))
    frames: dict[str, int] = field(default_factory=lambda: {"video": 0, "audio": 0})
    sizes: set[tuple[int, int]] = field(default_factory=set)
    location: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    async def offer(self, audio: bool = True, video: bool = True) -> str:
        if video:
            self.pc.addTransceiver("video", direction="recvonly")
        if audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        bind_candidates(self.pc, WebrtcConfig(public_ip="127.0.0.1"))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def post(self, http: aiohttp.ClientSession, sdp: str, content_type: str = "application/sdp") -> WhepAnswer:
        async with http.post(self.url, data=sdp, headers={"Content-Type": content_type}) as resp:
            return WhepAnswer(resp.status, await resp.text(), dict(resp.headers))

    async def play(self, http: aiohttp.ClientSession) -> WhepAnswer:
        """Offer, POST, apply the answer; frames are counted as they decode."""
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)
        answer = await self.post(http, await self.offer())
        if answer.status == 201:
            self.location = answer.headers.get("Location")
            await self.pc.setRemoteDescription(RTCSessionDescription(answer.body, "answer"))
        return answer

    def _on_track(self, track) -> None:
        self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self.ended.set()

    async def _read(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                self.ended.set()
                return
            self.frames[track.kind] += 1
            if track.kind == "video":
                self.sizes.add((frame.width, frame.height))

    async def wait_frames(self, video: int, audio: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.frames["video"] >= video and self.frames["audio"] >= audio:
                return True
            await asyncio.sleep(0.1)
        return False

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


def _clip(directory: Path, name: str, video: list[str], audio: list[str], sample_rate: int, timeout: float):
    """4 s of 320x240 25 fps test picture and a 440 Hz tone, encoded with `video` and `audio`, as FLV."""
    path = directory / name
    subprocess.run([
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=4",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}:duration=4",
        *video, "-pix_fmt", "yuv420p", *audio, "-f", "flv", str(path),
    ], check=True, capture_output=True, timeout=timeout)
    return describe_clip(path, 4.0)


def baseline_clip(directory: Path):
    """320x240 25 fps H.264 baseline (no B-frames: WebRTC carries none), GOP 0.5 s, AAC 44.1 kHz stereo, 4 s."""
    return _clip(directory, "baseline.flv",
                 ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "baseline", "-bf", "0", "-g", "12"],
                 ["-c:a", "aac", "-b:a", "64k", "-ac", "2"], 44100, 60)


def av1_clip(directory: Path):
    """320x240 25 fps AV1 (SVT-AV1, keyframe every 0.5 s) + Opus 48 kHz, 4 s: an Enhanced RTMP publisher's."""
    return _clip(directory, "av1-opus.flv",
                 ["-c:v", "libsvtav1", "-preset", "12", "-g", "12", "-svtav1-params", "lp=2"],
                 ["-c:a", "libopus", "-b:a", "64k", "-ar", "48000"], 48000, 120)


def hevc_clip(directory: Path):
    """320x240 25 fps HEVC Main (x265 without B-frames: WebRTC carries none, keyframe every 0.5 s) + AAC 44.1 kHz
    stereo, 4 s: an Enhanced RTMP publisher's (OBS 30+, ffmpeg 6.1+)."""
    return _clip(directory, "hevc-aac.flv",
                 ["-c:v", "libx265", "-preset", "ultrafast",
                  "-x265-params", "log-level=error:bframes=0:keyint=12:min-keyint=12:scenecut=0"],
                 ["-c:a", "aac", "-b:a", "64k", "-ac", "2"], 44100, 120)


def video_section(sdp: str) -> str:
    """The m=video section of an SDP (its m= line without the "m=video" prefix, up to the next section)."""
    return sdp.split("m=video", 1)[1].split("\r\nm=", 1)[0]


def codec_lines(section: str) -> str:
    """A section's codec descriptions (rtpmap, fmtp and rtcp-fb lines), without its ICE credentials and
    fingerprints, whose random characters may spell a codec's name."""
    return "\r\n".join(line for line in section.split("\r\n")
                       if line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")))


def _edit_video(offer: str, m_line: Callable[[list[str]], list[str]], kept: Callable[[str], bool] = lambda _: True,
                added: Sequence[str] = ()) -> str:
    """The offer with its video section's m= line fields passed through `m_line`, its lines `kept` or not, and
    `added` after its a=rtcp-mux."""
    out = []
    section = ""
    for line in offer.split("\r\n"):
        if line.startswith("m="):
            section = line.split()[0][2:]
            if section == "video":
                line = " ".join(m_line(line.split()))
        elif section == "video" and not kept(line):
            continue
        out.append(line)
        if section == "video" and line.startswith("a=rtcp-mux"):
            out += added
    return "\r\n".join(out)


def _with_video_lines(offer: str, payload_types: list[int], lines: list[str]) -> str:
    """`lines` added to an offer's video section (after a=rtcp-mux), `payload_types` to its m= line."""
    return _edit_video(offer, lambda fields: [*fields, *map(str, payload_types)], added=lines)


def with_av1(offer: str, payload_type: int = 45, profile: int = 0) -> str:
    """A browser's AV1 lines added to an offer's video section (aiortc's own offers have no AV1)."""
    return _with_video_lines(offer, [payload_type], [
        f"a=rtpmap:{payload_type} AV1/90000", f"a=rtcp-fb:{payload_type} nack",
        f"a=rtcp-fb:{payload_type} nack pli", f"a=rtcp-fb:{payload_type} transport-cc",
        f"a=fmtp:{payload_type} level-idx=5;profile={profile};tier=0"])


def with_h265(offer: str, payload_type: int = 104, profile_id: int | None = 1, rtx_payload_type: int | None = 105,
              fmtp: str | None = None) -> str:
    """Safari's H265 lines added to an offer's video section (aiortc's own offers have none): the payload type,
    its RTX when `rtx_payload_type`, and `fmtp` (else Safari's, with `profile_id`; None leaves it out)."""
    if fmtp is None and profile_id is not None:
        fmtp = f"level-id=93;profile-id={profile_id};tier-flag=0;tx-mode=SRST"
    added = [f"a=rtpmap:{payload_type} H265/90000", f"a=rtcp-fb:{payload_type} nack",
             f"a=rtcp-fb:{payload_type} nack pli", f"a=rtcp-fb:{payload_type} transport-cc"]
    if fmtp is not None:
        added.append(f"a=fmtp:{payload_type} {fmtp}")
    types = [payload_type]
    if rtx_payload_type is not None:
        added += [f"a=rtpmap:{rtx_payload_type} rtx/90000", f"a=fmtp:{rtx_payload_type} apt={payload_type}"]
        types.append(rtx_payload_type)
    return _with_video_lines(offer, types, added)


def only_video_types(offer: str, keep: set[str]) -> str:
    """The offer with every video payload type but those in `keep` taken out (its m= line entry and its lines):
    a WHEP client that receives, say, AV1 alone."""
    return _edit_video(
        offer, lambda fields: fields[:3] + [pt for pt in fields[3:] if pt in keep],
        kept=lambda line: not line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"))
        or line.split(":", 1)[1].split()[0] in keep)
