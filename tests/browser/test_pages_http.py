"""The pages' server side without a browser: headers and policy, the static-file table, the JSON the
pages read (public stream list, stream status, console history), the history rings, and the shipped
files (vendored players pinned as web/package.json says, every file in the wheel's package data)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections import Counter
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from mediaserver.auth.admission import Admission
from mediaserver.auth.policy import AccessPolicy
from mediaserver.auth.tokens import Action, mint
from mediaserver.config import load_config
from mediaserver.edge.app import make_app
from mediaserver.edge.history import StreamHistory
from mediaserver.edge.keys import HISTORY
from mediaserver.edge.packagers import PackagerPool
from mediaserver.edge.pages import FORMATS, WEB_DIR, content_security_policy, static_table
from mediaserver.gate import Gate
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "pages-admin-token-0123456789abcdef"
SECRET = "pages-token-secret-0123456789abcdef"
HTML_PAGES = ["index.html", "player.html", "console.html"]


class FakePublisher:
    def __init__(self, peer: str = "10.1.2.3:5000") -> None:
        self.peer = peer
        self.closed: str | None = None

    def close(self, reason: str) -> None:
        self.closed = reason


class Node:
    """An edge app in-process, with a registry the test publishes into by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, admin: str | None = ADMIN, play_open=("*",)) -> None:
        if admin is None:
            monkeypatch.delenv("MEDIASERVER_ADMIN_TOKEN", raising=False)
        else:
            monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", admin)
        self.config = load_config(None, ["hub.reconnect_grace=5"])
        self.expiries: list[object] = []
        self.registry = StreamRegistry(call_later=lambda delay, fn: self.expiries.append(fn))
        policy = AccessPolicy(play_open=play_open, secrets=(SECRET.encode(),))
        self.admission = Admission(policy=policy, failure_delay_s=0.0)
        self.app = make_app(self.config, self.registry, PackagerPool(self.registry, self.config.hls),
                            gate=Gate(self.admission, self.registry))

    def publish(self, app: str = "live", name: str = "cam", video: str | None = "h264", audio: str | None = "aac"):
        publisher = FakePublisher()
        stream = self.registry.claim_publisher(StreamKey(app, name), publisher)
        stream.info.video_codec, stream.info.audio_codec = video, audio
        stream.info.width, stream.info.height = (1280, 720) if video else (None, None)
        return stream, publisher


@pytest.fixture
async def node(monkeypatch) -> AsyncIterator[tuple[Node, TestClient]]:
    n = Node(monkeypatch)
    async with TestClient(TestServer(n.app)) as client:
        yield n, client


# ----- pages and their policy ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/play/live/cam", "/console"])
async def test_pages_are_html_with_a_strict_content_security_policy(node, path):
    _, client = node
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.content_type == "text/html"
    csp = resp.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["media-src"] == "'self' blob:"
    assert directives["frame-ancestors"] == "'none'"
    host = f"{client.host}:{client.port}"
    assert directives["connect-src"] == f"'self' ws://{host} wss://{host}"
    assert "unsafe" not in csp and "*" not in csp
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("host", ["evil.example; script-src *", "a b", "x'y", "[::1", "h" * 300])
def test_a_strange_host_header_never_reaches_the_policy(host):
    csp = content_security_policy(host)
    assert "connect-src 'self';" in csp
    assert host not in csp


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.refs: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...>: inline style or handler")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            self._in_script = True
            if not values.get("src"):
                self.problems.append("<script> without src")
        for name in ("src", "href"):
            if values.get(name, "").startswith("/static/"):
                self.refs.append(values[name])
            elif values.get(name, "").startswith(("http:", "https:", "//")):
                self.problems.append(f"<{tag} {name}={values[name]}>: not this origin")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append("inline script")


@pytest.mark.parametrize("page", HTML_PAGES)
def test_pages_hold_no_inline_code_and_name_only_files_that_exist(page):
    parser = _Markup()
    parser.feed((WEB_DIR / page).read_text())
    assert parser.problems == []
    table = static_table()
    for ref in parser.refs:
        assert ref.removeprefix("/static/") in table, ref


