"""WHEP playback: `POST /APP/STREAM/whep` with an SDP offer -> 201 with the answer and the session's Location
(`/APP/STREAM/whep/ID`); `DELETE` on it ends the session; `PATCH` (trickle ICE) is 405; OPTIONS answers
CORS preflights.

    POST -> offer read and checked (signaling, sdp) -> node and per-stream session limits (Sessions)
         -> the gate, as for every output (play token, locate: an edge pulls, viewers per stream, on_play)
         -> codecs: H.264 without B-frames passes through, and AV1 or HEVC to an offer that receives it
            (aiortc knows neither: its answer is given the offer's own AV1 or H265 entry,
            rtp_send.answer_with_offered_codec, and an offer of that codec alone is shown aiortc a placeholder
            H.264 entry, signaling.offer_with_placeholder_h264); B-frames, or a codec the offer does not receive, are served
            from the stream's best H.264 rendition when ABR is on, else 415 -> peer connection, answer, 201
    connected -> a hub subscriber (format "webrtc": listed by the admin API and /metrics like any viewer)
         -> its pump sends each frame's shared RTP payloads (feeds.py, rtp_packets.py) through the viewer's
            lean senders (rtp_send.py): headers, SRTP and sendto, synchronously, no queue per viewer

A session ends when the stream ends, when it is kicked (the stream, its viewers, or this viewer: the
subscriber is closed), on DELETE, when the peer connection fails or closes (ICE failure, consent expiry,
DTLS close), when ICE does not connect within `CONNECT_TIMEOUT_S`, when an on_play answer's expiry
passes, and at shutdown. Whatever ends it, `WhepSession.close` runs once: pump cancelled, subscriber
closed, audio listener removed, peer connection closed, the gate told (on_play_done).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import web
from aiortc import RTCRtpSender, RTCSessionDescription

from ..auth.names import split_rendition
from ..auth.tokens import bearer_token
from ..config import Config
from ..edge.common import json_error, peer_of
from ..gate import Gate, Verdict
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..hub.subscriber import SlowConsumer, Subscriber
from ..log import event
from ..media.frames import Frame, FrameKind
from ..transcode.service import AbrRefusal, AbrService
from . import signaling
from .feeds import StreamFeed
from .peer import NoFreePort, bind_candidates, failure_reason, new_peer_connection
from .rtp_packets import RtpFrame
from .rtp_send import LeanRtpSender, answer_with_offered_codec, lean_sender
from .sdp import Offer, h265_receivable, playback_problem, receivable_video
from .sessions import Session, Sessions
from .units import PLAYABLE_AUDIO, av1_profile, carried_problem, catch_up_times, hevc_profile, video_time

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
"""From the answer to ICE + DTLS connected; a client that never connects gives its place back."""
SENDERS_READY_S = 5.0
"""From connected to the senders started by aiortc (one DTLS transport after another): frames wait for them."""


class WhepService:
    """The node's WHEP endpoint: its routes, its sessions and the feeds they share per stream."""

    def __init__(self, config: Config, registry: StreamRegistry, gate: Gate, sessions: Sessions,
                 abr: AbrService | None = None) -> None:
        self.config = config
        self.registry = registry
        self.gate = gate
        self.sessions = sessions
        self.abr = abr
        self.feeds: dict[Stream, StreamFeed] = {}
        self.viewers: dict[str, WhepSession] = {}
        self.closing: set[asyncio.Future] = set()
        origin = config.http.cors_origin
        self.origins: tuple[str, ...] = (origin,) if origin else ()

    def add_routes(self, app: web.Application) -> None:
        """Before the play routes: the catch-all OPTIONS there answers GET preflights only."""
        app.router.add_post("/{app}/{name}/whep", self.post)
        app.router.add_route("OPTIONS", "/{app}/{name}/whep", self.options)
        app.router.add_delete("/{app}/{name}/whep/{session}", self.delete)
        app.router.add_patch("/{app}/{name}/whep/{session}", self.patch)
        app.router.add_route("OPTIONS", "/{app}/{name}/whep/{session}", self.options)
        app.on_shutdown.append(self._shutdown)

    # ----- routes ------------------------------------------------------------------------------------

    async def options(self, request: web.Request) -> web.Response:
        return signaling.preflight(request, self.origins)

    async def patch(self, request: web.Request) -> web.Response:
        raise signaling.trickle_not_supported(signaling.cors_headers(request, self.origins))

    async def delete(self, request: web.Request) -> web.Response:
        headers = signaling.cors_headers(request, self.origins)
        session_id = request.match_info["session"]
        viewer = self.viewers.get(session_id)
        if viewer is None or (viewer.requested.app, viewer.requested.name) != (request.match_info["app"],
                                                                                request.match_info["name"]):
            raise signaling.session_not_found(session_id, headers)
        await viewer.close("viewer_left")
        return web.Response(status=200, headers=headers)

    async def post(self, request: web.Request) -> web.Response:
        headers = signaling.cors_headers(request, self.origins)
        app, name = request.match_info["app"], request.match_info["name"]
        if not self.config.webrtc.enabled:
            raise json_error(404, "WebRTC playback is off on this server (webrtc.enabled = false)",
                             "watch the stream as HTTP-FLV, LL-HLS or HLS", headers)
        text, offer = await signaling.read_offer(request, headers)
        refused = self.sessions.refusal("viewer", app, name, request.remote or "")
        if refused is not None:
            status = 503 if self.sessions.full else 429
            raise json_error(status, refused, "try again later, or watch another format", {"Retry-After": "10", **headers})
        token = request.query.get("token", "") or bearer_token(request.headers.get("Authorization"))
        address = request.remote or ""
        verdict = await self.gate.admit_play(app, name, token=token, query=request.query, address=address,
                                             protocol="webrtc", logger=log)
        if verdict.refusal is not None:
            raise signaling.refusal_response(request, f"{app}/{name}", verdict.refusal, headers)
        try:
            return await self._answer(request, verdict, text, offer, headers)
        except BaseException:
            self.gate.viewer_left(verdict)  # never admitted to a session: its place back
            raise

    # ----- a session ---------------------------------------------------------------------------------

    async def _answer(self, request: web.Request, verdict: Verdict, text: str, offer: Offer,
                      headers: dict[str, str]) -> web.Response:
        key = verdict.key
        assert key is not None
        stream = verdict.stream
        if stream is None:
            error, hint = self.gate.not_found(key)
            raise json_error(404, error, hint, headers)
        stream = await self._playable(stream, offer, verdict.address, headers)
        info = stream.info
        audio = info.audio_codec if info.audio_codec in PLAYABLE_AUDIO else None
        problem = playback_problem(offer, info.video_codec, audio, av1_profile(info.video_config),
                                   hevc_profile(info.video_config))
        if problem is not None:
            raise json_error(400, f"bad SDP offer for {key}: {problem}",
                             "offer recvonly video with H.264 (packetization-mode=1) and audio with Opus", headers)
        viewer = WhepSession(self, request, verdict, stream, audio)
        try:
            answer = await viewer.negotiate(text, offer)
        except NoFreePort as err:
            await viewer.close("no_free_port", quiet=True)
            raise json_error(503, str(err), "try again later", {"Retry-After": "10", **headers}) from None
        except ValueError as err:  # aiortc: an offer it cannot parse or answer
            await viewer.close("bad_offer", quiet=True)
            raise json_error(400, f"bad SDP offer: {err}", "send the SDP of RTCPeerConnection.createOffer()",
                             headers) from None
        except BaseException:
            await viewer.close("error", quiet=True)
            raise
        location = f"/{key.app}/{key.name}/whep/{viewer.session.id}"
        return signaling.answer_response(answer, location, headers)

    async def _playable(self, stream: Stream, offer: Offer, address: str, headers: dict[str, str]) -> Stream:
        """The stream itself when WebRTC can carry its video to this offer (H.264 or, when offered, AV1 or HEVC,
        without B-frames; or no video), else its best H.264 rendition when ABR is on; else the 415 that says why."""
        info = stream.info
        receivable = receivable_video(offer, av1_profile(info.video_config), hevc_profile(info.video_config))
        why = carried_problem(info.video_codec, info.audio_codec, stream.gop.frames_from(stream.gop.base),
                              receivable)
        if why is None:
            return stream
        if info.video_codec is None:
            raise json_error(415, f"stream {stream.key} cannot be played over WebRTC: {why}",
                             "wait for the publisher's first frames, or watch it as HTTP-FLV", headers)
        base, label = split_rendition(stream.key.name)
        abr = self.abr
        if abr is None or label is not None or not abr.enabled_for(stream.key):
            hint = ("publish H.264 without B-frames (x264: -bf 0; OBS: profile baseline or bframes=0), "
                    "turn ABR on for its app (its renditions have none), or watch it as HTTP-FLV or LL-HLS")
            if info.video_codec == "av1" and "av1" not in receivable:
                hint = ("play it in a browser that receives AV1 over WebRTC (Chrome, Edge, Firefox), turn ABR on "
                        "for its app (H.264 renditions), or watch it as HTTP-FLV or LL-HLS")
            elif info.video_codec == "hevc" and "hevc" not in receivable:
                hint = ("play it in a browser that receives HEVC over WebRTC (Safari; Chrome only with hardware "
                        "decoding), turn ABR on for its app (H.264 renditions), or watch it as HTTP-FLV or LL-HLS")
            raise json_error(415, f"stream {stream.key} cannot be played over WebRTC: {why}", hint, headers)
        views = await abr.renditions(stream.key, start=True)
        if isinstance(views, AbrRefusal):
            raise json_error(415, f"stream {stream.key} cannot be played over WebRTC: {why}, and it has no "
                             f"rendition: {views.error}", views.hint, headers)
        h264 = [v for v in views if v.codec == "h264"]
        if not h264:
            raise json_error(415, f"stream {stream.key} cannot be played over WebRTC: {why}, and no rendition is "
                             "H.264", "add an H.264 rung to [[abr.ladder]], or watch it as LL-HLS", headers)
        rendition = self.registry.get(h264[0].key)
        if (rendition is None or rendition.ended) and self.gate.rendition_locate is not None:
            located = await self.gate.rendition_locate(h264[0].key, address)
            rendition = located if isinstance(located, Stream) else None
        if rendition is None or rendition.ended:
            raise json_error(503, f"stream {stream.key} has B-frames and its rendition {h264[0].label} is not ready",
                             "try again in a few seconds", {"Retry-After": "5", **headers})
        event(log, "webrtc_rendition", stream=str(stream.key), rendition=h264[0].label, why=why)
        return rendition

    def feed(self, stream: Stream) -> StreamFeed:
        feed = self.feeds.get(stream)
        if feed is None:
            feed = self.feeds[stream] = StreamFeed(stream)
        feed.viewers += 1
        return feed

    def release(self, feed: StreamFeed) -> None:
        feed.viewers -= 1
        if feed.viewers <= 0 and self.feeds.get(feed.stream) is feed:
            del self.feeds[feed.stream]
            feed.close()

    async def _shutdown(self, _app: web.Application) -> None:
        await asyncio.gather(*(v.close("server_shutdown") for v in list(self.viewers.values())),
                             return_exceptions=True)


