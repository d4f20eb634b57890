"""The media clock of one WHIP session: RTP timestamps of each track to ms on one timeline. Pure.

Each track has its own RTP clock (90 kHz for video, 48 kHz for Opus) starting at a random value and
wrapping at 2^32; unwrapped once here (`TimestampUnwrapper`, the same rule as RTMP's 32-bit time).

The tracks' clocks are unrelated, so they are tied together twice:
- at first by arrival: a track's first frame is placed at the wall time it arrived since the session's
  first frame (good to the network jitter, a few tens of ms on a good path);
- then by the publisher's RTCP sender reports (RFC 3550 6.4.1), which pair an RTP timestamp with the
  sender's NTP wall clock, the same clock for every track: once every track has one, the other tracks
  are moved so that their first frames sit where the sender captured them relative to the reference
  track's (video when there is video: it is never moved, since a step in video timestamps cannot be
  smoothed over by dropping a frame). The move happens once: a step of tens of ms (audio arrives behind
  its capture by its packet time and the jitter buffer) that the caller absorbs. A report that would
  move a track by more than `MAX_SYNC_STEP_MS` is not used: such a sender's reports do not describe
  capture time (aiortc's own sender, when its encoder falls behind, stamps reports with the send time),
  and arrival is the better guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..media.timestamps import TimestampUnwrapper, wrapping_delta

MAX_SYNC_STEP_MS = 300
NTP_FRACTION = 1 << 32


def ntp_seconds(ntp_timestamp: int) -> float:
    """A 64-bit NTP timestamp (32.32 fixed point) in seconds."""
    return (ntp_timestamp >> 32) + (ntp_timestamp & 0xFFFFFFFF) / NTP_FRACTION


@dataclass(slots=True)
class _Track:
    rate: int
    unwrapper: TimestampUnwrapper
    first: int | None = None
    """Unwrapped RTP time of the track's first frame."""
    base_ms: float = 0.0
    """Where `first` sits on the session's timeline."""
    report: tuple[int, float] | None = None
    """The newest sender report: (unwrapped RTP time, sender NTP seconds)."""


class SessionClock:
    """RTP time of every track of one session to ms on one timeline that starts at 0."""

    def __init__(self) -> None:
        self._tracks: dict[str, _Track] = {}
        self._origin_s: float | None = None
        self._reference: str | None = None
        self.synced = False
        """True once the sender reports placed the tracks."""
        self.sync_step_ms: dict[str, int] = {}
        """How far the reports moved each track (for the log)."""
        self.sync_ignored_ms: dict[str, int] = {}
        """Steps the reports asked for that were too large to believe."""

    def add_track(self, kind: str, clock_rate: int) -> None:
        self._tracks[kind] = _Track(clock_rate, TimestampUnwrapper())

    def position(self, kind: str, rtp_timestamp: int, arrival_s: float) -> int:
        """A frame's RTP timestamp, unwrapped in arrival order; its track starts here if it is the first."""
        track = self._tracks[kind]
        position = track.unwrapper.unwrap(rtp_timestamp)
        if track.first is None:
            track.first = position
            if self._origin_s is None:
                self._origin_s = arrival_s
                self._reference = kind
            track.base_ms = (arrival_s - self._origin_s) * 1000.0
            self._sync()
        return position

    def to_ms(self, kind: str, position: int) -> int:
        """Timeline ms of an unwrapped RTP time of `kind` (never below 0)."""
        track = self._tracks[kind]
        assert track.first is not None, "position() places a track's first frame"
        ms = track.base_ms + (position - track.first) * 1000.0 / track.rate
        return max(0, round(ms))

    def sender_report(self, kind: str, rtp_timestamp: int, ntp_timestamp: int) -> None:
        """An RTCP sender report of `kind`'s source."""
        track = self._tracks.get(kind)
        if track is None or track.unwrapper.last is None:
            return
        last = track.unwrapper.last
        # Unwrapped next to the newest frame, without moving the frames' unwrapper.
        position = last + wrapping_delta(rtp_timestamp & 0xFFFFFFFF, last & 0xFFFFFFFF)
        track.report = (position, ntp_seconds(ntp_timestamp))
        self._sync()

    def _sync(self) -> None:
        if self.synced or self._reference is None:
            return
        tracks = self._tracks
        if any(t.first is None or t.report is None for t in tracks.values()):
            return
        self.synced = True
        reference = "video" if "video" in tracks else self._reference
        ref = tracks[reference]

        def captured_s(t: _Track) -> float:
            assert t.first is not None and t.report is not None
            return t.report[1] + (t.first - t.report[0]) / t.rate

        for kind, track in tracks.items():
            if kind == reference:
                continue
            base = ref.base_ms + (captured_s(track) - captured_s(ref)) * 1000.0
            step = round(base - track.base_ms)
            if abs(step) <= MAX_SYNC_STEP_MS:
                track.base_ms = base
                self.sync_step_ms[kind] = step
            else:
                self.sync_ignored_ms[kind] = step
