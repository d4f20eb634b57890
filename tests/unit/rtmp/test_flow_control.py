"""An RTMP connection is read only as fast as it may be: a peer that reads none of the server's answers is not
read either (its commands would grow the send buffer without bound: 5.7 GB in 15 s), and a flood of tiny
messages is read at rtmp.max_messages_per_s (it held the event loop for minutes). Real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket

from mediaserver.cli import build_registry
from mediaserver.config import Config, RtmpConfig
from mediaserver.hub.stream import StreamKey
from mediaserver.rtmp.server import RtmpServer
from support.rtmp_bytes import publishing_client
from support.server import free_port


async def serving(cfg: RtmpConfig) -> tuple[RtmpServer, asyncio.StreamReader, asyncio.StreamWriter]:
    server = RtmpServer(cfg, build_registry(Config()))
    await server.start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # the answers back up sooner
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", cfg.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    return server, reader, writer


async def wait_for(predicate, timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def publishing(server: RtmpServer, writer: asyncio.StreamWriter, name: str):
    """Publish live/NAME on `writer`'s connection; the client session, once the hub has the stream."""
    client, setup = publishing_client("live", name)
    for data in setup:
        writer.write(data)
    await writer.drain()
    assert await wait_for(lambda: server.registry.get(StreamKey("live", name)) is not None, 5.0)
    return client


async def test_a_peer_that_reads_none_of_the_answers_is_read_no_further_and_times_out():
    cfg = RtmpConfig(bind="127.0.0.1", port=free_port(), connect_timeout=2.0, idle_timeout=1.0)
    server, _reader, writer = await serving(cfg)
    try:
        client = await publishing(server, writer, "cam")
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        stalled = False
        while loop.time() < end:
            client.call("FCPublish", None, "k" * 60_000)  # answered with onFCPublish, which repeats the name
            writer.write(client.data_to_send())
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                stalled = True  # the server stopped reading us
                break
        assert stalled, "the server read a peer that reads nothing for 10 s"
        (conn,) = server.connections
        assert conn.transport.get_write_buffer_size() < 4 * 1024 * 1024
        # Nothing more is read from it, so its idle clock runs out.
        assert await wait_for(lambda: not server.connections, 5.0)
    finally:
        writer.transport.abort()
        await server.close()


async def test_a_flood_of_tiny_messages_is_read_at_the_allowed_rate_and_none_is_lost():
    cfg = RtmpConfig(bind="127.0.0.1", port=free_port(), max_messages_per_s=2_000)  # bursts of 10,000 pass
    server, _reader, writer = await serving(cfg)
    try:
        client = await publishing(server, writer, "tiny")
        key = StreamKey("live", "tiny")
        client.send_audio(0, b"\xaf\x00\x12\x10")
        for i in range(14_000):
            client.send_audio(1 + i // 1000, b"\xaf\x01\x00")  # 3-byte frames, as a flood sends them
        started = asyncio.get_running_loop().time()
        writer.write(client.data_to_send())
        await writer.drain()
        stream = server.registry.get(key)
        await asyncio.sleep(0.5)
        elapsed = asyncio.get_running_loop().time() - started
        assert stream.frames_in <= 10_000 + 2_000 * (elapsed + 0.3) + 10
        # The rest is read as the allowance comes back: nothing is dropped.
        assert await wait_for(lambda: stream.frames_in >= 14_001, 10.0), stream.frames_in
    finally:
        writer.transport.abort()
        await server.close()


async def test_a_message_trickled_a_byte_at_a_time_is_idle():
    """A partial message held open by a byte now and then (each connection may hold up to twice
    rtmp.max_message_size of them) completes nothing: the idle clock runs out as for silence."""
    cfg = RtmpConfig(bind="127.0.0.1", port=free_port(), connect_timeout=2.0, idle_timeout=1.0)
    server, _reader, writer = await serving(cfg)
    try:
        client = await publishing(server, writer, "trickle")
        client.send_video(0, b"\x17\x01\x00\x00\x00" + b"\x00" * 1_000_000)
        pending = client.data_to_send()
        writer.write(pending[:200_000])
        sent = 200_000
        loop = asyncio.get_running_loop()
        end = loop.time() + 6
        while server.connections and loop.time() < end:
            writer.write(pending[sent:sent + 1])  # a byte every 0.3 s: never silent, never done
            sent += 1
            await asyncio.sleep(0.3)
        assert not server.connections, "a connection completing no message was kept for 6 s"
    finally:
        writer.transport.abort()
        await server.close()
