"""/metrics scraped from a live server and parsed with the Prometheus text parser; /healthz and /readyz."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from support.checks import wait_live

ADMIN = "admin-token-e2e-0123456789abcdef"


async def scrape(http: aiohttp.ClientSession, server, headers: dict | None = None) -> dict[tuple, float]:
    async with http.get(f"{server.http_base}/metrics", headers=headers or {}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def get(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_streams_viewers_bytes_and_refusals(server_factory, monkeypatch, publish, media, stream_name):
    monkeypatch.setenv("MEDIASERVER_TOKEN_SECRET", "e2e-token-secret-0123456789abcdef")
    server = server_factory(**{"auth.play_open": "live", "auth.failure_delay_ms": "0"})  # app "closed" needs tokens
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http, server.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_video_frames(10, timeout_s=10)
        async with http.get(server.hls_url(stream_name)) as resp:
            assert resp.status == 200
        async with http.get(f"{server.http_base}/closed/x.flv?token=forged") as resp:
            assert resp.status == 403
        first = await scrape(http, server)
        await asyncio.sleep(1.5)
        second = await scrape(http, server)
    assert get(second, "mediaserver_streams", state="live") == 1
    assert get(second, "mediaserver_viewers", format="flv") >= 1
    assert get(second, "mediaserver_viewers", format="hls") == 1
    assert get(second, "mediaserver_ingress_bytes_total") > get(first, "mediaserver_ingress_bytes_total") > 0
    assert get(second, "mediaserver_egress_bytes_total", format="flv") > get(first, "mediaserver_egress_bytes_total", format="flv")
    assert get(second, "mediaserver_egress_bytes_total", format="hls") > 0
    assert get(second, "mediaserver_auth_failures_total", action="play", reason="malformed") == 1
    assert get(second, "mediaserver_packagers") >= 1
    assert get(second, "mediaserver_frames_dropped_total") == 0
    assert get(second, "mediaserver_event_loop_lag_seconds_count") >= 1
    assert 0 <= get(second, "mediaserver_event_loop_lag_max_seconds") < 1
    assert get(second, "process_resident_memory_bytes") > 10 << 20
    assert get(second, "process_cpu_seconds_total") > 0


async def test_metrics_can_require_the_admin_token(server_factory, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"api.metrics_public": "false"})
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.http_base}/metrics") as resp:
            assert resp.status == 401 and "Bearer" in resp.headers["WWW-Authenticate"]
        samples = await scrape(http, server, {"Authorization": f"Bearer {ADMIN}"})
        assert ("mediaserver_streams", (("state", "live"),)) in samples


async def test_healthz_says_alive_and_readyz_says_what_it_checked(server):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.http_base}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{server.http_base}/readyz") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["ready"] is True
            assert body["checks"]["rtmp"]["ok"] and str(server.rtmp_port) in body["checks"]["rtmp"]["detail"]
