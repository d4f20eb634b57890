"""HTTP signaling helpers shared by WHIP (RFC 9725) and WHEP: read an SDP offer within limits, answer
201 with the SDP answer and the session's Location, CORS for browser pages, errors with a reason.

Every error is a JSON body `{"error": ..., "hint": ...}` as the rest of the server answers (the edge's
helpers are not importable from here: webrtc sits beside the edge, not on it).
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from ..auth import cors

SDP_TYPE = "application/sdp"
MAX_OFFER_BYTES = 32 * 1024
"""Browsers' offers are 3-10 KiB (more with many codecs and candidates)."""
OFFER_READ_TIMEOUT_S = 10.0
EXPOSED = "Location, ETag, Link, Content-Length, Date"
"""Response headers a page may read: a WHIP/WHEP client needs Location to end its session."""


class SignalingError(Exception):
    """A request the server answers with `status` and a reason (and what to do)."""

    def __init__(self, status: int, error: str, hint: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.hint = hint
        self.headers = headers or {}


def cors_for(request: web.Request, cors_origin: str) -> dict[str, str]:
    """CORS headers of an answer (http.cors_origin), with Location and ETag readable by the page."""
    return cors.cors_headers(request.headers.get("Origin"), (cors_origin,) if cors_origin else (), EXPOSED)


def error_response(err: SignalingError, cors_headers: dict[str, str]) -> web.Response:
    return web.Response(status=err.status, text=json.dumps({"error": err.error, "hint": err.hint}),
                        content_type="application/json", headers={**err.headers, **cors_headers})


async def read_offer(request: web.Request, max_bytes: int = MAX_OFFER_BYTES,
                     timeout_s: float = OFFER_READ_TIMEOUT_S) -> str:
    """The SDP offer in the body of a POST, checked for type, size and text; raises SignalingError."""
    if request.content_type != SDP_TYPE:
        raise SignalingError(415, f"the offer must be sent as {SDP_TYPE}, not {request.content_type or 'nothing'}",
                             f"send the SDP offer with Content-Type: {SDP_TYPE}")
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise SignalingError(413, f"an SDP offer of {declared} bytes is over the limit of {max_bytes}",
                             "offer fewer codecs or candidates")
    try:
        async with asyncio.timeout(timeout_s):
            body = await request.content.read(max_bytes + 1)
            while len(body) <= max_bytes and not request.content.at_eof():
                more = await request.content.read(max_bytes + 1 - len(body))
                if not more:
                    break
                body += more
    except TimeoutError:
        raise SignalingError(408, f"the SDP offer did not arrive within {timeout_s:g} s", "send the whole body at once") from None
    if len(body) > max_bytes:
        raise SignalingError(413, f"the SDP offer is over the limit of {max_bytes} bytes", "offer fewer codecs or candidates")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignalingError(400, "the SDP offer is not UTF-8 text", "send the offer as createOffer() made it") from None
    if not text.startswith("v=0"):
        raise SignalingError(400, "the body is not an SDP offer: it must start with v=0",
                             "send the offer as createOffer() made it")
    return text


def answer_response(answer_sdp: str, location: str, cors_headers: dict[str, str]) -> web.Response:
    """201 Created with the SDP answer and the session's Location (RFC 9725 4.2)."""
    return web.Response(status=201, text=answer_sdp, content_type=SDP_TYPE,
                        headers={"Location": location, **cors_headers})


def session_ended_response(cors_headers: dict[str, str]) -> web.Response:
    """The answer to DELETE on a session's Location: 200, no body (RFC 9725 4.2)."""
    return web.Response(status=200, headers=cors_headers)
