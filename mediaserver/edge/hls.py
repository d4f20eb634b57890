"""HLS (MPEG-TS) routes: `GET /APP/NAME/index.m3u8` and its segments, served from memory, and
`GET /APP/NAME/master.m3u8`, the multivariant playlist over the source and its ABR ladder.

The playlist bytes are rendered once per change and shared; a segment is sent as the packager's own
bytes object, never copied per request. Playlists may be cached for less than a segment's duration,
segments (whose names are unique to a stream instance) for a long time.
"""

from __future__ import annotations

from aiohttp import web

from ..auth.names import NAME_RULE
from ..remux.multivariant import render_multivariant
from ..transcode.ladder import SOURCE_LABEL
from .abr import ladder, rendition_variant, source_variant
from .common import CONFIG, PLAY_QUERY, cors_headers, find_stream, json_error, not_published, send_shared
from .formats import TS_HLS, refuse_uncarried
from .keys import PACKAGERS, REGISTRY
from .names import stream_key


PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"


def _packager(request: web.Request):
    key = stream_key(request.match_info["app"], request.match_info["name"])
    if key is None:
        raise json_error(400, "invalid stream name",
                         NAME_RULE, cors_headers(request))
    packager = request.app[PACKAGERS].hls(key)
    if packager is None:
        raise not_published(request, key)
    return key, packager


async def serve_playlist(request: web.Request) -> web.Response:
    key, packager = _packager(request)
    cfg = request.app[CONFIG].hls
    if not packager.has_segments and not await packager.wait_ready(cfg.segment_duration * 2 + 1):
        raise json_error(503, f"stream {key} has no segment yet",
                         "the publisher has not sent a keyframe yet; retry in a few seconds",
                         {"Retry-After": "2", **cors_headers(request)})
    max_age = max(0, int(cfg.segment_duration / 2))
    query = request.get(PLAY_QUERY, "")
    headers = {
        "Content-Type": PLAYLIST_TYPE,
        "Cache-Control": f"max-age={max_age}" if max_age and not packager.ended else "no-cache",
        **cors_headers(request),
    }
    if not query:  # the shared playlist: one ETag per change (a viewer's own, with its token, has none)
        etag = packager.playlist_etag.decode()
        headers["ETag"] = etag
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
    return web.Response(body=packager.playlist(query), headers=headers)


async def serve_segment(request: web.Request) -> web.Response:
    key, packager = _packager(request)
    segment = packager.segment(request.match_info["file"])
    if segment is None:
        raise json_error(404, f"segment {request.match_info['file'][:64]!r} of {key} does not exist",
                         "reload the playlist: segments expire as the live window slides", cors_headers(request))
    return await send_shared(
        request,
        segment.data,
        {"Content-Type": SEGMENT_TYPE, "Cache-Control": "public, max-age=3600, immutable", **cors_headers(request)},
    )


async def serve_master(request: web.Request) -> web.Response:
    """master.m3u8: the source's index.m3u8 first, then each rendition TS can carry (../NAME@LABEL/index.m3u8);
    the source alone when ABR is off for it, not applicable or refused. 404 when the source is not live."""
    source = find_stream(request, request.match_info["app"], request.match_info["name"])
    refuse_uncarried(request, source, TS_HLS)
    views = await ladder(request, source, "ts")
    plain = source_variant(source, "index.m3u8", ts=True)
    # A watermarked top rung (STREAM@source) takes the unmarked source's place.
    variants = [] if any(v.label == SOURCE_LABEL for v in views) else [plain]
    registry = request.app[REGISTRY]
    for view in views:
        variants.append(rendition_variant(view, registry.get(view.key), source, f"../{view.key.name}/index.m3u8",
                                          ts=True, frame_rate=plain.frame_rate))
    body = render_multivariant(variants, query=request.get(PLAY_QUERY, ""))
    return web.Response(
        text=body, headers={"Content-Type": PLAYLIST_TYPE, "Cache-Control": "no-cache", **cors_headers(request)}
    )
