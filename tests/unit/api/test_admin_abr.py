"""The admin API's ABR routes without a worker: a node without a pool says so, the status of a stream
that is not transcoded says whether ABR applies, refusals carry their reason, stopping nothing is 404."""

from __future__ import annotations

import dataclasses

from aiohttp.test_utils import TestClient, TestServer

from mediaserver.api.admin import AdminDeps, make_admin_app
from mediaserver.auth.policy import AccessPolicy
from mediaserver.config import AbrConfig
from mediaserver.hub.registry import StreamRegistry
from mediaserver.transcode.pool import TranscodePool

TOKEN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def client_for(abr: TranscodePool | None, registry: StreamRegistry) -> TestClient:
    client = TestClient(TestServer(make_admin_app(AdminDeps(registry, AccessPolicy(), TOKEN, abr=abr))))
    await client.start_server()
    return client


async def test_abr_routes():
    registry = StreamRegistry()
    client = await client_for(None, registry)
    try:
        resp = await client.get("/streams/live/demo/abr", headers=AUTH)
        assert resp.status == 404 and "no transcodes" in (await resp.json())["error"]
    finally:
        await client.close()

    pool = TranscodePool(registry, dataclasses.replace(AbrConfig(), apps=("live",)), command=["false"])
    client = await client_for(pool, registry)
    try:
        resp = await client.get("/streams/live/demo/abr", headers=AUTH)
        assert resp.status == 200 and await resp.json() == {"running": False, "enabled": True, "source": "live/demo"}
        resp = await client.get("/streams/studio/demo/abr", headers=AUTH)
        assert (await resp.json())["enabled"] is False
        resp = await client.post("/streams/live/demo/abr", headers=AUTH)
        body = await resp.json()
        assert resp.status == 404 and body["reason"] == "no_source" and "publish it" in body["hint"]
        resp = await client.delete("/streams/live/demo/abr", headers=AUTH)
        assert resp.status == 404
        resp = await client.post("/streams/live/demo@360p/abr", headers=AUTH)
        assert resp.status == 400  # a rendition has no ladder of its own
        resp = await client.get("/streams/live/demo/abr")
        assert resp.status == 401
    finally:
        await client.close()
        await pool.close()
