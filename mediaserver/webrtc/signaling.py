"""The HTTP side of WHEP and WHIP signaling (draft-ietf-wish-whep, RFC 9725), shared by both: reading an SDP
offer within limits and a deadline, the 201 answer with the session's Location, the DELETE that ends a
session, CORS for pages on other origins, errors with a reason and what to do.

A client POSTs its offer (Content-Type application/sdp) with its candidates in it, and gets the complete
answer: this server gathers its own candidates before answering (no trickle ICE, so PATCH is 405).
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from ..auth import cors
from ..edge.common import json_error, play_refused
from ..gate import ABR, CREDENTIAL, LIMIT, NAME, Refusal
from .sdp import Offer, SdpError, parse_offer

SDP = "application/sdp"
SDP_TYPE = SDP
MAX_OFFER_BYTES = 64 * 1024
"""Browsers' offers are 3-12 KiB (more with many codecs and candidates)."""
OFFER_READ_TIMEOUT_S = 10.0
METHODS = "POST, DELETE, PATCH, OPTIONS"
EXPOSED = "Location, ETag, Link, Content-Length, Date"
"""Response headers a page may read: a WHIP/WHEP client needs Location to end its session."""
REQUEST_HEADERS = "Content-Type, Authorization, If-Match"


class SignalingError(Exception):
    """A request the server answers with `status` and a reason (and what to do)."""

    def __init__(self, status: int, error: str, hint: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.hint = hint
        self.headers = headers or {}


def cors_headers(request: web.Request, origins: tuple[str, ...]) -> dict[str, str]:
    """CORS headers of a signaling answer; a page on another origin may read the session's Location."""
    return cors.cors_headers(request.headers.get("Origin"), origins, EXPOSED)


def cors_for(request: web.Request, cors_origin: str) -> dict[str, str]:
    """cors_headers for http.cors_origin ("" is none)."""
    return cors_headers(request, (cors_origin,) if cors_origin else ())


def preflight(request: web.Request, origins: tuple[str, ...]) -> web.Response:
    headers = cors.preflight_headers(request.headers.get("Origin"), origins, METHODS, REQUEST_HEADERS)
    return web.Response(status=204, headers={"Allow": METHODS, **headers})


def error_response(err: SignalingError, cors_headers: dict[str, str]) -> web.Response:
    return web.Response(status=err.status, text=json.dumps({"error": err.error, "hint": err.hint}),
                        content_type="application/json", headers={**err.headers, **cors_headers})


async def read_offer_text(request: web.Request, max_bytes: int = MAX_OFFER_BYTES,
                          timeout_s: float = OFFER_READ_TIMEOUT_S) -> str:
    """The SDP offer in the body of a POST, checked for type, size, deadline and text; raises SignalingError."""
    if request.content_type != SDP:
        raise SignalingError(415, f"the offer must be sent as Content-Type: {SDP}, not {request.content_type or 'none'}",
                             "POST the SDP offer from RTCPeerConnection.createOffer() as the request body")
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise SignalingError(413, f"an SDP offer of {declared} bytes is over the limit of {max_bytes}",
                             "send a plain offer (a browser's is a few KiB): fewer codecs or candidates")
    try:
        async with asyncio.timeout(timeout_s):
            body = await request.content.read(max_bytes + 1)
            while len(body) <= max_bytes and not request.content.at_eof():
                more = await request.content.read(max_bytes + 1 - len(body))
                if not more:
                    break
                body += more
    except TimeoutError:
        raise SignalingError(408, f"the SDP offer did not arrive within {timeout_s:g} s",
                             "send the whole body at once") from None
    except (ConnectionError, web.HTTPException) as err:
        raise SignalingError(400, "the offer could not be read", str(err)[:200]) from None
    if len(body) > max_bytes:
        raise SignalingError(413, f"the SDP offer is over the limit of {max_bytes} bytes",
                             "send a plain offer: fewer codecs or candidates")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignalingError(400, "bad SDP offer: not UTF-8 text", "send the offer as createOffer() made it") from None
    if not text.startswith("v=0"):
        raise SignalingError(400, "bad SDP offer: it must start with v=0", "send the offer as createOffer() made it")
    return text


async def read_offer(request: web.Request, headers: dict[str, str]) -> tuple[str, Offer]:
    """The SDP offer of a POST (text and parsed), or the 4xx (an HTTPException) that says what is wrong."""
    try:
        text = await read_offer_text(request)
    except SignalingError as err:
        raise json_error(err.status, err.error, err.hint, headers) from None
    try:
        return text, parse_offer(text)
    except SdpError as err:
        raise json_error(400, f"bad SDP offer: {err}", "send the SDP of RTCPeerConnection.createOffer()", headers) from None


def answer_response(answer_sdp: str, location: str, headers: dict[str, str]) -> web.Response:
    """201 Created: the SDP answer, and the session's URL (DELETE it to end the session; RFC 9725 4.2)."""
    return web.Response(status=201, body=answer_sdp.encode(), content_type=SDP,
                        headers={"Location": location, **headers})


def session_ended_response(cors_headers: dict[str, str]) -> web.Response:
    """The answer to DELETE on a session's Location: 200, no body (RFC 9725 4.2)."""
    return web.Response(status=200, headers=cors_headers)


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


PLACEHOLDER_H264 = "packetization-mode=1;profile-level-id=42e01f;level-asymmetry-allowed=1"


def offer_with_placeholder_h264(sdp: str) -> str:
    """The offer as aiortc is shown it when the video goes out as one of the offer's own entries (AV1, H265,
    which aiortc does not know): a video section offering nothing aiortc knows (no H.264, no VP8) gets an
    H.264 entry on a payload type it does not use, so that aiortc negotiates at all; the answer is then given
    the offer's own entry alone (rtp_send.answer_with_offered_codec), and never names the placeholder."""
    newline = "\r\n" if "\r\n" in sdp else "\n"
    sections: list[list[str]] = [[]]
    for line in sdp.split(newline):
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    out = sections[0]
    for section in sections[1:]:
        media = section[0].split()
        names = {line[len("a=rtpmap:"):].partition(" ")[2].partition("/")[0].upper()
                 for line in section if line.startswith("a=rtpmap:")}
        if media[0] != "m=video" or names & {"H264", "VP8"} or len(media) < 3:
            out += section
            continue
        used = set(media[3:]) | {line[len("a=rtpmap:"):].partition(" ")[0] for line in section
                                 if line.startswith("a=rtpmap:")}
        pt = next((str(p) for p in (*range(96, 128), *range(35, 64)) if str(p) not in used), None)
        if pt is None:
            out += section
            continue
        out.append(" ".join([*media, pt]))
        out += section[1:]
        if out[-1] == "":
            out.pop()
            out += [f"a=rtpmap:{pt} H264/90000", f"a=fmtp:{pt} {PLACEHOLDER_H264}", ""]
        else:
            out += [f"a=rtpmap:{pt} H264/90000", f"a=fmtp:{pt} {PLACEHOLDER_H264}"]
    return newline.join(out)
