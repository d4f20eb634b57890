"""Admission limits: connections per client address, publishers per app, viewers per stream.

Each limit is off at 0. A refusal is a `LimitExceeded` that names the limit, its value and the config key
to raise, so the answer (HTTP 429/503, an RTMP error status) and the log line say which limit it was
(the gate, mediaserver/gate.py, writes that line once per limit and subject per interval).

Pure bookkeeping: the callers count what exists (they own the streams and sockets) and pass `now`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LimitExceeded:
    limit: str
    """"connections_per_ip", "publishers_per_app" or "viewers_per_stream"."""
    subject: str
    """The address, app or stream the limit applies to."""
    current: int
    maximum: int

    @property
    def config_key(self) -> str:
        return f"limits.max_{self.limit}"

    @property
    def message(self) -> str:
        what = {
            "connections_per_ip": f"{self.subject} has {self.current} connections",
            "publishers_per_app": f"app {self.subject} has {self.current} publishers",
            "viewers_per_stream": f"stream {self.subject} has {self.current} viewers",
        }[self.limit]
        return f"{what}, the most allowed ({self.config_key} = {self.maximum})"


class Limits:
    def __init__(
        self,
        max_connections_per_ip: int = 0,
        max_publishers_per_app: int = 0,
        max_viewers_per_stream: int = 0,
    ) -> None:
        self.max_connections_per_ip = max_connections_per_ip
        self.max_publishers_per_app = max_publishers_per_app
        self.max_viewers_per_stream = max_viewers_per_stream
        self._connections: dict[str, int] = {}
        self.refusals: Counter[str] = Counter()
        """Refusals per limit, for metrics."""

    # ----- connections per address (RTMP connections and HTTP requests in progress) -----------------

    def connection_opened(self, address: str) -> LimitExceeded | None:
        """Count a new connection from `address`, or refuse it (then it is not counted)."""
        count = self._connections.get(address, 0)
        if self.max_connections_per_ip and count >= self.max_connections_per_ip:
            return self._refuse(LimitExceeded("connections_per_ip", address, count, self.max_connections_per_ip))
        self._connections[address] = count + 1
        return None

    def connection_closed(self, address: str) -> None:
        count = self._connections.get(address, 0) - 1
        if count > 0:
            self._connections[address] = count
        else:
            self._connections.pop(address, None)

    def connections(self, address: str) -> int:
        return self._connections.get(address, 0)

    # ----- publishers and viewers ------------------------------------------------------------------

    def check_publishers(self, app: str, live_publishers: int) -> LimitExceeded | None:
        """`live_publishers`: publishers the app has now, not counting the stream being claimed."""
        if self.max_publishers_per_app and live_publishers >= self.max_publishers_per_app:
            return self._refuse(LimitExceeded("publishers_per_app", app, live_publishers, self.max_publishers_per_app))
        return None

    def check_viewers(self, stream: str, viewers: int) -> LimitExceeded | None:
        if self.max_viewers_per_stream and viewers >= self.max_viewers_per_stream:
            return self._refuse(LimitExceeded("viewers_per_stream", stream, viewers, self.max_viewers_per_stream))
        return None

    def _refuse(self, refused: LimitExceeded) -> LimitExceeded:
        self.refusals[refused.limit] += 1
        return refused
