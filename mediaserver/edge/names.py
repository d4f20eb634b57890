"""Stream names as they appear in URLs, checked before anything is looked up.

The rule itself (and the apps the HTTP side keeps for itself) is `auth/names.py`, shared with RTMP, the
admin API and the config; this module turns URL parts into a StreamKey under it.
"""

from __future__ import annotations

from ..auth.names import valid_name, valid_play_name
from ..hub.stream import StreamKey


def stream_key(app: str, name: str) -> StreamKey | None:
    """The StreamKey of a play URL's `app` and `name`, or None when either is not a valid name. A play
    name may be a rendition, STREAM@LABEL (never a name anything publishes: publishing checks the
    stricter `auth.names.valid_name`)."""
    if valid_name(app) and valid_play_name(name):
        return StreamKey(app, name)
    return None
