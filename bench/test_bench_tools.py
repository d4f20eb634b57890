"""Tests of the benchmark tools' own parts: parsers fed with bytes, the /proc sampler on real processes,
and the viewer clients against a small aiohttp server. Run with `pytest bench/test_bench_tools.py`."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time

import pytest
from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _procstats  # noqa: E402
from _flv_viewers import FlvError, FlvTagScanner, first_keyframe_ms, open_viewer  # noqa: E402
from _hls_viewers import (  # noqa: E402
    HlsPlayer,
    ListingProbe,
    PlayerStats,
    PlaylistError,
    parse_media_playlist,
    resolve,
    ts_first_video_pts,
)
from _http import MAX_HEAD, HttpError, HttpResponseParser, parse_head  # noqa: E402
from _latency import SendLog, listing_delays, match_delays  # noqa: E402
from _media import FlvFormatError, FlvTag, is_keyframe_body, loop_duration_ms, parse_flv  # noqa: E402
from _recfiles import check_recording  # noqa: E402
from _report import pct, summary  # noqa: E402
from _vod_viewers import parse_vod_playlist, range_header  # noqa: E402

# ------------------------------------------------------------------ helpers

AVC_SEQ = bytes([0x17, 0x00, 0, 0, 0]) + b"\x01\x64\x00\x1f\xff"
AVC_KEY = bytes([0x17, 0x01, 0, 0, 0x43]) + b"\x00" * 200
AVC_INTER = bytes([0x27, 0x01, 0, 0, 0x43]) + b"\x00" * 50
AAC_SEQ = bytes([0xAF, 0x00, 0x11, 0x90])
AAC_RAW = bytes([0xAF, 0x01]) + b"\x21" * 30
META = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"
FLV_HEADER = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"


def tag(kind: int, ts: int, body: bytes) -> bytes:
    n = len(body)
    head = bytes([kind, n >> 16 & 255, n >> 8 & 255, n & 255, ts >> 16 & 255, ts >> 8 & 255, ts & 255, ts >> 24 & 255,
                  0, 0, 0])
    return head + body + (n + 11).to_bytes(4, "big")


def sample_flv(seconds: int = 4) -> bytes:
    """A small FLV stream: metadata, configs, then 30 fps video with a keyframe every 2 s, and audio."""
    out = [FLV_HEADER, tag(18, 0, META), tag(9, 0, AVC_SEQ), tag(8, 0, AAC_SEQ)]
    for i in range(seconds * 30):
        ts = i * 1000 // 30
        out.append(tag(9, ts, AVC_KEY if i % 60 == 0 else AVC_INTER))
        out.append(tag(8, ts, AAC_RAW))
    return b"".join(out)


def feed_split(parser, data: bytes, sizes) -> None:
    pos = 0
    for n in sizes:
        if pos >= len(data):
            break
        parser.feed(data, pos, min(len(data), pos + n))
        pos += n
    if pos < len(data):
        parser.feed(data, pos, len(data))


class Collect:
    def __init__(self) -> None:
        self.heads: list[tuple[int, dict]] = []
        self.body = bytearray()
        self.ends = 0

    def parser(self) -> HttpResponseParser:
        return HttpResponseParser(lambda s, h: self.heads.append((s, h)),
                                  lambda b, s, e: self.body.extend(b[s:e]), self._end)

    def _end(self) -> None:
        self.ends += 1


def chunked(body: bytes, size: int) -> bytes:
    out = []
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out.append(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    return b"".join(out) + b"0\r\n\r\n"


# ------------------------------------------------------------------ HTTP parser


def test_content_length_response_body_arrives_whole_at_any_split():
    body = bytes(range(256)) * 40
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: b\r\n\r\n" % len(body) + body
    for size in (1, 2, 3, 7, 100, 10000):
        c = Collect()
        feed_split(c.parser(), raw, [size] * len(raw))
        assert c.heads == [(200, {"content-length": str(len(body)), "x-a": "b"})]
        assert bytes(c.body) == body and c.ends == 1


def test_chunked_body_with_extensions_and_trailers_is_dechunked_at_every_split():
    body = os.urandom(3000)
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           + chunked(body, 700).replace(b"0\r\n\r\n", b"0;ext=1\r\nX-Trailer: 1\r\n\r\n"))
    raw = raw.replace(b"2bc\r\n", b"2bc;name=value\r\n", 1)
    for size in (1, 2, 5, 64, 4096):
        c = Collect()
        feed_split(c.parser(), raw, [size] * len(raw))
        assert bytes(c.body) == body and c.ends == 1


def test_two_keep_alive_responses_in_one_read_are_both_parsed():
    raw = (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
           b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")
    c = Collect()
    c.parser().feed(raw, 0, len(raw))
    assert [s for s, _ in c.heads] == [200, 404] and bytes(c.body) == b"abcx" and c.ends == 2


def test_body_without_length_runs_until_close():
    c = Collect()
    p = c.parser()
    raw = b"HTTP/1.0 200 OK\r\n\r\nstream bytes"
    p.feed(raw, 0, len(raw))
    assert c.ends == 0 and bytes(c.body) == b"stream bytes"
    assert p.feed_eof() is True and c.ends == 1


def test_no_content_and_zero_length_responses_end_at_the_head():
    c = Collect()
    raw = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    c.parser().feed(raw, 0, len(raw))
    assert c.ends == 2


@pytest.mark.parametrize("raw, message", [
    (b"HTTP/1.1 2x0 OK\r\n\r\n", "bad HTTP status line"),
    (b"ICY 200 OK\r\n\r\n", "bad HTTP status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad HTTP header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n", "not followed by CRLF"),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nab", "after the end of a response"),
])
def test_malformed_responses_raise_a_clear_error(raw, message):
    c = Collect()
    with pytest.raises(HttpError, match=message):
        c.parser().feed(raw, 0, len(raw))


def test_endless_head_is_refused_before_memory_grows_unbounded():
    p = Collect().parser()
    junk = b"HTTP/1.1 200 OK\r\n" + b"X" * 1000
    with pytest.raises(HttpError, match="head exceeds"):
        for _ in range(MAX_HEAD // 1000 + 2):
            p.feed(junk, 0, len(junk))


def test_endless_chunk_size_line_is_refused():
    p = Collect().parser()
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    p.feed(head, 0, len(head))
    with pytest.raises(HttpError, match="longer than"):
        for _ in range(10):
            p.feed(b"0" * 1000, 0, 1000)


def test_header_names_are_lower_cased_and_values_trimmed():
    assert parse_head(b"HTTP/1.1 301 Moved\r\nLocation:  /x \r\nContent-Type: a") == (
        301, {"location": "/x", "content-type": "a"})


# ------------------------------------------------------------------ FLV scanner and file reader


def test_scanner_counts_tags_and_keyframes_at_every_split_size():
    data = sample_flv(4)
    for size in (1, 2, 3, 11, 13, 14, 97, 1 << 16):
        s = FlvTagScanner()
        feed_split(s, data, [size] * len(data))
        assert (s.tags, s.video_tags, s.audio_tags, s.keyframes) == (243, 121, 121, 2)
        assert s.newest_ts == 119 * 1000 // 30 and s.bytes == len(data)


def test_scanner_reports_each_tag_when_its_last_byte_arrives():
    data = FLV_HEADER + tag(9, 40, AVC_KEY)
    seen = []
    s = FlvTagScanner(lambda k, ts, kf: seen.append((k, ts, kf)))
    s.feed(data, 0, len(data) - 1)
    assert seen == []
    s.feed(data, len(data) - 1, len(data))
    assert seen == [(9, 40, True)]


def test_scanner_tells_sequence_headers_and_inter_frames_from_keyframes():
    enhanced_key = bytes([0x90 | 1]) + b"hvc1" + b"\0\0\0" + b"\0" * 20  # frame type 1, coded frames
    enhanced_seq = bytes([0x90 | 0]) + b"hvc1" + b"\0" * 20
    data = FLV_HEADER + b"".join(tag(9, i, b) for i, b in enumerate([AVC_SEQ, AVC_INTER, AVC_KEY, enhanced_seq,
                                                                     enhanced_key]))
    s = FlvTagScanner()
    s.feed(data, 0, len(data))
    assert s.keyframes == 2 and s.video_tags == 5


@pytest.mark.parametrize("data, message", [
    (b"FLX\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00", "not an FLV header"),
    (b"FLV\x01\x05\x00\x00\x00\x02\x00\x00\x00\x00", "DataOffset 2 is invalid"),
    (FLV_HEADER + b"\x07" + b"\x00" * 20, "tag type 7"),
])
def test_scanner_rejects_a_stream_that_is_not_flv(data, message):
    with pytest.raises(FlvError, match=message):
        FlvTagScanner().feed(data, 0, len(data))


def test_scanner_does_not_buffer_tag_bodies():
    big = FLV_HEADER + tag(9, 0, bytes([0x17, 1]) + b"\0" * 5_000_000)
    s = FlvTagScanner()
    feed_split(s, big, [65536] * 100)
    assert s.keyframes == 1 and len(s._part) == 0


def test_flv_file_round_trips_through_parse_flv():
    tags = parse_flv(sample_flv(2))
    assert len(tags) == 3 + 120
    assert [t.kind for t in tags[:3]] == [18, 9, 8] and all(t.is_config for t in tags[:3])
    assert sum(t.is_video_keyframe for t in tags) == 1
    assert loop_duration_ms(tags) == 59 * 1000 // 30 + 33  # last video timestamp + one frame


@pytest.mark.parametrize("data", [b"", b"FLV", b"NOT AN FLV FILE AT ALL", sample_flv(1)[:-3], sample_flv(1)[:20]])
def test_truncated_or_foreign_flv_files_are_refused(data):
    with pytest.raises(FlvFormatError):
        parse_flv(data)


def test_keyframe_body_detection_covers_legacy_and_enhanced_video():
    assert is_keyframe_body(AVC_KEY) and not is_keyframe_body(AVC_SEQ) and not is_keyframe_body(AVC_INTER)
    assert not is_keyframe_body(b"")
    assert FlvTag(9, 0, AVC_SEQ).is_config and not FlvTag(9, 0, AVC_KEY).is_config


# ------------------------------------------------------------------ HLS playlist and TS


PLAYLIST = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:41
#EXTINF:2.002,
seg-41.ts
#EXT-X-DISCONTINUITY
#EXTINF:1.5,title
sub/seg-42.ts?x=1
"""


