"""A cheap RTMP target for push benchmarks, run as a process of its own so its CPU is not the server's.

Accepts every publish (our sans-IO ServerSession answers the handshake and commands), drops the media and
counts, per stream name: bytes received on the socket, audio/video/metadata bytes, connections. Prints its
port on the first stdout line, then one JSON line a second: {"t": monotonic, "keys": {NAME: {...}}}.
Stops on end of stdin.

    python bench/_rtmp_sink.py [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediaserver.rtmp import events as ev  # noqa: E402
from mediaserver.rtmp.session import ServerSession  # noqa: E402


class KeyStats:
    __slots__ = ("bytes", "media_bytes", "frames", "connections", "open")

    def __init__(self) -> None:
        self.bytes = self.media_bytes = self.frames = self.connections = self.open = 0

    def as_dict(self) -> dict:
        return {"bytes": self.bytes, "media_bytes": self.media_bytes, "frames": self.frames,
                "connections": self.connections, "open": self.open}


class SinkConnection(asyncio.Protocol):
    def __init__(self, keys: dict[str, KeyStats]) -> None:
        self.keys = keys
        self.session = ServerSession()
        self.stats: KeyStats | None = None
        self.pending = 0  # bytes read before the publish named its stream
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.stats is not None:
            self.stats.bytes += len(data)
        else:
            self.pending += len(data)
        try:
            self.session.receive_data(data)
        except Exception:  # a protocol error: this connection is done
            self.transport.close()
            return
        for e in self.session.events():
            if isinstance(e, (ev.VideoReceived, ev.AudioReceived, ev.MetadataReceived)):
                if self.stats is not None:
                    self.stats.media_bytes += len(e.body) if hasattr(e, "body") else 0
                    self.stats.frames += 1
            elif isinstance(e, ev.PublishRequested):
                self.stats = self.keys.setdefault(e.name, KeyStats())
                self.stats.connections += 1
                self.stats.open += 1
                self.stats.bytes += self.pending
                self.session.accept_publish(e.request_id)
        out = self.session.data_to_send()
        if out:
            self.transport.write(out)

    def connection_lost(self, exc) -> None:
        if self.stats is not None:
            self.stats.open -= 1


async def run(port: int) -> None:
    keys: dict[str, KeyStats] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkConnection(keys), "127.0.0.1", port)
    print(server.sockets[0].getsockname()[1], flush=True)
    stdin_done = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: stdin_done.done() or (
        not sys.stdin.buffer.raw.read(4096) and stdin_done.set_result(None)))
    while not stdin_done.done():
        print(json.dumps({"t": time.monotonic(), "keys": {k: s.as_dict() for k, s in keys.items()}}), flush=True)
        await asyncio.wait([stdin_done], timeout=1.0)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(run(parser.parse_args().port))


if __name__ == "__main__":
    main()
