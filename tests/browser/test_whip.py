"""Chromium publishes over WHIP with its fake camera and microphone, and the stream decodes from HTTP-FLV
with PyAV: the whole path a browser publisher takes (getUserMedia, H.264 chosen by codec preferences,
non-trickle offer, the 201 answer, ICE/DTLS/SRTP against aiortc, DELETE on the Location).

This Chromium is launched with the fake media flags on top of the shared flags (its own process: the
session's Chromium has no camera). The page is the server's /healthz (an http://127.0.0.1 origin, a
secure context for getUserMedia); the publishing script runs in it through Playwright. With
getUserMedia granted, Chromium gives its real host candidates (no mDNS names, which aiortc cannot
resolve); ICE runs between this machine's own addresses."""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import Any

import pytest
from browser.conftest import _PLAYWRIGHT_LOOP, CHROMIUM_FLAGS, NOT_LOOPBACK
from support.decode import decode_media

FAKE_MEDIA_FLAGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

PUBLISH = """async (url) => {
  const media = await navigator.mediaDevices.getUserMedia({video: {width: 320, height: 240, frameRate: 30}, audio: true});
  const pc = new RTCPeerConnection();
  const codecs = RTCRtpSender.getCapabilities('video').codecs;
  const h264 = codecs.filter(c => c.mimeType === 'video/H264' || c.mimeType === 'video/rtx');
  if (!h264.some(c => c.mimeType === 'video/H264')) {
    return {error: 'this Chromium has no H.264 encoder: ' + codecs.map(c => c.mimeType).join(', ')};
  }
  pc.addTransceiver(media.getVideoTracks()[0], {direction: 'sendonly'}).setCodecPreferences(h264);
  pc.addTransceiver(media.getAudioTracks()[0], {direction: 'sendonly'});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && done());
    setTimeout(done, 3000);
  });
  const resp = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/sdp'}, body: pc.localDescription.sdp});
  const body = await resp.text();
  if (resp.status !== 201) return {status: resp.status, body};
  await pc.setRemoteDescription({type: 'answer', sdp: body});
  window.whip = {pc, location: resp.headers.get('Location')};
  return {status: 201, location: window.whip.location};
}"""

STATE = "() => window.whip.pc.connectionState"
STOP = """async () => {
  const resp = await fetch(window.whip.location, {method: 'DELETE'});
  window.whip.pc.close();
  return resp.status;
}"""


@pytest.fixture
def fake_media_context(chromium_browser: Any, chromium_exe: str) -> Any:
    loop = _PLAYWRIGHT_LOOP[0]
    loop.enter()
    try:
        browser = chromium_browser.browser_type.launch(executable_path=chromium_exe, headless=True,
                                                       args=CHROMIUM_FLAGS + FAKE_MEDIA_FLAGS)
        outside: list[str] = []
        try:
            context = browser.new_context()
            context.route(NOT_LOOPBACK, lambda route: (outside.append(route.request.url), route.abort("blockedbyclient")))
            yield context
            context.close()
        finally:
            browser.close()
        assert not outside, f"the browser made requests outside 127.0.0.1: {outside}"
    finally:
        loop.leave()


def read_flv(url: str, seconds: float, max_bytes: int = 4_000_000) -> bytes:
    """What an HTTP-FLV viewer gets in `seconds` (the response never ends by itself)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = bytearray()
    deadline = time.monotonic() + seconds
    with opener.open(url, timeout=5) as resp:
        while time.monotonic() < deadline and len(data) < max_bytes:
            try:
                chunk = resp.read1(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
    return bytes(data)


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_chromium_publishes_its_fake_camera_over_whip_and_http_flv_decodes(server, stream_name, fake_media_context):
    page = fake_media_context.new_page()
    page.goto(f"{server.http_base}/healthz")
    result = page.evaluate(PUBLISH, f"{server.http_base}/live/{stream_name}/whip")
    assert result.get("status") == 201, result
    deadline = time.monotonic() + 10
    while page.evaluate(STATE) != "connected":
        assert time.monotonic() < deadline, f"Chromium's peer connection is {page.evaluate(STATE)}\n{server.log_tail()}"
        page.wait_for_timeout(100)
    report = decode_media(read_flv(server.flv_url(stream_name), seconds=4), "flv")
    assert report.video_codec == "h264" and report.audio_codec == "aac", report.summary()
    assert report.first_video_frame_key and report.video_frames >= 30 and report.audio_frames >= 30, report.summary()
    assert not report.errors and not report.non_monotonic(), report.summary()
    assert page.evaluate(STOP) == 200
    page.close()
