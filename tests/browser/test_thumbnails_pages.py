"""Thumbnails and health badges in the pages: the picker shows each stream's newest keyframe, the
console shows it too with a badge per flagged health condition (a black, silent stream here)."""

from __future__ import annotations

import pytest

from support.publisher import Publisher, lavfi_publish_args

from .conftest import wait_status

ADMIN_TOKEN = "browser-health-admin-token-0123456789"


@pytest.fixture
def dark_stream(server_factory, monkeypatch, tmp_path, stream_name):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN_TOKEN)
    server = server_factory(**{"health.enabled": "true", "health.interval": "0.5", "health.black_after": "1",
                               "health.silence_after": "1", "health.frozen_after": "1"})
    args = lavfi_publish_args(server.rtmp_url(stream_name), "color=c=black", "anullsrc=r=48000:cl=stereo")
    publisher = Publisher(args, tmp_path / "publisher.log")
    server.publishers.append(publisher)
    wait_status(server, stream_name)
    yield server
    publisher.close()


def test_the_picker_and_the_console_show_the_thumbnail_and_the_health_badges(dark_stream, stream_name, browser,
                                                                             artifacts):
    base = dark_stream.http_base
    picker = browser.page(f"{base}/")
    picker.wait_for_function("() => [...document.querySelectorAll('#streams img.thumb')]"
                             ".some((img) => img.complete && img.naturalWidth === 320)", timeout=15_000)
    assert picker.get_attribute("#streams img.thumb", "src").startswith(f"/live/{stream_name}/thumbnail.jpg?width=320")

    console = browser.page(f"{base}/console")
    console.fill("#token", ADMIN_TOKEN)
    console.click("#login-form button[type=submit]")
    row = f'#streams tr[data-stream="live/{stream_name}"]'
    console.wait_for_function(
        f"() => {{ const h = document.querySelector('{row} [data-col=\"health\"]');"
        " return h && h.textContent.includes('black picture') && h.textContent.includes('silent'); }",
        timeout=15_000)
    console.wait_for_function(f"() => document.querySelector('{row} img.thumb').naturalWidth === 320", timeout=15_000)
    console.screenshot(path=artifacts / "console-health.png", full_page=True)
