"""An encoder's own ladder: the extra video tracks of an Enhanced RTMP v2 multitrack publisher, published
as renditions STREAM@LABEL beside the source (track 0), at no transcoding cost.

Each extra track becomes a stream of its own in the registry, with the publisher's audio (track 0's, the
same frames) so it plays on its own like a transcoded rendition; outputs, late joiners and edges treat it
as any stream. A track's label is chosen when its first sequence header tells its picture height (the
composition root passes `label_for`: the ladder rung of that height, else "HEIGHTp"); until then its
frames are dropped (nothing could decode them). Timestamps are the publisher's, as the source's.

Alignment is checked, not assumed: a rendition keyframe whose presentation time is not one of the
source's recent keyframes is logged (once per track per interval), since players switching between
misaligned renditions show gaps or repeats.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import MediaError
from ..log import LogGate, event
from ..media import av1, flv_body, h264, hevc, multitrack
from ..media.frames import Frame
from .registry import PublishRefused, StreamRegistry
from .stream import Stream, StreamKey

log = logging.getLogger(__name__)

LabelFor = Callable[[int, int], str]
"""(track id, picture height) -> the rendition's label."""
_KEYFRAMES_KEPT = 64
_MISALIGNED_LOG_S = 30.0


def default_label(track_id: int, height: int) -> str:
    return f"{height}p" if height > 0 else f"track{track_id}"


def config_height(codec: str, record: bytes) -> int:
    """The picture height a sequence header announces, 0 when it cannot tell."""
    try:
        if codec == "h264":
            return h264.parse_sps(h264.parse_avc_config(record).sps[0]).height
        if codec == "hevc":
            config = hevc.parse_hevc_config(record)
            return hevc.parse_hevc_sps(config.sps[0]).height
        if codec == "av1":
            header = av1.sequence_header_of(av1.parse_av1_config(record))
            return header.height if header is not None else 0
    except (MediaError, IndexError, AttributeError):
        return 0
    return 0


@dataclass(slots=True)
class _Track:
    track_id: int
    stream: Stream | None = None
    label: str = ""


class TrackPublisher:
    """The publisher of one extra track's rendition stream: ends with the source's publisher."""

    def __init__(self, owner: TrackRenditions, track_id: int, peer: str) -> None:
        self.owner = owner
        self.track_id = track_id
        self.peer = f"{peer} (track {track_id})"

    def close(self, reason: str) -> None:
        self.owner.drop_track(self.track_id, reason)