def test_scripts_import_and_load_only_files_that_exist():
    table = static_table()
    for path in (WEB_DIR / "js").glob("*.js"):
        text = path.read_text()
        for ref in re.findall(r"from '\./([\w.-]+)'", text):
            assert f"js/{ref}" in table, (path.name, ref)
        for ref in re.findall(r"'/static/([\w./-]+)'", text):
            assert ref in table, (path.name, ref)
        assert not re.search(r"https?://", text.replace("http://www.w3.org/2000/svg", "")), path.name
        assert "innerHTML" not in text and "eval(" not in text, path.name


# ----- static files ----------------------------------------------------------------------------------


async def test_static_files_come_from_the_table_with_their_types(node):
    _, client = node
    for path, content_type in [("/static/js/player.js", "text/javascript"), ("/static/css/site.css", "text/css"),
                               ("/static/vendor/hls.min.js", "text/javascript"), ("/static/favicon.svg", "image/svg+xml")]:
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.content_type == content_type
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("raw", [
    "/static/player.html", "/static/nope.js", "/static/%2e%2e/edge/pages.py", "/static/..%2fedge%2fpages.py",
    "/static/js/../../edge/pages.py", "/static//etc/passwd", "/static/vendor/",
])
async def test_no_request_path_reaches_a_file_outside_the_table(node, raw):
    _, client = node
    resp = await client.get(URL(raw, encoded=True))
    assert resp.status == 404, raw
    assert "import" not in await resp.text()


# ----- public JSON -----------------------------------------------------------------------------------


async def test_stream_status_tells_the_state_codecs_and_what_each_format_refuses(node):
    n, client = node
    resp = await client.get("/play/live/cam/status.json")
    body = await resp.json()
    assert resp.status == 200 and body["state"] == "offline" and body["video"] is None
    assert [f["id"] for f in body["formats"]] == [f[0] for f in FORMATS]

    stream, publisher = n.publish(video="h264", audio="opus")
    body = await (await client.get("/play/live/cam/status.json")).json()
    assert body["state"] == "live"
    assert body["video"] == {"codec": "h264", "width": 1280, "height": 720}
    assert body["audio"]["codec"] == "opus"
    formats = {f["id"]: f for f in body["formats"]}
    assert formats["flv"]["url"] == "/live/cam.flv" and formats["ws-flv"]["transport"] == "ws"
    assert formats["llhls"]["refused"] is None and formats["dash"]["refused"] is None
    refused = formats["hls"]["refused"]
    assert "opus" in refused["error"] and "MPEG-TS" in refused["error"] and refused["hint"]
    # The same words as the format's own URL answers with.
    direct = await client.get("/live/cam/index.m3u8")
    assert direct.status == 415 and await direct.json() == refused

    n.registry.release_publisher(stream, publisher)
    body = await (await client.get("/play/live/cam/status.json")).json()
    assert body["state"] == "reconnecting" and body["reconnect_grace_s"] == 5


@pytest.mark.parametrize("path", ["/play/.hidden/cam/status.json", "/play/live/a%20b/status.json"])
async def test_stream_status_refuses_names_that_are_not_names(node, path):
    _, client = node
    resp = await client.get(URL(path, encoded=True))
    assert resp.status == 400
    assert (await resp.json())["hint"]


async def test_the_public_list_shows_open_apps_only_and_nothing_about_publishers(monkeypatch):
    n = Node(monkeypatch, play_open=("live",))
    n.publish("live", "cam")
    n.publish("live", "cam@360p")  # a rendition: offered by its source's player, not listed on its own
    n.publish("private", "board")
    async with TestClient(TestServer(n.app)) as client:
        body = await (await client.get("/streams.json")).json()
    assert body == {"streams": [{"app": "live", "name": "cam", "live": True, "video": "h264", "audio": "aac",
                                 "renditions": ["360p"]}], "truncated": False}


async def test_the_status_of_a_stream_that_needs_a_play_token_needs_one(monkeypatch):
    n = Node(monkeypatch, play_open=())
    n.publish("live", "cam")
    good = mint(SECRET.encode(), Action.PLAY, "live", "cam", 4_000_000_000)
    other = mint(SECRET.encode(), Action.PLAY, "live", "other", 4_000_000_000)
    async with TestClient(TestServer(n.app)) as client:
        missing = await client.get("/play/live/cam/status.json")
        wrong = await client.get(f"/play/live/cam/status.json?token={other}")
        right = await client.get(f"/play/live/cam/status.json?token={good}")
        assert missing.status == 401 and "play token" in (await missing.json())["error"]
        assert wrong.status == 403
        assert right.status == 200 and (await right.json())["state"] == "live"
        assert (await (await client.get("/streams.json")).json())["streams"] == []
    assert n.admission.failures[("play", "missing")] == 1