def test_media_playlist_segments_get_their_sequence_numbers():
    pl = parse_media_playlist(PLAYLIST)
    assert pl.target_duration_s == 2 and pl.media_sequence == 41 and not pl.ended
    assert [(s.msn, s.duration_s, s.uri) for s in pl.segments] == [(41, 2.002, "seg-41.ts"),
                                                                   (42, 1.5, "sub/seg-42.ts?x=1")]
    assert parse_media_playlist(PLAYLIST + "#EXT-X-ENDLIST\n").ended


@pytest.mark.parametrize("text, message", [
    ("", "does not start with #EXTM3U"),
    ("#EXTM3U\n#EXTINF:2,\na.ts\n", "no #EXT-X-TARGETDURATION"),
    ("#EXTM3U\n#EXT-X-TARGETDURATION:2\na.ts\n", "has no #EXTINF"),
    ("#EXTM3U\n#EXT-X-TARGETDURATION:two\n", "bad value"),
    ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow.m3u8\n", "multivariant"),
])
def test_bad_playlists_are_refused_with_the_reason(text, message):
    with pytest.raises(PlaylistError, match=message):
        parse_media_playlist(text)


def test_segment_uris_resolve_against_the_playlist_path():
    assert resolve("/live/x/index.m3u8?t=1", "seg-1.ts") == "/live/x/seg-1.ts"
    assert resolve("/live/x/index.m3u8", "/abs/seg.ts") == "/abs/seg.ts"
    assert resolve("/live/x/index.m3u8", "http://h:1/a/b.ts") == "/a/b.ts"
    assert resolve("/vod/ID/index.m3u8", "../ID.mp4?token=t") == "/vod/ID.mp4?token=t"
    assert resolve("/APP/NAME/dvr.m3u8", "../../vod/ID.mp4") == "/vod/ID.mp4"


def ts_packet_with_pes(stream_id: int, pts: int, adaptation: int = 0) -> bytes:
    pes = bytes([0, 0, 1, stream_id, 0, 0, 0x80, 0x80, 5,
                 0x21 | ((pts >> 29) & 0x0E), (pts >> 22) & 0xFF, 0x01 | ((pts >> 14) & 0xFE),
                 (pts >> 7) & 0xFF, 0x01 | ((pts << 1) & 0xFE)])
    if adaptation:
        head = bytes([0x47, 0x41, 0x00, 0x30, adaptation - 1]) + b"\xff" * (adaptation - 1)
    else:
        head = bytes([0x47, 0x41, 0x00, 0x10])
    return (head + pes).ljust(188, b"\xff")


def test_first_video_pts_is_read_from_the_pes_header():
    pts = (1 << 32) + 123_456
    audio = ts_packet_with_pes(0xC0, 99)
    assert ts_first_video_pts(audio + ts_packet_with_pes(0xE0, pts, adaptation=8)) == pts
    assert ts_first_video_pts(audio) is None
    assert ts_first_video_pts(b"") is None
    with pytest.raises(ValueError, match="sync byte"):
        ts_first_video_pts(b"\x00" * 188)


# ------------------------------------------------------------------ latency matching


def test_live_delay_matches_sent_and_received_tags_after_the_viewer_joined():
    log = SendLog(sent_at={(9, 0): 10.0, (9, 33): 10.033, (8, 33): 10.033, (9, 66): 10.066})
    arrivals = {(9, 0): 10.5, (9, 33): 10.133, (8, 33): 10.083}
    d = match_delays(log, arrivals, since=10.01)
    assert [round(x) for x in d["video"]] == [100] and [round(x) for x in d["audio"]] == [50]
    assert d["unmatched"] == [66]


def test_segment_listing_delay_is_measured_from_the_segments_last_frame():
    # Keyframes every 2 s (pts = dts + 67 ms), frames every 100 ms sent at 100 + dts/1000 s.
    log = SendLog()
    for dts in range(0, 8000, 100):
        sent = 100 + dts / 1000
        log.video.append((dts, sent))
        if dts % 2000 == 0:
            log.keyframes.append((dts, dts + 67, sent))
    offset = 126_000  # the muxer's constant PTS offset (1.4 s)
    first_pts = {5: (67 * 90 + offset), 6: (2067 * 90 + offset)}
    first_seen = {5: 100 + 2.0 + 0.25, 6: 100 + 4.0 + 0.05}  # listed 250 ms / 50 ms after the closing keyframe
    res = listing_delays(log, first_seen, first_pts, {5: 2.0, 6: 2.0})
    assert res["delays_ms"] == [350.0, 150.0]  # the last frame went out 100 ms before the closing keyframe
    assert res["ts_offset_ms"] == 1400.0


def test_percentiles_interpolate_and_summaries_handle_no_data():
    assert pct([1, 2, 3, 4], 50) == 2.5 and pct([5], 95) == 5 and pct([], 50) is None
    assert summary([])["count"] == 0 and summary([1.0, 3.0])["max"] == 3.0


# ------------------------------------------------------------------ /proc sampler


def test_process_tree_cpu_includes_children_and_grows_while_they_work():
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\ntime.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess,sys,time\np=subprocess.Popen([sys.executable,'-c',{burn!r}])\n"
                               "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while True:
            s = _procstats.sample_tree(parent.pid)
            if len(s.pids) == 2 and s.cpu_s >= 0.3:
                break
            assert time.monotonic() < deadline, f"tree {s} never showed the child's CPU"
            time.sleep(0.05)
        assert s.pids[0] == parent.pid and s.rss_bytes > 0 and s.hwm_bytes >= s.rss_bytes
    finally:
        for pid in _procstats.tree_pids(parent.pid)[::-1]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        parent.wait()


def test_user_and_system_time_add_up_to_the_cpu_of_a_process():
    from bench.record import user_system_s
    t = time.process_time()
    while time.process_time() - t < 0.05:
        pass  # some user time to read
    stat = _procstats.read_stat(os.getpid())
    assert stat.user_s > 0 and abs(stat.user_s + stat.system_s - stat.cpu_s) < 1e-9
    user, system = user_system_s(os.getpid())
    assert user >= stat.user_s and system >= stat.system_s


def test_the_kernels_threads_are_kthreadd_and_its_children(monkeypatch):
    from bench.record import kernel_threads_cpu_s

    def stat(pid, ppid, cpu_s):
        return _procstats.ProcStat(pid=pid, ppid=ppid, comm="x", cpu_s=cpu_s, user_s=0.0, system_s=cpu_s,
                                   children_cpu_s=0.0, rss_bytes=0)
    stats = {2: stat(2, 0, 0.5), 40: stat(40, 2, 1.25), 41: stat(41, 2, 2.0), 900: stat(900, 1, 100.0)}
    monkeypatch.setattr(_procstats, "all_stats", lambda: stats)
    assert kernel_threads_cpu_s() == 3.75


def test_a_vanished_process_reads_as_none_not_an_error():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert _procstats.read_stat(p.pid) is None
    assert _procstats.sample_tree(p.pid).pids == ()
    assert _procstats.read_status_kb(p.pid) == {}


# ------------------------------------------------------------------ clients against a small server


@pytest.fixture
async def flv_server():
    data = sample_flv(6)

    async def flv(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "video/x-flv"})
        await resp.prepare(request)
        rnd = random.Random(1)
        pos = 0
        while pos < len(data):  # chunked, in uneven writes
            n = rnd.randint(1, 5000)
            await resp.write(data[pos:pos + n])
            pos += n
        await resp.write_eof()
        return resp

    state = {"listed": 2}

    async def playlist(request: web.Request) -> web.Response:
        n = state["listed"]
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:1", f"#EXT-X-MEDIA-SEQUENCE:{max(0, n - 3)}"]
        for m in range(max(0, n - 3), n):
            lines += ["#EXTINF:0.2,", f"seg-{m}.ts"]
        return web.Response(text="\n".join(lines) + "\n")

    async def segment(request: web.Request) -> web.Response:
        m = int(request.match_info["m"])
        return web.Response(body=ts_packet_with_pes(0xE0, 90 * 200 * m) * 100)

    app = web.Application()
    app.router.add_get("/live/a.flv", flv)
    app.router.add_get("/live/a/index.m3u8", playlist)
    app.router.add_get(r"/live/a/seg-{m:\d+}.ts", segment)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield port, data, state
    await runner.cleanup()


async def test_flv_viewer_counts_a_chunked_stream_and_sees_its_end(flv_server):
    port, data, _ = flv_server
    v = await open_viewer("127.0.0.1", port, "/live/a.flv")
    for _ in range(200):
        if v.closed_at:
            break
        await asyncio.sleep(0.01)
    assert v.status == 200 and v.error is None and v.ended
    assert (v.scanner.tags, v.scanner.keyframes) == (3 + 6 * 60, 3)
    assert v.scanner.bytes == len(data)


