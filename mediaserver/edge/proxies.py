"""The client's address on the HTTP side, when reverse proxies stand in front (`http.trusted_proxies`).

One middleware, first in the chain, replaces `request.remote` with the address `client_address` reads from
X-Forwarded-For / Forwarded (mediaserver/auth/forwarded.py) when the TCP peer is a trusted proxy; every
later reader of `request.remote` (per-address limits, IP-bound play tokens, webhooks' client_ip, logs, HLS
client counts) then sees the viewer. From any other peer the request is passed on untouched.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from ..auth.forwarded import TrustedProxies, client_address


def forwarded_middleware(trusted: TrustedProxies):
    @web.middleware
    async def client_from_proxy(request: web.Request, handler):
        peer = request.remote or ""
        if not trusted.trusts(peer):
            return await handler(request)
        headers = request.headers
        client = client_address(peer, trusted, _joined(headers, hdrs.X_FORWARDED_FOR), _joined(headers, hdrs.FORWARDED))
        return await handler(request.clone(remote=client))

    return client_from_proxy


def _joined(headers, name: str) -> str | None:
    values = headers.getall(name, ())
    return ", ".join(values) if values else None
