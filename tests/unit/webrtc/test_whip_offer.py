"""What a WHIP offer must hold before any ICE work, the keyframe request policy, and the offer reader's limits."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

from mediaserver.webrtc.ingest import KeyframeRequests
from mediaserver.webrtc.signaling import (
    SignalingError, answer_with_profiles, error_response, offer_for_any_h264_profile, read_offer_text,
)
from mediaserver.webrtc.whip import check_offer


async def offer(video: str | None = "H264", audio: bool = True) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if video:
            t = pc.addTransceiver("video", direction="sendonly")
            t.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType.split("/")[1] in (video, "rtx")])
        if audio:
            pc.addTransceiver("audio", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def test_an_offer_with_h264_and_opus_is_accepted():
    assert check_offer(await offer()) == (True, True)
    assert check_offer(await offer(video=None)) == (False, True)


async def test_an_offer_without_h264_video_is_refused_naming_what_it_offered():
    with pytest.raises(SignalingError) as refused:
        check_offer(await offer(video="VP8"))
    assert refused.value.status == 400 and "H.264" in refused.value.error and "VP8" in refused.value.error


async def test_an_offer_with_nul_bytes_or_a_thousand_candidates_is_refused_before_aiortc_reads_it():
    sdp = await offer()
    many = "".join(f"a=candidate:{i} 1 udp 2122260223 10.0.{i // 250}.{i % 250 + 1} {50000 + i} typ host\r\n"
                   for i in range(1000))
    for bad, says in ((sdp.replace("a=mid:0\r\n", "a=mid:0\r\n" + many, 1), "ICE candidates; at most"),
                      (sdp.replace("s=-", "s=\x00", 1), "NUL")):
        with pytest.raises(SignalingError) as refused:
            check_offer(bad)
        assert refused.value.status == 400 and says in refused.value.error


@pytest.mark.parametrize("sdp, says", [
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "no audio or video"),
    ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n",
     "ICE credentials or DTLS fingerprint"),
    ("v=0\r\nm=video x UDP/TLS/RTP/SAVPF\r\n", "cannot be parsed"),
])
def test_a_malformed_offer_is_400_with_the_reason(sdp, says):
    with pytest.raises(SignalingError) as refused:
        check_offer(sdp)
    assert refused.value.status == 400 and says in refused.value.error, refused.value.error


def test_keyframes_are_asked_for_while_waiting_and_when_the_last_is_older_than_a_segment():
    policy = KeyframeRequests(interval_s=2.0)
    assert policy.due(0.0, waiting=True)
    assert not policy.due(0.5, waiting=True) and policy.due(1.0, waiting=True)
    policy.keyframe(1.2)
    assert not policy.due(2.0, waiting=False) and not policy.due(3.1, waiting=False)
    assert policy.due(3.3, waiting=False)  # 2.1 s since the keyframe, 2.3 s since the last request
    assert not policy.due(4.0, waiting=False) and policy.requests == 3


@pytest.fixture
async def reader():
    async def handler(request: web.Request) -> web.Response:
        try:
            return web.Response(text=await read_offer_text(request, max_bytes=100, timeout_s=1))
        except SignalingError as err:
            return error_response(err, {})

    app = web.Application()
    app.router.add_post("/", handler)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.mark.parametrize("body, content_type, status", [
    (b"v=0\r\n", "application/sdp", 200),
    (b"v=0\r\n", "text/plain", 415),
    (b"v=0\r\n" + b"a" * 200, "application/sdp", 413),
    (b"\xff\xfe", "application/sdp", 400),
    (b"<html>", "application/sdp", 400),
])
async def test_the_offer_reader_checks_type_size_and_text(reader, body, content_type, status):
    resp = await reader.post("/", data=body, headers={"Content-Type": content_type})
    assert resp.status == status, await resp.text()
    if status != 200:
        assert set(await resp.json()) == {"error", "hint"}


async def test_an_offer_longer_than_the_limit_is_refused_even_without_a_content_length(reader):
    async def chunks():
        yield b"v=0\r\n"
        yield b"a" * 200

    resp = await reader.post("/", data=chunks(), headers={"Content-Type": "application/sdp"})
    assert resp.status == 413


async def test_any_h264_profile_is_shown_to_aiortc_as_constrained_baseline_and_given_back_in_the_answer():
    high = (await offer()).replace("profile-level-id=42e01f", "profile-level-id=640c1f")
    high = high.replace("profile-level-id=42001f", "profile-level-id=4d001f")
    shown, replaced = offer_for_any_h264_profile(high)
    assert "640c1f" not in shown and "4d001f" not in shown and shown.count("\r\n") == high.count("\r\n")
    assert sorted(replaced.values()) == ["4d001f", "640c1f"]
    pt = next(p for p, v in replaced.items() if v == "640c1f")
    answer = f"v=0\r\na=rtpmap:{pt} H264/90000\r\na=fmtp:{pt} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
    assert f"a=fmtp:{pt} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f" in \
        answer_with_profiles(answer, replaced)
    assert offer_for_any_h264_profile("v=0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\n")[1] == {}