async def test_first_keyframe_probe_times_the_first_picture_and_gives_none_on_404(flv_server):
    port, _, _ = flv_server
    ms = await first_keyframe_ms("127.0.0.1", port, "/live/a.flv", 5)
    assert ms is not None and 0 < ms < 5000
    assert await first_keyframe_ms("127.0.0.1", port, "/live/missing.flv", 5) is None


async def test_hls_player_fetches_each_new_segment_once(flv_server):
    port, _, state = flv_server
    stop = asyncio.Event()
    stats = PlayerStats(stream=0)
    first_seen: dict[int, float] = {}
    lat = {"playlist": [], "segment": []}
    p = HlsPlayer("127.0.0.1", port, "/live/a/index.m3u8", stats, first_seen, lat, (0, time.monotonic() + 100))
    task = asyncio.ensure_future(p.run(stop))
    for n in range(3, 8):
        await asyncio.sleep(0.25)
        state["listed"] = n
    await asyncio.sleep(0.7)
    stop.set()
    await task
    assert sorted(stats.fetched) == list(range(1, 7)) and stats.segments == 6 and stats.errors == 0
    assert stats.started_msn == 1 and stats.bytes == 6 * 188 * 100
    assert set(first_seen) == set(range(0, 7))


async def test_listing_probe_records_first_appearance_and_first_pts(flv_server):
    port, _, state = flv_server
    stop = asyncio.Event()
    probe = ListingProbe("127.0.0.1", port, "/live/a/index.m3u8", 0.02)
    task = asyncio.ensure_future(probe.run(stop))
    await asyncio.sleep(0.2)
    state["listed"] = 3
    await asyncio.sleep(0.2)
    stop.set()
    await task
    assert sorted(probe.first_seen) == [0, 1, 2] and probe.first_listed_at is not None
    assert probe.first_seen[2] > probe.first_seen[1]
    assert probe.first_pts == {0: 0, 1: 18000, 2: 36000}


# ------------------------------------------------------------------ the whole tool, end to end

LOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "load.py")


def run_load(tmp_path, *argv: str) -> dict:
    # A 10 s benchmark file rather than 60 s: the same recipe, encoded (once per checkout) in a sixth of the time.
    proc = subprocess.run([sys.executable, LOAD, *argv, "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=150, env={**os.environ, "BENCH_MEDIA_SECONDS": "10"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    import json

    return json.loads(path.read_text())


@pytest.mark.timeout(180)
def test_flv_command_against_the_fake_server_sees_every_viewer_keep_up(tmp_path):
    out = run_load(tmp_path, "flv", "--server", "fake", "--viewers", "20", "--duration", "3", "--warmup", "2",
                   "--late-joiners", "2")
    r = out["results"]
    assert r["viewers"]["kept_up"] == 20 and r["late_joiner"]["failed"] == 0
    assert r["cpu"]["server_cpu_s"] >= 0 and r["viewers"]["throughput_gbit_s"] > 0.03


def _server_importable() -> bool:
    try:
        import mediaserver.cli  # noqa: F401
        import mediaserver.rtmp.client  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.timeout(180)
@pytest.mark.skipif(not _server_importable(), reason="mediaserver's server or RTMP client is not importable")
def test_latency_command_measures_live_delay_with_the_python_publisher(tmp_path):
    out = run_load(tmp_path, "latency", "--duration", "5", "--late-joiners", "2")
    r = out["results"]
    assert r["publisher"].startswith("python")
    assert r["live_delay_ms"]["video"]["count"] > 100 and r["live_delay_ms"]["video"]["p50"] < 1000
    assert r["late_joiner"]["failed"] == 0
    assert 1.5 < r["hls"]["first_segment_listed_after_first_media_s"] < 10
    o = r["outputs"]
    for kind in ("ws-flv", "ws-flv-deflate", "rtmp"):
        assert o[kind]["live_delay_ms"]["video"]["count"] > 100 and o[kind]["live_delay_ms"]["video"]["p50"] < 1000
    # The server declines permessage-deflate even when a client offers it, as browsers do: media does not compress.
    assert o["ws-flv-deflate"]["deflate_negotiated"] is False and o["ws-flv"]["deflate_negotiated"] is False
    assert o["llhls"]["video"]["parts"] > 5 and o["llhls"]["audio"]["parts"] > 5
    assert o["llhls"]["video"]["part_last_sample_to_received_ms"]["p50"] < 1000
    assert o["dash"]["video"]["segments"] >= 1 and o["dash"]["suggested_presentation_delay_s"] > 0
    assert set(r["targets"]) == {"flv", "ws-flv", "ws-flv-deflate", "rtmp", "hls", "llhls", "dash"}


@pytest.mark.timeout(180)
@pytest.mark.skipif(not _server_importable(), reason="mediaserver's server or RTMP client is not importable")
def test_publish_command_with_viewers_of_every_output_sees_them_all_keep_up(tmp_path):
    out = run_load(tmp_path, "publish", "--publishers", "1", "--viewers-per-output", "2", "--duration", "8",
                   "--warmup", "4")
    r = out["results"]
    assert set(r["viewers_by_output"]) == {"flv", "ws-flv", "rtmp", "hls", "llhls", "dash"}
    for kind, v in r["viewers_by_output"].items():
        assert v["viewers"] == 2 and v["kept_up"] == 2, (kind, v)
    assert r["cpu"]["server_cpu_s_per_stream_minute"] > 0


# ------------------------------------------------------------------ fMP4 reader

import struct  # noqa: E402
import zlib  # noqa: E402

from _fmp4 import MAX_SAMPLES, Mp4Error, TrackRun, read_fragments, read_init  # noqa: E402
from _latency import SentIndex, dash_delays, hls_delays, part_delays, segment_edges, starting_gop_ms  # noqa: E402
from _manifests import (  # noqa: E402
    ManifestError,
    expand_template,
    parse_duration,
    parse_ll_playlist,
    parse_mpd,
    parse_multivariant,
)
from _outputs import (  # noqa: E402
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    DashPlayer,
    DashRecorder,
    LlhlsPlayer,
    LlhlsRecorder,
    PullStats,
    TagCounter,
    WsDeframer,
    WsError,
    open_ws_viewer,
    ws_accept,
    ws_client_frame,
)


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big"), *payload)


def init_bytes(tracks: list[tuple[int, bytes, int]], trex_duration: int = 0) -> bytes:
    """ftyp + moov with (track id, handler, timescale) traks and a trex each."""
    traks = []
    for tid, handler, scale in tracks:
        tkhd = full(b"tkhd", 0, 3, struct.pack(">IIII", 0, 0, tid, 0), bytes(64))
        mdhd = full(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, scale, 0, 0, 0))
        hdlr = full(b"hdlr", 0, 0, bytes(4), handler, bytes(12), b"x\x00")
        traks.append(box(b"trak", tkhd, box(b"mdia", mdhd, hdlr)))
    trexs = [full(b"trex", 0, 0, struct.pack(">IIIII", tid, 1, trex_duration, 0, 0)) for tid, _, _ in tracks]
    return box(b"ftyp", b"iso6", bytes(4)) + box(b"moov", full(b"mvhd", 0, 0, bytes(96)), *traks, box(b"mvex", *trexs))


def moof_mdat(track_id: int, base: int, durations: list[int], *, tfdt_version: int = 1, default: int | None = None,
              sizes: bool = True) -> bytes:
    """One moof + mdat: trun with per-sample durations (and sizes), or none when `default` is given."""
    tfhd_flags = 0x020000 | (0x08 if default is not None else 0)
    tfhd = full(b"tfhd", 0, tfhd_flags, struct.pack(">I", track_id),
                struct.pack(">I", default) if default is not None else b"")
    tfdt = full(b"tfdt", tfdt_version, 0, struct.pack(">Q" if tfdt_version else ">I", base))
    flags = 0x01 | (0x100 if default is None else 0) | (0x200 if sizes else 0)
    entries = b"".join((struct.pack(">I", d) if default is None else b"") + (struct.pack(">I", 10) if sizes else b"")
                       for d in durations)
    trun = full(b"trun", 0, flags, struct.pack(">Ii", len(durations), 0), entries)
    return box(b"moof", full(b"mfhd", 0, 0, struct.pack(">I", 1)), box(b"traf", tfhd, tfdt, trun)) + \
        box(b"mdat", bytes(10 * len(durations)))


def test_init_segment_gives_each_tracks_handler_and_timescale():
    tracks = read_init(init_bytes([(1, b"vide", 90000), (2, b"soun", 48000)], trex_duration=1024))
    assert {t: (i.handler, i.timescale, i.default_duration) for t, i in tracks.items()} == {
        1: ("vide", 90000, 1024), 2: ("soun", 48000, 1024)}


@pytest.mark.parametrize("base, durations, kw", [
    (0, [3000, 3000, 3003], {}),
    ((1 << 40) + 7, [1024] * 15, {}),
    (123, [1024] * 3, {"tfdt_version": 0}),
    (90000, [3000] * 4, {"default": 3000}),
    (5, [7], {"sizes": False}),
])
def test_fragments_give_base_decode_time_and_sample_durations(base, durations, kw):
    (run,) = read_fragments(moof_mdat(1, base, durations, **kw))
    assert run == TrackRun(1, base, tuple(durations))
    assert run.last_decode_time == base + sum(durations[:-1]) and run.end == base + sum(durations)


def test_a_segment_of_several_parts_yields_one_run_per_moof():
    data = moof_mdat(1, 0, [3000] * 10) + moof_mdat(1, 30000, [3000] * 9)
    assert [(r.base_decode_time, r.samples) for r in read_fragments(data)] == [(0, 10), (30000, 9)]


def test_fragments_without_durations_take_the_trex_default():
    tracks = read_init(init_bytes([(2, b"soun", 48000)], trex_duration=1024))
    frag = full(b"trun", 0, 0x200, struct.pack(">I", 2), struct.pack(">II", 5, 5))
    data = box(b"moof", box(b"traf", full(b"tfhd", 0, 0, struct.pack(">I", 2)),
                              full(b"tfdt", 1, 0, struct.pack(">Q", 96)), frag))
    assert read_fragments(data, tracks)[0].durations == (1024, 1024)
    with pytest.raises(Mp4Error, match="no default"):
        read_fragments(data)


def test_fragments_from_the_projects_own_writer_read_back():
    from mediaserver.remux.fmp4 import VIDEO_TRUN, fragment

    data = fragment(sequence_number=3, track_id=1, base_media_decode_time=360000, trun_flags=VIDEO_TRUN,
                    entries=[3000, 4, 0x02000000, 6000, 3000, 4, 0x01010000, -3000], payload=[b"abcd", b"efgh"],
                    payload_size=8)
    assert read_fragments(data) == [TrackRun(1, 360000, (3000, 3000))]


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00\x00\x10moof\x00\x00", "truncated"),
    (b"\x00\x00\x00\x04moof", "smaller than its header"),
    (b"\x00\x00\x00", "stray bytes"),
    (b"\x00\x00\x00\x01moof\x00\x00", "64-bit size"),
    (box(b"moof", box(b"traf", full(b"tfhd", 0, 0, struct.pack(">I", 1)))), "without tfdt"),
    (box(b"moof", box(b"traf", full(b"tfdt", 1, 0, bytes(8)))), "without tfhd"),
    (box(b"moof", box(b"traf", full(b"tfhd", 0, 0, struct.pack(">I", 1)), full(b"tfdt", 1, 0, bytes(8)),
                      full(b"trun", 0, 0x100, struct.pack(">I", 1000), bytes(8)))), "room for 2"),
    (box(b"moof", box(b"traf", full(b"tfhd", 0, 0x08, struct.pack(">II", 1, 5)), full(b"tfdt", 1, 0, bytes(8)),
                      full(b"trun", 0, 0, struct.pack(">I", 2**32 - 1)))), f"at most {MAX_SAMPLES}"),
])
def test_malformed_fragments_raise_a_clear_error(data, message):
    with pytest.raises(Mp4Error, match=message):
        read_fragments(data)


