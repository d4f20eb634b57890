"""The HTTP side of WHEP and WHIP signaling (draft-ietf-wish-whep, RFC 9725), shared by both: reading an SDP
offer within limits, the 201 answer with the session's Location, the DELETE that ends a session, CORS for
pages on other origins, and the gate's refusals as HTTP answers.

A client POSTs its offer (Content-Type application/sdp) with its candidates in it, and gets the complete
answer: this server gathers its own candidates before answering (no trickle ICE, so PATCH is 405).
"""

from __future__ import annotations

from aiohttp import web

from ..auth import cors
from ..edge.common import json_error, play_refused
from ..gate import ABR, CREDENTIAL, LIMIT, NAME, Refusal
from .sdp import Offer, SdpError, parse_offer

SDP = "application/sdp"
MAX_OFFER_BYTES = 64 * 1024
"""Browsers' offers are 3-12 KiB; aiohttp's own body limit for the app is the same."""
METHODS = "POST, DELETE, PATCH, OPTIONS"
EXPOSED = "Location, ETag, Content-Length"
REQUEST_HEADERS = "Content-Type, Authorization, If-Match"


def cors_headers(request: web.Request, origins: tuple[str, ...]) -> dict[str, str]:
    """CORS headers of a signaling answer; a page on another origin may read the session's Location."""
    return cors.cors_headers(request.headers.get("Origin"), origins, EXPOSED)


def preflight(request: web.Request, origins: tuple[str, ...]) -> web.Response:
    headers = cors.preflight_headers(request.headers.get("Origin"), origins, METHODS, REQUEST_HEADERS)
    return web.Response(status=204, headers={"Allow": METHODS, **headers})


async def read_offer(request: web.Request, headers: dict[str, str]) -> tuple[str, Offer]:
    """The SDP offer of a POST (text and parsed), or the 4xx that says what is wrong with it."""
    if request.content_type != SDP:
        raise json_error(415, f"the offer must be sent as Content-Type: {SDP}, not {request.content_type or 'none'}",
                         "POST the SDP offer from RTCPeerConnection.createOffer() as the request body", headers)
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        raise json_error(413, f"the offer is {request.content_length} bytes; at most {MAX_OFFER_BYTES} are read",
                         "send a plain offer (a browser's is a few KiB)", headers)
    try:
        body = await request.content.read(MAX_OFFER_BYTES + 1)
    except (ConnectionError, web.HTTPException) as err:
        raise json_error(400, "the offer could not be read", str(err)[:200], headers) from None
    if len(body) > MAX_OFFER_BYTES:
        raise json_error(413, f"the offer is over {MAX_OFFER_BYTES} bytes", "send a plain offer", headers)
    try:
        text = body.decode("utf-8")
        return text, parse_offer(text)
    except UnicodeDecodeError:
        raise json_error(400, "bad SDP offer: not UTF-8 text", "send the offer's SDP text as it is", headers) from None
    except SdpError as err:
        raise json_error(400, f"bad SDP offer: {err}", "send the SDP of RTCPeerConnection.createOffer()", headers) from None


def answer_response(answer_sdp: str, location: str, headers: dict[str, str]) -> web.Response:
    """201 Created: the SDP answer, and the session's URL (DELETE it to end the session)."""
    return web.Response(status=201, body=answer_sdp.encode(), content_type=SDP,
                        headers={"Location": location, **headers})


def session_not_found(session_id: str, headers: dict[str, str]) -> web.HTTPException:
    return json_error(404, f"no WebRTC session {session_id[:64]!r} here",
                      "it has ended already (or was never made on this node)", headers)


def trickle_not_supported(headers: dict[str, str]) -> web.HTTPException:
    return json_error(405, "this server does not take trickled candidates",
                      "put your candidates in the offer (wait for ICE gathering to complete before the POST)",
                      {"Allow": "DELETE, OPTIONS", **headers})


def refusal_response(request: web.Request, subject: str, refusal: Refusal, headers: dict[str, str]) -> web.HTTPException:
    """The gate's refusal as an HTTP answer, as the other outputs give it: 400 (a bad name), 401 (no token),
    403 (a credential or the hook), 503 (a limit), or an ABR refusal's own status."""
    if refusal.kind == NAME:
        return json_error(400, refusal.message, "check the stream name in the URL", headers)
    if refusal.kind == LIMIT:
        return json_error(503, refusal.message, refusal.hint, {"Retry-After": "10", **headers})
    if refusal.kind == ABR:
        extra = {"Retry-After": "10"} if refusal.status == 503 else {}
        return json_error(refusal.status or 503, refusal.message, refusal.hint, {**extra, **headers})
    reason = refusal.reason if refusal.kind == CREDENTIAL else refusal.kind
    error = play_refused(request, subject, reason, refusal.message, "add ?token=... to the WHEP URL")
    error.headers.update(headers)
    return error
