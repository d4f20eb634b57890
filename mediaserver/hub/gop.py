"""GopCache: the stream's shared frame log, read by every viewer through its own cursor.

Frames are appended once and never copied; a viewer is a cursor (an absolute index) into this log, so
fan-out costs nothing per viewer when a frame arrives. The log keeps:
- the latest GOP, from the newest video keyframe (for late joiners), bounded by frames, bytes and media
  duration; a GOP over a bound is given up until the next keyframe (late joiners then wait for it);
- for audio-only streams, the last `audio_only_ms` of audio instead of a GOP;
- the recent past that slow viewers may still be reading: `window_ms` of media and `window_bytes`;
- `history_ms` of media for packagers that start when their first viewer asks (bounded by bytes too).
Anything older is trimmed. A viewer whose cursor fell behind the trimmed start (or lags by more than the
window) has overflowed; the Subscriber decides what that means.

Sequence headers and metadata are appended too (so viewers in sync see changes inline) but a late joiner
gets them from StreamInfo, which is kept apart from the GOP. They are not media: `newest_dts` and a
viewer's lag are measured between media frames only (ARCHITECTURE.md section 4), so a metadata object
sent mid-stream never makes a viewer look behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..media.frames import Frame, FrameKind


@dataclass(frozen=True, slots=True)
class GopLimits:
    max_gop_ms: int = 12_000
    max_gop_frames: int = 2_000
    max_gop_bytes: int = 64 * 1024 * 1024
    audio_only_ms: int = 1_000
    window_ms: int = 3_000
    window_bytes: int = 16 * 1024 * 1024
    window_frames: int = 50_000
    """Frames kept at most, whatever their size: a stream sends a few hundred a second, and each Frame costs
    about 200 bytes beyond its tag (16 MB of 3-byte frames would otherwise be 900,000 of them)."""
    history_ms: int = 0
    """Media kept for packagers that start on demand: enough to list a full playlist at once."""


class GopCache:
    __slots__ = ("limits", "_frames", "_ends", "base", "gop_start", "has_video", "newest_dts", "bytes_appended",
                 "newest_keyframe", "keyframe_interval_ms")

    def __init__(self, limits: GopLimits | None = None) -> None:
        self.limits = limits or GopLimits()
        self._frames: list[Frame] = []
        self._ends: list[int] = []  # running total of bytes appended, at the end of each frame
        self.base = 0  # absolute index of self._frames[0]
        self.gop_start: int | None = None  # absolute index of the newest usable video keyframe
        self.has_video = False
        self.newest_dts = 0
        """Decode time of the newest media frame (metadata and sequence headers do not count)."""
        self.bytes_appended = 0
        self.newest_keyframe: Frame | None = None
        """The newest video keyframe, kept even when its GOP went over a bound (thumbnails, health)."""
        self.keyframe_interval_ms: int | None = None
        """Media time between the two newest video keyframes; None before the second one."""

    @property
    def end(self) -> int:
        """Absolute index one past the newest frame."""
        return self.base + len(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def retained_bytes(self) -> int:
        if not self._frames:
            return 0
        return self.bytes_appended - (self._ends[0] - self._frames[0].size)

    def append(self, frame: Frame) -> None:
        self._frames.append(frame)
        self.bytes_appended += frame.size
        self._ends.append(self.bytes_appended)
        if not frame.is_config and frame.dts_ms > self.newest_dts:  # metadata frames are configs too
            self.newest_dts = frame.dts_ms
        if frame.kind == FrameKind.VIDEO and not frame.is_config:
            if not self.has_video:
                self.has_video = True
                self.gop_start = None
            if frame.keyframe:
                self.gop_start = self.end - 1
                if not frame.is_end:
                    previous = self.newest_keyframe
                    if previous is not None and frame.dts_ms > previous.dts_ms:
                        self.keyframe_interval_ms = frame.dts_ms - previous.dts_ms
                    self.newest_keyframe = frame
        self._enforce_gop_limits()
        self._trim()

    def _enforce_gop_limits(self) -> None:
        start = self.gop_start
        if start is None:
            return
        lim = self.limits
        i = start - self.base
        first = self._frames[i]
        if (
            self.end - start > lim.max_gop_frames
            or self.bytes_appended - (self._ends[i] - first.size) > lim.max_gop_bytes
            or self.newest_dts - first.dts_ms > lim.max_gop_ms
        ):
            self.gop_start = None

    def _trim(self) -> None:
        frames = self._frames
        lim = self.limits
        keep_dts = self.newest_dts - max(lim.window_ms, lim.history_ms)
        if not self.has_video:
            keep_dts = min(keep_dts, self.newest_dts - lim.audio_only_ms)
        keep_bytes_from = self.bytes_appended - lim.window_bytes
        crowded = len(frames) > lim.window_frames
        if frames[0].dts_ms >= keep_dts and self._ends[0] > keep_bytes_from and not crowded:
            return  # nearly always (the oldest frame is still wanted): per frame, so no more work than that
        drop = 0
        if crowded or self._ends[0] <= keep_bytes_from:
            # Over the byte or frame bound (a flood of tiny frames): go a sixteenth under it, so the log is
            # shifted once per window/16 frames instead of once per frame (quadratic at 900,000 frames).
            keep_bytes_from += lim.window_bytes // 16
            drop = len(frames) - (lim.window_frames - lim.window_frames // 16)
        protect = self.gop_start - self.base if self.gop_start is not None else len(frames)
        limit = min(protect, len(frames) - 1)
        n = max(0, min(drop, limit))
        while n < limit and (frames[n].dts_ms < keep_dts or self._ends[n] <= keep_bytes_from):
            n += 1
        if n:
            del frames[:n]
            del self._ends[:n]
            self.base += n

    def late_joiner_start(self) -> int:
        """Where a new viewer starts: the newest GOP, the recent audio of an audio-only stream, or the
        live edge (waiting for the next keyframe) when no usable GOP is cached."""
        if self.has_video:
            return self.gop_start if self.gop_start is not None else self.end
        floor = self.newest_dts - self.limits.audio_only_ms
        for i, f in enumerate(self._frames):
            if f.dts_ms >= floor and not f.is_config:
                return self.base + i
        return self.end

    def history_start(self) -> int:
        """Where a packager starting now replays from: the oldest kept video keyframe (the oldest kept
        frame of an audio-only stream); the live edge when nothing usable is kept."""
        for i, f in enumerate(self._frames):
            if f.is_config or f.kind == FrameKind.DATA:
                continue
            if not self.has_video or (f.kind == FrameKind.VIDEO and f.keyframe):
                return self.base + i
        return self.end

    def frames_from(self, index: int) -> list[Frame]:
        """Frames from absolute `index` to the end; `index` must be >= base."""
        return self._frames[index - self.base :]

    def dts_at(self, index: int) -> int:
        return self._frames[index - self.base].dts_ms

    def media_dts_from(self, index: int) -> int | None:
        """Decode time of the first media frame at or after absolute `index` (metadata and sequence
        headers skipped); None when only such frames follow."""
        frames = self._frames
        i = index - self.base
        frame = frames[i]
        if not frame.is_config:  # nearly always: the one per-viewer read on the fan-out path stays cheap
            return frame.dts_ms
        for i in range(i + 1, len(frames)):
            if not frames[i].is_config:
                return frames[i].dts_ms
        return None

    def bytes_before(self, index: int) -> int:
        """Running byte total at the start of absolute `index` (which may equal end)."""
        i = index - self.base
        if i >= len(self._frames):
            return self.bytes_appended
        return self._ends[i] - self._frames[i].size

    def gop_bytes(self) -> int:
        if self.gop_start is None:
            return 0
        return self.bytes_appended - self.bytes_before(self.gop_start)