def test_every_truncation_of_a_fragment_is_refused_or_read_never_crashes():
    data = moof_mdat(1, 90000, [3000] * 9) + moof_mdat(2, 48000, [1024] * 15)
    for n in range(len(data)):
        try:
            read_fragments(data[:n])
        except Mp4Error:
            pass
    with pytest.raises(Mp4Error, match="no moov"):
        read_init(data)


# ------------------------------------------------------------------ manifests

LL_PLAYLIST = """#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002,HOLD-BACK=6
#EXT-X-PART-INF:PART-TARGET=0.334
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-MAP:URI="i-video-init-1.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-11-22T02:23:35.004Z
#EXTINF:2.000,
i-video-7.m4s
#EXT-X-PART:DURATION=0.334,URI="i-video-8.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.300,URI="i-video-8.1.m4s"
#EXTINF:0.634,
i-video-8.m4s
#EXT-X-MAP:URI="i-video-init-2.mp4"
#EXT-X-PART:DURATION=0.334,URI="i-video-9.0.m4s",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="i-video-9.1.m4s"
#EXT-X-RENDITION-REPORT:URI="cmaf-audio.m3u8",LAST-MSN=9,LAST-PART=0
"""


def test_ll_playlist_gives_segments_parts_open_parts_and_server_control():
    pl = parse_ll_playlist(LL_PLAYLIST)
    assert [s.msn for s in pl.segments] == [7, 8] and pl.segments[0].parts == ()
    assert [(p.msn, p.index, p.independent) for p in pl.parts()] == [(8, 0, True), (8, 1, False), (9, 0, True)]
    assert pl.open_parts[0].map_uri == "i-video-init-2.mp4" and pl.segments[1].map_uri == "i-video-init-1.mp4"
    assert (pl.next_msn, pl.last_part.key, pl.preload_hint) == (9, (9, 0), "i-video-9.1.m4s")
    assert (pl.can_block_reload, pl.part_hold_back_s, pl.hold_back_s, pl.part_target_s) == (True, 1.002, 6.0, 0.334)


@pytest.mark.parametrize("text, message", [
    ("#EXT-X-TARGETDURATION:2\n", "EXTM3U"),
    ("#EXTM3U\n#EXTINF:2,\na.m4s\n", "TARGETDURATION"),
    ("#EXTM3U\n#EXT-X-TARGETDURATION:2\na.m4s\n", "no #EXTINF"),
    ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n", "delta updates"),
    ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:URI=\"a\"\n", "bad value"),
    ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:DURATION=0.3,URI=\"a\n", "attribute list"),
    ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n", "multivariant"),
])
def test_bad_ll_playlists_are_refused_with_the_reason(text, message):
    with pytest.raises(ManifestError, match=message):
        parse_ll_playlist(text)


def test_multivariant_playlist_gives_variants_and_audio_renditions():
    mv = parse_multivariant('#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="audio",URI="cmaf-audio.m3u8"\n'
                            '#EXT-X-STREAM-INF:BANDWIDTH=2829251,CODECS="avc1.64001f,mp4a.40.2",AUDIO="a"\n'
                            'cmaf-video.m3u8\n')
    assert (mv.variants, mv.audio, mv.muxed) == (("cmaf-video.m3u8",), ("cmaf-audio.m3u8",), False)
    mv = parse_multivariant('#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS="avc1.64001f,mp4a.40.2"\ncmaf-muxed.m3u8\n')
    assert (mv.variants, mv.audio, mv.muxed) == (("cmaf-muxed.m3u8",), (), True)
    mv = parse_multivariant('#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS="avc1.64001f"\nvideo.m3u8\n')
    assert mv.muxed is False
    with pytest.raises(ManifestError, match="no variant"):
        parse_multivariant("#EXTM3U\n")


MPD = """<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" minBufferTime="PT2S"
  availabilityStartTime="2026-11-22T02:23:35.004Z" publishTime="2026-11-22T02:23:43.841Z" minimumUpdatePeriod="PT2S"
  timeShiftBufferDepth="PT8S" suggestedPresentationDelay="PT6S">
  <Period id="p0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4">
      <SegmentTemplate timescale="90000" presentationTimeOffset="0" startNumber="4"
        initialization="x-video-init-1.mp4" media="x-video-$Number$.m4s">
        <SegmentTimeline><S t="0" d="180000" r="2"/><S d="90000"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="video" bandwidth="2695116" codecs="avc1.64001f"/>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4">
      <SegmentTemplate timescale="48000" startNumber="4" initialization="a-$RepresentationID$.mp4"
        media="a-$RepresentationID$-$Time$-$Number%05d$.m4s">
        <SegmentTimeline><S t="2208" d="94208"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="audio" bandwidth="134135"/>
    </AdaptationSet>
  </Period>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="/time"/>
</MPD>
"""


def test_mpd_gives_each_tracks_segments_and_their_availability():
    mpd = parse_mpd(MPD)
    assert mpd.dynamic and (mpd.suggested_presentation_delay_s, mpd.minimum_update_period_s) == (6.0, 2.0)
    assert mpd.utc_timing == "/time" and abs(mpd.availability_start - 1795314215.004) < 1e-6
    (period,) = mpd.periods
    video, audio = period.tracks
    assert [(s.number, s.t, s.d) for s in video.segments] == [(4, 0, 180000), (5, 180000, 180000),
                                                                (6, 360000, 180000), (7, 540000, 90000)]
    assert video.media_uri(video.segments[-1]) == "x-video-7.m4s" and video.init_uri == "x-video-init-1.mp4"
    assert audio.media_uri(audio.segments[0]) == "a-audio-2208-00004.m4s" and audio.init_uri == "a-audio.mp4"
    assert abs(mpd.segment_end_wall(period, video, video.segments[0]) - (mpd.availability_start + 2.0)) < 1e-9


@pytest.mark.parametrize("text, message", [
    ('<!DOCTYPE x [<!ENTITY a "b">]><MPD/>', "DOCTYPE"),
    ("<MPD", "well-formed"),
    ("<Period/>", "not <MPD>"),
    ('<MPD><Period><AdaptationSet><SegmentTemplate media="m"><SegmentTimeline><S d="1" r="-1"/></SegmentTimeline>'
     '</SegmentTemplate></AdaptationSet></Period></MPD>', "r=\"-1\""),
    ('<MPD><Period><AdaptationSet><SegmentTemplate media="m" duration="2"/></AdaptationSet></Period></MPD>',
     "without SegmentTimeline"),
    ('<MPD><Period><AdaptationSet><SegmentTemplate media="m"><SegmentTimeline><S d="1" r="100000000"/>'
     '</SegmentTimeline></SegmentTemplate></AdaptationSet></Period></MPD>', "more than"),
    ('<MPD minimumUpdatePeriod="P1Y"/>', "bad duration"),
])
def test_bad_mpds_are_refused_with_the_reason(text, message):
    with pytest.raises(ManifestError, match=message):
        parse_mpd(text)


