"""Push (restream), in one run to keep it cheap: a stream published to server A is pushed over RTMPS (B's
certificate verified) to server B (another process of ours) and decodes there; the admin API refuses bad URLs and loops, and a push B refuses
(the name is taken) shows B's reason; B stopping to read does not delay A's own viewer; B killed and
started again on the same port gets the push back."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import aiohttp

from mediaserver.relay.loop import this_host
from support.certs import make_cert
from support.checks import is_media, largest_gap_ms, wait_live
from support.decode import decode_media
from support.nginx_rtmp import NginxRtmp
from support.server import ServerProcess

ADMIN = "admin-token-relay-0123456789abcdef"
QUICK = {"record.mode": "off"}  # no catalog to open: the servers start faster
AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def api(http: aiohttp.ClientSession, server, method: str, path: str, **kwargs) -> tuple[int, dict]:
    async with http.request(method, f"{server.http_base}/api/v1{path}", headers=AUTH, **kwargs) as resp:
        return resp.status, await resp.json()


async def relay_state(http, server, name: str, want: str, timeout_s: float) -> dict:
    """Poll A's relays of live/NAME until one is in state `want`; returns it."""
    deadline = time.monotonic() + timeout_s
    relays: list = []
    while time.monotonic() < deadline:
        status, body = await api(http, server, "GET", f"/streams/live/{name}/relays")
        relays = body.get("relays", []) if status == 200 else []
        for relay in relays:
            if relay["state"] == want:
                return relay
        await asyncio.sleep(0.2)
    raise AssertionError(f"no relay of live/{name} became {want} within {timeout_s} s: {relays}")


async def decodes_from(server: ServerProcess, name: str, seconds: float = 0.5) -> None:
    async with server.flv_viewer(name) as viewer:
        await viewer.wait_video_frames(20, timeout_s=10)
        await asyncio.sleep(seconds)
    report = decode_media(viewer.complete_flv(), "flv")
    assert report.video_frames >= 20 and not report.errors, report.summary()
    assert report.first_video_frame_key, "the pushed stream must start at a keyframe"
    assert report.audio_frames > 0, report.summary()


