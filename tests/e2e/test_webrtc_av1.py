"""AV1 over WHEP: a stream published as AV1 (Enhanced RTMP) is answered with AV1 when the offer receives it (the
offer's own AV1 entry: aiortc knows no AV1), and refused with a 415 that says why when it does not; the player
page's status offers WebRTC for it. The picture itself is decoded by Chromium (tests/browser/test_player_webrtc.py)."""

from __future__ import annotations

import aiohttp
import pytest

from e2e.test_webrtc_whep import WEBRTC, _json, _wait_published
from support.whep import WhepViewer, codec_lines, video_section, av1_clip as make_av1_clip, only_video_types, with_av1


@pytest.fixture(scope="module")
def av1_clip(tmp_path_factory):
    return make_av1_clip(tmp_path_factory.mktemp("whep-av1"))


async def test_an_av1_stream_is_answered_with_av1_when_offered_and_refused_with_a_reason_otherwise(
        server_factory, publish, av1_clip, stream_name):
    server = server_factory(**WEBRTC)
    publish(server, stream_name, av1_clip, loop=True)
    url = f"{server.http_base}/live/{stream_name}/whep"
    async with aiohttp.ClientSession() as http:
        await _wait_published(server, stream_name)
        status, body = await _json(http, "GET", f"{server.http_base}/play/live/{stream_name}/status.json")
        assert status == 200 and body["video"]["codec"] == "av1" and body["webrtc"]["refused"] is None, body

        viewer = WhepViewer(url)
        try:
            offer = await viewer.offer()
            answer = await viewer.post(http, with_av1(offer, payload_type=45))
            assert answer.status == 201, answer.body
            video = video_section(answer.body)
            assert video.split("\r\n")[0].split()[2:] == ["45"], video
            codecs = codec_lines(video)  # (a random ice-pwd once spelt "VP8")
            assert "a=rtpmap:45 AV1/90000" in codecs and "H264" not in codecs and "VP8" not in codecs
            assert "a=fmtp:45 level-idx=5;profile=0;tier=0" in video
            assert "a=rtcp-fb:45 nack pli" in video and "transport-cc" not in video
            assert "a=rtpmap:" in answer.body.split("m=audio", 1)[1] and "opus/48000" in answer.body
            async with http.delete(f"{server.http_base}{answer.headers['Location']}") as resp:
                assert resp.status == 200

            # A client that receives AV1 alone (no H.264 or VP8, which aiortc needs to negotiate at all).
            answer = await viewer.post(http, only_video_types(with_av1(offer, payload_type=45), {"45"}))
            assert answer.status == 201, answer.body
            video = video_section(answer.body)
            assert video.split("\r\n")[0].split()[2:] == ["45"], video
            codecs = codec_lines(video)
            assert "a=rtpmap:45 AV1/90000" in codecs and "H264" not in codecs and "VP8" not in codecs, video
            async with http.delete(f"{server.http_base}{answer.headers['Location']}") as resp:
                assert resp.status == 200

            for refused_offer in (offer, with_av1(offer, profile=1)):  # no AV1; AV1 of another profile
                status, body = await _json(http, "POST", url, data=refused_offer,
                                           headers={"Content-Type": "application/sdp"})
                assert status == 415 and "AV1" in body["error"] and "offer does not receive" in body["error"], body
                assert "browser that receives AV1" in body["hint"], body
        finally:
            await viewer.close()
