"""The VOD index of a recording in object storage, kept beside it as a small JSON object (KEY.index.json).

The index is built from the local file before the upload (record/vod.py `index_file`), so serving
/vod/ID/index.m3u8 from the bucket costs one small GET (then a cache hit), never a read of the media.
Loading checks every field: the sidecar comes from a bucket other tools may write to.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import MediaError
from .vod import VodFragment, VodIndex

SUFFIX = ".index.json"
VERSION = 1


def sidecar_key(key: str) -> str:
    return key + SUFFIX


def dump_index(index: VodIndex) -> bytes:
    body = {
        "version": VERSION, "init": [index.init_offset, index.init_size], "timescale": index.timescale,
        "tracks": {str(t): h for t, h in index.tracks.items()}, "file_size": index.file_size,
        "fragments": [[f.offset, f.size, f.start, f.duration, int(f.keyframe)] for f in index.fragments],
        "codecs": list(index.codecs), "width": index.width, "height": index.height,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MediaError(f"VOD index sidecar: {what} {value!r} is not a whole number >= 0")
    return value


def load_index(data: bytes) -> VodIndex:
    """The index a sidecar holds; MediaError when it is not one of ours."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise MediaError(f"VOD index sidecar is not JSON: {err}") from None
    if not isinstance(body, dict) or body.get("version") != VERSION:
        raise MediaError(f"VOD index sidecar is not version {VERSION}")
    try:
        init_offset, init_size = (_int(x, "init") for x in body["init"])
        timescale = _int(body["timescale"], "timescale")
        if timescale == 0:
            raise MediaError("VOD index sidecar: timescale 0")
        tracks = {_int(int(t), "track"): str(h) for t, h in body["tracks"].items()}
        fragments = tuple(
            VodFragment(_int(o, "offset"), _int(s, "size"), _int(st, "start"), _int(d, "duration"), bool(k))
            for o, s, st, d, k in body["fragments"])
        # codecs and the picture size came later: a sidecar without them still loads (the MPD reads the init)
        codecs = body.get("codecs", [])
        if not isinstance(codecs, list) or not all(isinstance(c, str) and len(c) < 64 for c in codecs):
            raise MediaError(f"VOD index sidecar: codecs {str(codecs)[:80]} is not a list of codec strings")
        return VodIndex(init_offset, init_size, timescale, tracks, fragments, _int(body["file_size"], "file_size"),
                        tuple(codecs), _int(body.get("width", 0), "width"), _int(body.get("height", 0), "height"))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise MediaError(f"VOD index sidecar is malformed: {type(err).__name__}: {err}") from None
