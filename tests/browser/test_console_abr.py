"""The console's ABR column in headless Chromium: a 720p stream shows "not transcoded" and a Start button;
starting it lists the renditions and the worker's CPU (the rendition streams get rows of their own that
say whose they are); stopping it ends them."""

from __future__ import annotations

import pytest

from .conftest import wait_status

ADMIN_TOKEN = "browser-console-abr-token-0123456789"


@pytest.fixture
def admin_server(server_factory, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN_TOKEN)
    return server_factory(**{"abr.mode": "on_demand", "abr.wait": "15"})


def test_the_console_starts_and_stops_a_transcode(admin_server, publish, media, stream_name, browser, artifacts):
    base = admin_server.http_base
    publish(admin_server, stream_name, media.hd, loop=True)
    wait_status(admin_server, stream_name)
    console = browser.page(f"{base}/console")
    console.fill("#token", ADMIN_TOKEN)
    console.click("#login-form button[type=submit]")
    row = f'#streams tr[data-stream="live/{stream_name}"]'
    console.wait_for_selector(f'{row} [data-action="abr-start"]')
    assert console.inner_text(f'{row} [data-col="abr-state"]') == "not transcoded"

    console.click(f'{row} [data-action="abr-start"]')
    console.wait_for_function(
        f"() => (document.querySelector('{row} [data-col=\"abr-renditions\"]') || {{}}).textContent === "
        "'480p · 360p · 240p'", timeout=30_000)
    console.wait_for_function(f"() => /CPU \\d+ %/.test(document.querySelector('{row} [data-col=\"abr-cpu\"]').textContent)",
                              timeout=10_000)
    rendition = f'#streams tr[data-stream="live/{stream_name}@360p"]'
    console.wait_for_selector(rendition)
    assert f"rendition 360p of live/{stream_name}" in console.inner_text(f'{rendition} [data-col="abr"]')
    console.screenshot(path=artifacts / "console-abr.png", full_page=True)

    console.click(f'{row} [data-action="abr-stop"]')
    console.wait_for_selector(f'{row} [data-action="abr-start"]', timeout=15_000)
    console.wait_for_selector(rendition, state="detached", timeout=10_000)
