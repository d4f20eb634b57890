"""Pull relays: server A ingests a stream that ffmpeg publishes to server B (ours too), over RTMP and over
HTTP-FLV, on demand and always; A's viewers decode it with PyAV through B's publisher restarting and B
itself going down and coming back."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

from support.certs import make_cert
from support.decode import decode_media
from support.server import start_server

ADMIN = "admin-token-for-relay-tests-0123"
QUICK = {"record.mode": "off"}  # no catalog to open: the servers start sooner


def _api(server, path: str) -> dict:
    request = urllib.request.Request(f"{server.http_base}/api/v1{path}", headers={"Authorization": f"Bearer {ADMIN}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as resp:
        return json.loads(resp.read())


def _pull(server, stream: str = "cam") -> dict:
    (pull,) = [p for p in _api(server, "/pulls")["pulls"] if p["stream"] == stream]
    return pull


async def _until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


def _relay(url: str, mode: str, **more: str) -> str:
    tables = [f'{{app = "live", stream = "cam", url = "{url}", mode = "{mode}"}}']
    tables += [f'{{app = "live", stream = "{name}", url = "{other}"}}' for name, other in more.items()]
    return f"[{', '.join(tables)}]"


async def test_rtmp_pull_on_demand_follows_the_source_restarting_and_stops_when_idle(
        server_factory, publish, media, stream_name, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    monkeypatch.setenv("CAM_KEY", stream_name)  # the source's name stands for a secret stream key
    cert = make_cert(tmp_path / "cert")
    source = server_factory(QUICK, **{"rtmps.cert_file": str(cert.cert_file), "rtmps.key_file": str(cert.key_file)})
    first = publish(source, stream_name, media.low, loop=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert.cert_file))  # server A trusts the source's certificate
    here = server_factory(QUICK, **{"relay.pull": _relay(
        f"rtmp://127.0.0.1:{source.rtmp_port}/live/${{CAM_KEY}}", "on_demand",
        **{"cam-tls": f"rtmps://127.0.0.1:{source.rtmps_port}/live/${{CAM_KEY}}"}), "relay.pull_grace": "1"})
    await asyncio.sleep(0.5)
    pull = _pull(here)
    assert (pull["state"], pull["bytes"], pull["mode"]) == ("idle", 0, "on_demand"), pull  # no viewer, no pull
    assert pull["source"] == f"rtmp://127.0.0.1:{source.rtmp_port}/live/***"

    async with here.flv_viewer("cam-tls") as viewer:  # the same over RTMPS
        assert await viewer.wait_video_frames(10, timeout_s=10), viewer.describe_start()
    assert decode_media(viewer.complete_flv(), "flv").video_frames >= 8

    async with here.flv_viewer("cam") as viewer:
        assert await viewer.wait_video_frames(25, timeout_s=10), viewer.describe_start()
        assert _pull(here)["state"] == "live"
        first.kill()  # the encoder restarts: B keeps the stream for its reconnect grace, A's viewer stays
        publish(source, stream_name, media.low, loop=True)
        before = viewer.video_frame_count
        assert await viewer.wait_until(lambda v: v.video_frame_count >= before + 40, timeout_s=12), \
            f"the viewer of the pulled stream stalled after the source's publisher restarted ({before} frames)"
        assert not viewer.done
    report = decode_media(viewer.complete_flv(), "flv")
    assert (report.width, report.height) == (media.low.width, media.low.height), report.summary()
    assert report.video_frames >= before + 30, report.summary()

    await _until(lambda: _pull(here)["state"] == "idle", 6, "the on_demand pull did not stop after its idle grace")
    assert '"relay_pull_stop"' in here.log_text() or "relay_pull_stop" in here.log_text()
    assert stream_name not in here.log_text() and stream_name not in json.dumps(_api(here, "/pulls"))

    # An encoder may not publish the pulled name on A.
    refused = publish(here, "cam", media.low, expect_failure=True)
    assert refused.wait(10) not in (None, 0)


async def test_http_flv_pull_always_retries_while_the_source_is_down(server_factory, publish, media, stream_name,
                                                                     monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    source = server_factory(QUICK)
    publish(source, stream_name, media.low, loop=True)
    here = server_factory(QUICK, **{"relay.pull": _relay(f"http://127.0.0.1:{source.http_port}/live/{stream_name}.flv",
                                                  "always"),
                             "relay.pull_retry_max": "1"})
    # always: the stream is there before any viewer
    await _until(lambda: any(s["name"] == "cam" for s in _api(here, "/streams")["streams"]), 10,
                 "the always pull did not bring the stream in")
    async with here.flv_viewer("cam") as viewer:
        assert await viewer.wait_video_frames(25, timeout_s=10), viewer.describe_start()
    report = decode_media(viewer.complete_flv(), "flv")
    assert report.video_frames >= 20 and report.width == media.low.width, report.summary()

    ports = (source.rtmp_port, source.http_port)
    source.terminate()
    # first the end of the body, then refused connections: retrying, with the reason
    await _until(lambda: "Cannot connect" in _pull(here)["last_error"], 8, "the pull did not say why it retries")
    assert _pull(here)["state"] in ("retrying", "connecting"), _pull(here)

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{here.http_base}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'mediaserver_relay_pull_state{state="live",stream="live/cam"} 0.0' in metrics, metrics[-2000:]
    assert 'mediaserver_relay_pull_bytes_total{stream="live/cam"}' in metrics

    back = start_server(tmp_path / "source-again", QUICK, ports=ports)
    try:
        publish(back, stream_name, media.low, loop=True)
        await _until(lambda: _pull(here)["state"] == "live" and _pull(here)["reconnects"] >= 1, 15,
                     "the pull did not come back with its source")
        async with here.flv_viewer("cam") as viewer:
            assert await viewer.wait_video_frames(25, timeout_s=10), viewer.describe_start()
        assert decode_media(viewer.complete_flv(), "flv").video_frames >= 20
    finally:
        back.terminate()


def _admin(server, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"{server.http_base}/api/v1{path}", method=method,
                                     data=json.dumps(body or {}).encode(),
                                     headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _status(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as resp:
            resp.read(1000)
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


async def test_an_always_rtmp_pull_follows_kicks_at_its_source_and_here_and_keeps_out_while_blocked(
        server_factory, publish, media, stream_name, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    source = server_factory(QUICK)
    publish(source, stream_name, media.low, loop=True)
    here = server_factory(QUICK, **{"relay.pull": _relay(f"rtmp://127.0.0.1:{source.rtmp_port}/live/{stream_name}",
                                                         "always"), "relay.pull_retry_max": "1"})
    await _until(lambda: _pull(here)["state"] == "live", 15, "the always pull did not go live")

    # The source's stream is kicked: the source says so (UnpublishNotify), and the pull starts over at once
    # instead of waiting out its read timeout (10 s) in silence.
    kicked = time.monotonic()
    assert _admin(source, "POST", f"/streams/live/{stream_name}/kick")[0] == 200
    await _until(lambda: "stream ended" in _pull(here)["last_error"], 4, "the pull missed the source's end")
    assert time.monotonic() - kicked < 4
    publish(source, stream_name, media.low, loop=True)
    await _until(lambda: _pull(here)["state"] == "live" and _pull(here)["reconnects"] >= 1, 10,
                 "the pull did not come back with its source")

    # Kicked here without a block: an always pull connects again, as its encoder would.
    assert _admin(here, "POST", "/streams/live/cam/kick")[0] == 200
    await _until(lambda: _pull(here)["state"] == "live" and _pull(here)["reconnects"] >= 2, 10,
                 "the kicked always pull did not start again")

    # Kicked with a block: stopped, and no viewer starts it, until the block is lifted.
    assert _admin(here, "POST", "/streams/live/cam/kick", {"block_seconds": 600})[0] == 200
    await _until(lambda: _pull(here)["state"] == "stopped", 5, "the blocked pull is not stopped")
    assert _status(here.flv_url("cam")) == 404
    await asyncio.sleep(1.5)
    assert _pull(here)["state"] == "stopped", _pull(here)
    assert _admin(here, "DELETE", "/blocks/live/cam")[0] in (200, 204)
    await _until(lambda: _pull(here)["state"] == "live", 12, "the pull did not start once the block was lifted")
