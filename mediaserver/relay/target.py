"""Push targets, pure: parse an rtmp:// or rtmps:// URL into what the RTMP client needs, fill ${VAR}s
from the environment, redact the stream key for logs and answers, and tell a push back into this
server's own stream (a loop, see loop.py) from a push elsewhere.

A URL is rtmp[s]://HOST[:PORT]/APP/STREAM_KEY[?QUERY], as OBS and the platforms write it: the first path
segment is the app (connect's tcUrl is everything up to it), the rest with the query is the stream key
given to publish. The key is the secret part; it and the query never appear in a log or an answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import UsageError

SCHEMES = {"rtmp": 1935, "rtmps": 443}
ACCEPTED = "rtmp://HOST[:PORT]/APP/STREAM_KEY or rtmps://HOST[:PORT]/APP/STREAM_KEY"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_URL_CHARS = 2048


class TargetError(UsageError):
    """A push URL this server cannot use; the message says what is accepted."""


@dataclass(frozen=True, slots=True)
class PushUrl:
    scheme: str
    host: str
    port: int
    app: str
    key: str
    """The stream key with its query: what publish() is given."""

    @property
    def tls(self) -> bool:
        return self.scheme == "rtmps"

    @property
    def tc_url(self) -> str:
        return f"{self.scheme}://{_host_text(self.host)}:{self.port}/{self.app}"

    @property
    def redacted(self) -> str:
        return f"{self.scheme}://{_host_text(self.host)}:{self.port}/{self.app}/***"

    @property
    def stream_name(self) -> str:
        """The key without its query: the name the target publishes under."""
        return self.key.split("?", 1)[0]


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def expand_env(url: str, environ: Mapping[str, str]) -> str:
    """Fill each ${NAME} from the environment; a variable that is not set is an error naming it."""
    missing = sorted({m.group(1) for m in _VAR.finditer(url) if m.group(1) not in environ})
    if missing:
        raise TargetError(f"the push URL uses ${{{missing[0]}}}, which is not set in the environment; "
                          f"export {missing[0]}=... before starting the server")
    return _VAR.sub(lambda m: environ[m.group(1)], url)


def redact(url: str) -> str:
    """What a log or an answer may show of any push URL, parsable or not: scheme, host, port and app."""
    try:
        return parse_push_url(_VAR.sub("x", url)).redacted
    except TargetError:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        return f"{scheme[:10]}://***" if scheme else "***"


def parse_push_url(url: str) -> PushUrl:
    if not isinstance(url, str) or not url.strip():
        raise TargetError(f"the push URL is empty; give {ACCEPTED}")
    url = url.strip()
    if len(url) > MAX_URL_CHARS or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise TargetError(f"the push URL is too long or holds spaces or control characters; give {ACCEPTED}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetError(f"the push URL is malformed (bad host or port); give {ACCEPTED}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise TargetError(f"push URL scheme {scheme[:10] or '(none)'!r} is not accepted; accepted schemes are "
                          f"rtmp and rtmps: {ACCEPTED}")
    if parts.username or parts.password:
        raise TargetError(f"the push URL holds credentials before the host; put the stream key in the path: {ACCEPTED}")
    host = parts.hostname or ""
    if not host:
        raise TargetError(f"the push URL names no host; give {ACCEPTED}")
    if parts.fragment:
        raise TargetError(f"the push URL has a #fragment, which RTMP cannot carry; give {ACCEPTED}")
    path = parts.path.lstrip("/")
    app, _, key = path.partition("/")
    if not app or not key.strip("/"):
        raise TargetError(f"the push URL needs an app and a stream key in its path; give {ACCEPTED}")
    if parts.query:
        key = f"{key}?{parts.query}"
    return PushUrl(scheme, host, port or SCHEMES[scheme], app, key)


LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "0.0.0.0", "::"})
