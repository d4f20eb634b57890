"""A rendition ladder without a transcoder, for tests of the ABR outputs.

`encode_ladder` encodes one test pattern (and a tone) at several sizes with ffmpeg, keyframes at the same
frames in each: the source with B-frames, every rung without, stamped with the source's presentation
times and carrying the source's audio, which is what the transcoder publishes as STREAM@LABEL.
`LadderPublisher` puts the streams into a StreamRegistry as relay publishers do: all at once
(`publish_all`, renditions interleaved some `lag_ms` behind the source as a transcoder's output comes), or
paced in real time and looped (`run`, for players). `LadderService` is an AbrService over those streams
(or one that refuses), so the edge is tested as the TranscodePool will drive it.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import Stream, StreamKey
from mediaserver.media.flv_body import video_frame
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.transcode.service import AbrRefusal, RenditionView

from .codec_clips import config_frame, media_frames, read_flv_frames
from .media import ffmpeg_exe


@dataclass(frozen=True, slots=True)
class Rung:
    label: str
    width: int
    height: int
    video_kbps: int


@dataclass
class Ladder:
    """Frames per stream: None is the source, a label a rendition; each list starts with its configs."""

    streams: dict[str | None, list[Frame]]
    rungs: list[Rung]
    duration_ms: int
    """The clip's length: a loop continues this much later."""
    source: Rung


def _encode(path: Path, rung: Rung, *, seconds: float, fps: int, gop: int, bframes: int, audio: bool) -> list[Frame]:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={rung.width}x{rung.height}:rate={fps}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    kbps = rung.video_kbps
    cmd += ["-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", str(bframes),
            "-x264-params", "b-adapt=0", "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k"]
    cmd += ["-c:a", "aac", "-b:a", "64k", "-ac", "2", "-ar", "48000"] if audio else ["-an"]
    cmd += ["-f", "flv", str(path)]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    return read_flv_frames(path.read_bytes())


def encode_ladder(workdir: Path, source: Rung, rungs: list[Rung], *, seconds: float = 4.0, fps: int = 25,
                  gop: int = 25) -> Ladder:
    """The source (2 B-frames) and each rung (none), keyframes every `gop` frames in all."""
    workdir.mkdir(parents=True, exist_ok=True)
    top = _encode(workdir / "source.flv", source, seconds=seconds, fps=fps, gop=gop, bframes=2, audio=True)
    by_pts = sorted(media_frames(top, FrameKind.VIDEO), key=lambda f: f.pts_ms)
    audio = [config_frame(top, FrameKind.AUDIO)]
    sound = media_frames(top, FrameKind.AUDIO)
    streams: dict[str | None, list[Frame]] = {None: [f for f in top if f.kind != FrameKind.DATA]}
    for rung in rungs:
        own = _encode(workdir / f"{rung.label}.flv", rung, seconds=seconds, fps=fps, gop=gop, bframes=0, audio=False)
        pictures = media_frames(own, FrameKind.VIDEO)
        if len(pictures) != len(by_pts):
            raise AssertionError(f"rung {rung.label} has {len(pictures)} pictures, the source {len(by_pts)}")
        video = []
        for picture, shown in zip(pictures, by_pts):
            if picture.keyframe != shown.keyframe:
                raise AssertionError(f"rung {rung.label}: keyframes not at the source's")
            rebuilt = video_frame(bytes(picture.body), shown.pts_ms)  # no B-frames: dts = pts
            assert rebuilt is not None and rebuilt.cts_ms == 0
            video.append(rebuilt)
        timed = sorted(video + sound, key=lambda f: f.dts_ms)
        streams[rung.label] = [config_frame(own, FrameKind.VIDEO), *audio, *timed]
    return Ladder(streams, rungs, round(seconds * 1000), source)


class _Relay:
    """A relay publisher's identity in the registry."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.closed: str | None = None

    def close(self, reason: str) -> None:
        self.closed = reason


@dataclass
class LadderPublisher:
    """Publishes a Ladder under APP/NAME and APP/NAME@LABEL into `registry`."""

    registry: StreamRegistry
    ladder: Ladder
    app: str = "live"
    name: str = "demo"
    lag_ms: int = 300
    """How far behind the source a rendition's frames arrive (the transcode delay)."""
    streams: dict[str | None, Stream] = field(default_factory=dict)

    def key(self, label: str | None = None) -> StreamKey:
        return StreamKey(self.app, self.name if label is None else f"{self.name}@{label}")

    def start(self, labels: list[str | None] | None = None) -> None:
        for label in self.ladder.streams if labels is None else labels:
            self.streams[label] = self.registry.claim_publisher(self.key(label), _Relay(f"test:{label or 'source'}"))

    def _schedule(self, loop_number: int = 0) -> list[tuple[int, int, str | None, Frame]]:
        """(arrival ms, order, label, frame) of one pass over the clip, shifted by `loop_number` clips."""
        out = []
        offset = loop_number * self.ladder.duration_ms
        for order, (label, frames) in enumerate(self.ladder.streams.items()):
            lag = 0 if label is None else self.lag_ms
            for frame in frames:
                if frame.is_config and loop_number:
                    continue
                out.append((frame.dts_ms + offset + lag, order, label, frame))
        out.sort(key=lambda e: (e[0], e[1]))
        return out

    def publish(self, label: str | None, frame: Frame, offset_ms: int, now: float) -> None:
        stream = self.streams.get(label)
        if stream is None or stream.ended:
            return
        if frame.kind == FrameKind.VIDEO:
            stream.publish_video(frame.dts_ms + offset_ms, bytes(frame.body), now)
        else:
            stream.publish_audio(frame.dts_ms + offset_ms, bytes(frame.body), now)
        stream.flush_sinks()

    def publish_all(self, *, until_ms: int | None = None) -> None:
        """One pass over the clip at once (frames arriving after `until_ms` are left out)."""
        now = time.monotonic()
        for at, _, label, frame in self._schedule():
            if until_ms is not None and at > until_ms:
                break
            self.publish(label, frame, 0, now)

    async def run(self, loops: int = 1000) -> None:
        """Publish in real time, looping the clip with continuous timestamps, until cancelled."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        for number in range(loops):
            offset = number * self.ladder.duration_ms
            for at, _, label, frame in self._schedule(number):
                delay = started + at / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.publish(label, frame, offset, time.monotonic())

    def end(self) -> None:
        for stream in self.streams.values():
            publisher = stream.publisher
            if publisher is not None:
                self.registry.release_publisher(stream, publisher)


@dataclass
class LadderService:
    """An AbrService over the streams a LadderPublisher publishes; `refusal` makes it refuse instead."""

    publisher: LadderPublisher
    refusal: AbrRefusal | None = None
    enabled: bool = True
    calls: list[tuple[StreamKey, bool]] = field(default_factory=list)

    def enabled_for(self, source: StreamKey) -> bool:
        return self.enabled

    async def renditions(self, source: StreamKey, *, start: bool = True) -> list[RenditionView] | AbrRefusal:
        self.calls.append((source, start))
        if self.refusal is not None:
            return self.refusal
        pub = self.publisher
        if source != pub.key():
            return AbrRefusal(404, "no_source", f"{source} is not transcoded", "publish it first")
        views = []
        for rung in pub.ladder.rungs:
            stream = pub.registry.get(pub.key(rung.label))
            if stream is not None and not stream.ended and stream.info.video_config is not None:
                views.append(RenditionView(rung.label, stream.key, rung.width, rung.height,
                                           (rung.video_kbps + 64) * 1000, "h264"))
        return views