class WhepSession:
    """One WHEP viewer: its peer connection, lean RTP senders, hub subscriber and pump."""

    def __init__(self, service: WhepService, request: web.Request, verdict: Verdict, stream: Stream,
                 audio_codec: str | None) -> None:
        self.service = service
        self.verdict = verdict
        assert verdict.key is not None
        self.requested: StreamKey = verdict.key
        self.stream = stream
        self.peer = peer_of(request)
        self.audio_codec = audio_codec
        self._offered_codec = {"av1": "video/AV1", "hevc": "video/H265"}.get(stream.info.video_codec or "")
        """The mime type of the offer's own entry the video is answered with (a codec aiortc does not know)."""
        self.pc = new_peer_connection(service.config.webrtc)
        self.video: LeanRtpSender | None = None
        self.audio: LeanRtpSender | None = None
        self.feed = service.feed(stream)
        self.sub: Subscriber | None = None
        self.started = time.monotonic()
        self.session = Session("viewer", verdict.key.app, verdict.key.name, verdict.address, self.close)
        self.closed = False
        self._tasks: list[asyncio.Task] = []
        self._expiry: asyncio.TimerHandle | None = None
        self._newest_pts: int | None = None
        self._begun = False
        service.sessions.add(self.session)
        service.viewers[self.session.id] = self

    async def negotiate(self, offer_sdp: str, offer: Offer) -> str:
        """Set the offer, answer it with our candidates gathered; the session then waits for ICE."""
        pc = self.pc
        video = None
        wanted_kinds = {"video": self.stream.info.video_codec is not None, "audio": self.audio_codec is not None}
        for kind, wanted_kind in wanted_kinds.items():
            if not wanted_kind or not any(s.direction in ("recvonly", "sendrecv") for s in offer.of_kind(kind)):
                continue  # nothing to send, or nobody to receive it
            transceiver = pc.addTransceiver(kind, direction="sendonly")
            if kind != "video" or self._offered_codec is None:  # AV1, HEVC: the offer's own entry, set below
                wanted = "video/h264" if kind == "video" else "audio/opus"
                transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities(kind).codecs
                                                 if c.mimeType.lower() in (wanted, f"{kind}/rtx")])
            sender = lean_sender(transceiver.sender)
            if kind == "video":
                self.video, video = sender, transceiver
            else:
                self.audio = sender
        # AV1 or H265 out: an offer with no codec aiortc knows in its video section is shown one it will not use.
        shown = offer_sdp if self._offered_codec is None else signaling.offer_with_placeholder_h264(offer_sdp)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(shown, "offer"))
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise ValueError(str(err) or type(err).__name__) from err
        except Exception as err:  # aiortc's OperationError: no common codec
            raise ValueError(str(err)) from err
        if self.video is not None and self._offered_codec == "video/AV1":
            profile = av1_profile(self.stream.info.video_config)
            if answer_with_offered_codec(video, offer_sdp, "video/AV1",
                                         lambda parameters: str(parameters.get("profile", 0)) == str(profile)) is None:
                raise ValueError(f"the offer's video section has no AV1 of profile {profile}")
        elif self.video is not None and self._offered_codec == "video/H265":
            profile = hevc_profile(self.stream.info.video_config)

            def accept(parameters: dict) -> bool:  # aiortc's fmtp values: ints where they are digits
                return h265_receivable({str(k).strip().lower(): str(v).strip() for k, v in parameters.items()},
                                       profile)

            if answer_with_offered_codec(video, offer_sdp, "video/H265", accept) is None:
                raise ValueError(f"the offer's video section has no H265 (HEVC) of profile-id {profile}")
        bind_candidates(pc, self.service.config.webrtc)
        await pc.setLocalDescription(await pc.createAnswer())
        pc.on("connectionstatechange", self._state_changed)
        self._tasks.append(asyncio.create_task(self._connect_deadline()))
        if self.verdict.expires_in is not None:
            self._expiry = asyncio.get_running_loop().call_later(self.verdict.expires_in, self._close_soon,
                                                                 "session_expired")
        event(log, "webrtc_offer_answered", stream=str(self.requested), peer=self.peer, session=self.session.id,
              serving=str(self.stream.key) if self.stream.key != self.requested else None)
        return pc.localDescription.sdp

    async def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self.sub is None and not self.closed and not self._begun:
            self._begun = True
            self.session.connected = True
            self._tasks.append(asyncio.create_task(self._begin()))
        elif state in ("failed", "closed"):
            # ICE failing or consent expiring may show as "closed" (aiortc closes DTLS over the dead transport)
            failed = failure_reason(self.pc)
            await self.close(failed or ("ice_failed" if state == "failed" else "peer_closed"))

    def _close_soon(self, reason: str) -> None:
        """Close from a callback that cannot await; the task is held until it is done."""
        task = asyncio.ensure_future(self.close(reason))
        self.service.closing.add(task)
        task.add_done_callback(self.service.closing.discard)

    async def _connect_deadline(self) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT_S)
        if self.sub is None and not self.closed:
            await self.close("ice_timeout")

    async def _begin(self) -> None:
        """Subscribe once aiortc started the senders (it does after connected, transport by transport)."""
        senders = [s for s in (self.video, self.audio) if s is not None]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in senders)), SENDERS_READY_S)
        if self.sub is None and not self.closed:
            self._subscribe()

    def _subscribe(self) -> None:
        stream = self.stream
        if stream.ended:
            self._close_soon("stream_ended")
            return
        loop = asyncio.get_running_loop()
        self.sub, start = stream.subscribe("webrtc", self.peer, loop.time())
        if self.audio is not None and self.audio_codec == "aac":
            self.feed.listen_opus(self._opus_packet)
        event(log, "viewer_join", stream=str(stream.key), format="webrtc", peer=self.peer,
              viewers=len(stream.subscribers), session=self.session.id)
        self._start(start)
        self._tasks.append(asyncio.create_task(self._pump()))

    def _start(self, frames: list[Frame]) -> None:
        """The clean start: configs, then the cached GOP's pictures restamped to the live edge (units.py);
        cached audio is not sent."""
        pictures: list[tuple[Frame, RtpFrame]] = []
        for frame in frames:
            if frame.is_config:
                self.feed.configure(frame)
            elif frame.kind == FrameKind.VIDEO and self.video is not None:
                made = self.feed.rtp_of(frame)
                if made is not None:
                    pictures.append((frame, made))
        times = catch_up_times([video_time(f) for f, _ in pictures])
        sent = 0
        for (_, made), rtp_time in zip(pictures, times):
            sent += self.video.send_frame(made.at(rtp_time))  # type: ignore[union-attr]
        if pictures:
            self._newest_pts = pictures[-1][0].pts_ms
        if self.sub is not None and sent:
            self.service.registry.count_sent(self.sub, sent)

    async def _pump(self) -> None:
        sub = self.sub
        assert sub is not None
        reason = "stream_ended"
        try:
            while True:
                batch = await sub.next_batch()
                if batch is None:
                    reason = sub.close_reason or "stream_ended"
                    break
                sent = self._send(batch)
                if sent < 0:
                    reason = "b_frames"
                    break
                if sent:
                    self.service.registry.count_sent(sub, sent)
        except SlowConsumer:
            reason = "slow_consumer"
        await self.close(reason)

    def _send(self, batch: list[Frame]) -> int:
        """Send a batch; the payload bytes sent, or -1 when the video turned out to have B-frames."""
        feed = self.feed
        sent = 0
        for frame in batch:
            if frame.is_config:
                feed.configure(frame)
                continue
            if frame.kind == FrameKind.VIDEO:
                if self.video is None:
                    continue
                pts = frame.pts_ms
                if self._newest_pts is not None and pts < self._newest_pts:
                    return -1
                self._newest_pts = pts
                made = feed.rtp_of(frame)
                if made is not None:
                    sent += self.video.send_frame(made)
            elif frame.kind == FrameKind.AUDIO and self.audio is not None and self.audio_codec == "opus":
                made = feed.rtp_of(frame)
                if made is not None:
                    sent += self.audio.send_frame(made)
            elif frame.kind == FrameKind.AUDIO and self.audio is not None:
                feed.follow_audio()  # AAC: the viewer's Opus comes from the feed; its publisher may have changed
        return sent

    def _opus_packet(self, made: RtpFrame) -> None:
        if self.audio is not None and self.sub is not None and not self.closed:
            sent = self.audio.send_frame(made)
            if sent:
                self.service.registry.count_sent(self.sub, sent)

    async def close(self, reason: str, quiet: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        service = self.service
        service.sessions.remove(self.session)
        service.viewers.pop(self.session.id, None)
        if self._expiry is not None:
            self._expiry.cancel()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self.feed.unlisten_opus(self._opus_packet)
        service.release(self.feed)
        sub = self.sub
        if sub is not None:
            sub.close(reason if reason != "stream_ended" else "viewer_left")
        with contextlib.suppress(Exception):
            await self.pc.close()
        duration = time.monotonic() - self.started
        dropped = (sub.frames_dropped if sub else 0) + sum(s.dropped for s in (self.video, self.audio) if s)
        service.gate.viewer_left(self.verdict, reason if sub is not None else None, duration,
                                 sub.bytes_sent if sub else 0, dropped)
        if not quiet:
            event(log, "viewer_leave", stream=str(self.stream.key), format="webrtc", peer=self.peer, reason=reason,
                  session=self.session.id, bytes=sub.bytes_sent if sub else 0, dropped_frames=dropped,
                  connected=sub is not None)

