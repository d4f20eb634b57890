"""The console's Pushes column in headless Chromium: a push typed in goes to a second server (ours) and
shows live with its key hidden; a refused URL says why; Remove stops it. Its Pulls table shows a
configured pull (here of a dead source: retrying with the reason) with its key hidden, bytes and reconnects."""

from __future__ import annotations

import pytest

import socket

from .conftest import wait_status

ADMIN_TOKEN = "browser-console-relay-token-0123456789"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def admin_server(server_factory, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN_TOKEN)
    pull = f'[{{app = "live", stream = "cam", url = "rtmp://127.0.0.1:{_closed_port()}/live/cam-secret", mode = "always"}}]'
    # recording stays on: the console's Recordings view asks for the list
    return server_factory(**{"relay.pull": pull, "relay.pull_retry_max": "1"})


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

    pull = '#pulls tr[data-pull="live/cam"]'
    console.wait_for_selector(f'{pull}[data-state="retrying"] [data-col="pull-error"]')
    assert "ConnectionRefused" in console.inner_text(f'{pull} [data-col="pull-error"]')
    assert console.inner_text(f'{pull} [data-col="pull-source"]').endswith("/live/***")
    assert "cam-secret" not in console.inner_text("#pulls")
    assert (console.inner_text(f'{pull} [data-col="pull-bytes"]'),
            console.inner_text(f'{pull} [data-col="pull-reconnects"]')) == ("0 B", "0")

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
