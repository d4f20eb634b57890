"""Stream health: is the picture black, is it frozen, is the sound silent, and for how long.

Pure: numpy measures on a (downscaled) luma plane and on decoded audio samples, and the time logic that
turns observations into flags. No decoding, no asyncio, no clock: `now` is passed in (monotonic seconds).

- Black: the mean luma is at most `black_luma` and nearly every pixel is dark (the 99th percentile within
  `BLACK_SPREAD` of the threshold), so a dark scene with a bright title is not black.
- Frozen: the mean absolute difference between this sampled picture and the previous one is below
  `FROZEN_MAD` (of 255). Measured on small luma planes: scaling down averages out encoder noise, which
  re-encoding one still picture as a new keyframe leaves behind.
- Silent: the RMS level of the audio since the last sample is below `silence_dbfs`.

A condition is flagged once it has been observed without a break for its `*_after` time, and cleared at
the first observation without it. No observation (no new keyframe, no audio since the last sample)
leaves a condition as it was: a stream whose publisher stalls keeps its flags until it sends again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import HealthConfig

CONDITIONS = ("black", "frozen", "silent")
BLACK_SPREAD = 16
"""How far above `black_luma` the brightest 1 % of a black picture's pixels may be (noise, a faint logo)."""
FROZEN_MAD = 0.5
"""Mean absolute luma difference (0-255) below which two sampled pictures count as the same picture."""
SILENCE_FLOOR_DBFS = -120.0
"""The level reported for digital silence (log of zero)."""


def is_black(luma: np.ndarray, black_luma: int) -> bool:
    if luma.size == 0:
        return False
    if float(luma.mean()) > black_luma:
        return False
    return float(np.percentile(luma, 99)) <= black_luma + BLACK_SPREAD


def picture_change(luma: np.ndarray, previous: np.ndarray | None) -> float | None:
    """Mean absolute difference (0-255) to the previous sampled picture; None when there is none to
    compare with (the first sample, or the picture size changed)."""
    if previous is None or previous.shape != luma.shape:
        return None
    return float(np.abs(luma.astype(np.int16) - previous.astype(np.int16)).mean())


def rms_dbfs(samples: np.ndarray) -> float:
    """The RMS level of float samples in -1..1 (any shape), in dB relative to full scale."""
    if samples.size == 0:
        return SILENCE_FLOOR_DBFS
    mean_square = float(np.mean(np.square(samples, dtype=np.float64)))
    if mean_square <= 0.0:
        return SILENCE_FLOOR_DBFS
    return max(SILENCE_FLOOR_DBFS, 10.0 * float(np.log10(mean_square)))


@dataclass(frozen=True, slots=True)
class HealthChange:
    """A condition was flagged ("start") or cleared ("end")."""

    condition: str
    state: str
    """"start" or "end"."""
    since: float
    """When the condition was first observed (monotonic seconds)."""
    at: float
    """When the change was decided (monotonic seconds)."""

    @property
    def duration_s(self) -> float:
        return self.at - self.since


class ConditionTimer:
    """One condition's time logic: observed without a break for `after_s` -> flagged; absent -> cleared."""

    __slots__ = ("name", "after_s", "since", "flagged")

    def __init__(self, name: str, after_s: float) -> None:
        self.name = name
        self.after_s = after_s
        self.since: float | None = None
        """When the current run of observations of the condition began; None while it is absent."""
        self.flagged = False

    def observe(self, present: bool, now: float) -> HealthChange | None:
        if present:
            if self.since is None:
                self.since = now
            if not self.flagged and now - self.since >= self.after_s:
                self.flagged = True
                return HealthChange(self.name, "start", self.since, now)
            return None
        since, self.since = self.since, None
        if self.flagged:
            self.flagged = False
            assert since is not None
            return HealthChange(self.name, "end", since, now)
        return None

    def end(self, now: float) -> HealthChange | None:
        """The stream ended: a flagged condition ends with it."""
        return self.observe(False, now)


class HealthDetector:
    """The three conditions of one stream, fed with what each sample measured."""

    def __init__(self, cfg: HealthConfig) -> None:
        self.cfg = cfg
        self.timers = {
            "black": ConditionTimer("black", cfg.black_after),
            "frozen": ConditionTimer("frozen", cfg.frozen_after),
            "silent": ConditionTimer("silent", cfg.silence_after),
        }
        self._previous: np.ndarray | None = None

    def observe_picture(self, luma: np.ndarray, now: float) -> list[HealthChange]:
        """A newly sampled picture's luma plane (downscaled; the same size from sample to sample)."""
        changes = [self.timers["black"].observe(is_black(luma, self.cfg.black_luma), now)]
        change = picture_change(luma, self._previous)
        self._previous = luma
        if change is not None:
            changes.append(self.timers["frozen"].observe(change < FROZEN_MAD, now))
        return [c for c in changes if c is not None]

    def observe_sound(self, level_dbfs: float, now: float) -> list[HealthChange]:
        """The RMS level of the audio that arrived since the last sample."""
        change = self.timers["silent"].observe(level_dbfs < self.cfg.silence_dbfs, now)
        return [change] if change is not None else []

    def end(self, now: float) -> list[HealthChange]:
        return [c for t in self.timers.values() if (c := t.end(now)) is not None]

    def flags(self) -> dict[str, float | None]:
        """Condition -> when its flagged run began (monotonic seconds), or None when it is not flagged."""
        return {name: (t.since if t.flagged else None) for name, t in self.timers.items()}
