"""The player page and the stream picker in headless Chromium, against a server started by the test with a
real ffmpeg publisher: every format plays, the readouts are sane, offline and ended streams are said to
be so, refused formats say why, play tokens pass through from the page URL, and a phone-sized screen fits.

The first test also measures, per format, the time from clicking play to the video element's first
`playing` event (written to test-artifacts/browser/first-frame.json and printed in the summary).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from mediaserver.auth.tokens import Action, mint
from support.media import ffmpeg_exe

from .conftest import advance_within, fetch, get_json, wait_state, wait_status

FORMATS = ["flv", "llhls", "dash", "hls", "ws-flv"]
# Upper bounds for a sane latency readout on loopback with the default 2 s segments and 1 s GOPs:
# FLV plays what arrives; LL-HLS holds back three parts; DASH and HLS hold back about three segments.
LATENCY_BOUND_S = {"flv": 4.0, "ws-flv": 4.0, "llhls": 6.0, "dash": 15.0, "hls": 15.0}
PHONE = {"width": 390, "height": 844}


def warm_up(server, name: str) -> None:
    """Ask once for every segmented format, so the measurements below find packagers running."""
    for path in ("index.m3u8", "cmaf.m3u8", "manifest.mpd"):
        assert fetch(f"{server.http_base}/live/{name}/{path}") == 200, path


def test_player_plays_every_format_the_server_offers(server, publish, media, stream_name, browser, artifacts,
                                                     startup_times):
    publish(server, stream_name, media.av, loop=True)
    status = wait_status(server, stream_name)
    assert [f["id"] for f in status["formats"] if not f["refused"]] == FORMATS
    warm_up(server, stream_name)
    base = server.http_base

    # The picker lists the stream and opens its player, which starts with the best format (HTTP-FLV; with
    # ABR on, the best format whose player chooses the rendition: LL-HLS).
    picker = browser.page(f"{base}/")
    link = picker.get_by_role("link", name=f"live/{stream_name}")
    link.wait_for()
    picker.screenshot(path=artifacts / "picker.png")
    link.click()
    picker.wait_for_url(f"**/play/live/{stream_name}")
    wait_state(picker, "playing")
    first = "llhls" if status.get("abr") else "flv"
    assert picker.get_attribute(f'[data-format="{first}"]', "aria-pressed") == "true"

    # Each format, from a click on play.
    page = browser.page(f"{base}/play/live/{stream_name}?autoplay=0")
    for fmt in FORMATS:
        page.goto(f"{base}/play/live/{stream_name}?format={fmt}&autoplay=0")
        wait_state(page, "ready")
        page.click("#play")
        wait_state(page, "playing")
        startup_ms = int(page.get_attribute("#stat-startup", "data-ms"))
        advanced = advance_within(page, 0.8, within_s=1.5)
        assert advanced > 0.8, f"{fmt}: currentTime advanced {advanced:.2f} s in 1.5 s"
        page.wait_for_function(
            "() => document.getElementById('stat-latency').dataset.seconds !== undefined"
            " && document.getElementById('stat-bitrate').textContent !== '–'", timeout=8000)
        latency_s = float(page.get_attribute("#stat-latency", "data-seconds"))
        assert 0.0 <= latency_s < LATENCY_BOUND_S[fmt], f"{fmt}: latency readout {latency_s} s"
        assert page.inner_text("#stat-resolution") == "640×360"
        assert "kbit/s" in page.inner_text("#stat-bitrate") or "Mbit/s" in page.inner_text("#stat-bitrate")
        assert page.inner_text("#stat-dropped").split(" of ")[0].isdigit()
        page.screenshot(path=artifacts / f"player-{fmt}.png")
        startup_times[fmt] = {"first_frame_ms": startup_ms, "latency_s": round(latency_s, 2)}

    # A phone-sized screen: nothing wider than the screen, the video fills the width.
    phone = browser.page(f"{base}/play/live/{stream_name}", **PHONE)
    wait_state(phone, "playing")
    phone.wait_for_function("() => document.getElementById('stat-resolution').textContent !== '–'")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    video_box = phone.locator("#video").bounding_box()
    assert video_box is not None and PHONE["width"] - 40 <= video_box["width"] <= PHONE["width"]
    phone.screenshot(path=artifacts / "player-phone.png", full_page=True)


def test_player_waits_for_an_offline_stream_plays_it_and_says_when_it_ends(server, publish, media, stream_name,
                                                                           browser, artifacts):
    page = browser.page(f"{server.http_base}/play/live/{stream_name}")
    wait_state(page, "offline")
    assert "offline" in page.inner_text("#status")
    page.screenshot(path=artifacts / "player-offline.png")

    publisher = publish(server, stream_name, media.av, loop=True)
    wait_state(page, "playing", timeout_s=25)
    publisher.stop()
    wait_state(page, "ended", timeout_s=20)  # after the reconnect grace (2 s in tests) the stream ends
    text = page.inner_text("#status")
    assert "ended" in text and "offline" in text, text
    page.screenshot(path=artifacts / "player-ended.png")


@pytest.fixture(scope="module")
def h264_opus_clip(tmp_path_factory) -> Path:
    """H.264 with Opus audio: MPEG-TS HLS cannot carry Opus, every other format can."""
    path = tmp_path_factory.mktemp("opus") / "h264-opus.flv"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", "6", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "veryfast", "-g", "25",
         "-c:a", "libopus", "-b:a", "64k", "-ar", "48000", "-f", "flv", str(path)],
        check=True, timeout=120, capture_output=True,
    )
    return path


def test_player_names_why_the_server_refuses_a_format(server, publish, h264_opus_clip, stream_name, browser,
                                                      artifacts):
    publish(server, stream_name, h264_opus_clip, loop=True)
    wait_status(server, stream_name)
    page = browser.page(f"{server.http_base}/play/live/{stream_name}?format=hls")
    wait_state(page, "refused")
    text = page.inner_text("#status")
    assert "opus" in text and "HLS MPEG-TS" in text, text
    assert page.is_disabled('[data-format="hls"]')
    assert "opus" in page.get_attribute('[data-format="hls"]', "title")
    assert "opus" in page.inner_text("#unavailable")
    page.screenshot(path=artifacts / "player-refused.png")

    page.click('[data-format="flv"]')  # FLV carries Opus (Enhanced FLV), and mpegts.js plays it
    wait_state(page, "playing")
    assert advance_within(page, 0.0, within_s=1.0) > 0


TOKEN_SECRET = "browser-test-token-secret-0123456789"


def test_play_token_in_the_page_url_reaches_every_request(server_factory, monkeypatch, publish, media, stream_name,
                                                          browser):
    monkeypatch.setenv("MEDIASERVER_TOKEN_SECRET", TOKEN_SECRET)
    server = server_factory(**{"auth.play_open": "", "auth.failure_delay_ms": "50"})
    publish(server, stream_name, media.av, loop=True)
    token = mint(TOKEN_SECRET.encode(), Action.PLAY, "live", stream_name, int(time.time()) + 600)
    wait_status(server, stream_name, query=f"?token={token}")
    assert get_json(f"{server.http_base}/streams.json")[1]["streams"] == []  # not listed: it needs a token

    browser.allow_console_error(r"status of 401")  # the status request without a token
    refused = browser.page(f"{server.http_base}/play/live/{stream_name}")
    wait_state(refused, "refused")
    assert "needs a play token" in refused.inner_text("#status")

    for fmt in ("flv", "llhls"):
        page = browser.page(f"{server.http_base}/play/live/{stream_name}?format={fmt}&token={token}")
        wait_state(page, "playing", timeout_s=25)
        assert advance_within(page, 0.0, within_s=1.0) > 0, fmt
