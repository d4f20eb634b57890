"""WHIP ingest (RFC 9725): `POST /APP/STREAM/whip` with an SDP offer publishes a stream over WebRTC.

    POST   /APP/STREAM/whip       Authorization: Bearer TOKEN, Content-Type: application/sdp
                                  -> 201, the SDP answer, Location: /APP/STREAM/whip/SESSION
    DELETE /APP/STREAM/whip/SESSION   ends the publish (the stream's reconnect grace applies)
    OPTIONS                       CORS preflight (the edge's catch-all answers it)

The offer is checked first: it must offer H.264 video (packetization-mode 1, any profile: aiortc is shown
Constrained Baseline and the answer gives the offered profile back, since nothing is decoded) and/or Opus
audio, and the answer accepts only those (the outputs carry H.264; Opus becomes AAC, see ingest_audio.py). Then the
node's WebRTC session limit, then TOKEN, which is what an RTMP publish accepts: a stream key of the app,
or a publish token for APP/STREAM (none where the app is open to publishers); the gate decides, with the
same limits, on_publish webhook and cluster claim. A name already being published is 409. Each refusal
says why and what to do.

Trickle ICE and ICE restarts (PATCH) are not offered: aiortc gathers its host candidates before it
answers, so the answer is complete; PATCH gets 405, as RFC 9725 4.3.1 asks of a server without them.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiortc import RTCRtpReceiver, RTCSessionDescription
from aiortc.sdp import SessionDescription

from ..auth.tokens import bearer_token
from ..config import Config
from ..gate import CREDENTIAL, HOOK, LIMIT, NAME, TAKEN, Gate, Refusal
from ..hub.registry import PublishRefused, StreamRegistry
from ..log import event
from .ingest import IngestTimeouts, WhipPublisher
from .peer import bind_candidates, new_peer_connection
from .sdp import SdpError, offer_lines
from .sessions import Session, Sessions
from .signaling import (
    SignalingError,
    answer_response,
    answer_with_profiles,
    cors_for,
    error_response,
    offer_for_any_h264_profile,
    read_offer_text,
    session_ended_response,
)

log = logging.getLogger(__name__)

NEGOTIATION_TIMEOUT_S = 15.0
"""From the offer to the answer: host candidates take milliseconds, STUN/TURN ones up to a few seconds."""


def check_offer(sdp: str) -> tuple[bool, bool]:
    """(has H.264 video, has Opus audio) of an offer; raises SignalingError (400) saying what is wrong."""
    try:
        offer_lines(sdp)  # what no client sends (NUL bytes, thousands of lines or candidates): before aiortc reads it
    except SdpError as err:
        raise SignalingError(400, f"bad SDP offer: {err}", "send the offer as createOffer() made it") from None
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as err:  # aiortc's parser raises whatever the bad line makes it raise
        raise SignalingError(400, f"the SDP offer cannot be parsed: {err or type(err).__name__}",
                             "send the offer as createOffer() made it") from None
    video = audio = False
    offered: dict[str, set[str]] = {"video": set(), "audio": set()}
    for media in parsed.media:
        if media.kind not in offered:
            continue
        for codec in media.rtp.codecs:
            name = codec.name.lower()
            offered[media.kind].add(codec.name)
            if media.kind == "video" and name == "h264" and str(codec.parameters.get("packetization-mode", 0)) == "1":
                video = True
            elif media.kind == "audio" and name == "opus":
                audio = True
    if not parsed.media or not any(m.kind in offered for m in parsed.media):
        raise SignalingError(400, "the SDP offer has no audio or video section", "add a camera or microphone track")
    if offered["video"] and not video:
        raise SignalingError(400, f"the offer's video has no H.264 with packetization-mode=1 (offered: "
                             f"{', '.join(sorted(offered['video'] - {'rtx', 'red', 'ulpfec'})) or 'nothing'})",
                             "choose H.264 as the encoder (OBS: x264 or a hardware H.264 encoder)")
    if offered["audio"] and not audio:
        raise SignalingError(400, f"the offer's audio has no Opus (offered: {', '.join(sorted(offered['audio']))})",
                             "choose Opus as the audio codec")
    for media in parsed.media:
        if media.kind in offered and not (media.ice.usernameFragment and media.dtls and media.dtls.fingerprints):
            raise SignalingError(400, f"the offer's {media.kind} section lacks its ICE credentials or DTLS fingerprint",
                                 "send the offer as createOffer() made it")
    return video, audio


def _only(kind: str, names: tuple[str, ...]) -> list:
    """The receive capabilities of `kind` restricted to `names` (and retransmission)."""
    capabilities = RTCRtpReceiver.getCapabilities(kind)
    assert capabilities is not None
    return [c for c in capabilities.codecs if c.mimeType.split("/")[1].lower() in names]


def _refusal_error(refusal: Refusal, subject: str, bearer_sent: bool) -> SignalingError:
    if refusal.kind == NAME:
        return SignalingError(400, refusal.message, "publish to /APP/STREAM/whip with a valid name")
    if refusal.kind == CREDENTIAL:
        if not bearer_sent:
            return SignalingError(401, f"publishing {subject} needs a credential: {refusal.message}",
                                  "send Authorization: Bearer with the stream key or a publish token "
                                  "(`mediaserver token --action publish`)",
                                  {"WWW-Authenticate": 'Bearer realm="mediaserver publish"'})
        return SignalingError(403, f"publishing {subject} is refused: {refusal.message}",
                              "check the bearer token: a stream key of the app or a publish token for this stream")
    if refusal.kind == HOOK:
        return SignalingError(403, f"publishing {subject} is refused: {refusal.message}", "ask the operator")
    if refusal.kind == LIMIT:
        return SignalingError(503, refusal.message, refusal.hint or "try again later", {"Retry-After": "5"})
    if refusal.kind == TAKEN:
        return SignalingError(409, refusal.message, "stop the other publisher or use another stream name")
    return SignalingError(403, refusal.message, refusal.hint or "ask the operator")


class WhipService:
    """WHIP sessions of this node, wired to the hub through the gate."""

    def __init__(self, config: Config, registry: StreamRegistry, gate: Gate, sessions: Sessions) -> None:
        self.config = config
        self.registry = registry
        self.gate = gate
        self.sessions = sessions
        self.publishers: dict[str, WhipPublisher] = {}
        self.timeouts = IngestTimeouts()

    def _cors(self, request: web.Request) -> dict[str, str]:
        return cors_for(request, self.config.http.cors_origin)

    async def publish(self, request: web.Request) -> web.Response:
        cors = self._cors(request)
        try:
            return await self._publish(request, cors)
        except SignalingError as err:
            return error_response(err, cors)

    async def _publish(self, request: web.Request, cors: dict[str, str]) -> web.Response:
        app, name = request.match_info["app"], request.match_info["name"]
        address = request.remote or ""
        offer = await read_offer_text(request)
        # The offer and the node's session limit first: cheap, and a refusal then never costs an on_publish
        # webhook call or a cluster claim.
        has_video, has_audio = check_offer(offer)
        refused = self.sessions.refusal("publisher", app, name, address)
        if refused is not None:
            raise SignalingError(503 if self.sessions.full else 429, refused, "try another node or later",
                                 {"Retry-After": "5"})
        bearer = bearer_token(request.headers.get("Authorization"))
        verdict = await self.gate.admit_publish_bearer(app, name, bearer, query=request.query, address=address,
                                                       protocol="whip")
        if verdict.refusal is not None:
            raise _refusal_error(verdict.refusal, f"{app}/{name}" if verdict.key is None else str(verdict.key),
                                 bool(bearer))
        key = verdict.key
        assert key is not None
        await self.registry.hear_out_publisher(key, None)  # an RTMP publisher of the name that just left
        current = self.registry.get(key)
        if current is not None and current.publisher is not None and not current.ended:
            # Said before any ICE work; the registry's claim below decides for good (a stale publisher is
            # replaced there).
            if time.monotonic() - current.last_frame_at < self.registry.policy.stale_publisher_timeout:
                raise SignalingError(409, f"stream {key} is already being published by {current.publisher.peer}",
                                     "stop that publisher or use another stream name")
        pc = new_peer_connection(self.config.webrtc)
        publisher = WhipPublisher(pc, self.registry, _peer(request), keyframe_interval_s=self.config.hls.segment_duration,
                                  timeouts=self.timeouts)
        try:
            async with asyncio.timeout(NEGOTIATION_TIMEOUT_S):
                shown, profiles = offer_for_any_h264_profile(offer)
                await pc.setRemoteDescription(RTCSessionDescription(shown, "offer"))
                publisher.tap()
                bind_candidates(pc, self.config.webrtc)  # udp_port_range, public_ip, consent_timeout_s
                for transceiver in pc.getTransceivers():
                    if transceiver.kind == "video":
                        transceiver.setCodecPreferences(_only("video", ("h264", "rtx")))
                    elif transceiver.kind == "audio":
                        transceiver.setCodecPreferences(_only("audio", ("opus",)))
                await pc.setLocalDescription(await pc.createAnswer())
        except TimeoutError:
            await publisher.end("negotiation_timeout")
            raise SignalingError(503, f"the answer was not ready within {NEGOTIATION_TIMEOUT_S:g} s (gathering ICE "
                                 "candidates from the configured STUN/TURN servers)",
                                 "try again; the operator may check webrtc.ice_servers", {"Retry-After": "5"}) from None
        except asyncio.CancelledError:
            publisher.end("client_left")
            raise
        except Exception as err:  # aiortc refuses offers it cannot answer with ValueError and friends
            await publisher.end("bad_offer")
            raise SignalingError(400, f"the SDP offer cannot be answered: {err or type(err).__name__}",
                                 "send the offer as createOffer() made it, with H.264 video and/or Opus audio") from None
        try:
            stream = self.registry.claim_publisher(key, publisher)
        except PublishRefused as err:
            await publisher.end("name_taken")
            raise SignalingError(409, str(err), "stop that publisher or use another stream name") from None
        session = Session("publisher", key.app, key.name, address, publisher.end)
        self.sessions.add(session)
        self.publishers[session.id] = publisher

        async def forget(reason: str) -> None:
            self.sessions.remove(session)
            self.publishers.pop(session.id, None)

        publisher.on_closed = forget
        publisher.session = session
        publisher.start(stream, verdict.expires_in)
        event(log, "publish_accepted", stream=str(key), protocol="whip", session=session.id[:8],
              video="h264" if has_video else "none", audio="opus" if has_audio else "none")
        location = f"/{key.app}/{key.name}/whip/{session.id}"
        return answer_response(answer_with_profiles(pc.localDescription.sdp, profiles), location, cors)

    async def end(self, request: web.Request) -> web.Response:
        """DELETE on a session's Location. The session id is the capability (unguessable, 128 bits)."""
        cors = self._cors(request)
        session = self.sessions.get(request.match_info["session"])
        app, name = request.match_info["app"], request.match_info["name"]
        if session is None or session.kind != "publisher" or (session.app, session.stream) != (app, name):
            return error_response(SignalingError(404, "no such WHIP session", "it ended already, or the URL is not "
                                                 "the Location the POST answered"), cors)
        publisher = self.publishers.get(session.id)
        if publisher is not None:
            await publisher.end("deleted")
        return session_ended_response(cors)

    async def close_all(self, _app: web.Application | None = None) -> None:
        """End every session (server shutdown)."""
        for publisher in list(self.publishers.values()):
            publisher.end("server_shutdown")
        for publisher in list(self.publishers.values()):
            try:
                await publisher.end("server_shutdown")
            except Exception:
                log.debug("WHIP session failed to close", exc_info=True)


def _peer(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
    return str(request.remote or "unknown")


def add_whip_routes(app: web.Application, config: Config, registry: StreamRegistry, gate: Gate,
                    sessions: Sessions) -> WhipService:
    """POST /APP/STREAM/whip and DELETE /APP/STREAM/whip/SESSION; sessions end at the app's cleanup."""
    service = WhipService(config, registry, gate, sessions)
    app.router.add_post("/{app}/{name}/whip", service.publish, name="whip-publish")
    app.router.add_delete("/{app}/{name}/whip/{session}", service.end, name="whip-session")
    app.on_cleanup.append(service.close_all)
    return service
