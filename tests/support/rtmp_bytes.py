"""A publisher's RTMP bytes without a socket: our client session driven through the handshake and the publish
command sequence against a server session that accepts, so a test or bench can feed those exact reads to the
server's own connection object (`RtmpConnection.data_received`) and then the client's media messages."""

from __future__ import annotations

import asyncio

from mediaserver.rtmp import events as ev
from mediaserver.rtmp.client import ClientSession
from mediaserver.rtmp.session import ServerSession


def publishing_client(app: str, name: str) -> tuple[ClientSession, list[bytes]]:
    """(a client session publishing APP/NAME, ready for send_video/send_audio; the reads a server gets before
    the first media message: handshake, connect, createStream, publish)."""
    client, server = ClientSession(), ServerSession()
    setup: list[bytes] = []

    def pump() -> None:
        for _ in range(10):
            sent = client.data_to_send()
            if sent:
                setup.append(sent)
                server.receive_data(sent)
            answer = server.data_to_send()
            if answer:
                client.receive_data(answer)
            for e in server.events():
                if isinstance(e, ev.PublishRequested):
                    server.accept_publish(e.request_id)
            client.events()
            if not sent and not answer:
                return

    pump()
    client.connect(app, f"rtmp://127.0.0.1/{app}")
    pump()
    client.publish(name)
    pump()
    return client, setup


class StubTransport:
    """Enough of a transport for RtmpConnection: counts what is written and records pause/resume_reading."""

    def __init__(self) -> None:
        self.written = 0
        self.paused = False
        self.resumes = 0

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        self.resumes += 1


async def published(conn, transport, setup: list[bytes]) -> None:
    """Feed `conn` (an RtmpConnection) the reads `setup` of publishing_client on `transport`, and let the gate
    accept the publish (it answers in a task of its own)."""
    conn.connection_made(transport)
    for data in setup:
        conn.data_received(data)
    await asyncio.sleep(0)
    assert conn.stream is not None, "the publish request was not accepted"
