"""CORS: which web origins may read the server's answers (the play routes, the pages' JSON, the admin API).

One rule for every listener: an allow-list of origins, where "*" allows any. With "*" the answer says
`Access-Control-Allow-Origin: *` whether or not the request named an origin, so a cache (a CDN in front of
HLS) can serve the same bytes to every page. With a list, an origin the request names and the list holds is
echoed with `Vary: Origin`; any other origin gets no CORS header, so the browser keeps the answer from the
page. Pure: request headers in, response headers out.
"""

from __future__ import annotations

from collections.abc import Iterable


MEDIA_EXPOSED = "Content-Length, Content-Range, Accept-Ranges, Date"
"""What a page's player may read of a media answer: the size, a range's place in the file (hls.js and
dash.js over byte ranges, a seeking <video> from another origin), and the server's clock."""


def cors_headers(origin: str | None, allowed: Iterable[str], expose: str = "") -> dict[str, str]:
    """The CORS headers of an answer to a request from `origin` (its Origin header, None if absent);
    `expose` lists response headers a page may read beyond the simple ones."""
    allowed = tuple(allowed)
    if "*" in allowed:
        headers = {"Access-Control-Allow-Origin": "*"}
    elif origin and origin in allowed:
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    else:
        return {}
    if expose:
        headers["Access-Control-Expose-Headers"] = expose
    return headers


def preflight_headers(
    origin: str | None, allowed: Iterable[str], methods: str, request_headers: str, max_age_s: int = 600
) -> dict[str, str]:
    """The answer to an OPTIONS preflight: the CORS headers, plus the methods and request headers a page
    may use and how long the browser may remember that; {} for an origin that is not allowed."""
    headers = cors_headers(origin, allowed)
    if headers:
        headers["Access-Control-Allow-Methods"] = methods
        headers["Access-Control-Allow-Headers"] = request_headers
        headers["Access-Control-Max-Age"] = str(max_age_s)
    return headers
