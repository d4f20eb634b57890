"""hls.js in headless Chromium over LL-HLS: it follows the muxed rendition alone (one media playlist with
blocking reloads, parts holding video and audio), and decodes both."""

from __future__ import annotations

from .conftest import advance_within, wait_state, wait_status


def test_hlsjs_plays_video_and_audio_from_the_one_muxed_playlist(server, publish, media, stream_name, browser):
    publish(server, stream_name, media.av, loop=True)
    wait_status(server, stream_name)
    page = browser.page(f"{server.http_base}/play/live/{stream_name}?format=llhls&autoplay=0")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    wait_state(page, "ready")
    page.click("#play")
    wait_state(page, "playing")
    assert advance_within(page, 1.5, within_s=3.0) > 1.5
    decoded = page.evaluate("(() => { const v = document.getElementById('video');"
                            " return [v.webkitVideoDecodedByteCount, v.webkitAudioDecodedByteCount]; })()")
    assert decoded[0] > 0 and decoded[1] > 0, f"video and audio bytes decoded: {decoded}"
    media_playlists = {url.split("?")[0].rsplit("/", 1)[1] for url in asked if ".m3u8" in url}
    assert media_playlists == {"cmaf.m3u8", "cmaf-muxed.m3u8"}, media_playlists
    assert any("cmaf-muxed.m3u8?_HLS_msn=" in url for url in asked)  # blocking reloads
    assert any("-muxed-" in url and url.endswith(".m4s") for url in asked)
