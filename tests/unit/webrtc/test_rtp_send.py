"""The lean send path (mediaserver/webrtc/rtp_send.py) between two aiortc peer connections on loopback: packets
arrive SRTP-protected with the payloads given, a NACK the receiver sends gets an RTX retransmission of the shared
payload (frames go out in UDP GSO runs on Linux), and sender reports count what was sent."""

from __future__ import annotations

import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.rtp import RtcpSrPacket

from mediaserver.config import WebrtcConfig
from mediaserver.webrtc.peer import bind_candidates
from mediaserver.webrtc.rtp_packets import RtpFrame, h264_payloads
from mediaserver.webrtc.rtp_send import GSO_AVAILABLE, LeanRtpSender, lean_sender

LOOPBACK = WebrtcConfig(public_ip="127.0.0.1")
SPS = bytes([0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80, 0xBF, 0xE5, 0xC0, 0x44, 0x00])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])


async def _until(check, timeout_s: float = 5.0) -> bool:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


async def test_packets_arrive_a_nack_gets_an_rtx_retransmission_and_reports_count_them():
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        client.addTransceiver("video", direction="recvonly")
        bind_candidates(client, LOOPBACK)
        await client.setLocalDescription(await client.createOffer())
        transceiver = server.addTransceiver("video", direction="sendonly")
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                         if c.mimeType.lower() in ("video/h264", "video/rtx")])
        sender = lean_sender(transceiver.sender)
        assert isinstance(transceiver.sender, LeanRtpSender) and lean_sender(sender) is sender
        await server.setRemoteDescription(client.localDescription)
        bind_candidates(server, LOOPBACK)
        await server.setLocalDescription(await server.createAnswer())

        receiver = client.getTransceivers()[0].receiver
        arrived: list = []
        reports: list[RtcpSrPacket] = []
        handle_rtp, handle_rtcp = receiver._handle_rtp_packet, receiver._handle_rtcp_packet

        async def note_rtp(packet, arrival_time_ms):
            arrived.append(packet)
            await handle_rtp(packet, arrival_time_ms)

        async def note_rtcp(packet):
            if isinstance(packet, RtcpSrPacket):
                reports.append(packet)
            await handle_rtcp(packet)

        receiver._handle_rtp_packet, receiver._handle_rtcp_packet = note_rtp, note_rtcp
        await client.setRemoteDescription(server.localDescription)
        await asyncio.wait_for(sender.ready.wait(), 10)

        assert sender.send_frame(RtpFrame((b"\x41\x9a",), 0)) == 0, "the first picture must be a keyframe"
        keyframe = RtpFrame(h264_payloads([SPS, PPS, bytes([0x65]) + bytes(range(1, 256)) * 12]), 3000, keyframe=True)
        assert sender.send_frame(keyframe) == keyframe.size
        assert sender.send_frame(RtpFrame((b"\x41\x9a\x01",), 6000)) == 3
        assert sender.dropped == 1 and sender.rtp is not None
        assert (sender._gso is not None and not sender._gso_off) == GSO_AVAILABLE, "a frame's runs went by GSO"
        assert await _until(lambda: len(arrived) >= 5), arrived
        media = [p for p in arrived if p.ssrc == sender._ssrc]
        assert [p.payload for p in media] == [*keyframe.payloads, b"\x41\x9a\x01"]
        assert len(keyframe.payloads) == 4 and [p.marker for p in media] == [0, 0, 0, 1, 1]
        assert media[3].timestamp == media[0].timestamp and media[4].timestamp - media[0].timestamp == 3000
        assert all(p.extensions.abs_send_time is not None and p.extensions.mid == "0" for p in media)

        lost = media[2]
        await receiver._send_rtcp_nack(sender._ssrc, [lost.sequence_number])
        assert await _until(lambda: any(p.ssrc == sender._rtx_ssrc for p in arrived)), "no retransmission"
        (rtx,) = [p for p in arrived if p.ssrc == sender._rtx_ssrc]
        assert rtx.payload == lost.sequence_number.to_bytes(2, "big") + lost.payload 
        assert sender.retransmitted == 1

        assert await _until(lambda: bool(reports), 4.0), "no sender report"
        info = reports[-1].sender_info
        assert (info.packet_count, info.octet_count) == (5, keyframe.size + 3)
        assert (info.rtp_timestamp - media[-1].timestamp) & 0xFFFFFFFF < 90_000 * 2, "carried on from the last frame"
        stats = [s for s in (await sender.getStats()).values() if s.type == "outbound-rtp"]
        assert stats[0].packetsSent == 5
        await server.close()
        assert sender._gso is None, "the duplicate socket is closed with the sender"
    finally:
        await client.close()
        await server.close()


def test_a_gso_send_that_fails_hands_the_rest_to_the_transport():
    class Sock:
        def __init__(self, error):
            self.error, self.sent = error, []

        def sendto(self, data, addr):
            self.sent.append(data)

        def sendmsg(self, buffers, ancillary, flags, addr):
            raise self.error

    class Sender:
        _gso_off = False
        closed = False

        def _close_gso(self):
            self.closed = True

    datagrams = [b"s" * 40, b"f" * 1200, b"f" * 1200, b"l" * 90]
    for error, off in ((BlockingIOError(), False), (OSError(22, "Invalid argument"), True)):
        sock, sender = Sock(error), Sender()
        assert LeanRtpSender._send_gso(sender, sock, datagrams, ("127.0.0.1", 9)) == 1, "the rest by the transport"
        assert sock.sent == [datagrams[0]] and sender._gso_off is off and sender.closed is off
