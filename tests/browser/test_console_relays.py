"""The console's Pushes column in headless Chromium: a push typed in goes to a second server (ours) and
shows live with its key hidden; a refused URL says why; Remove stops it."""

from __future__ import annotations

import pytest

from .conftest import wait_status

ADMIN_TOKEN = "browser-console-relay-token-0123456789"


@pytest.fixture
def admin_server(server_factory, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN_TOKEN)
    return server_factory()  # recording stays on: the console's Recordings view asks for the list


def test_the_console_adds_shows_and_removes_a_push(admin_server, server_factory, publish, media, stream_name,
                                                   browser, artifacts):
    target = server_factory(**{"record.mode": "off"})
    base = admin_server.http_base
    publish(admin_server, stream_name, media.av, loop=True)
    wait_status(admin_server, stream_name)
    console = browser.page(f"{base}/console")
    console.fill("#token", ADMIN_TOKEN)
    console.click("#login-form button[type=submit]")
    row = f'#streams tr[data-stream="live/{stream_name}"]'
    console.wait_for_selector(f'{row} [data-action="relay-add"]')

    browser.allow_console_error(r"status of 400")  # the refused URL below
    console.fill(f'{row} [data-field="relay-url"]', "http://not.rtmp/live/x")
    console.click(f'{row} [data-action="relay-add"]')
    console.wait_for_function("() => /accepted schemes are rtmp and rtmps/.test("
                              "document.getElementById('api-error').textContent)")

    console.fill(f'{row} [data-field="relay-url"]', f"rtmp://127.0.0.1:{target.rtmp_port}/live/{stream_name}-copy")
    console.click(f'{row} [data-action="relay-add"]')
    relay = f'{row} [data-relay="r1"]'
    console.wait_for_selector(f'{relay}[data-state="live"]', timeout=15_000)
    assert console.input_value(f'{row} [data-field="relay-url"]') == ""
    assert console.inner_text(f"{relay} .muted") == f"rtmp://127.0.0.1:{target.rtmp_port}/live/***"
    wait_status(target, f"{stream_name}-copy")
    console.screenshot(path=artifacts / "console-relays.png", full_page=True)

    console.click(f'{relay} [data-action="relay-remove"]')
    console.wait_for_selector(relay, state="detached", timeout=10_000)
