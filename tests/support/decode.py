"""PyAV as the oracle: demux and decode what a viewer received, and report what a player would see.

`decode_media(data, "flv" | "mpegts")` decodes every packet and collects codecs, picture size, frame
counts, timestamps, keyframes and every error (exceptions and libav's own error log lines), so a test can
assert on the whole report and print it when something is off.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import av
import av.logging


@dataclass(slots=True)
class DecodeReport:
    container: str
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    video_frames: int = 0
    audio_frames: int = 0
    video_keyframes: int = 0
    first_video_frame_key: bool | None = None
    video_pts_ms: list[float] = field(default_factory=list)
    """Decoded pictures' presentation times, in output order."""
    audio_pts_ms: list[float] = field(default_factory=list)
    video_dts_ms: list[float] = field(default_factory=list)
    """Demuxed video packets' decode times, in stream order."""
    audio_dts_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def span(values: list[float]) -> str:
            return f"{values[0]:.0f}..{values[-1]:.0f} ms" if values else "-"

        return (
            f"{self.container}: video={self.video_codec} {self.width}x{self.height} frames={self.video_frames} "
            f"keyframes={self.video_keyframes} first_key={self.first_video_frame_key} pts={span(self.video_pts_ms)}; "
            f"audio={self.audio_codec} {self.sample_rate}Hz/{self.channels}ch frames={self.audio_frames} "
            f"pts={span(self.audio_pts_ms)}; errors={self.errors[:5]}"
        )

    @property
    def video_span_ms(self) -> float:
        return self.video_pts_ms[-1] - self.video_pts_ms[0] if self.video_pts_ms else 0.0

    def non_monotonic(self) -> list[str]:
        """Where timestamps go backwards: decode times of packets, presentation times of decoded frames."""
        problems = []
        for name, values, strict in (
            ("video dts", self.video_dts_ms, True), ("audio dts", self.audio_dts_ms, False),
            ("video pts (output order)", self.video_pts_ms, True), ("audio pts", self.audio_pts_ms, False),
        ):
            for i in range(1, len(values)):
                if values[i] < values[i - 1] or (strict and values[i] == values[i - 1]):
                    problems.append(f"{name}[{i}] {values[i]:.1f} after {values[i - 1]:.1f}")
                    break
        return problems


def _ms(ts: int | None, time_base) -> float | None:
    return None if ts is None else float(ts * time_base * 1000)


def decode_media(data: bytes | bytearray, container_format: str) -> DecodeReport:
    """Demux and decode all of `data` ("flv" or "mpegts"); never raises for bad media, reports instead."""
    report = DecodeReport(container=container_format)
    previous_level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs:
            try:
                _decode_into(report, bytes(data), container_format)
            except Exception as err:  # PyAV raises more than FFmpegError on hostile input (IndexError, ...)
                report.errors.append(f"demuxing failed: {type(err).__name__}: {err}")
        for level, name, message in logs:
            if level <= av.logging.ERROR:
                report.errors.append(f"libav {name}: {message.strip()}")
    finally:
        av.logging.set_level(previous_level)
    return report


def _decode_into(report: DecodeReport, data: bytes, container_format: str) -> None:
    with av.open(io.BytesIO(data), mode="r", format=container_format) as container:
        for stream in container.streams:
            cc = stream.codec_context
            if stream.type == "video":
                report.video_codec = cc.name
            elif stream.type == "audio":
                report.audio_codec = cc.name
                report.sample_rate = cc.sample_rate
                report.channels = cc.channels
        for packet in container.demux():
            kind = packet.stream.type
            if packet.size:
                dts = _ms(packet.dts, packet.time_base)
                if dts is not None:
                    (report.video_dts_ms if kind == "video" else report.audio_dts_ms).append(dts)
            try:
                frames = packet.decode()
            except av.error.FFmpegError as err:
                report.errors.append(f"decoding a {kind} packet at dts {packet.dts}: {err}")
                continue
            for frame in frames:
                pts = _ms(frame.pts, frame.time_base)
                if kind == "video":
                    if report.first_video_frame_key is None:
                        report.first_video_frame_key = bool(frame.key_frame)
                    report.video_frames += 1
                    report.video_keyframes += bool(frame.key_frame)
                    report.width, report.height = frame.width, frame.height
                    if pts is not None:
                        report.video_pts_ms.append(pts)
                elif kind == "audio":
                    report.audio_frames += 1
                    if pts is not None:
                        report.audio_pts_ms.append(pts)
