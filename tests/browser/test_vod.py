"""Recordings in headless Chromium: one short recording made once for the module (an 8 s 320x240 clip
published as fast as the server takes it, recorded from its first frame), then the player page plays it
over HLS (hls.js), DASH (dash.js) and as its MP4 file (a plain <video>), each seeking to the middle: the
position lands there and advances, and frames are decoded after the seek. The console lists the recording
with its play and download links and deletes it after asking."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from support.media import generate_clip
from support.publisher import Publisher, publish_args
from support.server import start_server

from .conftest import advance_within, current_time, fetch, get_json, wait_state

ADMIN_TOKEN = "browser-vod-admin-token-0123456789abc"
NAME = "vodclip"
CLIP_S = 8.0


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Iterator[tuple[Any, dict]]:
    """(server, the recording's row): the server records every stream; the clip is sent at once, so the
    recording is complete a reconnect grace (0.5 s) after the publisher is done."""
    work = tmp_path_factory.mktemp("vod")
    clip = generate_clip(work / "clip.flv", duration_s=CLIP_S, size="320x240")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN_TOKEN)
        env.setenv("MEDIASERVER_TOKEN_SECRET", "browser-vod-token-secret-0123456789")  # the console mints
        server = start_server(work / "server", {"record.path": str(work / "rec"), "record.mode": "all",
                                                "hub.reconnect_grace": "0.5"})
    try:
        publisher = Publisher(publish_args(server.rtmp_url(NAME), clip, realtime=False), work / "publisher.log")
        assert publisher.wait(30) == 0, publisher.log_text()
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        row: dict = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            code, body = get_json(f"{server.http_base}/api/v1/recordings?stream={NAME}", auth)
            rows = body["recordings"] if code == 200 else []
            if rows and rows[0]["status"] == "complete":
                row = rows[0]
                break
            time.sleep(0.2)
        assert row, f"no complete recording of live/{NAME}: {body}"
        assert abs(row["duration_s"] - CLIP_S) < 1.5, row
        yield server, row
    finally:
        server.terminate()


def seek_to_the_middle(page: Any, fmt: str) -> None:
    """Seek to the middle of the recording: currentTime lands near it, advances, and frames are decoded."""
    duration = page.evaluate("document.getElementById('video').duration")
    assert abs(duration - CLIP_S) < 1.5, f"{fmt}: duration {duration}"
    target = round(duration / 2, 2)
    decoded = "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames"
    before = page.evaluate(decoded)
    landed = page.evaluate("""(target) => new Promise((resolve) => {
        const v = document.getElementById('video');
        v.addEventListener('seeked', () => resolve(v.currentTime), {once: true});
        v.currentTime = target;
    })""", target)
    assert abs(landed - target) < 0.5, f"{fmt}: asked for {target} s, landed at {landed} s"
    page.wait_for_function(f"() => document.getElementById('video').currentTime > {landed + 0.8}", timeout=10_000)
    assert current_time(page) < duration, fmt
    assert page.evaluate(decoded) > before + 10, f"{fmt}: no frames decoded after the seek"


@pytest.mark.parametrize("fmt", ["hls", "dash", "mp4"])
def test_the_player_plays_a_recording_and_seeks(recorded, browser, artifacts, fmt):
    server, row = recorded
    page = browser.page(f"{server.http_base}/play/vod/{row['id']}?format={fmt}")
    wait_state(page, "playing")
    assert page.get_attribute(f'[data-format="{fmt}"]', "aria-pressed") == "true"
    assert page.evaluate("document.getElementById('video').controls")
    seek_to_the_middle(page, fmt)
    assert page.inner_text("#stat-resolution") == "320×240"
    page.screenshot(path=artifacts / f"player-vod-{fmt}.png")


def test_the_console_lists_the_recording_and_deletes_it(recorded, browser, artifacts):
    server, row = recorded
    base = server.http_base
    console = browser.page(f"{base}/console")
    console.fill("#token", ADMIN_TOKEN)
    console.click("#login-form button[type=submit]")
    tr = f'#recordings tr[data-recording="{row["id"]}"]'
    console.wait_for_selector(tr)
    cell = lambda col: console.inner_text(f'{tr} [data-col="{col}"]')  # noqa: E731
    assert cell("stream").startswith(f"live/{NAME}") and cell("status") == "complete"
    assert cell("media") == "H.264 + AAC 320×240" and cell("duration").endswith(" s")
    assert console.get_attribute(f'{tr} [data-action="play"]', "href") == f"/play/vod/{row['id']}"
    assert console.get_attribute(f'{tr} [data-action="download"]', "href") == f"/vod/{row['id']}.mp4"
    with console.context.expect_page() as opened:  # Play: the player in a new tab, with a play token
        console.click(f'{tr} [data-action="play"]')
    player = opened.value
    wait_state(player, "playing")
    assert f"/play/vod/{row['id']}?token=" in player.url
    player.close()
    with console.expect_download() as downloading:  # Download: the file, with a play token as well
        console.click(f'{tr} [data-action="download"]')
    download = downloading.value
    assert f"/vod/{row['id']}.mp4?token=" in download.url and download.suggested_filename.endswith(".mp4")
    assert download.failure() is None and download.path().stat().st_size == row["bytes"]

    # The filter: another stream's recordings are none.
    console.fill("#rec-stream", "nosuchstream")
    console.click('#rec-filter button[type="submit"]')
    console.wait_for_selector(tr, state="detached")
    assert console.is_visible("#no-recordings")
    console.fill("#rec-stream", NAME)
    console.click('#rec-filter button[type="submit"]')
    console.wait_for_selector(tr)
    console.screenshot(path=artifacts / "console-recordings.png", full_page=True)

    # Delete: asked first; cancelling keeps it.
    console.click(f'{tr} [data-action="delete"]')
    assert row["id"] in console.inner_text("#confirm-text")
    console.click('#confirm button[value="cancel"]')
    assert fetch(f"{base}/vod/{row['id']}.mp4") == 200
    console.click(f'{tr} [data-action="delete"]')
    console.click("#confirm-ok")
    console.wait_for_selector(tr, state="detached")
    assert fetch(f"{base}/vod/{row['id']}.mp4") == 404


def test_the_dvr_window_plays_on_across_file_rotations_and_seeks_back_into_an_earlier_file(
        tmp_path, ffmpeg, browser, artifacts):
    """hls.js plays a stream's dvr.m3u8 while its recording rotates every 3 s: through the new files'
    EXT-X-MAPs, back into an earlier file, and with the page's Go live button back to the live edge."""
    clip = generate_clip(tmp_path / "clip.flv", duration_s=4.0, size="320x240")
    server = start_server(tmp_path / "server", {"record.path": str(tmp_path / "rec"), "record.mode": "all",
                                                "record.segment_minutes": "0.05", "record.dvr_window": "120"})
    publisher = Publisher(publish_args(server.rtmp_url("dvrclip"), clip, loop=True), tmp_path / "publisher.log")
    try:
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:  # two files listed: one rotation behind us
            try:
                with urllib.request.urlopen(f"{server.http_base}/live/dvrclip/dvr.m3u8", timeout=5) as resp:
                    text = resp.read().decode()
            except urllib.error.HTTPError:
                pass  # not recorded yet (404), or no fragment yet (503)
            if text.count("#EXT-X-MAP") >= 2:
                break
            time.sleep(0.5)
        assert text.count("#EXT-X-MAP") >= 2, text
        page = browser.page(f"{server.http_base}/play/live/dvrclip?dvr=1")
        wait_state(page, "playing")
        assert advance_within(page, 6.0, 15.0) > 6.0  # on through at least one more rotation
        decoded = "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames"
        before = page.evaluate(decoded)
        start = page.evaluate("document.getElementById('video').seekable.start(0)")
        landed = page.evaluate("""(target) => new Promise((resolve) => {
            const v = document.getElementById('video');
            v.addEventListener('seeked', () => resolve(v.currentTime), {once: true});
            v.currentTime = target;
        })""", start + 1.0)
        assert abs(landed - (start + 1.0)) < 1.5, (start, landed)
        assert advance_within(page, 2.0, 10.0) > 2.0
        assert page.evaluate(decoded) > before + 25, "no frames decoded after seeking back into the first file"
        page.screenshot(path=artifacts / "player-dvr-rotation.png")
        # Back to live: the page says how far behind it is, and its button jumps to the edge and plays on.
        # paused, the window's edge moves on without the player
        page.evaluate("document.getElementById('video').pause()")
        page.wait_for_function("() => window.mediaserverPlayer.behindLive > 8", timeout=20_000, polling=200)
        page.wait_for_selector('#go-live[aria-pressed="false"]:not([hidden])', timeout=5_000)  # redrawn each second
        assert "behind" in page.inner_text("#go-live")
        page.click("#go-live")
        page.wait_for_function("() => window.mediaserverPlayer.behindLive !== null && window.mediaserverPlayer.behindLive < 6",
                               timeout=10_000, polling=100)
        assert advance_within(page, 2.0, 10.0) > 2.0, "playing on at the live edge"
        page.wait_for_selector('#go-live[aria-pressed="true"]', timeout=5_000)
        edge_gap = page.evaluate("""() => { const v = document.getElementById('video');
            return v.seekable.end(v.seekable.length - 1) - v.currentTime; }""")
        assert edge_gap < 15, f"{edge_gap:.1f} s from the end of the DVR window after going live"
        page.screenshot(path=artifacts / "player-dvr-live.png")
    finally:
        publisher.close()
        server.terminate()
