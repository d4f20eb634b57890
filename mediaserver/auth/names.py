"""Stream names: the one rule every listener checks (RTMP publish and play, the HTTP routes, the admin API,
webhook answers, config), and the app names the HTTP side keeps for itself.

App and stream names are 1-128 characters of letters, digits, '_', '-', '.' and '~', and never start with
'.': no URL can name a path outside the server's own (no '..', no slashes, encoded or not), and every name
travels in RTMP, URLs, logs and Redis keys unescaped.

A rendition of a stream (ABR) is played as `STREAM@LABEL` (`demo@360p`): a viewer may name one, a
publisher never can ('@' breaks the rule above), so a rendition's name is always the transcoder's.

A name sent by a publisher may be a secret (a stream key typed under the wrong app, a key with a stray
character); before the credential is checked such a name is logged only in its `redacted` form.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9_.~-]{0,127}")
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.~")

NAME_RULE = "app and stream names are 1-128 letters, digits, '_', '-', '.' or '~' and do not start with '.'"

RESERVED_APPS = frozenset({"play", "static", "console", "api", "time", "metrics", "healthz", "readyz", "vod"})
"""First URL segments the HTTP side uses for itself (pages, API, metrics): a stream under one of these apps
could not be watched, so publishing to them is refused."""


def valid_name(text: str) -> bool:
    """Whether `text` is a valid app or stream name (see the module docstring)."""
    return _NAME.fullmatch(text) is not None


RENDITION_SEPARATOR = "@"
_LABEL = re.compile(r"[a-z0-9_-]{1,32}")
LABEL_RULE = "a rendition label is 1-32 of a-z, 0-9, '_' or '-'"


def split_rendition(name: str) -> tuple[str, str | None]:
    """`demo@360p` -> ("demo", "360p"); `demo` -> ("demo", None). Does not check either part."""
    base, sep, label = name.partition(RENDITION_SEPARATOR)
    return (base, label) if sep else (name, None)


def valid_label(text: str) -> bool:
    return _LABEL.fullmatch(text) is not None


def valid_play_name(text: str) -> bool:
    """Whether a viewer may ask for `text`: a valid stream name, or one followed by @LABEL (a rendition)."""
    base, label = split_rendition(text)
    return valid_name(base) and (label is None or valid_label(label))


def redacted(text: str) -> str:
    """What a log may say about a name that may be a secret: its length and the characters that break
    the rule, never the name itself."""
    bad = "".join(sorted({c for c in text if c not in _ALLOWED}))[:16]
    return f"({len(text)} characters{', not allowed: ' + repr(bad) if bad else ''})"