@pytest.mark.parametrize("text, seconds", [("PT2S", 2.0), ("PT0.333S", 0.333), ("PT1M30S", 90.0), ("P1DT1H", 90000.0)])
def test_durations_parse_to_seconds(text, seconds):
    assert parse_duration(text) == seconds


def test_templates_fill_identifiers_widths_and_escaped_dollars():
    assert expand_template("s-$Number%03d$-$$-$Time$.m4s", number=7, time=90) == "s-007-$-90.m4s"
    with pytest.raises(ManifestError, match=r"\$Time\$"):
        expand_template("$Time$.m4s", number=1)


# ------------------------------------------------------------------ WebSocket framing


def server_frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        head = bytes([b0, n])
    elif n < 65536:
        head = bytes([b0, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, 127]) + n.to_bytes(8, "big")
    return head + payload


def test_accept_key_is_the_one_from_rfc_6455():
    assert ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_client_frames_are_masked_and_carry_the_payload():
    frame = ws_client_frame(OP_CLOSE, b"\x03\xe8", mask=b"\x01\x02\x03\x04")
    assert frame[:2] == bytes([0x88, 0x82]) and frame[2:6] == b"\x01\x02\x03\x04"
    assert bytes(b ^ frame[2 + (i & 3)] for i, b in enumerate(frame[6:])) == b"\x03\xe8"


@pytest.mark.parametrize("split", [1, 2, 3, 7, 100, 70000])
def test_deframer_joins_messages_fragments_and_control_frames_at_every_split(split):
    big = bytes(range(256)) * 300  # 76,800 bytes: a 64-bit length
    stream = (server_frame(OP_BINARY, b"hello ") + server_frame(OP_BINARY, b"wor", fin=False)
              + server_frame(OP_PING, b"p") + server_frame(OP_CONT, b"ld") + server_frame(OP_BINARY, big)
              + server_frame(OP_BINARY, bytes(300)) + server_frame(OP_CLOSE, b"\x03\xe8"))
    data, controls = bytearray(), []
    d = WsDeframer(lambda b, s, e: data.extend(b[s:e]), lambda op, p: controls.append((op, p)))
    feed_split(d, stream, [split] * (len(stream) // split + 1))
    assert bytes(data) == b"hello world" + big + bytes(300)
    assert controls == [(OP_PING, b"p"), (OP_CLOSE, b"\x03\xe8")] and d.messages == 4


def test_deframer_inflates_compressed_messages_with_a_shared_context():
    msgs = [b"FLV tag bytes " * 200, b"FLV tag bytes " * 300]
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = b""
    for m in msgs:
        body = comp.compress(m) + comp.flush(zlib.Z_SYNC_FLUSH)
        assert body.endswith(b"\x00\x00\xff\xff")
        stream += server_frame(OP_BINARY, body[:-4], rsv1=True)
    out = bytearray()
    d = WsDeframer(lambda b, s, e: out.extend(b[s:e]), lambda op, p: None, deflate=True)
    feed_split(d, stream, [13] * len(stream))
    assert bytes(out) == b"".join(msgs)


@pytest.mark.parametrize("frame, message", [
    (bytes([0x82, 0x81]) + b"abcdx", "masked"),
    (server_frame(OP_BINARY, b"x", rsv1=True), "not negotiated"),
    (server_frame(OP_CONT, b"x"), "outside a message"),
    (server_frame(OP_PING, bytes(126)), "longer than 125"),
    (server_frame(OP_PING, b"x", fin=False), "fragmented"),
    (server_frame(0x3, b"x"), "unknown data opcode"),
    (server_frame(0xB, b"x"), "unknown control opcode"),
    (bytes([0xA2, 0x00]), "reserved bits"),
    (server_frame(OP_BINARY, b"a", fin=False) + server_frame(OP_BINARY, b"b"), "before the last one ended"),
])
def test_deframer_rejects_frames_that_break_rfc_6455(frame, message):
    d = WsDeframer(lambda b, s, e: None, lambda op, p: None)
    with pytest.raises(WsError, match=message):
        d.feed(frame, 0, len(frame))


def test_tag_counter_counts_like_the_flv_scanner():
    seen = []
    c = TagCounter(lambda k, ts, kf: seen.append((k, ts, kf)))
    for kind, ts, body in ((9, 0, AVC_SEQ), (9, 0, AVC_KEY), (8, 0, AAC_RAW), (9, 33, AVC_INTER)):
        c.count(kind, ts, body)
    assert (c.tags, c.video_tags, c.audio_tags, c.keyframes, c.newest_ts) == (4, 3, 1, 1, 33)
    assert seen[1] == (9, 0, True) and seen[0][2] is False


# ------------------------------------------------------------------ latency analysis for the fMP4 outputs


def sent_log(seconds: float = 4.0, t0: float = 100.0) -> SendLog:
    """Video every 33 ms (keyframe every 2 s, pts = dts) and audio every 21 ms, each sent at t0 + ts."""
    log = SendLog()
    for ts in range(0, int(seconds * 1000), 33):
        log.sent_at[(9, ts)] = t0 + ts / 1000
        log.video.append((ts, t0 + ts / 1000))
        if ts % 1980 == 0:
            log.keyframes.append((ts, ts, t0 + ts / 1000))
    for ts in range(0, int(seconds * 1000), 21):
        log.sent_at[(8, ts)] = t0 + ts / 1000
    return log


def test_sent_index_finds_the_nearest_tag_within_the_tolerance():
    idx = SentIndex(sent_log())
    assert idx.sent(9, 66, 2) == 100.066 and idx.sent(9, 67.5, 2) == 100.066 and idx.sent(9, 50, 2) is None
    assert idx.sent(8, 1010.6, 12) == 101.008  # 1008 is the nearest audio tag
    assert idx.sent_at_time(9, 70, 5) == pytest.approx(100.070)


def test_part_delays_measure_last_sample_to_listed_and_received_and_the_hold_back_player():
    idx = SentIndex(sent_log())
    recs = [
        {"track": "video", "last_ms": 264, "end_ms": 297, "listed": 100.297 + 0.05, "arrived": 100.297 + 0.06,
         "backlog": False},
        {"track": "video", "last_ms": 0, "end_ms": 33, "listed": 103.0, "arrived": 103.0, "backlog": True},
        {"track": "audio", "last_ms": 1010.67, "end_ms": 1032, "listed": 101.1, "arrived": 101.12, "backlog": False},
    ]
    d = part_delays(idx, recs, 1.0)
    assert d["video"]["part_last_sample_to_listed_ms"]["p50"] == 83.0
    assert d["video"]["part_last_sample_to_received_ms"]["p50"] == 93.0
    assert d["video"]["player_delay_at_part_hold_back_ms"]["p50"] == 1050.0  # listed 50 ms after the end was sent
    assert d["audio"]["part_last_sample_to_received_ms"]["p50"] == 112.0 and d["video"]["parts"] == 1


def test_dash_delays_compare_listing_with_the_mpds_availability_and_add_the_presentation_delay():
    idx = SentIndex(sent_log())
    recs = [{"track": "video", "last_ms": 1947, "end_ms": 1980, "listed": 102.03, "fetched": 102.04,
             "advertised": 101.99, "backlog": False}]
    d = dash_delays(idx, recs, 6.0)["video"]
    assert d["segment_last_sample_to_listed_ms"]["p50"] == 83.0
    assert d["listed_minus_advertised_availability_ms"]["p50"] == 40.0
    assert d["mpd_clock_lag_behind_publisher_ms"]["p50"] == 10.0
    assert d["player_delay_at_suggested_presentation_delay_ms"]["p50"] == 6010.0


def test_hls_delays_place_segments_and_add_the_hlsjs_hold_back():
    log = sent_log(6.0)
    first_pts = {3: 126_000, 4: 126_000 + 1980 * 90}
    edges = segment_edges(log, first_pts, {3: 1.98, 4: 1.98})
    assert edges[3] == (pytest.approx(101.947), pytest.approx(101.98))
    d = hls_delays(log, first_pts, {3: 1.98, 4: 1.98}, {"listed": {3: 102.03}}, {3: 102.5}, 6.0)
    assert d["segment_last_frame_to_listed_ms"]["p50"] == 83.0
    assert d["player_delay_at_hlsjs_start_ms"]["p50"] == 6520.0


def test_starting_gop_is_the_span_of_media_sent_before_the_viewer_joined():
    log = sent_log()
    arrivals = {k: 200.0 for k in log.sent_at if log.sent_at[k] >= 101.98}
    arrivals[(9, 0)] = 199.0  # the sequence header: same key as the keyframe at 0, not part of the GOP
    assert starting_gop_ms(log, arrivals, 102.5, 1980) == 2499 - 1980  # newest cached audio tag - first keyframe
    assert starting_gop_ms(log, arrivals, 102.5, None) is None


# ------------------------------------------------------------------ the new viewers against small servers


@pytest.fixture
async def ws_server():
    data = sample_flv(4)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=request.query.get("compress") == "1")
        await ws.prepare(request)
        rnd = random.Random(2)
        pos = 0
        while pos < len(data):
            n = rnd.randint(1, 20000)
            await ws.send_bytes(data[pos:pos + n])
            pos += n
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/live/a.flv", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], data
    await runner.cleanup()


@pytest.mark.parametrize("deflate, compress", [(False, "0"), (True, "1"), (True, "0")])
async def test_websocket_flv_viewer_counts_every_tag_with_or_without_deflate(ws_server, deflate, compress):
    port, data = ws_server
    v = await open_ws_viewer("127.0.0.1", port, f"/live/a.flv?compress={compress}", deflate=deflate)
    for _ in range(300):
        if v.closed_at:
            break
        await asyncio.sleep(0.01)
    assert v.status == 200 and v.error is None and v.ended
    assert (v.scanner.tags, v.scanner.keyframes, v.scanner.bytes) == (3 + 4 * 60, 2, len(data))
    assert v.deflate == (compress == "1")
    if v.deflate:
        assert v.wire_bytes < len(data)  # the padding in the sample compresses


class FakeLive:
    """A tiny live CMAF origin: a part every 40 ms (5 per 0.2 s segment) for video and audio, with
    blocking playlist reloads, and an MPD listing the same segments."""

    PARTS = 5
    PART_S = 0.04

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.directives: list[tuple[int, int]] = []
        self.fetches: list[str] = []
        self.changed = asyncio.Event()

    def count(self) -> int:
        return int((time.monotonic() - self.t0) / self.PART_S)

    def playlist(self, track: str) -> str:
        n = self.count()
        done = n // self.PARTS
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:1",
                 "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.12", "#EXT-X-PART-INF:PART-TARGET=0.04",
                 f"#EXT-X-MEDIA-SEQUENCE:{max(0, done - 4)}", f'#EXT-X-MAP:URI="{track}-init.mp4"']
        for msn in range(max(0, done - 4), done):
            for i in range(self.PARTS):
                lines.append(f'#EXT-X-PART:DURATION=0.04,URI="{track}-{msn}.{i}.m4s"'
                             + (",INDEPENDENT=YES" if i == 0 else ""))
            lines += ["#EXTINF:0.2,", f"{track}-{msn}.m4s"]
        for i in range(n % self.PARTS):
            lines.append(f'#EXT-X-PART:DURATION=0.04,URI="{track}-{done}.{i}.m4s"'
                         + (",INDEPENDENT=YES" if i == 0 else ""))
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{track}-{done}.{n % self.PARTS}.m4s"')
        return "\n".join(lines) + "\n"

    def mpd(self) -> str:
        done = self.count() // self.PARTS
        first = max(0, done - 4)
        sets = []
        for track, scale in (("video", 90000), ("audio", 48000)):
            d = int(0.2 * scale)
            sets.append(f'<AdaptationSet contentType="{track}"><SegmentTemplate timescale="{scale}" '
                        f'startNumber="{first}" '
                        f'initialization="{track}-init.mp4" media="{track}-$Number$.m4s"><SegmentTimeline>'
                        f'<S t="{first * d}" d="{d}" r="{done - first - 1}"/></SegmentTimeline></SegmentTemplate>'
                        f'<Representation id="{track}"/></AdaptationSet>')
        ast = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.wall0)) + f".{int(self.wall0 % 1 * 1000):03d}Z"
        return (f'<MPD type="dynamic" availabilityStartTime="{ast}" minimumUpdatePeriod="PT0.2S" '
                f'suggestedPresentationDelay="PT0.4S"><Period id="p0" start="PT0S">{"".join(sets)}</Period></MPD>')

    def fragment(self, name: str) -> bytes:
        track, rest = name.split("-", 1)
        number = rest[:-4]
        msn, _, part = number.partition(".")
        tid, scale = (1, 90000) if track == "video" else (2, 48000)
        per = int(self.PART_S * scale)
        base = (int(msn) * self.PARTS + (int(part) if part else 0)) * per
        return moof_mdat(tid, base, [per] * (1 if part else self.PARTS))

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name == "cmaf.m3u8":
            return web.Response(text='#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="a",URI="cmaf-audio.m3u8"\n'
                                     '#EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO="a"\ncmaf-video.m3u8\n')
        if name.endswith(".m3u8"):
            track = name[5:-5]
            if "_HLS_msn" in request.query:
                msn, part = int(request.query["_HLS_msn"]), int(request.query.get("_HLS_part", 0))
                self.directives.append((msn, part))
                want = msn * self.PARTS + min(part, self.PARTS) + 1
                for _ in range(200):
                    if self.count() >= want:
                        break
                    await asyncio.sleep(0.005)
            return web.Response(text=self.playlist(track))
        if name == "manifest.mpd":
            return web.Response(text=self.mpd())
        self.fetches.append(name)
        if name.endswith("-init.mp4"):
            track = name.split("-")[0]
            return web.Response(body=init_bytes([(1, b"vide", 90000)] if track == "video" else [(2, b"soun", 48000)]))
        return web.Response(body=self.fragment(name))


