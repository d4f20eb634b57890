"""WHEP/WHIP signaling over HTTP, without a peer connection: what an offer must be to be read, the 201, CORS."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mediaserver.webrtc import signaling

from test_webrtc_sdp import CHROME_LIKE


async def _client() -> TestClient:
    async def post(request: web.Request) -> web.Response:
        headers = signaling.cors_headers(request, ("*",))
        text, offer = await signaling.read_offer(request, headers)
        return signaling.answer_response(f"answer to {len(offer.sections)} sections", "/live/x/whep/abc", headers)

    async def options(request: web.Request) -> web.Response:
        return signaling.preflight(request, ("https://player.example",))

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/live/x/whep", post)
    app.router.add_route("OPTIONS", "/live/x/whep", options)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_an_offer_is_answered_201_with_its_location_readable_by_other_origins():
    client = await _client()
    try:
        resp = await client.post("/live/x/whep", data=CHROME_LIKE, headers={"Content-Type": "application/sdp"})
        assert resp.status == 201
        assert resp.headers["Location"] == "/live/x/whep/abc"
        assert resp.headers["Content-Type"].startswith("application/sdp")
        assert "Location" in resp.headers["Access-Control-Expose-Headers"]
        assert await resp.text() == "answer to 2 sections"
    finally:
        await client.close()


async def test_offers_that_cannot_be_read_get_415_413_or_400_with_a_reason():
    client = await _client()
    try:
        cases = [
            ({"Content-Type": "application/json"}, CHROME_LIKE, 415, "application/sdp"),
            ({"Content-Type": "application/sdp"}, "v=0\r\n" + "a=" + "x" * 70_000, 413, "bytes"),
            ({"Content-Type": "application/sdp"}, b"\xff\xfe\x00", 400, "UTF-8"),
            ({"Content-Type": "application/sdp"}, "m=video 9 RTP/AVP 0\r\n", 400, "v=0"),
        ]
        for headers, body, status, words in cases:
            resp = await client.post("/live/x/whep", data=body, headers=headers)
            answer = await resp.json()
            assert resp.status == status, (status, answer)
            assert words in answer["error"] and answer["hint"], answer
    finally:
        await client.close()


async def test_a_preflight_allows_post_delete_and_patch_with_the_sdp_content_type_for_allowed_origins():
    client = await _client()
    try:
        resp = await client.options("/live/x/whep", headers={"Origin": "https://player.example",
                                                               "Access-Control-Request-Method": "POST"})
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://player.example"
        for method in ("POST", "DELETE", "PATCH"):
            assert method in resp.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]
        other = await client.options("/live/x/whep", headers={"Origin": "https://elsewhere.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
    finally:
        await client.close()


AV1_ONLY = "\r\n".join([
    "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=rtpmap:111 opus/48000/2", "a=recvonly",
    "m=video 9 UDP/TLS/RTP/SAVPF 45 96", "a=rtpmap:45 AV1/90000", "a=fmtp:45 profile=0",
    "a=rtpmap:96 rtx/90000", "a=fmtp:96 apt=45", "a=recvonly", ""])


def test_a_video_section_offering_nothing_aiortc_knows_is_shown_a_placeholder_h264_on_a_free_type():
    shown = signaling.offer_with_placeholder_h264(AV1_ONLY)
    video = shown.split("m=video", 1)[1]
    assert video.split("\r\n")[0].split()[2:] == ["45", "96", "97"]  # 96 is taken: the next free type
    assert "a=rtpmap:97 H264/90000" in video and "a=fmtp:97 packetization-mode=1;" in video
    assert shown.split("m=video", 1)[0] == AV1_ONLY.split("m=video", 1)[0], "other sections stay as they were"
    assert shown.endswith("\r\n") and shown.count("m=") == 2
    assert signaling.offer_with_placeholder_h264(CHROME_LIKE) == CHROME_LIKE, "an offer with H.264 is not touched"


def test_the_placeholder_is_left_out_where_no_payload_type_is_free_or_the_m_line_is_short():
    every_type = " ".join(str(p) for p in (*range(96, 128), *range(35, 64)))
    crowded = AV1_ONLY.replace("m=video 9 UDP/TLS/RTP/SAVPF 45 96", f"m=video 9 UDP/TLS/RTP/SAVPF {every_type}")
    assert signaling.offer_with_placeholder_h264(crowded) == crowded
    short = AV1_ONLY.replace("m=video 9 UDP/TLS/RTP/SAVPF 45 96", "m=video 9")
    assert signaling.offer_with_placeholder_h264(short) == short
    assert signaling.offer_with_placeholder_h264("") == ""
