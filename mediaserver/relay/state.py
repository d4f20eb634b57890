"""A push's state, pure: connecting, live, retrying (with the last error and when the next attempt is
due), stopped; its counters; and the capped exponential backoff between attempts."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


def error_kind(error: str) -> str:
    """What a relay's retrying is reported once for: the error's text before its first colon. A peer that
    sends garbage words each attempt's error with the bytes it sent, and would be reported at every attempt."""
    return error.partition(":")[0]


class RelayState(Enum):
    CONNECTING = "connecting"
    LIVE = "live"
    RETRYING = "retrying"
    STOPPED = "stopped"


@dataclass(slots=True)
class Backoff:
    """initial, 2x, 4x ... capped at `cap` seconds; `reset` after the target kept a push going."""

    initial: float = 1.0
    cap: float = 30.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


@dataclass(slots=True)
class RelayStatus:
    state: RelayState = RelayState.CONNECTING
    error: str | None = None
    """Why the last attempt failed (or why the push stopped); None while all is well."""
    since: float = 0.0
    """When the state was entered (monotonic seconds)."""
    retry_at: float | None = None
    reconnects: int = 0
    """Attempts after the first (each retry of a failed or dropped connection)."""
    live_since: float | None = None

    def connecting(self, now: float) -> bool:
        if self.state is RelayState.RETRYING:
            self.reconnects += 1
        return self._enter(RelayState.CONNECTING, now, keep_error=True)

    def live(self, now: float) -> bool:
        self.live_since = now
        return self._enter(RelayState.LIVE, now)

    def retrying(self, error: str, now: float, delay: float) -> bool:
        """Returns whether this is news (a new state, or another error than the last)."""
        news = self.state is not RelayState.RETRYING or self.error != error
        self._enter(RelayState.RETRYING, now)
        self.error = error
        self.retry_at = now + delay
        self.live_since = None
        return news

    def stopped(self, reason: str | None, now: float) -> bool:
        if self.state is RelayState.STOPPED:
            return False
        self._enter(RelayState.STOPPED, now)
        self.error = reason
        self.live_since = None
        return True

    def _enter(self, state: RelayState, now: float, keep_error: bool = False) -> bool:
        changed = state is not self.state
        self.state = state
        self.since = now
        self.retry_at = None
        if not keep_error:
            self.error = None
        return changed