@pytest.fixture
async def live_server():
    live = FakeLive()
    app = web.Application()
    app.router.add_get("/live/a/{file}", live.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], live
    await runner.cleanup()


async def test_llhls_player_fetches_every_part_once_in_order_with_blocking_reloads(live_server):
    port, live = live_server
    await asyncio.sleep(1.0)  # a few segments to start from
    stop = asyncio.Event()
    stats, rec = PullStats(stream=0), LlhlsRecorder()
    player = LlhlsPlayer("127.0.0.1", port, "/live/a/cmaf.m3u8", stats, {}, keep_bodies=True,
                         on_playlist=rec.on_playlist, on_item=rec.on_item)
    task = asyncio.ensure_future(player.run(stop))
    await asyncio.sleep(1.2)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert stats.errors == 0 and not stats.statuses and stats.gaps == 0 and stats.inits == 2
    for track in ("video", "audio"):
        keys = [tuple(map(int, k[1:].split("."))) for k in stats.fetched if k[0] == track[0]]
        assert keys == sorted(keys) and len(keys) >= 20
        flat = [m * FakeLive.PARTS + i for m, i in keys]
        assert flat == list(range(flat[0], flat[0] + len(flat)))  # none skipped, none twice
    assert live.directives and all(0 <= p <= FakeLive.PARTS for _, p in live.directives)
    start = [r for r in rec.records if r["track"] == "video"][0]
    assert start["backlog"] and start["last_ms"] % 40 == 0  # started PART-HOLD-BACK back, at an independent part
    live_recs = [r for r in rec.records if not r["backlog"]]
    assert live_recs and all(r["arrived"] >= r["listed"] for r in live_recs)


async def test_dash_player_fetches_each_new_segment_of_both_tracks_once(live_server):
    port, live = live_server
    await asyncio.sleep(1.0)
    stop = asyncio.Event()
    stats, first_seen = PullStats(stream=0), {}
    rec = DashRecorder(time.time() - time.monotonic())
    player = DashPlayer("127.0.0.1", port, "/live/a/manifest.mpd", stats, first_seen, keep_bodies=True,
                        on_mpd=rec.on_mpd, on_item=rec.on_item)
    task = asyncio.ensure_future(player.run(stop))
    await asyncio.sleep(1.3)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert stats.errors == 0 and stats.inits == 2 and stats.gaps == 0
    for track in "va":
        numbers = sorted(int(k[1:]) for k in stats.fetched if k[0] == track)
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) and len(numbers) >= 5
    # It started about suggestedPresentationDelay (0.4 s, two segments) behind the newest segment.
    first_mpd_newest = max(int(k[1:]) for k, t in first_seen.items() if k[0] == "v" and t == min(first_seen.values()))
    assert first_mpd_newest - int(stats.started) in (1, 2, 3)
    assert 0.5 < stats.manifests / 1.3 * 0.2 < 2  # about one MPD per minimumUpdatePeriod
    assert {r["track"] for r in rec.records} == {"video", "audio"} and all(r["advertised"] for r in rec.records)


# ------------------------------------------------------------------ soak: readings, the log, verdicts

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from _soak_bad_inputs import BAD_NALU_FRAME, ZERO_SPS_CONFIG, huge_command  # noqa: E402
from _soak_watch import (  # noqa: E402
    Reading,
    judge,
    parse_log_line,
    parse_prometheus,
    passed,
    rss_drift,
    rss_steps,
    scan_log,
    server_gauges,
)

METRICS_TEXT = """# HELP mediaserver_streams Streams by state.
# TYPE mediaserver_streams gauge
mediaserver_streams{state="live"} 3.0
mediaserver_streams{state="idle"} 1.0
mediaserver_viewers{format="flv"} 2.0
mediaserver_viewers{format="hls"} 5.0
mediaserver_viewers{format="rtmp"} 1.0
mediaserver_viewers{format="ws-flv"} 0.0
mediaserver_egress_bytes_total{format="flv"} 1.2e+06
mediaserver_packagers 4.0
mediaserver_asyncio_tasks 37.0
process_open_fds 40.0
"""


def test_metrics_give_the_hubs_and_pools_counts():
    samples = parse_prometheus(METRICS_TEXT)
    assert samples[("mediaserver_egress_bytes_total", (("format", "flv"),))] == 1.2e6
    assert server_gauges(samples) == {"streams": 4, "subscribers": 3, "hls_clients": 5, "packagers": 4, "tasks": 37}
    # A server without a gauge reads as None (not measured), never as 0.
    assert server_gauges(parse_prometheus("mediaserver_packagers 0\n"))["tasks"] is None


def test_log_scan_counts_tracebacks_and_groups_errors_by_event_and_exception(tmp_path):
    tb = json.dumps("Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad frame")
    log = tmp_path / "server.log"
    log.write_text("\n".join([
        "2026-01-01T00:00:00.000Z info event=server_start rtmp=1",
        f'2026-01-01T00:00:01.000Z error event="sink failed; detached" error={tb}',
        f'2026-01-01T00:00:02.000Z error event="sink failed; detached" error={tb}',
        "2026-01-01T00:00:03.000Z warning event=rtmp_protocol_error error=\"type-3 chunk\"",
        json.dumps({"ts": 1, "level": "critical", "event": "crash", "error": "RuntimeError: boom"}),
        "Traceback (most recent call last):",  # printed to stderr by something that bypassed logging
    ]) + "\n")
    out = scan_log(log)
    assert out["tracebacks"] == 3 and out["error_lines"] == 3
    assert out["errors_by_event"] == {"sink failed; detached (ValueError: bad frame)": 2,
                                      "crash (RuntimeError: boom)": 1}
    assert out["warnings_by_event"] == {"rtmp_protocol_error": 1}
    assert parse_log_line("2026-01-01T00:00:00.000Z info event=x") == ("info", "x", "")