class TrackRenditions:
    """The fan-out of one multitrack publisher session. Synchronous, like Stream.publish_*."""

    def __init__(self, registry: StreamRegistry, source: Stream, peer: str, label_for: LabelFor = default_label) -> None:
        self.registry = registry
        self.source = source
        self.peer = peer
        self.label_for = label_for
        self._tracks: dict[int, _Track] = {}
        self._source_keyframes: deque[int] = deque(maxlen=_KEYFRAMES_KEPT)
        self._source_pts = -1
        """The newest presentation time of the source's video: a rendition keyframe at or before it is judged."""
        self._pending: deque[tuple[_Track, int]] = deque(maxlen=_KEYFRAMES_KEPT)
        self._log = LogGate(_MISALIGNED_LOG_S)
        self.misaligned = 0

    @property
    def renditions(self) -> list[Stream]:
        return [t.stream for t in self._tracks.values() if t.stream is not None]

    def publish_video(self, ts_ms: int, body: bytes | memoryview, now: float) -> Frame | None:
        """One video message: track 0 goes to the source (whose frame is returned), others to their
        renditions. Raises MediaError for a malformed message, as Stream.publish_video does."""
        main: Frame | None = None
        # A message that is not multitrack (a legacy FLV one too: an encoder may send its first track so) is the
        # source's own.
        tracks = multitrack.split_video(body) if multitrack.is_video_multitrack(body) else [(0, body)]
        for track_id, single in tracks:
            if track_id == 0:
                main = self.source.publish_video(ts_ms, single, now)
                if main is not None and not main.is_config:
                    if main.keyframe:
                        self._source_keyframes.append(main.pts_ms)
                    self._source_pts = max(self._source_pts, main.pts_ms)
                    while self._pending and self._pending[0][1] <= self._source_pts:
                        self._judge(*self._pending.popleft())
                continue
            self._publish_track(track_id, ts_ms, single, now)
        return main

    def publish_audio(self, ts_ms: int, body: bytes | memoryview, now: float) -> Frame | None:
        """One audio message: the source's audio goes to the source and every rendition; extra audio
        tracks are not carried (one audio rendition for all, as transcoded ladders have)."""
        main: Frame | None = None
        for track_id, single in multitrack.split_audio(body) if multitrack.is_audio_multitrack(body) else [(0, body)]:
            if track_id != 0:
                continue
            main = self.source.publish_audio(ts_ms, single, now)
            for track in self._tracks.values():
                if track.stream is not None and not track.stream.ended:
                    track.stream.publish_audio(ts_ms, single, now)
        return main

    def publish_metadata(self, body: bytes, values: dict, now: float) -> None:
        self.source.publish_metadata(body, values, now)

    def _publish_track(self, track_id: int, ts_ms: int, single: bytes, now: float) -> None:
        track = self._tracks.get(track_id)
        if track is None:
            if len(self._tracks) >= multitrack.MAX_TRACKS:
                return
            track = self._tracks[track_id] = _Track(track_id)
        if track.stream is None:
            frame = flv_body.video_frame(single, ts_ms)
            if frame is None or not frame.is_config:
                return  # nothing decodes before the track's sequence header
            if not self._open(track, frame):
                return
        stream = track.stream
        if stream is None or stream.ended:
            return
        frame = stream.publish_video(ts_ms, single, now)
        if frame is not None and frame.keyframe:
            self._check_alignment(track, frame.pts_ms)

    def _open(self, track: _Track, config: Frame) -> bool:
        height = config_height(config.codec, bytes(config.payload))
        label = self.label_for(track.track_id, height)
        taken = {t.label for t in self._tracks.values() if t is not track}
        if label in taken:
            label = f"{label}-{track.track_id}"
        key = StreamKey(self.source.key.app, f"{self.source.key.name}@{label}")
        try:
            track.stream = self.registry.claim_publisher(key, TrackPublisher(self, track.track_id, self.peer))
        except PublishRefused as err:
            event(log, "multitrack_rendition_refused", logging.WARNING, stream=str(key), reason=str(err))
            track.stream = None
            self._tracks.pop(track.track_id, None)
            return False
        track.label = label
        for frame in (self.source.info.audio_config,):
            if frame is not None:  # the rendition plays on its own: it needs the audio config too
                track.stream.publish_audio(frame.dts_ms, bytes(frame.body), self.registry.clock())
        event(log, "multitrack_rendition", stream=str(key), track=track.track_id, codec=config.codec, height=height)
        return True

    def _check_alignment(self, track: _Track, pts_ms: int) -> None:
        if pts_ms > self._source_pts:
            self._pending.append((track, pts_ms))  # the source's picture of that instant has not come yet
        else:
            self._judge(track, pts_ms)

    def _judge(self, track: _Track, pts_ms: int) -> None:
        if not self._source_keyframes or pts_ms in self._source_keyframes or pts_ms < self._source_keyframes[0]:
            return
        self.misaligned += 1
        count = self._log.should_log(track.track_id, self.registry.clock())
        if count:
            event(log, "multitrack_misaligned", logging.WARNING, stream=str(self.source.key), track=track.track_id,
                  keyframe_pts_ms=pts_ms, misaligned=count,
                  hint="set the encoder's keyframe interval in seconds (not per track), so every track's "
                       "keyframes fall on the same frames")

    def flush_sinks(self) -> None:
        for stream in self.renditions:
            stream.flush_sinks()

    def drop_track(self, track_id: int, reason: str) -> None:
        track = self._tracks.pop(track_id, None)
        if track is not None and track.stream is not None:
            stream, track.stream = track.stream, None
            if stream.publisher is not None and isinstance(stream.publisher, TrackPublisher):
                self.registry.release_publisher(stream, stream.publisher)

    def close(self) -> None:
        """The source's publisher left: its renditions wait out the grace with it (a reconnect resumes)."""
        for track_id in list(self._tracks):
            self.drop_track(track_id, "publisher_left")

