"""The viewer-facing aiohttp application: routes from the URL map, built from injected parts.

| route                      | what                                  |
|----------------------------|---------------------------------------|
| GET /healthz               | alive                                 |
| GET /APP/NAME.flv          | HTTP-FLV                              |
| GET /APP/NAME/index.m3u8   | HLS playlist (MPEG-TS segments)       |
| GET /APP/NAME/SEGMENT.ts   | an HLS segment                        |
"""

from __future__ import annotations

from aiohttp import web

from ..config import Config
from ..hub.registry import StreamRegistry
from .common import CONFIG, REGISTRY, cors_headers, json_error
from .flv import serve_flv
from .hls import PACKAGERS, serve_playlist, serve_segment
from .packagers import PackagerPool


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "streams": len(request.app[REGISTRY])})


async def preflight(request: web.Request) -> web.Response:
    headers = cors_headers(request)
    if headers:
        headers["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
        headers["Access-Control-Allow-Headers"] = request.headers.get("Access-Control-Request-Headers", "*")
        headers["Access-Control-Max-Age"] = "600"
    return web.Response(status=204, headers=headers)


async def flv_or_404(request: web.Request) -> web.StreamResponse:
    file = request.match_info["file"]
    if file.endswith(".flv"):
        return await serve_flv(request, request.match_info["app"], file[:-4])
    raise json_error(404, "not found", "HTTP-FLV URLs look like /APP/NAME.flv", cors_headers(request))


async def hls_file(request: web.Request) -> web.StreamResponse:
    file = request.match_info["file"]
    if file == "index.m3u8":
        return await serve_playlist(request)
    if file.endswith(".ts"):
        return await serve_segment(request)
    raise json_error(404, "not found", "HLS URLs look like /APP/NAME/index.m3u8", cors_headers(request))


async def not_found(request: web.Request) -> web.Response:
    raise json_error(404, "not found", "stream URLs look like /APP/NAME.flv or /APP/NAME/index.m3u8", cors_headers(request))


@web.middleware
async def errors_as_json(request: web.Request, handler):
    """Any HTTP error without a body of ours gets the JSON shape; nothing leaks a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        raise json_error(exc.status, exc.reason.lower(), "see the URL map in the README", cors_headers(request)) from None


def make_app(config: Config, registry: StreamRegistry, packagers: PackagerPool) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=64 * 1024)
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[PACKAGERS] = packagers
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/{app}/{file}", flv_or_404)
    app.router.add_get("/{app}/{name}/{file}", hls_file)
    app.router.add_route("OPTIONS", "/{tail:.*}", preflight)
    app.router.add_get("/{tail:.*}", not_found)
    return app
