"""The fast lane's pure parts: which request heads it takes (everything else goes to aiohttp), the LL-HLS
delivery directives, when aiohttp's parser is between requests, and segments sent from a memfd."""

from __future__ import annotations

import os
import socket

import pytest

from mediaserver.edge.connections import ends_bodyless_head
from mediaserver.edge.fastlane import Head, directive, parse_head
from mediaserver.edge.sendfile import Sent, mem_file, send_mem_file


def test_a_plain_get_of_a_stream_file_is_taken_with_its_origin_and_etag():
    head = parse_head(b"GET /live/cam/index.m3u8?x=1 HTTP/1.1\r\nHost: a\r\nOrigin: https://p.example\r\n"
                      b"If-None-Match: \"abc-3\"\r\nConnection: keep-alive\r\n\r\n")
    assert head == Head("live", "cam", "index.m3u8", "x=1", "https://p.example", '"abc-3"')


def test_a_browser_head_is_taken_whatever_its_headers_say_besides():
    head = parse_head(
        b"GET /live/cam/cmaf-muxed.m3u8?_HLS_msn=120&_HLS_part=2 HTTP/1.1\r\nHost: media.example.com\r\n"
        b"Connection: keep-alive\r\nsec-ch-ua: \"Chromium\";v=\"131\"\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
        b"Accept: */*\r\norigin:   https://player.example.com \t\r\nSec-Fetch-Mode: cors\r\n"
        b"Referer: https://player.example.com/a :b\r\nIF-NONE-MATCH: \"Ab-1\"\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n")
    assert head == Head("live", "cam", "cmaf-muxed.m3u8", "_HLS_msn=120&_HLS_part=2", "https://player.example.com",
                        '"Ab-1"'), "names in any case, values trimmed and as sent (an ETag's case matters)"


@pytest.mark.parametrize("line", [b"X-Forwarded-For: 203.0.113.7", b"x-forwarded-for: 203.0.113.7, 10.0.0.2",
                                  b"Forwarded: for=203.0.113.7;proto=https"])
