"""Relays: [relay] with its [[relay.push]] targets and [[relay.pull]] sources."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .base import ConfigError, TableRule
from .media import LABEL

if TYPE_CHECKING:
    from .schema import Config


@dataclass(frozen=True, slots=True)
class PushTarget:
    """One push target (`[[relay.push]]`): each stream of `app` named `stream` ("*": any) is pushed to `url`."""

    url: str
    """rtmp[s]://HOST[:PORT]/APP/KEY; ${VAR} is filled from the environment at start (and never logged)."""
    app: str = "*"
    stream: str = "*"
    rendition: str = ""
    """A label of the ABR ladder: push STREAM@LABEL (while it is transcoded) instead of the source."""


@dataclass(frozen=True, slots=True)
class PullRelay:
    """One `[[relay.pull]]`: a stream of another server ingested here as if published here."""

    app: str
    stream: str
    url: str
    """rtmp://, rtmps://, http:// or https:// (an .flv); ${VAR} is filled from the environment at start."""
    mode: str = "on_demand"
    """on_demand: pulled from the first viewer until relay.pull_grace without one; always: from the start."""


@dataclass(frozen=True, slots=True)
class RelayConfig:
    push: tuple[PushTarget, ...] = ()
    """[[relay.push]] url = "rtmp://a.example/live2/${YOUTUBE_KEY}", app = "live", stream = "*"."""
    push_retry_min: float = 1.0
    """Seconds before the first retry of a push that failed; doubled each time up to push_retry_max."""
    push_retry_max: float = 30.0
    push_connect_timeout: float = 10.0
    """Seconds for a target to connect, handshake and accept publishing."""
    push_write_timeout: float = 10.0
    """Seconds a target may leave our writes unread before its connection is dropped and retried."""
    pull: tuple[PullRelay, ...] = ()
    pull_grace: float = 10.0
    """Seconds an on_demand pull goes on without viewers (a viewer back within it reuses it)."""
    pull_retry_max: float = 30.0
    """Longest wait between reconnects to a source that is down (the wait doubles from 0.5 s up to this)."""
    pull_wait: float = 5.0
    """Seconds a first viewer waits for an on_demand pull's first keyframe."""


# Accepted values, checked after types: KEY -> (min, max), or KEY -> choices.
RANGES: dict[str, tuple[float, float]] = {
    "relay.push_retry_min": (0.1, 3600),
    "relay.push_retry_max": (0.1, 3600),
    "relay.push_connect_timeout": (0.5, 600),
    "relay.push_write_timeout": (0.5, 600),
    "relay.pull_grace": (0, 86_400),
    "relay.pull_retry_max": (0.5, 3600),
    "relay.pull_wait": (0.1, 60),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "pull.mode": ("on_demand", "always"),
}


def _check_push(here: str, built: dict[str, Any]) -> None:
    if not built["url"].startswith(("rtmp://", "rtmps://")):
        raise ConfigError(f"{here}.url must be an rtmp:// or rtmps:// URL (rtmp://HOST[:PORT]/APP/KEY); "
                          "accepted schemes are rtmp and rtmps")
    if built.get("rendition") and not LABEL.fullmatch(built["rendition"]):
        raise ConfigError(f"{here}.rendition = {built['rendition']!r} must be a label of [[abr.ladder]] "
                          "(1-32 of a-z, 0-9, '_' or '-'), or left out for the source")


TABLES = {
    "relay.push": TableRule(PushTarget, 'url = "rtmp://a.example/live2/${KEY}"', check=_check_push),
    "relay.pull": TableRule(PullRelay, 'app = "live", stream = "cam1", url = "rtmp://camera.example/live/cam1"'),
}


PULL_SCHEMES = ("rtmp", "rtmps", "http", "https")
_PULL_NAME = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9_.~-]{0,127}")  # auth/names.py's rule (config imports no layer)
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::")


def pull_url_problem(url: str) -> str | None:
    """What is wrong with a pull source URL (None: usable). ${VAR} placeholders count as filled."""
    shown = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "x", url)
    try:
        parts = urlsplit(shown)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as err:
        return f"is not a URL ({err})"
    if parts.scheme not in PULL_SCHEMES:
        return f"has scheme {parts.scheme or 'none'!r}; accepted: rtmp://, rtmps://, http:// or https:// (FLV)"
    if not parts.hostname:
        return "names no host, e.g. rtmp://camera.example:1935/live/cam1"
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme.startswith("rtmp") and len(segments) < 2:
        return "needs an app and a stream name after the host: rtmp://HOST[:PORT]/APP/STREAM"
    if parts.scheme.startswith("http") and not segments:
        return "needs a path to the FLV: http://HOST[:PORT]/APP/STREAM.flv"
    return None


def _pull_problems(config: Config) -> list[str]:
    """Each [[relay.pull]] names a valid stream once, from a usable URL that is not this server's own stream."""
    found = []
    seen: set[tuple[str, str]] = set()
    for i, pull in enumerate(config.relay.pull):
        here = f"relay.pull[{i}]"
        for key in ("app", "stream"):
            value = getattr(pull, key)
            if not _PULL_NAME.fullmatch(value):
                found.append(f"{here}.{key} = {value!r} is not a valid name: 1-128 letters, digits, '_', '-', "
                             "'.' or '~', not starting with '.'")
        if (pull.app, pull.stream) in seen:
            found.append(f"{here} pulls {pull.app}/{pull.stream} again; each stream has one source")
        seen.add((pull.app, pull.stream))
        problem = pull_url_problem(pull.url)
        if problem is not None:
            found.append(f"{here}.url {problem}")
            continue
        parts = urlsplit(pull.url)
        ports = {"rtmp": (config.rtmp.port, 1935), "rtmps": (config.rtmps.port, 443),
                 "http": (config.http.port, 80), "https": (config.http.port, 443)}[parts.scheme]
        host = (parts.hostname or "").lower()
        segments = [s for s in parts.path.split("/") if s]
        names = (segments[0], segments[-1].removesuffix(".flv")) if segments else ("", "")
        if (host in _LOCAL_HOSTS or host in (config.rtmp.bind, config.http.bind)) \
                and (parts.port or ports[1]) == ports[0] and names == (pull.app, pull.stream):
            found.append(f"{here}.url points to this server's own stream {pull.app}/{pull.stream}: a loop; "
                         "pull from another server, or under another name")
    return found


def problems(config: Config) -> list[str]:
    found = _pull_problems(config)
    if config.relay.push_retry_min > config.relay.push_retry_max:
        found.insert(0, f"relay.push_retry_min = {config.relay.push_retry_min:g} is above relay.push_retry_max = "
                        f"{config.relay.push_retry_max:g}; the backoff grows from the first to the second")
    return found