def reading(t: float, phase: str, rss_mib: float, fds: int = 20, tasks: int = 6, **kw) -> Reading:
    fields = {"threads": 5, "streams": 0, "subscribers": 0, "hls_clients": 0, "packagers": 0, **kw}
    return Reading(t=t, phase=phase, rss_bytes=int(rss_mib * 2**20), fds=fds, tasks=tasks, **fields)


def verdicts(readings, end, log=None, **kw):
    base = reading(0, "baseline", 40)
    log = log or {"tracebacks": 0, "error_lines": 0, "errors_by_event": {}}
    opts = {"rss_tolerance_pct": 5.0, "fd_slack": 0, "task_slack": 0, "min_rss_span_s": 60, "server_exit": 0, **kw}
    return {v.criterion: v.outcome for v in judge(readings, base, end, log, **opts)}


def test_rss_drift_is_judged_against_the_first_sample_after_the_warm_up():
    rows = [reading(5, "warmup", 30), reading(10, "run", 50), reading(60, "run", 52), reading(120, "run", 51),
            reading(130, "quiet", 45)]
    d = rss_drift(rows)
    assert (d["min_pct"], d["max_pct"], d["last_pct"], d["samples"], d["span_s"]) == (0.0, 4.0, 2.0, 3, 110)
    end = reading(131, "quiet", 45)
    v = verdicts(rows, end)
    assert v["rss_within_tolerance"] == "PASS" and passed(judge(rows, reading(0, "b", 40), end, {
        "tracebacks": 0, "error_lines": 0, "errors_by_event": {}}, rss_tolerance_pct=5, fd_slack=0, task_slack=0,
        min_rss_span_s=60, server_exit=0))
    grown = rows[:-1] + [reading(200, "run", 53)]
    assert verdicts(grown, end)["rss_within_tolerance"] == "FAIL"  # +6 %
    assert verdicts(rows[:2], end)["rss_within_tolerance"] == "SKIP"  # too short to judge, not a pass


def test_rss_steps_name_the_bad_inputs_sent_just_before_each_rise():
    rows = [reading(5, "warmup", 50), reading(10, "run", 50.2), reading(15, "run", 53), reading(20, "run", 53.5),
            reading(25, "run", 55), reading(30, "quiet", 60)]
    steps = rss_steps(rows, [(4.0, "post_healthz"), (7.0, "huge_command"), (12.0, "ws_close"), (21.0, "http_silent")])
    assert steps == [{"t": 15, "rise_mib": 2.8, "bad_inputs_before": ["huge_command", "ws_close"]},
                     {"t": 25, "rise_mib": 1.5, "bad_inputs_before": ["http_silent"]}]


def test_leaks_left_objects_tracebacks_and_a_dirty_exit_each_fail_their_criterion():
    rows = [reading(10, "run", 50), reading(100, "run", 50)]
    clean = verdicts(rows, reading(101, "quiet", 48))
    assert set(clean.values()) == {"PASS"}
    assert verdicts(rows, reading(101, "quiet", 48, fds=21))["fds_back_to_baseline"] == "FAIL"
    assert verdicts(rows, reading(101, "quiet", 48, fds=21), fd_slack=1)["fds_back_to_baseline"] == "PASS"
    assert verdicts(rows, reading(101, "quiet", 48, tasks=9))["tasks_back_to_baseline"] == "FAIL"
    assert verdicts(rows, reading(101, "quiet", 48, tasks=None))["tasks_back_to_baseline"] == "SKIP"
    assert verdicts(rows, reading(101, "quiet", 48, packagers=1))["no_packagers_left"] == "FAIL"
    assert verdicts(rows, reading(101, "quiet", 48, subscribers=2))["no_subscribers_left"] == "FAIL"
    log = {"tracebacks": 1, "error_lines": 1, "errors_by_event": {"x (E: y)": 1}}
    v = verdicts(rows, reading(101, "quiet", 48), log)
    assert v["zero_tracebacks"] == v["zero_error_lines"] == "FAIL"
    assert verdicts(rows, reading(101, "quiet", 48), server_exit=-9)["server_ran_and_stopped_cleanly"] == "FAIL"


def test_crafted_media_is_what_the_issue_describes():
    from mediaserver.media import amf0

    assert int.from_bytes(BAD_NALU_FRAME[5:9], "big") == 0xFFFFFF00 > len(BAD_NALU_FRAME)
    assert ZERO_SPS_CONFIG[1] == 0 and ZERO_SPS_CONFIG[10] & 0x1F == 1 and ZERO_SPS_CONFIG[11:13] == b"\x00\x00"
    body = huge_command(100_000)
    name, txn, obj = amf0.decode_all(body)
    assert (name, txn) == ("FCPublish", 9.0) and len(obj) > 5000 and 90_000 < len(body) < 110_000


# ------------------------------------------------------------------ soak: a short run against the server

@pytest.mark.timeout(240)
@pytest.mark.skipif(not _server_importable(), reason="mediaserver's server or RTMP client is not importable")
def test_a_short_soak_leaves_no_leak_and_no_traceback(tmp_path):
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--duration", "16", "--warmup", "3", "--publishers", "2",
         "--viewers", "1", "--session-min", "5", "--session-max", "10", "--view-min", "2", "--view-max", "6",
         "--bad-every", "1.0", "--bad-hold", "4", "--huge-command-kib", "256", "--reconnect-grace", "3",
         "--packager-idle", "1", "--ended-linger", "1", "--sample-every", "1", "--seed", "9",
         "--results-dir", str(tmp_path), "--json"],
        cwd=root, capture_output=True, text=True, timeout=220)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    r = doc["results"]
    v = {x["criterion"]: x for x in r["verdicts"]}
    outcomes = r["clients"]["outcomes"]
    # The tool did its job: publishers came and went, every viewer kind watched, bad inputs were sent.
    assert outcomes["publisher"].get("reconnects", 0) + outcomes["publisher"].get("unpublish", 0) >= 2
    for kind in ("flv", "ws-flv", "hls", "llhls"):
        assert outcomes[f"viewer:{kind}"].get("watched", 0) >= 1, (kind, outcomes)
    assert sum(1 for who in outcomes if who.startswith("bad:")) >= 8
    assert r["peaks"]["tasks"] > r["baseline"]["tasks"] and r["peaks"]["packagers"] >= 1
    # And the server held: everything back to the baseline, nothing in the log.
    assert v["fds_back_to_baseline"]["outcome"] == "PASS", v
    assert v["tasks_back_to_baseline"]["outcome"] == "PASS", v
    assert v["no_packagers_left"]["outcome"] == "PASS" and v["no_subscribers_left"]["outcome"] == "PASS", v
    assert v["zero_tracebacks"]["outcome"] == "PASS", r["server_log"]["errors_by_event"]
    assert v["server_ran_and_stopped_cleanly"]["outcome"] == "PASS", v


# ------------------------------------------------------------------ recording and VOD benchmarks' readers

