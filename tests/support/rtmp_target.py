"""An in-process RTMP target for push tests: our sans-IO ServerSession on a loopback socket, accepting (or
refusing) each publish and recording the media it receives; and a stand-in publisher for the hub."""

from __future__ import annotations

import asyncio

from mediaserver.rtmp import events as ev
from mediaserver.rtmp.session import ServerSession


class Publisher:
    peer = "127.0.0.1:1"

    def close(self, reason: str) -> None:
        pass


class LoopbackServer:
    """A TCP server on 127.0.0.1 whose `_serve` takes each connection; counts them."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


class Target(LoopbackServer):
    """Accepts one publish at a time (or refuses with `refuse`) and records what arrives."""

    def __init__(self, refuse: str | None = None) -> None:
        super().__init__()
        self.refuse = refuse
        self.received: list[ev.Event] = []
        self.keys: list[str] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        session = ServerSession()
        try:
            while data := await reader.read(65536):
                session.receive_data(data)
                for e in session.events():
                    if isinstance(e, ev.PublishRequested):
                        self.keys.append(e.name + (f"?{e.query}" if e.query else ""))
                        if self.refuse:
                            session.reject_publish(e.request_id, "NetStream.Publish.BadName", self.refuse)
                        else:
                            session.accept_publish(e.request_id)
                    elif isinstance(e, (ev.VideoReceived, ev.AudioReceived, ev.MetadataReceived, ev.PublishFinished)):
                        self.received.append(e)
                writer.write(session.data_to_send())
        except ConnectionError:
            pass
        finally:
            writer.close()

    def media(self) -> list[ev.Event]:
        return [e for e in self.received if not isinstance(e, ev.PublishFinished)]


async def until(predicate, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)
