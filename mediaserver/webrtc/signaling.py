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


# ----- H.264 profiles: what aiortc negotiates versus what a pass-through server accepts ---------------

_PASSABLE_PROFILE = "42e01f"
"""Constrained Baseline 3.1: one of the two profiles aiortc 1.16 will negotiate (it matches H.264 by
profile, as a decoder would); the server never decodes, so any profile can pass through."""


def _h264_payload_types(sdp: str) -> set[str]:
    types = set()
    for line in sdp.splitlines():
        if line.startswith("a=rtpmap:"):
            pt, _, codec = line[len("a=rtpmap:"):].partition(" ")
            if codec.upper().startswith("H264/"):
                types.add(pt)
    return types


def _with_profile(line: str, profile: str) -> tuple[str, str | None]:
    """The fmtp line with its profile-level-id replaced by `profile`, and the value it had (None: none)."""
    head, _, params = line.partition(" ")
    out, before = [], None
    for param in params.split(";"):
        name, eq, value = param.strip().partition("=")
        if name.lower() == "profile-level-id" and eq:
            before = value
            param = f"{name}={profile}"
        out.append(param.strip())
    return f"{head} {';'.join(out)}", before


def offer_for_any_h264_profile(sdp: str) -> tuple[str, dict[str, str]]:
    """The offer with every H.264 profile-level-id shown to aiortc as Constrained Baseline, and the values
    it replaced by payload type, to give back in the answer (`answer_with_profiles`)."""
    types = _h264_payload_types(sdp)
    replaced: dict[str, str] = {}
    lines = []
    for line in sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n"):
        if line.startswith("a=fmtp:") and line[len("a=fmtp:"):].partition(" ")[0] in types:
            pt = line[len("a=fmtp:"):].partition(" ")[0]
            line, before = _with_profile(line, _PASSABLE_PROFILE)
            if before is not None and before.lower() != _PASSABLE_PROFILE:
                replaced[pt] = before
        lines.append(line)
    return ("\r\n" if "\r\n" in sdp else "\n").join(lines), replaced


def answer_with_profiles(sdp: str, replaced: dict[str, str]) -> str:
    """The answer with each H.264 payload type's profile-level-id as the offer had it: the sender's
    WebRTC stack checks that the answer names a profile it offered."""
    if not replaced:
        return sdp
    lines = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=fmtp:"):
            pt = line[len("a=fmtp:"):].partition(" ")[0]
            if pt in replaced:
                line = _with_profile(line, replaced[pt])[0]
        lines.append(line)
    return "\r\n".join(lines)
