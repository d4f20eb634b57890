"""Browser tests: the player, picker and console in Debian's Chromium, driven by Playwright for Python.

Playwright comes from PyPI (the test extra) and only drives the browser: it is never asked to download
one (`playwright install` is not used). Chromium is $CHROMIUM, else /usr/bin/chromium, else `chromium`
on PATH; without it the browser tests fail on CI (CI=true) and skip elsewhere, saying how to install it.

Chromium runs headless with the flags in CHROMIUM_FLAGS, one per test session (per xdist worker), and
each test gets a fresh browser context in it. Every request it
makes must go to 127.0.0.1: a route aborts any other, a resolver rule makes every other host name fail,
and the test fails at teardown naming what was tried. Uncaught page errors and Content-Security-Policy
violations fail a test too, as do console errors a test did not say to expect.

Screenshots and the measured play-to-first-frame times go to test-artifacts/browser/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.report import summary_line

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
BROWSER_TIMEOUT_S = 90

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # Belt and braces for "nothing but loopback": any host name but 127.0.0.1 fails to resolve, so even
    # a request the page routes cannot see (the browser's own) goes nowhere.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
INSTALL_HINT = (
    "the browser tests need Debian's Chromium: `sudo apt-get install chromium` (scripts/test installs it when run "
    "as root), or set CHROMIUM=/path/to/chromium"
)
# Requests that are not to 127.0.0.1 (http, https, ws, wss). Only these are routed (and aborted), so the
# requests the tests are about go straight through, with no detour through the test process.
NOT_LOOPBACK = re.compile(r"^(?!(?:https?|wss?)://127\.0\.0\.1(?:[:/]|$))")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: runs in headless Chromium (tests/browser)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents and "browser" in item.fixturenames:
            item.add_marker(pytest.mark.browser)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(BROWSER_TIMEOUT_S))


def _missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium_exe() -> str:
    candidates = [os.environ.get("CHROMIUM") or "", "/usr/bin/chromium", shutil.which("chromium") or ""]
    for exe in candidates:
        if exe and os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    _missing(f"no Chromium found (tried {[c for c in candidates if c]}); {INSTALL_HINT}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


class _PlaywrightLoop:
    """Playwright's sync API marks its event loop as the thread's running loop between its calls. Left so
    for the whole session, every asyncio test after the first browser test would fail ("Cannot run the event
    loop while another loop is running"), so the loop is marked running only while a browser test runs."""

    def __init__(self) -> None:
        self.loop = asyncio._get_running_loop()
        self.leave()

    def enter(self) -> None:
        asyncio._set_running_loop(self.loop)

    def leave(self) -> None:
        asyncio._set_running_loop(None)


_PLAYWRIGHT_LOOP: list[_PlaywrightLoop] = []  # the session's, while its Chromium runs


@pytest.fixture(scope="session")
def chromium_browser(chromium_exe: str) -> Iterator[Any]:
    """One headless Chromium per test session (per xdist worker): starting it takes seconds, so tests share it
    and each gets a browser context of its own (the `chromium` fixture)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed: pip install -e '.[test]' (never `playwright install`)")
    playwright = sync_playwright().start()
    loop = _PlaywrightLoop()
    loop.enter()
    try:
        browser = playwright.chromium.launch(executable_path=chromium_exe, headless=True, args=CHROMIUM_FLAGS)
    except BaseException:
        playwright.stop()
        loop.leave()
        raise
    loop.leave()
    _PLAYWRIGHT_LOOP.append(loop)
    try:
        yield browser
    finally:
        loop.enter()
        try:
            browser.close()
        finally:
            playwright.stop()
            loop.leave()
            _PLAYWRIGHT_LOOP.remove(loop)


@pytest.fixture
def chromium(chromium_browser: Any) -> Iterator[Any]:
    """A fresh browser context for one test (its own cookies, storage and cache) in the session's Chromium."""
    loop = _PLAYWRIGHT_LOOP[0]
    loop.enter()
    try:
        context = chromium_browser.new_context(viewport={"width": 1100, "height": 900}, locale="en-GB",
                                               timezone_id="UTC")
        context.set_default_timeout(15_000)
        context.add_init_script(script=(
            "document.addEventListener('securitypolicyviolation', e => console.error("
            "'CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI));"
        ))
        try:
            yield context
        finally:
            context.close()
    finally:
        loop.leave()


class Browser:
    """A test's view of its browser context: pages it opened, and what went wrong in them."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.pages: list[Any] = []
        self.outside: list[str] = []
        self.problems: list[str] = []
        self.allowed_console: list[re.Pattern[str]] = []

    def allow_console_error(self, pattern: str) -> None:
        """A console error matching `pattern` is expected (e.g. the browser reporting a 404 it was meant to get)."""
        self.allowed_console.append(re.compile(pattern))

    def page(self, url: str, *, width: int | None = None, height: int | None = None) -> Any:
        page = self.context.new_page()
        if width and height:
            page.set_viewport_size({"width": width, "height": height})
        self.pages.append(page)
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.problems.append(f"uncaught error in the page: {err}"))
        page.on("websocket", self._websocket)
        page.goto(url)
        return page

    def _console(self, message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text or text.startswith("CSP violation"):
            self.problems.append(f"Content-Security-Policy violation: {text}")
        elif message.type == "error" and not any(p.search(text) for p in self.allowed_console):
            self.problems.append(f"console error: {text}")

    def _websocket(self, ws: Any) -> None:
        if NOT_LOOPBACK.match(ws.url):
            self.outside.append(ws.url)

    def close(self) -> None:
        for page in self.pages:
            if not page.is_closed():
                page.close()


@pytest.fixture
def browser(chromium: Any) -> Iterator[Browser]:
    """Open pages with browser.page(url). At teardown the test fails if a page reached outside
    127.0.0.1, threw, broke the Content-Security-Policy or logged an unexpected console error."""
    b = Browser(chromium)

    def block(route: Any) -> None:
        b.outside.append(route.request.url)
        route.abort("blockedbyclient")

    def watch(request: Any) -> None:
        if NOT_LOOPBACK.match(request.url) and not request.url.startswith(("data:", "blob:", "about:")):
            b.outside.append(request.url)

    chromium.route(NOT_LOOPBACK, block)
    chromium.on("request", watch)
    try:
        yield b
    finally:
        b.close()
        chromium.unroute(NOT_LOOPBACK, block)
        chromium.remove_listener("request", watch)
    assert not b.outside, f"the browser made requests outside 127.0.0.1: {sorted(set(b.outside))}"
    assert not b.problems, "problems in the page:\n" + "\n".join(b.problems)


# ----- helpers the tests share -----------------------------------------------------------------------


def get_json(url: str, headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _NO_PROXY.open(request, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def fetch(url: str, timeout_s: float = 15.0) -> int:
    try:
        with _NO_PROXY.open(url, timeout=timeout_s) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def wait_status(server: Any, name: str, state: str = "live", timeout_s: float = 15.0, query: str = "") -> dict:
    """Poll the stream's status.json until its state is `state` (and, when live, its codecs are known)."""
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        server.check()
        code, body = get_json(f"{server.http_base}/play/live/{name}/status.json{query}")
        if code == 200 and body["state"] == state and (state != "live" or body["video"] or body["audio"]):
            return body
        time.sleep(0.2)
    raise AssertionError(f"live/{name} did not become {state} within {timeout_s} s; last status {body}")


def wait_state(page: Any, *states: str, timeout_s: float = 20.0) -> str:
    """Wait until the player's #status shows one of `states`; returns the state."""
    selector = ", ".join(f'#status[data-state="{s}"]' for s in states)
    try:
        page.wait_for_selector(selector, timeout=timeout_s * 1000)
    except Exception as err:  # Playwright's TimeoutError: say what the page showed instead
        shown = page.get_attribute("#status", "data-state"), page.inner_text("#status")
        raise AssertionError(f"the player did not reach {states} within {timeout_s} s; it shows {shown}") from err
    return page.get_attribute("#status", "data-state")


def current_time(page: Any) -> float:
    return page.evaluate("document.getElementById('video').currentTime")


def advance_within(page: Any, seconds: float, within_s: float) -> float:
    """How far the video's currentTime moves on in `within_s` of wall time, returned as soon as it is more
    than `seconds` (a test asserting that much need not sit out the rest of the interval)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    before = current_time(page)
    try:
        page.wait_for_function("(before) => document.getElementById('video').currentTime - before > " + repr(seconds),
                               arg=before, timeout=within_s * 1000, polling=50)
    except PlaywrightTimeout:
        pass
    return current_time(page) - before


@pytest.fixture(scope="session")
def startup_times(artifacts: Path, pytestconfig: pytest.Config) -> Iterator[dict[str, dict[str, float]]]:
    """By format: play-to-first-frame time (ms) and the latency readout (s), written to
    test-artifacts/browser/first-frame.json and printed in the run's summary."""
    times: dict[str, dict[str, float]] = {}
    yield times
    if times:
        (artifacts / "first-frame.json").write_text(json.dumps(times, indent=2) + "\n")
        figures = ", ".join(f"{fmt} {m['first_frame_ms']} ms (latency {m['latency_s']} s)" for fmt, m in times.items())
        summary_line(pytestconfig, f"player, click play -> first playing event on loopback: {figures}")
