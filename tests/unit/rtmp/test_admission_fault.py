"""A fault while admitting a publish (a bug in the gate or a hook's client) answers the encoder at once with
a refusal and closes, instead of leaving it waiting for the idle deadline."""

from __future__ import annotations

import asyncio

from mediaserver.cli import build_registry
from mediaserver.config import Config, RtmpConfig
from mediaserver.rtmp.server import RtmpConnection, RtmpServer

from support.rtmp_bytes import StubTransport, publishing_client


class Capture(StubTransport):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data) -> None:
        super().write(data)
        self.data += data

    def writelines(self, parts) -> None:
        for part in parts:
            self.write(part)


async def test_a_fault_in_publish_admission_refuses_the_encoder_at_once(caplog):
    server = RtmpServer(RtmpConfig(), build_registry(Config()))

    async def broken(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    server.gate.admit_publish = broken
    conn = RtmpConnection(server, 1)
    transport = Capture()
    conn.connection_made(transport)
    _, setup = publishing_client("live", "cam")
    for data in setup:
        conn.data_received(data)
    for _ in range(20):
        await asyncio.sleep(0)
    assert conn.stream is None
    # The refusal's onStatus (its AMF strings are plain in the chunk stream), then the connection closes.
    assert b"NetStream.Publish.BadName" in transport.data and b"internal error" in transport.data
    assert "admitting the publish of cam failed" in caplog.text
