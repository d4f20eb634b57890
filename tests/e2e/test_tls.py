"""RTMPS and HTTPS with a certificate made by the test, as OBS, ffmpeg and browsers use them: ffmpeg
publishes over rtmps:// and plays back over rtmps://; HTTP-FLV and HLS decode over https://; plain clients on
the TLS port and TLS clients on the plain port are closed at once; SIGHUP swaps the certificate under a live
viewer; X-Forwarded-For counts only from a trusted proxy (an IP-bound play token shows which address won).

One server and one publisher for the module (the tests run in file order; the SIGHUP test is last)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from e2e.test_auth_publish import SECRET, token
from mediaserver.auth.tokens import Action
from support.certs import Cert, make_cert, served_certificate
from support.checks import is_media
from support.decode import decode_media
from support.flv_viewer import FlvViewer
from support.hls import HlsPoller
from support.media import MediaLibrary
from support.player import ffmpeg_play
from support.publisher import Publisher, publish_args
from support.server import ServerProcess, start_server

STREAM = "tlscam"
PROXY = "127.0.0.2"  # Linux answers on all of 127/8: a second loopback address plays the reverse proxy


class Tls:
    def __init__(self, server: ServerProcess, cert: Cert, live: Path, workdir: Path) -> None:
        self.server = server
        self.cert = cert
        self.live = live
        self.workdir = workdir

    def play(self, address: str | None = None) -> str:
        return token(Action.PLAY, STREAM, address=address)

    def rtmps_url(self, query: str = "") -> str:
        return f"rtmps://127.0.0.1:{self.server.rtmps_port}/live/{STREAM}{query}"


@pytest.fixture(scope="module")
def tls(media: MediaLibrary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    workdir = tmp_path_factory.mktemp("tls")
    cert = make_cert(workdir / "first")
    live = workdir / "live"  # the files the server reads; the SIGHUP test replaces them
    live.mkdir()
    shutil.copy(cert.cert_file, live / "server.crt")
    shutil.copy(cert.key_file, live / "server.key")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDIASERVER_TOKEN_SECRET", SECRET)
    server = start_server(workdir, {
        "rtmps.cert_file": str(live / "server.crt"), "rtmps.key_file": str(live / "server.key"),
        "http.cert_file": str(live / "server.crt"), "http.key_file": str(live / "server.key"),
        "http.trusted_proxies": PROXY, "auth.play_open": "", "auth.failure_delay_ms": "0",
        "hls.segment_duration": "1", "rtmp.handshake_timeout": "2", "http.header_timeout": "2",
    })
    mp.undo()
    ctx = Tls(server, cert, live, workdir)
    publisher = Publisher(publish_args(ctx.rtmps_url(), media.av, loop=True, extra_args=["-ca_file", str(cert.cert_file)]),
                          workdir / "publisher.log")
    server.publishers.append(publisher)
    try:
        yield ctx
    finally:
        publisher.close()
        code = server.terminate()
        assert code == 0, f"the server exited with {code} after SIGTERM:\n{server.log_tail()}"


def _viewer(tls: Tls, **kwargs) -> FlvViewer:
    return FlvViewer(f"{tls.server.flv_url(STREAM)}?token={tls.play()}", watch=tls.server.check,
                     ssl_context=tls.cert.client_context(), **kwargs)


async def test_rtmps_publish_plays_back_over_rtmps_and_https_flv_and_hls(tls):
    server = tls.server
    assert server.flv_url(STREAM).startswith("https://")
    async with _viewer(tls) as viewer:  # HTTP-FLV over https, certificate verified
        assert await viewer.wait_video_frames(40, timeout_s=20), viewer.describe_start()
    report = decode_media(bytes(viewer.raw), "flv")
    assert report.errors == [] and (report.video_codec, report.audio_codec) == ("h264", "aac"), report.summary()
    assert report.first_video_frame_key, report.summary()

    out = tls.workdir / "rtmps-played.flv"
    await ffmpeg_play(tls.rtmps_url(f"?token={tls.play()}"), out, before_input=("-ca_file", str(tls.cert.cert_file)))
    played = decode_media(out.read_bytes(), "flv")
    assert played.errors == [] and played.video_codec == "h264" and played.video_frames >= 25, played.summary()

    connector = aiohttp.TCPConnector(ssl=tls.cert.client_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        poller = HlsPoller(f"{server.hls_url(STREAM)}?token={tls.play()}", http, watch=server.check)
        await poller.poll_until(lambda pl: len(poller.segments) >= 2, timeout_s=20)
    segments = [s for s in poller.segments.values() if s.status == 200]
    hls = decode_media(b"".join(s.data for s in segments[-2:]), "mpegts")
    assert hls.errors == [] and hls.video_codec == "h264" and hls.video_frames > 10, hls.summary()
    assert "tls=True" in server.log_text()  # the publisher came in over RTMPS


def _closed_within(port: int, first_bytes: bytes, timeout_s: float) -> float:
    """Send `first_bytes` and return how long until the server closed (EOF or reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(first_bytes)
        started = time.monotonic()
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return time.monotonic() - started


def _client_hello() -> bytes:
    """A real TLS ClientHello, taken from Python's own TLS client."""
    import ssl
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


async def test_plain_rtmp_on_the_tls_port_and_tls_on_the_plain_port_are_closed_at_once(tls):
    server = tls.server
    c0c1 = b"\x03" + bytes(1536)
    took = await asyncio.to_thread(_closed_within, server.rtmps_port, c0c1, 5)
    assert took < 1.0, f"a plain RTMP handshake on the RTMPS port was closed after {took:.2f} s"
    took = await asyncio.to_thread(_closed_within, server.rtmp_port, _client_hello(), 5)
    assert took < 1.0, f"a TLS ClientHello on the plain RTMP port was closed after {took:.2f} s"
    took = await asyncio.to_thread(_closed_within, server.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 5)
    assert took < 1.0, f"plain HTTP on the HTTPS port was closed after {took:.2f} s"
    silent = await asyncio.gather(*(asyncio.to_thread(_closed_within, port, b"", 6)  # TLS handshake deadlines: 2 s
                                     for port in (server.rtmps_port, server.http_port)))
    assert all(1.5 < took < 4 for took in silent), f"silent clients on the TLS ports were closed after {silent} s"
    for _ in range(30):  # a missed deadline is counted after it passed
        log = server.log_text()
        if log.count("tls_handshake_timeout") == 2:
            break
        await asyncio.sleep(0.1)
    assert log.count("event=tls_handshake_failed listener=rtmps reason=WRONG_VERSION_NUMBER") == 1, log
    assert log.count("event=tls_handshake_failed listener=http reason=HTTP_REQUEST") == 1, log
    assert log.count("event=tls_handshake_timeout listener=rtmps") == 1, log
    assert log.count("event=tls_handshake_timeout listener=http") == 1, log
    assert "TLS handshake on the plain RTMP port" in log
    assert "Traceback" not in log
    connector = aiohttp.TCPConnector(ssl=tls.cert.client_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{server.http_base}/metrics") as resp:
            metrics = await resp.text()
    for listener in ("rtmps", "http"):
        for reason in ("handshake_error", "handshake_timeout"):
            line = f'mediaserver_tls_handshake_failures_total{{listener="{listener}",reason="{reason}"}} 1.0'
            assert line in metrics, (line, [m for m in metrics.splitlines() if "tls" in m])


async def _status(peer: str, url: str, tls: Tls, headers: dict[str, str]) -> int:
    connector = aiohttp.TCPConnector(ssl=tls.cert.client_context(), local_addr=(peer, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(url, headers=headers) as resp:
            return resp.status


async def test_x_forwarded_for_names_the_client_only_from_a_trusted_proxy(tls):
    async with _viewer(tls, live_timeout_s=15) as viewer:  # live (when this test runs alone)
        assert await viewer.wait_video_frames(1, timeout_s=15), viewer.describe_start()
    bound = tls.play(address="203.0.113.7")
    url = f"{tls.server.hls_url(STREAM)}?token={bound}"
    cases = [
        (PROXY, {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}, 200),  # the proxy's own entry (right-most) counts
        (PROXY, {"Forwarded": 'for="203.0.113.7:5555";proto=https'}, 200),
        (PROXY, {"X-Forwarded-For": "203.0.113.7, 198.51.100.1"}, 403),  # the client is 198.51.100.1
        (PROXY, {"X-Forwarded-For": "unknown"}, 403),  # the proxy itself
        ("127.0.0.1", {"X-Forwarded-For": "203.0.113.7"}, 403),  # not a proxy: its header means nothing
        ("127.0.0.1", {"Forwarded": "for=203.0.113.7"}, 403),
    ]
    statuses = [await _status(peer, url, tls, headers) for peer, headers, _ in cases]
    assert statuses == [expected for *_, expected in cases], list(zip(cases, statuses))
    # WS-FLV through the proxy: the upgraded request carries the client's address too.
    ws_url = f"{tls.server.flv_url(STREAM)}?token={bound}".replace("https://", "wss://")
    connector = aiohttp.TCPConnector(ssl=tls.cert.client_context(), local_addr=(PROXY, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.ws_connect(ws_url, headers={"X-Forwarded-For": "203.0.113.7"}) as ws:
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.BINARY and msg.data[:3] == b"FLV", msg
    for _ in range(30):  # the viewer's leave line follows its disconnect
        if "203.0.113.7 via 127.0.0.2" in tls.server.log_text():
            break
        await asyncio.sleep(0.1)
    assert "peer=\"203.0.113.7 via 127.0.0.2\"" in tls.server.log_text(), tls.server.log_tail()


async def test_sighup_swaps_the_certificate_and_a_live_tls_viewer_carries_on(tls):
    server = tls.server
    second = make_cert(tls.workdir / "second", common_name="renewed")
    async with _viewer(tls) as viewer:
        assert await viewer.wait_video_frames(10, timeout_s=15)
        (tls.live / "server.crt").write_bytes(second.cert_file.read_bytes())
        (tls.live / "server.key").write_bytes(second.key_file.read_bytes())
        server.proc.send_signal(1)  # SIGHUP
        for _ in range(50):
            if server.log_text().count("event=tls_reloaded") == 2:
                break
            await asyncio.sleep(0.1)
        assert server.log_text().count("event=tls_reloaded") == 2, server.log_tail()
        before = sum(1 for t in viewer.tags if is_media(t))
        assert await viewer.wait_until(lambda v: sum(1 for t in v.tags if is_media(t)) > before + 50, timeout_s=10)
        assert viewer.error is None and not viewer.ended
    for port in (server.rtmps_port, server.http_port):
        assert await asyncio.to_thread(served_certificate, port) == second.der
    # A broken renewal keeps the current certificate, with one error line naming the file.
    (tls.live / "server.key").write_text("not a key\n")
    server.proc.send_signal(1)
    for _ in range(50):
        if "tls_reload_failed" in server.log_text():
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
    log = server.log_text()
    assert log.count("event=tls_reload_failed") == 2 and "key_file" in log, server.log_tail()
    assert await asyncio.to_thread(served_certificate, server.rtmps_port) == second.der
    server.check()