VOD_PLAYLIST = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-MAP:URI="../r1.mp4",BYTERANGE="1123@0"
#EXTINF:2.000,
#EXT-X-BYTERANGE:600000@1123
../r1.mp4
#EXTINF:1.500,
#EXT-X-BYTERANGE:400000
../r1.mp4
#EXT-X-ENDLIST
"""


def test_a_byte_range_vod_playlist_is_read_with_implicit_offsets():
    pl = parse_vod_playlist(VOD_PLAYLIST)
    assert (pl.map_uri, pl.map_offset, pl.map_length, pl.ended) == ("../r1.mp4", 0, 1123, True)
    assert [(s.offset, s.length, s.duration_s) for s in pl.segments] == [(1123, 600000, 2.0), (601123, 400000, 1.5)]
    assert range_header(1123, 600000) == {"Range": "bytes=1123-601122"}
    for bad in ("#EXTM3U\n#EXTINF:2,\nseg.mp4\n", VOD_PLAYLIST.replace("BYTERANGE:400000", "BYTERANGE:x"),
                VOD_PLAYLIST.replace('#EXT-X-MAP:URI="../r1.mp4",BYTERANGE="1123@0"\n', "")):
        with pytest.raises(PlaylistError):
            parse_vod_playlist(bad)


def _fmp4_box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _fmp4_box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def _recording_init() -> bytes:
    def trak(track_id: int, handler: bytes, timescale: int) -> bytes:
        tkhd = _full(b"tkhd", 0, 3, struct.pack(">IIII", 0, 0, track_id, 0), bytes(64))
        mdhd = _full(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, timescale, 0), bytes(4))
        hdlr = _full(b"hdlr", 0, 0, bytes(4), handler, bytes(13))
        return _fmp4_box(b"trak", tkhd, _fmp4_box(b"mdia", mdhd, hdlr))

    mvex = _fmp4_box(b"mvex", *(_full(b"trex", 0, 0, struct.pack(">IIIII", t, 1, 0, 0, 0)) for t in (1, 2)))
    return _fmp4_box(b"ftyp", b"isom", bytes(4)) + _fmp4_box(b"moov", trak(1, b"vide", 90000),
                                                             trak(2, b"soun", 48000), mvex)


def _recording_fragment(track_id: int, start: int, durations: list[int]) -> bytes:
    trun = _full(b"trun", 0, 0x301, struct.pack(">II", len(durations), 0),
                 *(struct.pack(">II", d, 10) for d in durations))
    traf = _fmp4_box(b"traf", _full(b"tfhd", 0, 0x20000, struct.pack(">I", track_id)),
                     _full(b"tfdt", 1, 0, struct.pack(">Q", start)), trun)
    return _fmp4_box(b"moof", _full(b"mfhd", 0, 0, struct.pack(">I", 1)), traf) + \
        _fmp4_box(b"mdat", bytes(10 * len(durations)))


def test_a_recording_read_back_counts_samples_and_finds_holes_in_each_track():
    init = _recording_init()
    whole = init + b"".join((
        _recording_fragment(1, 0, [3000] * 60), _recording_fragment(2, 0, [1024] * 94),
        _recording_fragment(1, 180000, [3000] * 60), _recording_fragment(2, 96256, [1024] * 93)))
    c = check_recording(whole)
    assert c.error is None and c.samples == 307 and c.holes == 0
    assert c.tracks["vide"].duration_s == 4.0 and c.tracks["soun"].samples == 187
    lost = init + _recording_fragment(1, 0, [3000] * 60) + _recording_fragment(1, 183000, [3000] * 59)
    c = check_recording(lost)  # a frame missing between two fragments
    assert c.holes == 1 and abs(c.tracks["vide"].worst_hole_ms - 33.333) < 0.01 and c.samples == 119
    assert check_recording(whole[:-5]).error is not None  # cut inside the last box


def test_the_rtmp_sink_accepts_a_publish_and_counts_its_media_per_stream_name():
    from _rtmp_sink import SinkConnection

    from mediaserver.rtmp.client import ClientSession

    class Transport:
        def __init__(self) -> None:
            self.out = bytearray()

        def write(self, data) -> None:
            self.out += data

        def close(self) -> None:
            pass

    keys: dict = {}
    sink, transport, client = SinkConnection(keys), Transport(), ClientSession()
    sink.connection_made(transport)
    client.connect("sink", "rtmp://127.0.0.1/sink")
    client.publish("t1-0")
    sent = 0
    for _ in range(6):  # handshake, connect, createStream, publish: a few round trips
        data = client.data_to_send()
        sent += len(data)
        if data:
            sink.data_received(data)
        client.receive_data(bytes(transport.out))
        transport.out.clear()
        client.events()
    assert keys["t1-0"].open == 1 and keys["t1-0"].connections == 1
    client.send_video(0, AVC_KEY)
    client.send_audio(0, b"\xaf\x01" + b"\x00" * 30)
    data = client.data_to_send()
    sink.data_received(data)
    stats = keys["t1-0"]
    assert stats.frames == 2 and stats.media_bytes == len(AVC_KEY) + 32
    assert stats.bytes == sent + len(data)  # the bytes before the publish named the stream count too
    sink.connection_lost(None)
    assert stats.open == 0


# ----- bench.record --probe: the recording's own work timed inside the server ----------------------------


def test_the_probe_patches_the_servers_own_recording_modules_and_reports_their_totals(tmp_path):
    out = tmp_path / "probe.json"
    code = (
        "import asyncio, time\n"
        "from pathlib import Path\n"
        "from mediaserver.hub.stream import StreamKey\n"
        "from mediaserver.record import recorder, writer\n"
        "assert recorder.Recorder.on_frames.__name__ == 'timed_on_frames', recorder.Recorder.on_frames\n"
        "assert writer.DiskWriter._do.__name__ == 'timed_do', writer.DiskWriter._do\n"
        "assert writer.DiskWriter._put.__name__ == 'timed_put', writer.DiskWriter._put\n"
        "from mediaserver.record import fragmenter\n"
        "assert fragmenter.GopFragmenter._cut.__name__ == 'timed_cut'\n"
        "assert fragmenter.GopFragmenter._audio_fragment.__name__ == 'timed_audio_fragment'\n"
        "assert fragmenter.fragment_pieces.__name__ == 'timed_fragment_pieces'\n"
        f"rec = recorder.Recorder(StreamKey('live', 'x'), Path({str(tmp_path)!r}))\n"
        "rec.on_frames([])\n"
        "time.sleep(1.5)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "MEDIASERVER_BENCH_RECPROBE": str(out),
           "PYTHONPATH": os.path.join(root, "bench", "_recprobe")}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=root, check=True, timeout=60)
    totals = json.loads(out.read_text())
    assert totals["frames"] == 0 and totals["loop_s"] > 0 and totals["bytes"] == 0
    # Without the variable the directory on PYTHONPATH changes nothing.
    env.pop("MEDIASERVER_BENCH_RECPROBE")
    subprocess.run([sys.executable, "-c", "from mediaserver.record import recorder\n"
                    "assert recorder.Recorder.on_frames.__name__ == 'on_frames'"], env=env, cwd=root, check=True,
                   timeout=60)


def test_the_mean_of_the_windows_comes_with_its_95_percent_interval():
    from bench.record import mean_interval
    assert mean_interval([]) is None and mean_interval([0.02]) is None
    iv = mean_interval([0.018, 0.022, 0.020, 0.020])  # sd 0.001633, t(3) 3.182: 0.0026
    assert iv == {"windows": 4, "mean": 0.02, "plus_minus": 0.0026}
    assert mean_interval([0.02] * 50)["plus_minus"] == 0.0  # (t past 30 degrees of freedom: 1.96)


def test_pooled_toggle_runs_take_every_window_and_a_wrong_file_is_named(tmp_path):
    from bench.load import BenchError
    from bench.record import pool_runs
    a, b, bad = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "bad.json"
    a.write_text(json.dumps({"machine": {"commit": "abc1234"},
                             "toggle": {"recording_cpu_s_per_stream_minute": [0.018, 0.022]}}))
    b.write_text(json.dumps({"toggle": {"recording_cpu_s_per_stream_minute": [0.020, 0.021, 0.019]}}))
    bad.write_text(json.dumps({"runs": []}))  # a run without --toggle
    pooled = pool_runs([a, b])
    assert [r["windows"] for r in pooled["runs"]] == [[0.018, 0.022], [0.020, 0.021, 0.019]]
    assert [r["commit"] for r in pooled["runs"]] == ["abc1234", None]
    assert pooled["median"] == 0.02 and pooled["interval"]["windows"] == 5 and pooled["interval"]["mean"] == 0.02
    for wrong in (bad, tmp_path / "missing.json"):
        with pytest.raises(BenchError, match=wrong.name):
            pool_runs([a, wrong])


def test_the_probe_runs_the_sitecustomize_it_hides(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import builtins\nbuiltins.OTHER_SITECUSTOMIZE_RAN = True\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for probe in (str(tmp_path / "probe.json"), None):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(root, "bench", "_recprobe"), str(other)])}
        env.pop("MEDIASERVER_BENCH_RECPROBE", None)
        if probe:
            env["MEDIASERVER_BENCH_RECPROBE"] = probe
        code = "import builtins, sitecustomize\nassert builtins.OTHER_SITECUSTOMIZE_RAN\n" \
               "assert sitecustomize.__file__.endswith('_recprobe/sitecustomize.py'), sitecustomize.__file__\n"
        subprocess.run([sys.executable, "-c", code], env=env, cwd=root, check=True, timeout=60)


def test_a_probe_window_is_the_difference_of_two_readings_per_frame_per_mb_and_per_stream_minute():
    from bench.record import probe_window
    a = {"frames": 1000, "loop_s": 1.0, "writer_s": 0.5, "bytes": 10_000_000, "at": 100.0}
    b = {"frames": 41000, "loop_s": 1.1, "writer_s": 0.53, "bytes": 110_000_000, "at": 130.0}
    w = probe_window(a, b, streams=10)
    assert w["frames"] == 40000 and w["mb"] == 100.0
    assert w["loop_us_per_frame"] == 2.5 and w["writer_ms_per_mb"] == 0.3
    assert w["cpu_s_per_stream_minute"] == round(0.13 / (10 * 30 / 60), 5)
    assert probe_window(None, b, 10) is None and probe_window(b, a, 10) is None
    # Readings without the parts (an older probe): all of the loop's time is the push's.
    assert w["loop_split"]["push_and_store"] == 2.5 and w["loop_split"]["video_cut"] == 0.0
    assert w["writer_split"] == {"copy": 0.0, "pwrite": 0.0, "other": 0.3}


def test_a_probe_windows_parts_add_up_to_the_loops_and_the_writers_whole():
    from bench.record import probe_window
    a = {"frames": 0, "loop_s": 0.0, "writer_s": 0.0, "bytes": 0, "at": 0.0, "video_cut_s": 0.0,
         "audio_cut_s": 0.0, "views_s": 0.0, "moof_s": 0.0, "direct_s": 0.0, "pwrite_s": 0.0}
    b = {"frames": 100_000, "loop_s": 0.25, "writer_s": 0.3, "bytes": 1_000_000_000, "at": 40.0,
         "video_cut_s": 0.1, "audio_cut_s": 0.05, "views_s": 0.03, "moof_s": 0.01, "direct_s": 0.26, "pwrite_s": 0.08}
    w = probe_window(a, b, streams=50)
    assert w["loop_split"] == {"push_and_store": 1.0, "video_cut": 1.0, "audio_cut": 0.5, "of_which_views": 0.3,
                               "of_which_moofs": 0.1}
    assert w["writer_split"] == {"copy": 0.18, "pwrite": 0.08, "other": 0.04}