# ----- the console's history -------------------------------------------------------------------------


async def test_history_needs_the_admin_token(node):
    n, client = node
    n.publish()
    n.app[HISTORY].sample()  # the sampler's next reading, without waiting for it
    assert (await client.get("/console/history.json")).status == 401
    wrong = await client.get("/console/history.json", headers={"Authorization": "Bearer nope-nope-nope-nope"})
    assert wrong.status == 401 and "MEDIASERVER_ADMIN_TOKEN" in (await wrong.json())["hint"]
    ok = await client.get("/console/history.json", headers={"Authorization": f"Bearer {ADMIN}"})
    body = await ok.json()
    assert ok.status == 200 and ok.headers["Cache-Control"] == "no-store"
    assert body["interval_s"] > 0 and [s["name"] for s in body["streams"]] == ["cam"]


async def test_history_says_the_console_is_off_without_an_admin_token(monkeypatch):
    n = Node(monkeypatch, admin=None)
    async with TestClient(TestServer(n.app)) as client:
        resp = await client.get("/console/history.json", headers={"Authorization": "Bearer anything-at-all-123"})
        assert resp.status == 503 and "MEDIASERVER_ADMIN_TOKEN" in (await resp.json())["hint"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_history_keeps_a_bounded_ring_of_bit_rate_and_viewers_per_stream():
    clock = Clock()
    registry = StreamRegistry(clock=clock, call_later=lambda delay, fn: None)
    segment = Counter({"live/cam": 3})
    history = StreamHistory(registry, lambda: segment, samples=4, interval_s=2.0, clock=clock, wall_clock=clock)
    stream = registry.claim_publisher(StreamKey("live", "cam"), FakePublisher())
    history.sample()  # first sight: no rate yet
    assert history.series(stream.key) == []
    for _ in range(6):
        clock.now += 2.0
        stream.bytes_in += 250_000  # 1 Mbit/s over 2 s
        history.sample()
    series = history.series(stream.key)
    assert len(series) == 4  # bounded
    assert all(s.kbps == 1000.0 and s.viewers == 3 for s in series)
    assert [s.at for s in series] == [106.0, 108.0, 110.0, 112.0]
    described = history.describe()
    assert described["window_s"] == 8.0
    assert described["streams"][0]["kbps"] == [1000.0] * 4 and described["streams"][0]["segment_viewers"] == 3

    registry.kick(stream.key)  # ended: its ring goes
    history.sample()
    assert history.series(stream.key) == [] and history.describe()["streams"] == []

    again = registry.claim_publisher(StreamKey("live", "cam"), FakePublisher())  # a new stream, a new ring
    again.bytes_in = 10
    history.sample()
    clock.now += 2.0
    again.bytes_in += 1000
    history.sample()
    assert [s.kbps for s in history.series(again.key)] == [4.0]


def test_history_refuses_a_ring_that_cannot_hold_a_line():
    with pytest.raises(ValueError, match="samples >= 2"):
        StreamHistory(StreamRegistry(), samples=1)


# ----- what ships ------------------------------------------------------------------------------------


def test_vendored_players_are_the_pinned_versions():
    pinned = json.loads((ROOT / "web" / "package.json").read_text())["dependencies"]
    lock = json.loads((ROOT / "web" / "package-lock.json").read_text())["packages"]
    versions = {}
    for line in (WEB_DIR / "vendor" / "VERSIONS").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version, _ = line.split(" ", 2)
            versions[name] = version
    assert versions == pinned
    for name, version in pinned.items():
        assert lock[f"node_modules/{name}"]["version"] == version
    for file in ("hls.min.js", "hls.worker.js", "dash.mediaplayer.min.js", "mpegts.js"):
        assert (WEB_DIR / "vendor" / file).stat().st_size > 50_000, file


def test_every_web_file_is_in_the_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["mediaserver"]
    package = WEB_DIR.parent
    for path in WEB_DIR.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(package).as_posix()
            assert any(fnmatch.fnmatchcase(rel, p) and rel.count("/") == p.count("/") for p in patterns), rel
