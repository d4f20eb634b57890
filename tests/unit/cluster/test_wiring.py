"""The cluster's wiring in the composition root: the one start-up warning about the advertised URL."""

from __future__ import annotations

import logging

import pytest

from mediaserver.cli import build_registry
from mediaserver.wiring.cluster import ClusterWiring
from mediaserver.config import load_config
from support.redis_server import RedisServer

SECRET = "wiring-secret-0123456789abcdef"


async def _warnings(redis: RedisServer, caplog, **settings: str) -> list[str]:
    config = load_config(None, [f"cluster.redis_url={redis.url}", *(f"{k}={v}" for k, v in settings.items())])
    wiring = ClusterWiring(config, build_registry(config), {"MEDIASERVER_CLUSTER_SECRET": SECRET})
    caplog.clear()
    with caplog.at_level(logging.INFO):
        await wiring.start()
        await wiring.close()
    return [f"{r.getMessage()} {getattr(r, 'fields', {})}" for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("role", ["origin", "both"])
async def test_an_origin_advertising_its_bare_hostname_warns_once_naming_the_key(redis, caplog, role):
    found = await _warnings(redis, caplog, **{"cluster.role": role, "http.bind": "0.0.0.0"})
    assert len([w for w in found if "cluster.advertise_url" in w]) == 1, found


@pytest.mark.parametrize("settings", [
    {"cluster.role": "origin", "http.bind": "0.0.0.0", "cluster.advertise_url": "http://10.0.0.5:8080"},
    {"cluster.role": "origin", "http.bind": "10.0.0.5"},  # the address it listens on is what it advertises
    {"cluster.role": "edge", "http.bind": "0.0.0.0"},  # nobody pulls from a plain edge
])
async def test_no_warning_when_the_advertised_url_is_set_or_not_needed(redis, caplog, settings):
    found = await _warnings(redis, caplog, **settings)
    assert not [w for w in found if "advertise_url" in w], found
