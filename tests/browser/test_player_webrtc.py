"""The player page plays WHEP in headless Chromium on loopback (the server's host candidate is 127.0.0.1): WebRTC
is the format it picks for H.264 without B-frames, currentTime advances, getStats' inbound-rtp framesDecoded
grows, the latency readout comes from RTCP timing, and a kick of the viewer ends it with the page saying so.
An AV1 stream is passed through as AV1 to Chromium, which receives it; an HEVC stream, which Chromium does not
receive, is played over WebRTC from its H.264 rendition when ABR is on."""

from __future__ import annotations

import json
import urllib.request

import pytest

from support.whep import av1_clip as make_av1_clip, baseline_clip as make_baseline_clip, hevc_clip as make_hevc_clip

from .conftest import advance_within, wait_state, wait_status

ADMIN = "whep-browser-admin-0123456789"


@pytest.fixture(scope="module")
def baseline_clip(tmp_path_factory):
    return make_baseline_clip(tmp_path_factory.mktemp("whep-browser"))


@pytest.fixture(scope="module")
def av1_clip(tmp_path_factory):
    return make_av1_clip(tmp_path_factory.mktemp("whep-browser-av1"))


@pytest.fixture(scope="module")
def hevc_clip(tmp_path_factory):
    return make_hevc_clip(tmp_path_factory.mktemp("whep-browser-hevc"))


def _post(url: str) -> int:
    req = urllib.request.Request(url, method="POST", data=b"{}", headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
        return resp.status


def _frames_decoded(page) -> int:
    return page.evaluate("""async () => {
        const pc = window.mediaserverPlayer.peerConnection;
        if (!pc) return -1;
        let n = 0;
        (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') n = s.framesDecoded; });
        return n;
    }""")


def _video_codec(page) -> str:
    return page.evaluate("""async () => {
        const stats = await window.mediaserverPlayer.peerConnection.getStats();
        let id = null;
        stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') id = s.codecId; });
        return id && stats.get(id) ? stats.get(id).mimeType : '';
    }""")


def test_the_player_picks_webrtc_plays_it_and_a_kick_ends_it(server_factory, monkeypatch, publish, baseline_clip,
                                                               stream_name, browser):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"webrtc.public_ip": "127.0.0.1"})
    publish(server, stream_name, baseline_clip, loop=True)
    status = wait_status(server, stream_name)
    assert status["webrtc"]["refused"] is None, status["webrtc"]
    page = browser.page(f"{server.http_base}/play/live/{stream_name}")
    wait_state(page, "playing")
    assert page.get_attribute('[data-format="webrtc"]', "aria-pressed") == "true"
    assert advance_within(page, 1.0, within_s=3.0) > 1.0
    first = _frames_decoded(page)
    page.wait_for_timeout(1000)
    assert _frames_decoded(page) >= first + 15 > 15, "framesDecoded must grow (25 fps)"
    page.wait_for_function("() => document.getElementById('stat-latency').dataset.seconds !== undefined",
                           timeout=8000)
    latency_s = float(page.get_attribute("#stat-latency", "data-seconds"))
    assert 0.0 <= latency_s < 1.0, f"WebRTC latency readout {latency_s} s"
    assert page.inner_text("#stat-resolution") == "320×240"

    viewers = json.loads(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(urllib.request.Request(
        f"{server.http_base}/api/v1/streams/live/{stream_name}/viewers",
        headers={"Authorization": f"Bearer {ADMIN}"}), timeout=10).read())["viewers"]
    (viewer,) = [v for v in viewers if v["format"] == "webrtc"]
    assert _post(f"{server.http_base}/api/v1/streams/live/{stream_name}/viewers/{viewer['id']}/kick") == 200
    wait_state(page, "stopped", timeout_s=10)
    assert "still live" in page.inner_text("#status")


def test_an_av1_stream_is_passed_through_to_chromium_as_av1(server_factory, publish, av1_clip, stream_name, browser):
    server = server_factory(**{"webrtc.public_ip": "127.0.0.1"})
    publish(server, stream_name, av1_clip, loop=True)
    status = wait_status(server, stream_name)
    assert status["video"]["codec"] == "av1" and status["webrtc"]["refused"] is None, status
    page = browser.page(f"{server.http_base}/play/live/{stream_name}")
    wait_state(page, "playing")
    assert page.get_attribute('[data-format="webrtc"]', "aria-pressed") == "true"
    assert advance_within(page, 1.0, within_s=3.0) > 1.0
    assert _video_codec(page).lower() == "video/av1"
    first = _frames_decoded(page)
    page.wait_for_timeout(1000)
    assert _frames_decoded(page) >= first + 15 > 15, "framesDecoded must grow (25 fps)"
    assert page.inner_text("#stat-resolution") == "320×240"
    log = server.log_text()
    assert "webrtc_frame_skipped" not in log and "b_frames" not in log, server.log_tail()


def test_an_hevc_stream_plays_over_webrtc_from_its_h264_rendition_when_abr_is_on(server_factory, publish, hevc_clip,
                                                                                 stream_name, browser):
    server = server_factory(**{"webrtc.public_ip": "127.0.0.1", "abr.mode": "on_demand", "abr.wait": "15",
                               "abr.ladder": '[{label = "180p", height = 180, video_kbps = 300, preset = "ultrafast", '
                                             'threads = 1}]'})
    publish(server, stream_name, hevc_clip, loop=True)
    status = wait_status(server, stream_name)
    assert status["video"]["codec"] == "hevc" and status["abr"] and status["webrtc"]["refused"] is None, status
    page = browser.page(f"{server.http_base}/play/live/{stream_name}?format=webrtc")
    wait_state(page, "playing", timeout_s=30)
    assert page.is_enabled('[data-format="webrtc"]'), "Chromium receives H.264: the button stays usable"
    assert advance_within(page, 1.0, within_s=3.0) > 1.0
    assert _video_codec(page).lower() == "video/h264"
    page.wait_for_function("() => document.getElementById('stat-resolution').textContent === '240×180'",
                           timeout=5000)
    assert "webrtc_rendition" in server.log_text(), server.log_tail()
