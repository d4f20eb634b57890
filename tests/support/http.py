"""HTTP helpers the tests share: the admin API with a bearer token, plain and ranged GETs, and a small
aiohttp app served on loopback (a source, an origin, a hook)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web


@contextlib.asynccontextmanager
async def serving(app: web.Application, backlog: int = 128) -> AsyncIterator[int]:
    """`app` served on 127.0.0.1 for the block: its port (`backlog`: connections the kernel holds before
    the app accepts them; a burst of hundreds at once needs more than aiohttp's 128)."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=backlog)
        await site.start()
        yield site._server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def admin_api(http: aiohttp.ClientSession, server: Any, method: str, path: str, *, token: str,
                    **kwargs: Any) -> tuple[int, Any]:
    """METHOD /api/v1PATH on `server` (anything with `http_base`) -> (status, JSON body)."""
    kwargs.setdefault("headers", bearer(token))
    async with http.request(method, f"{server.http_base}/api/v1{path}", **kwargs) as resp:
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, await resp.json()


async def get(http: aiohttp.ClientSession, url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    """GET `url` -> (status, body, headers)."""
    async with http.get(url, headers=headers or {}) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def ranged(http: aiohttp.ClientSession, uri: str, byterange: str) -> bytes:
    """The bytes of an HLS EXT-X-BYTERANGE "SIZE@OFFSET" of `uri`, checked to be a whole 206."""
    size, offset = (int(x) for x in byterange.split("@"))
    status, data, _ = await get(http, uri, {"Range": f"bytes={offset}-{offset + size - 1}"})
    assert status == 206 and len(data) == size, (uri, byterange, status, len(data))
    return data
