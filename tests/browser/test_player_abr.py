"""The player page over an ABR ladder in headless Chromium: hls.js over master.m3u8 and cmaf.m3u8, dash.js
over manifest.mpd, each offering more than one level; the viewer pins a rendition and goes back to auto;
and with the network throttled through the DevTools protocol hls.js and dash.js switch down and, once
the throttle is lifted, back up, while currentTime keeps advancing (no stall longer than a segment).

The edge runs in-process in a thread of its own (its event loop apart from Playwright's), with a ladder
published in real time into its registry as the transcoder will publish one (tests/support/abr.py): the
source 640x360 with B-frames, renditions at 240p and 144p without, keyframes at the same instants.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support.abr import LadderPublisher, LadderService, Rung, encode_ladder
from support.server import free_port

from mediaserver.api.admin import AdminDeps, make_admin_app
from mediaserver.auth.policy import AccessPolicy
from mediaserver.config import load_config
from mediaserver.edge.app import make_app
from mediaserver.edge.keys import ABR
from mediaserver.edge.packagers import PackagerPool
from mediaserver.hub.registry import StreamRegistry

from .conftest import advance_within, current_time, get_json, wait_state

SOURCE = Rung("source", 640, 360, 1500)
RUNGS = [Rung("240p", 426, 240, 400), Rung("144p", 256, 144, 120)]


class AbrEdge:
    """An edge app on 127.0.0.1 serving pages and outputs, the ladder published live, in a thread."""

    def __init__(self, workdir: Path) -> None:
        self.ladder = encode_ladder(workdir, SOURCE, RUNGS, seconds=4.0)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="abr-edge", daemon=True)
        self.thread.start()
        if not self._ready.wait(20) or self._failed is not None:
            raise AssertionError(f"the test edge did not start: {self._failed!r}")

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as err:  # noqa: BLE001 - reported to the test thread
            self._failed = err
            self._ready.set()

    async def _serve(self) -> None:
        config = load_config(None, ["hls.segment_duration=1", "hls.playlist_length=6"])
        registry = StreamRegistry()
        admin = make_admin_app(AdminDeps(registry, AccessPolicy(), None))  # as a server: the route answers this node
        app = make_app(config, registry, PackagerPool(registry, config.hls), admin=admin)
        self.publisher = LadderPublisher(registry, self.ladder, lag_ms=250)
        app[ABR] = LadderService(self.publisher)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self.publisher.start()
        feeding = asyncio.create_task(self.publisher.run())
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            feeding.cancel()
            await runner.cleanup()

    def close(self) -> None:
        if self._failed is None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


@pytest.fixture(scope="module")
def abr_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AbrEdge]:
    edge = AbrEdge(tmp_path_factory.mktemp("abr-ladder"))
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # a couple of segments each before players come
            code, body = get_json(f"{edge.base}/play/live/demo/status.json")
            if code == 200 and body["state"] == "live" and body["video"]:
                break
            time.sleep(0.2)
        time.sleep(2.5)
        yield edge
    finally:
        edge.close()


def levels(page: Any) -> list[dict]:
    return page.evaluate("window.mediaserverPlayer.levels")


def wait_levels(page: Any, count: int, timeout_s: float = 15.0) -> list[dict]:
    page.wait_for_function(f"() => window.mediaserverPlayer.levels.length >= {count}", timeout=timeout_s * 1000)
    return levels(page)


def advancing(page: Any, seconds: float = 1.5) -> float:
    """How far currentTime moves on in `seconds` (returned early once past 0.8 s, all the tests ask)."""
    return advance_within(page, 0.8, within_s=seconds)


@pytest.mark.parametrize("fmt", ["hls", "llhls", "dash"])
def test_the_player_plays_the_ladder_and_the_viewer_can_pin_a_rendition(abr_edge, browser, artifacts, fmt) -> None:
    status = get_json(f"{abr_edge.base}/play/live/demo/status.json")[1]
    assert status["abr"] is True
    page = browser.page(f"{abr_edge.base}/play/live/demo?format={fmt}")
    wait_state(page, "playing", timeout_s=30)
    found = wait_levels(page, 3)
    assert sorted(level["height"] for level in found) == [144, 240, 360]
    assert {level["label"] for level in found} == {"source", "240p", "144p"}
    assert advancing(page) > 0.8
    # The selector: Auto and one button per rendition; the readout names what plays.
    page.wait_for_selector("#quality:not([hidden]) button[data-level='144p']")
    page.wait_for_function("() => document.getElementById('stat-rendition').dataset.label !== undefined")

    page.click("#quality button[data-level='144p']")
    page.wait_for_function(
        "() => document.getElementById('stat-rendition').dataset.label === '144p'"
        " && document.getElementById('video').videoHeight === 144", timeout=20_000)
    assert page.get_attribute("#quality button[data-level='144p']", "aria-pressed") == "true"
    assert page.get_attribute("#stat-rendition", "data-auto") == "false"
    assert advancing(page) > 0.8
    page.screenshot(path=artifacts / f"player-abr-{fmt}.png")

    page.click("#quality button:has-text('Auto')")
    page.wait_for_function("() => document.getElementById('stat-rendition').dataset.auto === 'true'")
    assert advancing(page) > 0.8
    assert wait_state(page, "playing", "buffering") in ("playing", "buffering")


def test_the_player_offers_abr_by_default(abr_edge, browser) -> None:
    page = browser.page(f"{abr_edge.base}/play/live/demo")
    wait_state(page, "playing", timeout_s=30)
    assert page.evaluate("window.mediaserverPlayer.format") == "llhls"
    assert page.get_attribute('[data-format="llhls"]', "aria-pressed") == "true"
    assert len(wait_levels(page, 3)) == 3


# Measures in the page how long currentTime stands still: sampled every 50 ms on the page's own clock, so a
# slow round trip from the test process (a loaded machine) is not counted as a stall. A still stretch is
# counted from the sample before the one that first saw it (the worst case), as the test's bound is strict.
STALL_WATCH = """() => {
  const video = document.getElementById('video');
  const w = {longest: 0, since: null, last: video.currentTime, sampled: performance.now()};
  w.timer = setInterval(() => {
    const now = performance.now(), t = video.currentTime;
    if (t > w.last) w.since = null;
    else if (w.since === null) w.since = w.sampled;
    if (w.since !== null) w.longest = Math.max(w.longest, now - w.since);
    w.last = t;
    w.sampled = now;
  }, 50);
  window.stallWatch = w;
}"""


def watch(page: Any, until: str, timeout_s: float) -> tuple[list[int], float]:
    """Sample the picture height every 250 ms until the JS condition `until` (on the height `h`) holds;
    returns the heights seen and the longest time currentTime stood still meanwhile (s)."""
    heights: list[int] = []
    page.evaluate(STALL_WATCH)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        page.wait_for_timeout(250)
        h = page.evaluate("document.getElementById('video').videoHeight")
        heights.append(h)
        if page.evaluate(f"(h) => {until}", h):
            break
    longest_ms = page.evaluate("(() => { clearInterval(window.stallWatch.timer); return window.stallWatch.longest; })()")
    return heights, longest_ms / 1000


def wait_played_past(page: Any, seconds: float, timeout_s: float) -> bool:
    """Whether currentTime gets past `seconds` within `timeout_s`."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("(s) => document.getElementById('video').currentTime > s", arg=seconds,
                               timeout=timeout_s * 1000, polling=50)
    except PlaywrightTimeout:
        return False
    return True


