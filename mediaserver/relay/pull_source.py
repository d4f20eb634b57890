"""A pull relay's source URL, read once: where to connect, what to ask for, and how it may be shown.

Pure: no sockets, no asyncio. `${VAR}` placeholders are filled from the environment given (a missing
variable is an error naming it); the filled URL may hold a secret (a stream key, a token in the query), so
logs and the API only ever see `shown`: scheme, host, port and app, the rest replaced by `***`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..config import pull_url_problem
from ..errors import UsageError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class PullSource:
    url: str
    """The filled URL (may hold secrets: never log it)."""
    scheme: str
    host: str
    port: int
    app: str
    """RTMP: the app of connect (the first path segment)."""
    name: str
    """RTMP: the play name (the rest of the path, with the query: tokens travel in it)."""
    shown: str
    """What logs and the API show."""

    @property
    def rtmp(self) -> bool:
        return self.scheme in ("rtmp", "rtmps")

    @property
    def tls(self) -> bool:
        return self.scheme in ("rtmps", "https")

    @property
    def tc_url(self) -> str:
        return f"{self.scheme}://{_host_port(self.host, self.port)}/{self.app}"


def expand(url: str, environ: Mapping[str, str], where: str = "url") -> str:
    """`url` with every ${VAR} filled from `environ`; UsageError naming the variables that are not set."""
    missing = sorted({m.group(1) for m in _VAR.finditer(url) if m.group(1) not in environ})
    if missing:
        raise UsageError(f"{where} uses ${{{missing[0]}}}" + (f" (and {', '.join(missing[1:])})" if missing[1:] else "")
                         + " but the environment does not set it; export it before starting the server")
    return _VAR.sub(lambda m: environ[m.group(1)], url)


def redact(url: str) -> str:
    """A URL as logs may show it: no user info, no query, no path but its first segment (the app)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(a malformed URL)"
    segments = [s for s in parts.path.split("/") if s]
    head = f"{parts.scheme}://{_host_port(parts.hostname or '', port) if port else parts.hostname or ''}"
    if len(segments) < 2:  # a lone segment may be the key itself (https://cdn.example/KEY.flv)
        return head + ("/***" if segments or parts.query else "")
    return head + f"/{segments[0]}/***"


def parse_source(template: str, environ: Mapping[str, str], where: str = "url") -> PullSource:
    """The source of a [[relay.pull]] `url` (checked by the config already, filled here)."""
    url = expand(template, environ, where)
    problem = pull_url_problem(url)
    if problem is not None:  # a variable's value broke it: say so without showing the value
        raise UsageError(f"{where} {problem} once its ${{VAR}} are filled in: {redact(url)}")
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    app, name = segments[0], "/".join(segments[1:])
    if parts.query:
        name += "?" + parts.query
    return PullSource(url=url, scheme=parts.scheme, host=parts.hostname or "",
                      port=parts.port or _DEFAULT_PORTS[parts.scheme], app=app, name=name, shown=redact(url))


def _host_port(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port else shown


@dataclass(slots=True)
class Backoff:
    """Waits between reconnects: `first` seconds, doubling up to `cap`; back to `first` (`reset`) once a
    connection played a while (the caller says how long; one that plays a moment and drops keeps the wait
    growing)."""

    cap: float
    first: float = 0.5
    failures: int = 0

    def next_wait(self) -> float:
        wait = min(self.cap, self.first * (2 ** min(self.failures, 30)))
        self.failures += 1
        return wait

    def reset(self) -> None:
        self.failures = 0
