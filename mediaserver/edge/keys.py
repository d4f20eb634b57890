"""Every typed key of the edge application's state (aiohttp `web.AppKey`), in one module.

Route modules read what they need through these keys and import them from here, never from each other,
so no two route modules depend on one another for their state (edge/app.py, which registers the pages,
and edge/pages.py, which reads the gate, once imported each other). The keys of edge classes are typed
for checkers only: importing those classes here would make this module depend on the routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..config import Config
from ..gate import Gate
from ..hub.registry import StreamRegistry

if TYPE_CHECKING:
    from ..record.manager import RecordingManager
    from ..transcode.service import AbrService
    from .history import StreamHistory
    from .metrics import Metrics
    from .packagers import PackagerPool
    from .thumbnails import ThumbnailService
    from .vod_remote import RemoteVod

def request_key(name: str, kind: type) -> Any:
    """A key of a request's own storage: aiohttp's typed RequestKey where it has one (3.14+; a plain string
    key there warns at every request), else the name."""
    make = getattr(web, "RequestKey", None)
    return make(name, kind) if make is not None else name


CONFIG = web.AppKey("config", Config)
REGISTRY = web.AppKey("registry", StreamRegistry)
GATE = web.AppKey("gate", Gate)
"""Admission: who may watch (and the hints for streams that are not here)."""
PACKAGERS: web.AppKey[PackagerPool] = web.AppKey("packagers")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
THUMBNAILS: web.AppKey[ThumbnailService] = web.AppKey("thumbnails")
HISTORY: web.AppKey[StreamHistory] = web.AppKey("page_history")
ABR: web.AppKey[AbrService] = web.AppKey("abr")
"""The renditions of each stream (this node's TranscodePool); absent when the node makes none: then
master.m3u8, cmaf.m3u8 and manifest.mpd list the source alone."""
ADMIN_TOKEN = web.AppKey("page_admin_token", str)
"""The admin token the console's JSON needs ("" when the admin API is disabled)."""
STATIC_FILES = web.AppKey("page_static_files", dict)
RECORDINGS: web.AppKey[RecordingManager] = web.AppKey("recordings")
"""This node's recordings, for /vod/ (absent when record.mode = "off")."""
REMOTE_VOD: web.AppKey[RemoteVod] = web.AppKey("remote_vod")
"""Cluster: fetches recordings that lie on another node's disk (absent when standalone)."""
