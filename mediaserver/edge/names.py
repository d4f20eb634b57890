"""Stream names as they appear in URLs, checked before anything is looked up.

App and stream names are 1-128 characters of letters, digits, '_', '-', '.' and '~', and never start with
'.', so no URL can name a path outside the server's own (no '..', no slashes, encoded or not).
"""

from __future__ import annotations

import re

from ..hub.stream import StreamKey

_NAME = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9_.~-]{0,127}")


def valid_name(text: str) -> bool:
    return _NAME.fullmatch(text) is not None


def stream_key(app: str, name: str) -> StreamKey | None:
    """The StreamKey for URL parts `app` and `name`, or None when either is not a valid name."""
    if valid_name(app) and valid_name(name):
        return StreamKey(app, name)
    return None
