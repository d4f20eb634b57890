"""The operator console in headless Chromium, behind the admin token: a wrong token is told so; the right
one shows the live stream (codecs, resolution, viewers, sparklines), a preview of it, kick buttons
that ask first and then disconnect the viewers or end the stream, which an open player then shows, and the
Record button that starts and stops the stream's recording."""

from __future__ import annotations

import time

import pytest

from .conftest import get_json, wait_state, wait_status

ADMIN_TOKEN = "browser-console-admin-token-0123456789"


@pytest.fixture
def admin_server(server_factory, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN_TOKEN)
    return server_factory()


def sign_in(page, token: str) -> None:
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def test_a_wrong_admin_token_shows_a_login_error(admin_server, browser, artifacts):
    browser.allow_console_error(r"status of 401")  # the browser reports the refused API request
    page = browser.page(f"{admin_server.http_base}/console")
    sign_in(page, "not-the-admin-token-0123456789")
    page.wait_for_function("() => document.getElementById('login-error').textContent.length > 0")
    assert "refused" in page.inner_text("#login-error")
    assert page.is_hidden("#dashboard")
    page.screenshot(path=artifacts / "console-login-error.png")


def test_console_lists_the_stream_previews_it_and_kicks(admin_server, publish, media, stream_name, browser, artifacts):
    base = admin_server.http_base
    publisher = publish(admin_server, stream_name, media.av, loop=True)
    wait_status(admin_server, stream_name)
    player = browser.page(f"{base}/play/live/{stream_name}?format=flv")
    wait_state(player, "playing")

    console = browser.page(f"{base}/console")
    sign_in(console, ADMIN_TOKEN)
    row = f'#streams tr[data-stream="live/{stream_name}"]'
    console.wait_for_selector(row)
    cell = lambda col: console.inner_text(f'{row} [data-col="{col}"]')  # noqa: E731
    assert cell("video") == "H.264 640×360 25 fps"
    assert cell("audio") == "AAC 44.1 kHz stereo"
    assert cell("publisher").startswith("from 127.0.0.1:")
    console.wait_for_function(
        f"() => document.querySelector('{row} td[data-col=\"viewers\"]').textContent.includes('flv 1')")
    # Sparklines draw a line once the history holds two samples (one every 2 s).
    console.wait_for_selector(f'{row} td[data-col="ingestSpark"] polyline', state="attached", timeout=10_000)
    console.wait_for_selector(f'{row} td[data-col="viewerSpark"] polyline', state="attached")
    console.wait_for_function(f"() => document.querySelector('{row} td[data-col=\"ingest\"]').textContent.includes('bit/s')")

    assert "(this node)" in console.inner_text("#nodes")

    console.click(f'{row} [data-action="preview"]')
    console.wait_for_function("() => document.getElementById('preview-video').currentTime > 0.3", timeout=15_000)
    console.wait_for_function(
        f"() => document.querySelector('{row} td[data-col=\"viewers\"]').textContent.includes('flv 2')")
    console.screenshot(path=artifacts / "console.png", full_page=True)

    # Kick viewers: asked first; cancelling does nothing.
    console.click(f'{row} [data-action="kick-viewers"]')
    assert "Disconnect the 2 connected viewers" in console.inner_text("#confirm-text")
    console.click('#confirm button[value="cancel"]')
    console.click(f'{row} [data-action="kick-viewers"]')
    console.click("#confirm-ok")
    wait_state(player, "stopped")  # the server closed the player's connection; the stream is still live
    assert "still live" in player.inner_text("#status")
    console.wait_for_function("() => document.getElementById('preview-status').textContent.includes('stopped')")

    # Kick the publisher: the row goes, and the player says the stream ended.
    publisher.expect_exit = True  # ffmpeg exits with an error when the server drops it
    console.click(f'{row} [data-action="kick-publisher"]')
    assert f"live/{stream_name}" in console.inner_text("#confirm-text")
    console.click("#confirm-ok")
    console.wait_for_selector(row, state="detached", timeout=10_000)
    assert console.is_visible("#no-streams")
    wait_state(player, "ended", timeout_s=15)
    player.screenshot(path=artifacts / "player-kicked.png")


def test_the_record_button_starts_and_stops_a_streams_recording(server_factory, publish, media, stream_name, monkeypatch,
                                                                browser, artifacts, tmp_path):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN_TOKEN)
    server = server_factory(**{"record.mode": "api", "record.path": str(tmp_path / "rec")})
    publish(server, stream_name, media.av, loop=True)
    wait_status(server, stream_name)
    console = browser.page(f"{server.http_base}/console")
    sign_in(console, ADMIN_TOKEN)
    cell = f'#streams tr[data-stream="live/{stream_name}"] td[data-col="record"]'
    console.wait_for_selector(f'{cell} [data-action="record-start"]')
    assert "not recorded" in console.inner_text(cell)
    assert recordings(server, stream_name) == []

    console.click(f'{cell} [data-action="record-start"]')
    console.wait_for_selector(f'{cell} [data-action="record-stop"]', timeout=10_000)
    assert "recording" in console.inner_text(cell)
    [row] = recordings(server, stream_name, wait_for=lambda rows: len(rows) == 1)
    assert row["status"] == "recording"
    console.screenshot(path=artifacts / "console-recording.png", full_page=True)

    console.click(f'{cell} [data-action="record-stop"]')
    console.wait_for_selector(f'{cell} [data-action="record-start"]', timeout=10_000)
    [row] = recordings(server, stream_name, wait_for=lambda rows: rows and rows[0]["status"] == "complete")
    assert row["bytes"] > 0 and row["duration_s"] > 0


def recordings(server, stream: str, wait_for=lambda rows: True, timeout_s: float = 10.0) -> list[dict]:
    """The stream's catalog rows (GET /api/v1/recordings), once `wait_for` holds of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = get_json(f"{server.http_base}/api/v1/recordings?stream={stream}",
                                {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 200, body
        rows = body["recordings"]
        if wait_for(rows) or time.monotonic() > deadline:
            assert wait_for(rows), rows
            return rows
        time.sleep(0.2)
