"""The node's WebRTC sessions (WHEP viewers and WHIP publishers): admission against the limits, lookup by the
id in a session's Location URL, and the sessions of one stream (ended with it, kicked with it). Pure: a
session's `close` is called by the owner of the event loop."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["viewer", "publisher"]


@dataclass(slots=True, eq=False)
class Session:
    kind: Kind
    app: str
    stream: str
    client: str
    """The client's address (after trusted proxies)."""
    close: Callable[[str], Awaitable[None]]
    """Ends the session (peer connection, bridge); the argument is the reason, logged and counted."""
    id: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    started: float = field(default_factory=time.time)
    bytes_sent: int = 0
    bytes_received: int = 0
    connected: bool = False
    """ICE and DTLS done; until then the session counts against its address's `max_connecting_per_client`."""


class Sessions:
    def __init__(self, max_sessions: int = 0, max_per_stream: int = 0, max_connecting_per_client: int = 0) -> None:
        self.max_sessions = max_sessions
        self.max_per_stream = max_per_stream
        self.max_connecting_per_client = max_connecting_per_client
        self._by_id: dict[str, Session] = {}
        self._by_stream: dict[tuple[str, str], dict[str, Session]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def full(self) -> bool:
        """The node holds its limit of sessions (503 to what asks for one; the other refusals are 429)."""
        return bool(self.max_sessions) and len(self._by_id) >= self.max_sessions

    def refusal(self, kind: Kind, app: str, stream: str, client: str = "") -> str | None:
        """Why a new session of `kind` for APP/STREAM, asked for by address `client`, cannot be admitted now,
        or None."""
        if self.full:
            return f"this node holds its limit of {self.max_sessions} WebRTC sessions (webrtc.max_sessions); try later"
        if client and self.max_connecting_per_client:
            connecting = sum(1 for s in self._by_id.values() if s.client == client and not s.connected)
            if connecting >= self.max_connecting_per_client:
                return (f"{client} has {connecting} WebRTC sessions still connecting "
                        f"(webrtc.max_connecting_per_ip); finish or end those first")
        if kind == "viewer" and self.max_per_stream:
            viewers = sum(1 for s in self._by_stream.get((app, stream), {}).values() if s.kind == "viewer")
            if viewers >= self.max_per_stream:
                return (f"{app}/{stream} has its limit of {self.max_per_stream} WebRTC viewers "
                        "(webrtc.max_sessions_per_stream); try another format")
        return None

    def add(self, session: Session) -> None:
        self._by_id[session.id] = session
        self._by_stream.setdefault((session.app, session.stream), {})[session.id] = session

    def remove(self, session: Session) -> None:
        """Forget `session` (idempotent): called once its peer connection is closed."""
        if self._by_id.pop(session.id, None) is None:
            return
        of_stream = self._by_stream.get((session.app, session.stream))
        if of_stream is not None:
            of_stream.pop(session.id, None)
            if not of_stream:
                del self._by_stream[(session.app, session.stream)]

    def get(self, session_id: str) -> Session | None:
        return self._by_id.get(session_id)

    def of_stream(self, app: str, stream: str) -> list[Session]:
        return list(self._by_stream.get((app, stream), {}).values())

    def all(self) -> list[Session]:
        return list(self._by_id.values())

    def count(self, kind: Kind) -> int:
        return sum(1 for s in self._by_id.values() if s.kind == kind)