async def test_push_to_another_server_api_refusals_a_stuck_and_a_restarted_target(
        server_factory, publish, media, stream_name, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    monkeypatch.setenv("RELAY_TEST_KEY", f"{stream_name}-b?secret=s3cr3t")
    cert = make_cert(tmp_path / "cert")
    tls = {"rtmps.cert_file": str(cert.cert_file), "rtmps.key_file": str(cert.key_file)}
    target = server_factory(**QUICK, **tls)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert.cert_file))  # A trusts B's certificate (default verification)
    source = server_factory(**QUICK, **{
        "relay.push": f'[{{app = "live", url = "rtmps://127.0.0.1:{target.rtmps_port}/live/${{RELAY_TEST_KEY}}"}}]',
        "relay.push_retry_max": "1", "relay.push_write_timeout": "2", "relay.push_connect_timeout": "3",
    })
    pushed = f"{stream_name}-b"
    relays = f"/streams/live/{stream_name}/relays"
    async with aiohttp.ClientSession() as http:
        status, body = await api(http, source, "POST", relays, json={"url": "rtmp://127.0.0.1:1/live/x"})
        assert status == 404 and "publish" in body["hint"], body
        publish(source, stream_name, media.av, loop=True)
        await wait_live(target, pushed, timeout_s=15)
        await decodes_from(target, pushed)
        relay = await relay_state(http, source, stream_name, "live", 5)
        assert relay["source"] == "config" and relay["url"] == f"rtmps://127.0.0.1:{target.rtmps_port}/live/***", relay
        assert relay["bytes"] > 0 and relay["reconnects"] == 0

        # The API: bad URLs and loops refused; a target that refuses (B has that name published already).
        for bad in ("http://a.example/live/key", "rtmp://", "rtmp://host/only-app", 12, "rtmp://h:99999/a/b"):
            status, body = await api(http, source, "POST", relays, json={"url": bad})
            assert status == 400 and "rtmp" in (body["error"] + body["hint"]), (bad, body)
        local = [a for a in this_host() if ":" not in a and not a.startswith("127.")][:1]  # an interface's address
        for loop_url in (f"rtmp://127.0.0.1:{source.rtmp_port}/live/{stream_name}",
                         f"rtmp://localhost:{source.rtmp_port}/live/{stream_name}?x=1",
                         f"rtmp://{socket.gethostname()}:{source.rtmp_port}/live/{stream_name}",
                         *(f"rtmp://{a}:{source.rtmp_port}/live/{stream_name}" for a in local)):
            status, body = await api(http, source, "POST", relays, json={"url": loop_url})
            assert status == 400 and "loop" in body["error"], body
        status, added = await api(http, source, "POST", relays,
                                  json={"url": f"rtmp://127.0.0.1:{target.rtmp_port}/live/{pushed}?k=hidden"})
        assert status == 200 and added["source"] == "api" and "hidden" not in added["url"], added
        refused = await relay_state(http, source, stream_name, "retrying", 10)
        assert refused["id"] == added["id"] and "NetStream.Publish.BadName" in refused["error"], refused
        status, body = await api(http, source, "DELETE", f"{relays}/{added['id']}")
        assert status == 200 and body["state"] == "stopped", body
        status, body = await api(http, source, "DELETE", f"{relays}/{added['id']}")
        assert status == 404
        status, body = await api(http, source, "GET", relays)
        assert [r["id"] for r in body["relays"]] == ["config-0"], body

        # B stops reading (SIGSTOP): A's own viewer goes on without a stall. Then B is killed: the push retries.
        async with source.flv_viewer(stream_name) as viewer:
            await viewer.wait_video_frames(5, timeout_s=10)
            os.kill(target.pid, signal.SIGSTOP)
            stuck_at = time.monotonic()
            try:
                await asyncio.sleep(2.0)
            finally:
                target.kill()
            times = [int(t * 1000) for t, tag in zip(viewer.arrivals, viewer.tags) if is_media(tag)
                     and t >= stuck_at]
        assert len(times) > 20 and largest_gap_ms(times) < 1000, f"A's viewer stalled: {largest_gap_ms(times)} ms"
        retrying = await relay_state(http, source, stream_name, "retrying", 10)
        assert retrying["error"], retrying

        # B started again on the same ports: the push comes back and decodes there.
        again = ServerProcess(tmp_path / "target-again", {**QUICK, **tls, "rtmps.port": str(target.rtmps_port)},
                              ports=(target.rtmp_port, target.http_port))
        try:
            await wait_live(again, pushed, timeout_s=15)
            await decodes_from(again, pushed, seconds=0)
            relay = await relay_state(http, source, stream_name, "live", 5)
            assert relay["reconnects"] >= 1, relay
            async with http.get(f"{source.http_base}/metrics") as resp:
                metrics = await resp.text()
        finally:
            again.terminate()
        labels = f'relay="config-0",stream="live/{stream_name}"'
        assert f'mediaserver_relay_state{{relay="config-0",state="live",stream="live/{stream_name}"}} 1.0' \
            in metrics, metrics[-3000:]
        assert f'mediaserver_relay_reconnects_total{{{labels}}}' in metrics
        assert 'mediaserver_relays{state="live"} 1.0' in metrics
    log = source.log_text()
    assert "s3cr3t" not in log and pushed not in log and "hidden" not in log
    source.check()


async def test_push_to_a_real_nginx_rtmp_decodes_there(server_factory, publish, media, stream_name, tmp_path, ffmpeg):
    nginx = NginxRtmp(tmp_path / "nginx")
    try:
        source = server_factory(**QUICK, **{"relay.push": f'[{{app = "live", url = "{nginx.url(stream_name)}"}}]'})
        publish(source, stream_name, media.av, loop=True)
        await wait_live(source, stream_name)
        out = tmp_path / "from-nginx.flv"
        # Played back from nginx by ffmpeg (-c copy) for 2 s: what nginx received from our push.
        for _ in range(20):
            proc = await asyncio.create_subprocess_exec(
                ffmpeg, "-hide_banner", "-loglevel", "error", "-rw_timeout", "5000000", "-i", nginx.url(stream_name),
                "-t", "2", "-c", "copy", "-f", "flv", "-y", str(out),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
            if proc.returncode == 0 and out.stat().st_size > 10_000:
                break
            await asyncio.sleep(0.3)  # the push not there yet
        else:
            raise AssertionError(f"ffmpeg could not play the push from nginx: {err.decode()[-500:]}\n{nginx.log_text()}")
        report = decode_media(out.read_bytes(), "flv")
        assert report.video_frames >= 20 and report.audio_frames > 0 and not report.errors, report.summary()
        assert report.first_video_frame_key, report.summary()
    finally:
        nginx.stop()
    source.check()
