"""Frames a packager could not use: skipped, counted on the stream, logged once per interval.

Bad media from a publisher never stops a packager (ARCHITECTURE.md section 4). The segmenters raise
MediaError for a frame or sequence header they cannot parse and are then as they were, so a packager
skips that one frame and goes on; its output recovers at the next good keyframe or config. This holds
the count and the log line for both packagers (MPEG-TS HLS and CMAF), so neither floods the log: one
line per stream and format per interval, saying how many frames it stands for. The total is on the
stream (`Stream.frames_skipped`, in its snapshot, which the admin API serves).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..errors import MediaError
from ..hub.stream import Stream
from ..log import LogGate, event
from ..media.frames import Frame, FrameKind

log = logging.getLogger(__name__)

_TRACKS = {FrameKind.VIDEO: "video", FrameKind.AUDIO: "audio", FrameKind.DATA: "data"}


class SkippedFrames:
    """One packager's skipped frames: counted here and on its stream, logged through a shared gate."""

    def __init__(self, stream: Stream, output: str, gate: LogGate | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self.key = str(stream.key)
        self.output = output
        """The packager's format: "hls" or "cmaf"."""
        self._gate = gate if gate is not None else LogGate()
        self._clock = clock
        self.count = 0

    def skip(self, frame: Frame, err: MediaError) -> None:
        self.count += 1
        self._stream.count_skipped(self.output)
        frames = self._gate.should_log(("packager_frame_skipped", self.output, self.key), self._clock())
        if frames:
            event(
                log, "packager_frame_skipped", logging.WARNING, stream=self.key, format=self.output, frames=frames,
                interval_s=self._gate.interval_s, track=_TRACKS.get(frame.kind, str(int(frame.kind))),
                codec=frame.codec, config=frame.is_config, keyframe=frame.keyframe, error=str(err),
                action="skipped; the output goes on from the next good keyframe or config",
            )
