"""What a webhook is asked and what its answer means, as plain values; the HTTP client lives in the edge.

Events: `publish` and `play` ask (the answer admits or refuses), `publish_done` and `play_done` tell
(nobody waits for them). The rule for an answer, applied by the client and spelled out here so both sides
of the wire agree:
  - 2xx allows. A JSON object in the body may rename the stream (`{"stream": "NAME"}`, publish only) and
    set an expiry (`{"expires_in": SECONDS}`: the session is ended after that long). An empty or non-JSON
    body is a plain allow.
  - 4xx refuses.
  - Anything else (3xx, 5xx, no connection, no answer within the timeout, a JSON body that is not an
    object or holds bad values) is a failure, which refuses unless `webhooks.on_failure = "allow"`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .names import valid_name

MAX_EXPIRES_IN_S = 366 * 86_400


@dataclass(frozen=True, slots=True)
class HookRequest:
    """One webhook call. `to_json()` is the body sent."""

    event: str
    """"publish", "play", "publish_done" or "play_done"."""
    app: str
    stream: str
    """The public stream name (never a stream key)."""
    client_ip: str
    protocol: str
    """"rtmp", "flv", "ws-flv" or "hls"."""
    params: dict[str, str] = field(default_factory=dict)
    """The request's query parameters, without the token."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Event details: how the publisher was admitted, bytes sent, why a session ended, ..."""

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event, "app": self.app, "stream": self.stream, "client_ip": self.client_ip,
            "protocol": self.protocol, "params": self.params, **self.extra,
        }


@dataclass(frozen=True, slots=True)
class HookVerdict:
    allowed: bool
    reason: str
    """"allowed", "denied" (4xx), or what failed: "timeout", "status_503", "connection", "bad_answer"."""
    stream: str | None = None
    """A new public name for the stream (publish only)."""
    expires_in: float | None = None
    """End the session after this many seconds."""


def read_answer(body: Any) -> tuple[str | None, float | None]:
    """(stream, expires_in) from a 2xx JSON answer; raises ValueError for a body that breaks the rule."""
    if body is None:
        return None, None
    if not isinstance(body, dict):
        raise ValueError(f"the answer must be a JSON object, not {type(body).__name__}")
    stream = body.get("stream")
    if stream is not None and (not isinstance(stream, str) or not valid_name(stream)):
        raise ValueError(f"\"stream\" must be a valid stream name, not {str(stream)[:64]!r}")
    expires_in = body.get("expires_in")
    if expires_in is not None:
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not 0 < expires_in <= MAX_EXPIRES_IN_S:
            raise ValueError(f"\"expires_in\" must be seconds in 0..{MAX_EXPIRES_IN_S}, not {str(expires_in)[:32]!r}")
        expires_in = float(expires_in)
    return stream, expires_in


class Hooks(Protocol):
    """The webhook client as the RTMP server and the edge see it."""

    def wants(self, event: str) -> bool:
        """Whether a URL is configured for this event."""
        ...

    async def ask(self, request: HookRequest) -> HookVerdict:
        """Call the hook and wait (bounded by the timeout) for its verdict."""
        ...

    def tell(self, request: HookRequest) -> None:
        """Send a `*_done` event without waiting for it."""
        ...