def test_a_head_that_names_a_client_behind_proxies_says_so(line):
    head = parse_head(b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\n" + line + b"\r\n\r\n")
    assert head == Head("live", "cam", "index.m3u8", "", None, None, forwarded=True)
    assert parse_head(b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n").forwarded \
        is False


@pytest.mark.parametrize("data", [
    b"HEAD /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\n\r\n",  # not GET
    b"GET /live/cam/index.m3u8 HTTP/1.0\r\nHost: a\r\n\r\n",  # HTTP/1.0: other keep-alive rules
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\n",  # incomplete
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\n\r\nGET /live/cam/index.m3u8 HTTP/1.1\r\n\r\n",  # pipelined
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",  # a body announced
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  # obs-fold
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost : a\r\n\r\n",  # space before the colon
    b"GET /live/c%61m/index.m3u8 HTTP/1.1\r\nHost: a\r\n\r\n",  # percent-encoded: aiohttp decodes it
    b"GET /live/cam.flv HTTP/1.1\r\nHost: a\r\n\r\n",  # another route
    b"GET /live//index.m3u8 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a/b/c/d HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 9000 + b"\r\n\r\n",  # too long
    "GET /live/cäm/index.m3u8 HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
    b"GET /live/c\tam/index.m3u8 HTTP/1.1\r\nHost: a\r\n\r\n",  # a control character in the target
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nX: a\nContent-Length: 3\r\n\r\n",  # a bare LF
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",  # a bare CR
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n",
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\n: nameless\r\n\r\n",
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nconnection: keep-alive\r\nCONNECTION: close\r\n\r\n",
    # a header the lane reads, twice: aiohttp takes the first, so the lane leaves the request to it
    b"GET /vod/abc.mp4 HTTP/1.1\r\nHost: a\r\nRange: bytes=0-9\r\nRange: bytes=100-199\r\n\r\n",
    b"GET /vod/abc.mp4 HTTP/1.1\r\nHost: a\r\nRange: bytes=0-9\r\nIf-Range: \"a\"\r\nif-range: \"b\"\r\n\r\n",
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"a\"\r\nIf-None-Match: \"b\"\r\n\r\n",
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nOrigin: https://a.example\r\nOrigin: https://b.example\r\n\r\n",
    # heads aiohttp answers with 400: the lane must not answer them 200
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\n\r\n",  # no Host
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",  # two
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n",  # a name that is no token
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\n@x(): v\r\n\r\n",
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nX-\xff: v\r\n\r\n",
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",  # control bytes in a value
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n",
    b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n",
])
def test_anything_else_goes_to_aiohttp(data):
    assert parse_head(data) is None


def test_directives_are_whole_numbers_once_each():
    assert directive("_HLS_msn=12&_HLS_part=3", "_HLS_msn") == 12
    assert directive("_HLS_msn=12&_HLS_part=3", "_HLS_part") == 3
    assert directive("token=x", "_HLS_msn") is None
    assert directive("", "_HLS_msn") is None
    for bad in ("_HLS_msn=-1", "_HLS_msn=1.5", "_HLS_msn=²", "_HLS_msn=", "_HLS_msn=1&_HLS_msn=2",
                "_HLS_msn=1234567890123"):
        assert directive(bad, "_HLS_msn") is False, bad


def test_the_lane_follows_aiohttp_only_after_a_complete_bodyless_head():
    assert ends_bodyless_head(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert ends_bodyless_head(b"GET /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n")
    assert not ends_bodyless_head(b"GET /x HTTP/1.1\r\nHost: a\r\n")  # the rest comes in the next read
    assert not ends_bodyless_head(b"POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\n")
    assert not ends_bodyless_head(b"GET /x HTTP/1.1\r\nContent-Length: 4\r\n\r\n")
    assert not ends_bodyless_head(b"GET /x.flv HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")


class _Transport:
    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str):
        return self.sock if name == "socket" else None

    def write(self, data) -> None:
        self.written.append(bytes(data))


def test_a_segment_goes_out_from_its_memfd_and_what_the_socket_refuses_through_the_transport():
    data = os.urandom(3 << 20)  # more than a socket buffer takes at once
    file = mem_file(data)
    assert file is not None and file.size == len(data)
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        transport = _Transport(a)
        before = Sent.direct
        sent = send_mem_file(transport, file, data)
        assert 0 < sent < len(data) and Sent.direct - before == sent
        assert b"".join(transport.written) == data[sent:]
        got = bytearray()
        b.settimeout(5)
        while len(got) < sent:
            got += b.recv(1 << 20)
        assert bytes(got) == data[:sent]
    finally:
        a.close()
        b.close()
    fd = file.fd
    del file
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with its last reference


def test_a_range_of_a_recording_is_taken_with_its_range_and_if_range():
    head = parse_head(b"GET /vod/Ab3_x.mp4 HTTP/1.1\r\nHost: a\r\nRange: bytes=0-99\r\nIf-Range: \"1-2\"\r\n\r\n")
    assert head == Head("vod", "", "Ab3_x.mp4", "", None, None, "bytes=0-99", '"1-2"')
    assert parse_head(b"GET /vod/Ab3_x/index.m3u8 HTTP/1.1\r\nHost: a\r\n\r\n").name == "Ab3_x"  # its playlist: FastLane._vod_text
    assert parse_head(b"GET /vod/Ab3_x.ts HTTP/1.1\r\nHost: a\r\n\r\n") is None


def test_on_an_edge_with_a_ceiling_a_starting_player_is_left_to_the_full_stack():
    from types import SimpleNamespace

    from aiohttp import web

    from mediaserver.edge.keys import METRICS
    from mediaserver.edge.overload import LOAD_REDIRECT, may_move
    from mediaserver.hub.stream import StreamKey

    key = StreamKey("live", "cam")
    app = web.Application()
    app[METRICS] = SimpleNamespace(hls_clients={})
    assert not may_move(app, "10.0.0.1", key, "index.m3u8", "")  # no ceiling: the lane serves

    async def elsewhere():
        return "http://edge-b:8080"

    app[LOAD_REDIRECT] = elsewhere
    assert may_move(app, "10.0.0.1", key, "index.m3u8", "")
    assert may_move(app, "10.0.0.1", key, "manifest.mpd", "token=x")
    assert not may_move(app, "10.0.0.1", key, "index.m3u8", "balanced=1")  # moved once already
    assert not may_move(app, "10.0.0.1", key, "cmaf-video.m3u8", "_HLS_msn=3")  # a player watching here
    assert not may_move(app, "10.0.0.1", key, "seg-5.ts", "")  # segments are never moved
    app[METRICS].hls_clients[("10.0.0.1", "live/cam")] = 1.0
    assert not may_move(app, "10.0.0.1", key, "index.m3u8", "")  # a reload of a player watching here


def test_a_repeated_head_is_parsed_once_and_the_cache_stays_bounded(monkeypatch):
    from types import SimpleNamespace

    from aiohttp import web

    from mediaserver.edge import fastlane
    from mediaserver.edge.keys import CONFIG, GATE

    app = web.Application()
    app[CONFIG] = SimpleNamespace(hls=SimpleNamespace(fast_lane=False), http=SimpleNamespace(trusted_proxies=()))
    app[GATE] = SimpleNamespace()
    lane = fastlane.FastLane(app)
    parsed = []
    monkeypatch.setattr(fastlane, "parse_head", lambda data: parsed.append(data) or parse_head(data))
    monkeypatch.setattr(fastlane, "HEAD_CACHE", 8)
    head = b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(3):
        assert not lane.take(None, bytes(bytearray(head)))  # the lane is off here: nothing is answered
    assert len(parsed) == 1
    assert not lane.take(None, b"POST /live/cam/index.m3u8 HTTP/1.1\r\n\r\n")  # not a lane request: not kept
    long_head = b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 3000 + b"\r\n\r\n"
    lane.take(None, long_head)
    lane.take(None, long_head)  # parsed every time: long heads are not kept
    for n in range(50):
        lane.take(None, b"GET /live/cam/%d.ts HTTP/1.1\r\nHost: a\r\n\r\n" % n)
    assert len(lane._heads) <= 8
    assert len(parsed) == 1 + 1 + 2 + 50


def _vod_lane(tmp_path, trusted_proxies=()):
    """A FastLane that knows recording Rec1 (a 1000-byte file) and the playlist text the full stack answered
    with; `ask(target, headers)` gives the lane's answer, or None where it leaves the request to aiohttp."""
    from types import SimpleNamespace

    from aiohttp import web

    from mediaserver.edge import fastlane
    from mediaserver.edge.keys import CONFIG, GATE, METRICS

    counted = []
    app = web.Application()
    app[CONFIG] = SimpleNamespace(hls=SimpleNamespace(fast_lane=True),
                                  http=SimpleNamespace(trusted_proxies=trusted_proxies, cors_origin="*",
                                                       write_timeout=5.0))
    app[GATE] = SimpleNamespace(
        admission=SimpleNamespace(wants_hook=lambda kind: False, policy=SimpleNamespace(play_is_open=lambda app: True)),
        connection_opened=lambda address: None, connection_closed=lambda address: None)
    app[METRICS] = SimpleNamespace(response_done=lambda fmt, size: counted.append((fmt, size)))
    lane = fastlane.FastLane(app)
    rec = tmp_path / "rec.mp4"
    rec.write_bytes(b"x" * 1000)
    text = b"#EXTM3U\n#EXT-X-ENDLIST\n"
    lane.remember_vod("Rec1", "live", "cam", str(rec), ("index.m3u8", text, 1000))

    def ask(target: str, headers: bytes = b"") -> bytes | None:
        conn = SimpleNamespace(transport=_Transport(), lane_address="127.0.0.1", lane_answered=lambda: None)
        taken = lane.take(conn, f"GET {target} HTTP/1.1\r\nHost: x\r\n".encode() + headers + b"\r\n")
        assert taken == bool(conn.transport.written)
        return b"".join(conn.transport.written) if taken else None

    return lane, ask, counted, rec, text


async def test_a_finished_recordings_playlist_is_answered_as_the_full_stack_rendered_it_while_the_file_stays(tmp_path):
    """edge/vod.py hands the lane the text it answered with; the lane answers it again for the same file, and
    leaves to the full stack a query (a token perhaps), another file, a file that changed size or was deleted,
    and every other /vod/ID/FILE (never a live stream of an application named "vod")."""
    lane, ask, counted, rec, text = _vod_lane(tmp_path)
    try:
        answer = ask("/vod/Rec1/index.m3u8")
        assert answer is not None and answer.endswith(b"\r\n\r\n" + text)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nContent-Length: %d\r\n" % len(text) in answer
        assert b"Content-Type: application/vnd.apple.mpegurl; charset=utf-8\r\n" in answer
        assert counted == [("other", len(text))]
        assert b"\r\nAccess-Control-Expose-Headers: Content-Length, Content-Range, Accept-Ranges, Date\r\n" in answer
        for target in ("/vod/Rec1/index.m3u8?token=t", "/vod/Rec1/manifest.mpd", "/vod/Rec1/seg.ts",
                       "/vod/Other/index.m3u8", "/vod/cam/index.m3u8"):
            assert ask(target) is None, target
        with rec.open("ab") as f:
            f.write(b"y")  # no longer the file the text describes
        assert ask("/vod/Rec1/index.m3u8") is None
        lane.remember_vod("Rec1", "live", "cam", str(rec), ("index.m3u8", text, 1001))  # the full stack's anew
        assert ask("/vod/Rec1/index.m3u8") is not None
        rec.unlink()
        assert ask("/vod/Rec1/index.m3u8") is None and "Rec1" not in lane._vod_files  # deleted: forgotten
    finally:
        lane.close()


async def test_a_recordings_range_on_the_disk_only_is_read_into_the_cache_in_a_thread_then_sent(tmp_path,
                                                                                               monkeypatch):
    """The lane sends a range on the loop (os.sendfile), which would wait on the disk for a range not in the page
    cache (a recording is written with O_DIRECT): such a range is read into the cache in a thread first, the
    connection held meanwhile, then sent whole and exact."""
    import asyncio
    from types import SimpleNamespace

    from mediaserver.edge import fastlane
    from support.page_cache import calls_off_the_loop, evict

    lane, _, _, rec, _ = _vod_lane(tmp_path)
    data = os.urandom(600_000)
    rec.write_bytes(data)
    evict(rec)
    in_thread = calls_off_the_loop(monkeypatch, fastlane, "read_into_cache")
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    held = []

    async def drained() -> None:
        pass

    conn = SimpleNamespace(transport=_Transport(a), lane_address="127.0.0.1", lane_answered=lambda: None,
                           lane_hold=held.append, lane_release=lambda: held.append("released"), _drain_helper=drained)
    try:
        uncached = Sent.uncached
        assert lane.take(conn, b"GET /vod/Rec1.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=100-500099\r\n\r\n")
        assert not conn.transport.written and len(held) == 1  # held while the thread reads the disk
        await asyncio.wait_for(asyncio.gather(*lane._rests), 10)
        received = bytearray()
        while True:
            try:
                chunk = b.recv(1 << 20)
            except BlockingIOError:
                break
            received += chunk
        answer = bytes(received) + b"".join(conn.transport.written)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 206") and b"Content-Range: bytes 100-500099/600000" in head
        assert body == data[100:500_100] and held[-1] == "released"
        assert in_thread == [True] and Sent.uncached == uncached + 1
    finally:
        a.close()
        b.close()
        lane.close()


async def test_with_trusted_proxies_a_request_naming_its_client_in_forwarding_headers_goes_to_the_full_stack(
        tmp_path):
    """Workers trust loopback for their siblings' proxied requests: a viewer's own request (no forwarding
    header; its peer is its client, as the full stack finds too) still takes the lane, a proxied one does
    not. Where no proxy is trusted, the headers are a client's own words, ignored by both."""
    lane, ask, _, _, _ = _vod_lane(tmp_path, trusted_proxies=("127.0.0.1", "::1"))
    try:
        assert ask("/vod/Rec1/index.m3u8") is not None
        assert ask("/vod/Rec1/index.m3u8", b"X-Forwarded-For: 203.0.113.7\r\n") is None
        assert ask("/vod/Rec1/index.m3u8", b"Forwarded: for=203.0.113.7\r\n") is None
        assert ask("/vod/Rec1.mp4", b"X-Forwarded-For: 203.0.113.7\r\nRange: bytes=0-9\r\n") is None
        assert ask("/vod/Rec1.mp4", b"Range: bytes=0-9\r\n").endswith(b"x" * 10)
    finally:
        lane.close()
    lane, ask, _, _, _ = _vod_lane(tmp_path)
    try:
        assert ask("/vod/Rec1/index.m3u8", b"X-Forwarded-For: 203.0.113.7\r\n") is not None
    finally:
        lane.close()
