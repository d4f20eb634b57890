"""Checks shared by the end-to-end tests: timelines of received tags, waiting for a stream to be live."""

from __future__ import annotations

from mediaserver.media.frames import FrameKind
from mediaserver.remux.flv import FlvTag

from .server import ServerProcess


def is_media(tag: FlvTag) -> bool:
    """Audio or video that plays: not metadata, not a sequence header, not an end-of-sequence marker."""
    if tag.kind == FrameKind.DATA or tag.is_sequence_header:
        return False
    b = tag.body
    if tag.kind == FrameKind.VIDEO and len(b) >= 2:
        if b[0] & 0x80:
            return b[0] & 0x0F in (1, 3)  # Enhanced RTMP CodedFrames(X)
        if b[0] & 0x0F in (7, 12):
            return b[1] == 1  # AVC/HEVC NALU, not an end of sequence
    return True


def track_timestamps(tags: list[FlvTag], kind: int) -> list[int]:
    return [t.timestamp_ms for t in tags if t.kind == kind and is_media(t)]


def timeline_problems(tags: list[FlvTag]) -> list[str]:
    """Where a track's decode timestamps go backwards (RTMP/FLV carry dts, which never decreases)."""
    problems = []
    for kind, name in ((FrameKind.VIDEO, "video"), (FrameKind.AUDIO, "audio")):
        ts = track_timestamps(tags, kind)
        for i in range(1, len(ts)):
            if ts[i] < ts[i - 1]:
                problems.append(f"{name} tag {i}: {ts[i]} ms after {ts[i - 1]} ms")
    return problems[:10]


def largest_gap_ms(timestamps: list[int]) -> int:
    return max((b - a for a, b in zip(timestamps, timestamps[1:])), default=0)


async def wait_live(server: ServerProcess, name: str, timeout_s: float = 10.0, app: str = "live") -> FlvTag:
    """Wait until the stream serves media over HTTP-FLV (a short-lived viewer sees one media tag);
    returns that first media tag."""
    async with server.flv_viewer(name, app, live_timeout_s=timeout_s) as viewer:
        ok = await viewer.wait_until(lambda v: any(is_media(t) for t in v.tags), timeout_s)
        assert ok, f"stream {app}/{name} sent no media within {timeout_s} s; got {viewer.describe_start()}"
        return next(t for t in viewer.tags if is_media(t))
