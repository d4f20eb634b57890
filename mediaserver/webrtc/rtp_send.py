"""The lean RTP send path of WHEP viewers: the one place that reaches inside aiortc's sender.

Written against aiortc 1.16 (rtcrtpsender.py, rtcdtlstransport.py) and aioice 0.10+ (ice.py). aiortc's
RTCRtpSender reads a track and, for every packet of every viewer, builds an RtpPacket object, serializes
it with its header extensions, and awaits a chain of coroutines down to the socket (SRTP protect on the
way): about 40 % of the server's time at 10 viewers. Here a viewer's sender is a `LeanRtpSender` (a
class swap on the instance, after `addTransceiver` and before the connection starts it, so nothing else
in the process is touched), and the session's pump calls `send_frame` with the stream's shared
`RtpFrame` (rtp_packets.py): per packet, one struct-packed header + the frame's extension block + the
shared payload, SRTP-protected with the DTLS transport's tx session; no await, no object per packet.
The datagrams go out on the nominated ICE pair's socket: on Linux, a frame's packets of equal size in one
UDP GSO send (UDP_SEGMENT: one system call, and one wake-up of the receiver, for a run of up to 64
datagrams; a frame's FU-A fragments make one or two runs), through a duplicate of the socket's descriptor
while the transport has nothing queued; elsewhere, or when the socket backs up, the transport's `sendto`.

Kept from aiortc: ICE, DTLS, the RTCP receive path (RTCP routing by SSRC, RTT from receiver reports,
PLI/FIR noted as aiortc notes them) and its RTCP serialization. Replaced: the RTP loop (`_run_rtp` only
waits for the stop), the RTCP loop (`_run_rtcp`: sender reports with our true packet and octet counts and
an RTP timestamp carried on to the report's own NTP time, SDES CNAME, BYE at the end) and NACK handling
(answered from the viewer's history of the shared payloads: RTX when negotiated, else the packet again).

A codec aiortc does not know (AV1, HEVC: aiortc has no encoder for either, so its codec table lacks them) is
answered by `answer_with_offered_codec`: after setRemoteDescription, the video transceiver's negotiated codecs are set
to the offer's own entry for it (and its RTX). Only lean senders get that, which never encode.

If a later aiortc renames what this module uses, `lean_sender` raises RuntimeError (checked before
anything is swapped), the WHEP request fails with 500 and the tests say where: update this module.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc import sdp as aiortc_sdp
from aiortc.codecs import is_rtx
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import (RTCP_RTPFB_NACK, AnyRtcpPacket, RtcpByePacket, RtcpRtpfbPacket, RtcpSdesPacket,
                        RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket)
from aiortc.utils import random32

from .rtp_packets import RtpFrame, RtpStream, abs_send_time, extension_block, gso_runs, ntp_time

AIORTC_VERSION = "1.16"

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
WRITE_BUFFER_LIMIT = 1 << 20
"""Bytes a viewer's socket may hold unsent before its frames are dropped (video: until the next keyframe).
Loopback and LANs never fill it; a UDP socket only backs up when the machine is overwhelmed."""

UDP_SEGMENT = 103
"""Linux's UDP_SEGMENT socket option (linux/udp.h; Python's socket module has no name for it)."""
GSO_AVAILABLE = sys.platform == "linux" and hasattr(socket, "SOL_UDP")

_SENDER = "_RTCRtpSender__"
_SENDER_NAMES = ("rtp_task", "rtp_started", "rtp_exited", "rtcp_started", "rtcp_exited", "cname", "lsr", "lsr_time",
                 "packet_count", "octet_count")
_DTLS_NAMES = ("_state", "_tx_srtp", "_send_rtp", "_register_rtp_sender", "_RTCDtlsTransport__tx_bytes",
               "_RTCDtlsTransport__tx_packets")


def _check(sender: RTCRtpSender) -> None:
    missing = [f"RTCRtpSender.{_SENDER}{n}" for n in _SENDER_NAMES if not hasattr(sender, _SENDER + n)]
    missing += [f"RTCRtpSender.{n}" for n in ("_run_rtp", "_run_rtcp", "_send_rtcp", "_handle_rtcp_packet",
                                              "_ssrc", "_rtx_ssrc") if not hasattr(sender, n)]
    missing += [f"RTCDtlsTransport.{n}" for n in _DTLS_NAMES if not hasattr(sender.transport, n)]
    if missing:
        raise RuntimeError(f"aiortc has no {', '.join(missing)}; mediaserver/webrtc/rtp_send.py was written against "
                           f"aiortc {AIORTC_VERSION} and needs updating")


def lean_sender(sender: RTCRtpSender) -> LeanRtpSender:
    """Make `sender` (made by addTransceiver, not started yet) a LeanRtpSender; returns it."""
    if isinstance(sender, LeanRtpSender):
        return sender
    _check(sender)
    if getattr(sender, _SENDER + "rtp_task") is not None:
        raise RuntimeError("the RTP sender started before it was made lean")
    sender.__class__ = LeanRtpSender
    sender._lean_init()  # type: ignore[attr-defined]
    return sender  # type: ignore[return-value]


ANSWERED_FEEDBACK = (RTCRtcpFeedback("nack"), RTCRtcpFeedback("nack", "pli"), RTCRtcpFeedback("goog-remb"))
"""The RTCP feedback a lean sender's answer may accept, as aiortc's own video codecs do (NACKs are answered
from the history; PLI and REMB are noted)."""


def answer_with_offered_codec(transceiver: RTCRtpTransceiver, offer_sdp: str, mime_type: str,
                              accept: Callable[[dict[str, Any]], bool] = lambda _parameters: True
                              ) -> RTCRtpCodecParameters | None:
    """Make `transceiver` (a lean sender's, after setRemoteDescription) answer with the offer's `mime_type`
    entry whose fmtp parameters `accept`, with its RTX and the feedback answered; the codec, or None (the
    negotiation left as it was) when the offer has none."""
    if not hasattr(transceiver, "_codecs") or not hasattr(transceiver, "_get_mline_index"):
        raise RuntimeError(f"aiortc has no RTCRtpTransceiver._codecs; mediaserver/webrtc/rtp_send.py was written "
                           f"against aiortc {AIORTC_VERSION} and needs updating")
    if not isinstance(transceiver.sender, LeanRtpSender):
        raise RuntimeError("only a lean sender, which never encodes, may send a codec aiortc does not know")
    media = aiortc_sdp.SessionDescription.parse(offer_sdp).media
    index = transceiver._get_mline_index()
    section = next((m for m in media if transceiver.mid is not None and m.rtp.muxId == transceiver.mid),
                   media[index] if index is not None and index < len(media) else None)
    if section is None:
        return None
    offered = section.rtp.codecs
    codec = next((c for c in offered if c.mimeType.lower() == mime_type.lower() and accept(c.parameters)), None)
    if codec is None:
        return None
    chosen = RTCRtpCodecParameters(mimeType=codec.mimeType, clockRate=codec.clockRate,
                                   payloadType=codec.payloadType, parameters=dict(codec.parameters),
                                   rtcpFeedback=[f for f in ANSWERED_FEEDBACK if f in codec.rtcpFeedback])
    codecs = [chosen]
    rtx = next((c for c in offered if is_rtx(c) and c.parameters.get("apt") == codec.payloadType
                and c.clockRate == codec.clockRate), None)
    if rtx is not None:
        codecs.append(RTCRtpCodecParameters(mimeType=rtx.mimeType, clockRate=rtx.clockRate,
                                            payloadType=rtx.payloadType, parameters=dict(rtx.parameters)))
    transceiver._codecs = codecs
    return chosen


def _route(dtls: RTCDtlsTransport) -> tuple[Any, tuple[str, int]] | None:
    """(datagram transport, remote address) of the nominated ICE pair, or None before/after the connection."""
    if dtls._state != State.CONNECTED:
        return None
    connection = getattr(dtls.transport, "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    pair = nominated.get(1) if nominated else None
    if pair is None or pair.protocol is None:
        return None
    return pair.protocol.transport, pair.remote_addr


class LeanRtpSender(RTCRtpSender):
    """An RTCRtpSender whose RTP is sent by `send_frame`, synchronously, from the shared payloads."""

    rtp: RtpStream | None
    ready: asyncio.Event
    dropped: int
    bytes_out: int

    def _lean_init(self) -> None:
        self.rtp = None
        self.ready = asyncio.Event()
        """Set once the connection started the sender: frames before that would be dropped."""
        self.dropped = 0
        self.bytes_out = 0
        self.retransmitted = 0
        self._waiting_keyframe = self.kind == "video"  # a viewer's first picture must be one it can decode
        self._mid: tuple[int, bytes] | None = None
        self._abs_send_time_id = 0
        self._sent_at = 0.0  # time.time() of the last frame sent: the sender reports' anchor
        self._gso: socket.socket | None = None
        self._gso_for: Any = None  # the datagram transport whose socket _gso duplicates
        self._gso_off = not GSO_AVAILABLE

    # ----- aiortc's entry points ----------------------------------------------------------------------

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        if self.rtp is None:
            codec = parameters.codecs[0]
            rtx = next((c.payloadType for c in parameters.codecs
                        if is_rtx(c) and c.parameters.get("apt") == codec.payloadType), None)
            for ext in parameters.headerExtensions:
                if ext.uri == MID_URI and parameters.muxId:
                    self._mid = (ext.id, parameters.muxId.encode())
                elif ext.uri == ABS_SEND_TIME_URI:
                    self._abs_send_time_id = ext.id
            self.rtp = RtpStream(self._ssrc, codec.payloadType, random_sequence_number(), random32(),
                                 codec.clockRate, rtx, self._rtx_ssrc, random_sequence_number())
        await super().send(parameters)
        self.ready.set()

    async def _run_rtp(self, codec: Any) -> None:
        """Nothing to read: the pump sends. Waits for stop() as aiortc's loop would."""
        getattr(self, _SENDER + "rtp_started").set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        getattr(self, _SENDER + "rtp_exited").set()

    async def _run_rtcp(self) -> None:
        getattr(self, _SENDER + "rtcp_started").set()
        try:
            while True:
                # RFC 3550 6.3: the interval varied over [0.5, 1.5] x the nominal 1 s, as aiortc's
                await asyncio.sleep(0.5 + random.random())
                reports = self._reports(time.time())
                if reports:
                    await self._send_rtcp(reports)
        except asyncio.CancelledError:
            pass
        await self._send_rtcp([RtcpByePacket(sources=[self._ssrc])])
        getattr(self, _SENDER + "rtcp_exited").set()

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self.retransmit(packet.lost)
        else:
            await super()._handle_rtcp_packet(packet)  # RTT from reports; PLI/FIR noted (packets pass through)

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            self._close_gso()

    async def getStats(self):
        rtp = self.rtp
        if rtp is not None:
            setattr(self, _SENDER + "packet_count", rtp.packets)
            setattr(self, _SENDER + "octet_count", rtp.octets)
        return await super().getStats()

    # ----- the send path --------------------------------------------------------------------------------

    def send_frame(self, frame: RtpFrame) -> int:
        """Send one frame's packets now; the payload bytes sent (0 when dropped: not connected yet, waiting for
        a keyframe, or the socket backed up)."""
        rtp = self.rtp
        route = _route(self.transport) if rtp is not None else None
        video = self.kind == "video"
        if route is None:
            self.dropped += 1
            if video:
                self._waiting_keyframe = True
            return 0
        udp, addr = route
        if video and self._waiting_keyframe:
            if not frame.keyframe:
                self.dropped += 1
                return 0
            self._waiting_keyframe = False
        backlog = getattr(udp, "get_write_buffer_size", None)
        if backlog is not None and backlog() > WRITE_BUFFER_LIMIT:
            self.dropped += 1
            self._waiting_keyframe = video
            return 0
        now = time.time()
        protect = self.transport._tx_srtp.protect
        datagrams = [protect(p) for p in rtp.packets_of(frame, self._extensions(now))]  # type: ignore[union-attr]
        sent = sum(map(len, datagrams))
        gso = self._gso_socket(udp) if len(datagrams) > 1 and not (backlog and backlog()) else None
        done = self._send_gso(gso, datagrams, addr) if gso is not None else 0
        sendto = udp.sendto
        for data in datagrams[done:]:
            sendto(data, addr)
        self._sent_at = now
        self._count_tx(len(frame.payloads), sent)
        size = frame.size
        self.bytes_out += size
        return size

    def _gso_socket(self, udp: Any) -> socket.socket | None:
        """A duplicate of `udp`'s socket for GSO sends, or None where GSO is off or the transport has no socket
        (a TURN relay)."""
        if self._gso_off:
            return None
        if self._gso_for is not udp:
            self._close_gso()
            sock = udp.get_extra_info("socket")
            if sock is None or sock.type != socket.SOCK_DGRAM:
                self._gso_off = True
                return None
            self._gso = socket.socket(fileno=os.dup(sock.fileno()))
            self._gso_for = udp
        return self._gso

    def _send_gso(self, sock: socket.socket, datagrams: list[bytes], addr: tuple[str, int]) -> int:
        """Send runs of equal-size datagrams in one system call each; how many were sent (the rest go by the
        transport: the socket backed up, or GSO failed, then it is off for this viewer)."""
        done = 0
        try:
            for start, end in gso_runs([len(d) for d in datagrams]):
                if end - start == 1:
                    sock.sendto(datagrams[start], addr)
                else:
                    size = struct.pack("=H", len(datagrams[start]))
                    sock.sendmsg([b"".join(datagrams[start:end])], [(socket.SOL_UDP, UDP_SEGMENT, size)], 0, addr)
                done = end
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._gso_off = True
            self._close_gso()
        return done

    def _close_gso(self) -> None:
        sock, self._gso, self._gso_for = self._gso, None, None
        if sock is not None:
            sock.close()

    def retransmit(self, lost: Iterable[int]) -> None:
        """Answer a NACK: each sequence number still in the history, again (RTX when negotiated)."""
        rtp = self.rtp
        route = _route(self.transport) if rtp is not None else None
        if route is None:
            return
        udp, addr = route
        extensions = self._extensions(time.time())
        protect = self.transport._tx_srtp.protect
        count = sent = 0
        for seq in lost:
            packet = rtp.resend(seq, extensions)  # type: ignore[union-attr]
            if packet is not None:
                data = protect(packet)
                udp.sendto(data, addr)
                count += 1
                sent += len(data)
        self.retransmitted += count
        self._count_tx(count, sent)

    def _extensions(self, now: float) -> bytes:
        elements = []
        if self._mid is not None:
            elements.append(self._mid)
        if self._abs_send_time_id:
            elements.append((self._abs_send_time_id, abs_send_time(now)))
        return extension_block(elements)

    def _count_tx(self, packets: int, octets: int) -> None:
        dtls = self.transport
        dtls._RTCDtlsTransport__tx_packets += packets  # type: ignore[attr-defined]
        dtls._RTCDtlsTransport__tx_bytes += octets  # type: ignore[attr-defined]

    def _reports(self, now: float) -> list[AnyRtcpPacket]:
        """A sender report (true counts; the RTP time of `now` carried on from the last frame sent) and the
        CNAME; what RTT from the receiver's reports is measured against is noted as aiortc does."""
        rtp = self.rtp
        ntp = ntp_time(now)
        packets: list[AnyRtcpPacket] = []
        if rtp is not None:
            packets.append(RtcpSrPacket(ssrc=self._ssrc, sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp, rtp_timestamp=rtp.report_timestamp(now - self._sent_at if self._sent_at else 0.0),
                packet_count=rtp.packets & 0xFFFFFFFF, octet_count=rtp.octets & 0xFFFFFFFF)))
            setattr(self, _SENDER + "lsr", (ntp >> 16) & 0xFFFFFFFF)
            setattr(self, _SENDER + "lsr_time", now)
        cname = getattr(self, _SENDER + "cname")
        if cname is not None:
            packets.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=self._ssrc, items=[(1, cname.encode())])]))
        return packets
