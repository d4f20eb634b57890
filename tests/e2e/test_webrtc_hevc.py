"""HEVC over WHEP: a stream published as HEVC (Enhanced RTMP) is answered with H265 when the offer receives its
profile (the offer's own H265 entry, and its RTX: aiortc knows no H265), and refused with a 415 that names HEVC
when it does not; the player page's status offers WebRTC for it.

No browser the tests drive receives HEVC over WebRTC (headless Chromium lists no H265; Safari does, and Chrome
with hardware decoding), so the offers are aiortc's with Safari's H265 lines added, and the picture itself is
checked by tests/unit/webrtc/test_h265_rtp.py (packetized, depacketized and decoded)."""

from __future__ import annotations

import aiohttp
import pytest

from e2e.test_webrtc_whep import WEBRTC, _json, _wait_published
from support.whep import WhepViewer, codec_lines, video_section, hevc_clip as make_hevc_clip, only_video_types, with_h265


@pytest.fixture(scope="module")
def hevc_clip(tmp_path_factory):
    return make_hevc_clip(tmp_path_factory.mktemp("whep-hevc"))


async def test_an_hevc_stream_is_answered_with_h265_when_offered_and_refused_with_a_reason_otherwise(
        server_factory, publish, hevc_clip, stream_name):
    server = server_factory(**WEBRTC)
    publish(server, stream_name, hevc_clip, loop=True)
    url = f"{server.http_base}/live/{stream_name}/whep"
    async with aiohttp.ClientSession() as http:
        await _wait_published(server, stream_name)
        status, body = await _json(http, "GET", f"{server.http_base}/play/live/{stream_name}/status.json")
        assert status == 200 and body["video"]["codec"] == "hevc" and body["webrtc"]["refused"] is None, body

        viewer = WhepViewer(url)
        try:
            offer = await viewer.offer()
            for safari_like, rtx in ((with_h265(offer, payload_type=104, rtx_payload_type=105), "105"),
                                     (with_h265(offer, payload_type=106, rtx_payload_type=None), None),
                                     (with_h265(offer, payload_type=45, profile_id=None, rtx_payload_type=None), None)):
                answer = await viewer.post(http, safari_like)
                assert answer.status == 201, answer.body
                video = video_section(answer.body)
                pt = video.split("\r\n")[0].split()[2]
                assert video.split("\r\n")[0].split()[2:] == [pt] + ([rtx] if rtx else []), video
                codecs = codec_lines(video)
                assert f"a=rtpmap:{pt} H265/90000" in codecs and "H264" not in codecs and "VP8" not in codecs
                if pt != "45":  # no fmtp offered: none answered (profile-id 1 by default)
                    assert f"a=fmtp:{pt} level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST" in video
                assert f"a=rtcp-fb:{pt} nack pli" in video and "transport-cc" not in video
                if rtx:
                    assert f"a=rtpmap:{rtx} rtx/90000" in video and f"a=fmtp:{rtx} apt={pt}" in video
                assert "opus/48000" in answer.body.split("m=audio", 1)[1]
                async with http.delete(f"{server.http_base}{answer.headers['Location']}") as resp:
                    assert resp.status == 200

            # A client that receives H265 alone (no H.264 or VP8, which aiortc needs to negotiate at all).
            answer = await viewer.post(http, only_video_types(with_h265(offer), {"104", "105"}))
            assert answer.status == 201, answer.body
            video = video_section(answer.body)
            assert video.split("\r\n")[0].split()[2:] == ["104", "105"], video
            codecs = codec_lines(video)
            assert "a=rtpmap:104 H265/90000" in codecs and "H264" not in codecs and "VP8" not in codecs, video
            async with http.delete(f"{server.http_base}{answer.headers['Location']}") as resp:
                assert resp.status == 200

            for refused_offer in (offer, with_h265(offer, profile_id=2),  # no H265; H265 Main 10 only
                                  with_h265(offer, fmtp="profile-id=1;sprop-max-don-diff=2")):  # asks for DONL
                status, body = await _json(http, "POST", url, data=refused_offer,
                                           headers={"Content-Type": "application/sdp"})
                assert status == 415 and "HEVC" in body["error"] and "offer does not receive" in body["error"], body
                assert "browser that receives HEVC" in body["hint"] and "Safari" in body["hint"], body
        finally:
            await viewer.close()
    log = server.log_text()
    assert "webrtc_offer_answered" in log and "b_frames" not in log, server.log_tail()
