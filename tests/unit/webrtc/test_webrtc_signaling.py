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
