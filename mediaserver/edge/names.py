"""Stream names as they appear in URLs, checked before anything is looked up.

The rule itself (and the apps the HTTP side keeps for itself) is `auth/names.py`, shared with RTMP, the
admin API and the config; this module turns URL parts into a StreamKey under it.
"""

from __future__ import annotations

from ..auth.names import valid_name, valid_play_name
from ..hub.stream import StreamKey


def stream_key(app: str, name: str) -> StreamKey | None:
    """The StreamKey for URL parts `app` and `name`, or None when either is not a valid name (a name may
    be a rendition's, STREAM@LABEL: publishing is refused such names at the gate, playing is not)."""
    if valid_name(app) and valid_play_name(name):
        return StreamKey(app, name)
    return None