@pytest.mark.parametrize("fmt", ["hls", "dash"])
def test_the_player_switches_down_under_a_throttled_network_and_back_up(abr_edge, browser, artifacts, fmt) -> None:
    page = browser.page(f"{abr_edge.base}/play/live/demo?format={fmt}")
    wait_state(page, "playing", timeout_s=30)
    wait_levels(page, 3)
    page.wait_for_function("() => Number(document.getElementById('stat-rendition').dataset.height) >= 240",
                           timeout=30_000)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    # About 300 kbit/s: the source (1.5 Mbit/s) and 240p (400 kbit/s) no longer fit, 144p does.
    cdp.send("Network.emulateNetworkConditions",
             {"offline": False, "latency": 20, "downloadThroughput": 300_000 / 8, "uploadThroughput": -1})
    played_from = current_time(page)
    heights, stall_down = watch(page, "h === 144", 45)
    assert heights and heights[-1] == 144, f"no switch down to 144p under 300 kbit/s; heights seen {heights}"
    assert current_time(page) > played_from, "playback stalled while switching down"
    page.screenshot(path=artifacts / f"player-abr-throttled-{fmt}.png")

    cdp.send("Network.emulateNetworkConditions",
             {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    played_from = current_time(page)
    heights, stall_up = watch(page, "h > 144", 60)
    assert heights[-1] > 144, f"no switch back up once the throttle was lifted; heights seen {heights}"
    # Playback goes on past the switch (which may take less than a second of it: no wait on the clock here).
    assert wait_played_past(page, played_from + 1, timeout_s=5), "playback stalled while switching up"
    print(f"ABR switch ({fmt}): longest stall {stall_down:.2f} s going down, {stall_up:.2f} s going up")
    # The bound: no stall longer than one segment (1 s here) either way.
    assert max(stall_down, stall_up) <= 1.0, f"currentTime stood still {stall_down:.2f} s / {stall_up:.2f} s"
