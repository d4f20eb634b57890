"""The HTTP listener's connection gate: caps on open connections, in total and per client address, and a
deadline for the first request head, enforced where a connection is accepted (issue 9, defect 5).

aiohttp alone keeps a connection that never sends a complete request head for an hour (its keep-alive
timer is armed at accept with `keepalive_timeout`, 3630 s by default), and accepts connections until the
process runs out of file descriptors. Here every accepted socket is counted before aiohttp parses a byte:

- over `max_connections` (in total) or `max_connections_per_ip` (one client address, normalized as the
  other limits do), the socket gets a short 503 and is closed at once, before any parsing;
- a connection whose first request head has not been parsed `header_timeout` seconds after accept is
  aborted (a client trickling its head one byte at a time, or sending nothing). Once a head is parsed the
  deadline is gone: an FLV or WebSocket response may last for hours. Later requests on a kept-alive
  connection are bounded by aiohttp's keep-alive timer (`keepalive_timeout`), which closes a connection
  that waits for a request that long, complete head or not. aiohttp (3.14 at least) arms that timer at accept
  too, so with a keep-alive shorter than the head deadline it closes silent connections first, uncounted.

Each refusal and each missed deadline is counted by reason (`/metrics`) and logged once per interval per
reason and address. `ConnectionGate` is the pure bookkeeping; `GuardedRequestHandler` (aiohttp's protocol
with the gate's hooks) and `GuardedSite` (the listening socket) are the asyncio side.

Relies on one private attribute of aiohttp's RequestHandler, `_request_count` (requests parsed on the
connection), to see that the first head arrived; tests/e2e/test_http_hardening.py catches a change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..auth.tokens import normalize_address
from ..log import LogGate, event
from ..tls import TlsCertificate
from .fastlane import FAST_LANE, FastLane
from .stuck import StuckWriters

log = logging.getLogger(__name__)

MAX_CONNECTIONS = "max_connections"
MAX_PER_IP = "max_connections_per_ip"
HEADER_TIMEOUT = "header_timeout"
LANE_WAITING_MAX = 64 * 1024
"""Bytes a connection may send behind a request the fast lane holds (an LL-HLS blocking reload) before its
reading pauses until the answer: players send nothing meanwhile, a pipelining client a few heads."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    """Open HTTP connections in all; 0 is no cap."""
    max_per_address: int
    """Open HTTP connections from one client address; 0 is no cap."""
    header_timeout_s: float
    """Seconds from accept to the first complete request head."""
    write_timeout_s: float = 0.0
    """http.write_timeout: a connection whose queued answer loses no byte for twice this is reset; 0: never."""


class ConnectionGate:
    """Counts open connections per client address and says which to refuse. Pure: no sockets, no clock."""

    REASONS = (MAX_CONNECTIONS, MAX_PER_IP, HEADER_TIMEOUT)

    def __init__(self, limits: ConnectionLimits, log_interval_s: float = 10.0,
                 uncapped: Callable[[str], bool] | None = None) -> None:
        self.limits = limits
        self._uncapped = uncapped
        """Addresses the per-address cap spares: trusted reverse proxies, whose connections are many viewers'."""
        self.open = 0
        self.refused: Counter[str] = Counter()
        """Refused connections and missed head deadlines, by reason (REASONS)."""
        self._by_address: dict[str, int] = {}
        self.log_gate = LogGate(log_interval_s)
        self._answers = {reason: _refusal_answer(reason, limits) for reason in (MAX_CONNECTIONS, MAX_PER_IP)}

    def opened(self, address: str) -> str | None:
        """Count a new connection from `address`; or refuse it (not counted) and say which cap it hit."""
        limits = self.limits
        if limits.max_connections and self.open >= limits.max_connections:
            self.refused[MAX_CONNECTIONS] += 1
            return MAX_CONNECTIONS
        count = self._by_address.get(address, 0)
        if limits.max_per_address and count >= limits.max_per_address and not (self._uncapped and self._uncapped(address)):
            self.refused[MAX_PER_IP] += 1
            return MAX_PER_IP
        self._by_address[address] = count + 1
        self.open += 1
        return None

    def closed(self, address: str) -> None:
        """A connection `opened` admitted has closed."""
        self.open -= 1
        count = self._by_address.get(address, 0) - 1
        if count > 0:
            self._by_address[address] = count
        else:
            self._by_address.pop(address, None)

    def connections_from(self, address: str) -> int:
        return self._by_address.get(address, 0)

    def head_timed_out(self) -> None:
        self.refused[HEADER_TIMEOUT] += 1

    def answer(self, reason: str) -> bytes:
        """The complete HTTP response a connection refused for `reason` gets before it is closed."""
        return self._answers[reason]


def _refusal_answer(reason: str, limits: ConnectionLimits) -> bytes:
    if reason == MAX_PER_IP:
        body = {"error": f"too many connections from your address (http.max_connections_per_ip = "
                         f"{limits.max_per_address})",
                "hint": "close idle connections and retry; behind a proxy, ask the operator to raise the cap"}
    else:
        body = {"error": f"the server has too many connections (http.max_connections = {limits.max_connections})",
                "hint": "retry in a few seconds"}
    data = json.dumps(body).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Retry-After: 5\r\nConnection: close\r\n\r\n").encode()
    return head + data


@dataclass(frozen=True, slots=True)
class HandOff:
    """[server] workers > 1: connections asking for what a sibling worker serves are handed to it."""

    target: Callable[[bytes], int | None]
    """The sibling worker to hand a connection to, given the complete request head just read from it; None
    keeps it here. Asked of every request between requests: cheap."""
    send: Callable[[int, int, bytes], bool]
    """Hand (worker, the connection's descriptor, the bytes read) over; False when the sibling cannot take it."""


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, admitted by the gate and held to the request-head deadline."""

    def __init__(self, manager: web.Server, gate: ConnectionGate, lane: FastLane | None = None,
                 handoff: HandOff | None = None, handed: bytes | None = None, stuck: StuckWriters | None = None,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._lane = lane
        self._stuck = stuck
        """Watches what aiohttp leaves queued (http.write_timeout); None: no deadline."""
        self._handoff = handoff if handed is None else None  # a connection handed over is never handed on
        self._handed = handed
        """The bytes a sibling worker read from this connection before it handed it over (workers)."""
        self._lane_clean = True  # what aiohttp's parser got last ended a bodyless head
        self._lane_waiting: list[bytes] | None = None  # bytes behind a request the lane holds
        self._lane_waiting_size = 0
        self._lane_paused = False  # reading paused while the lane holds a request (LANE_WAITING_MAX)
        self._gone = False
        """Handed to a sibling worker: nothing more of it is this process's to answer."""
        self._gate = gate
        self._address = ""
        self._admitted = False
        self._raw_transport: asyncio.Transport | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self.made = False
        """connection_made was called (over HTTPS: the TLS handshake succeeded)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        peer = transport.get_extra_info("peername")
        self._address = normalize_address(str(peer[0])) if isinstance(peer, tuple) else ""
        gate = self._gate
        refused = gate.opened(self._address)
        if refused is not None:
            # Refused before aiohttp sees the connection: a short answer, then the socket is closed.
            cast(asyncio.Transport, transport).write(gate.answer(refused))  # uvloop's is no asyncio subclass
            transport.close()
            _log_refusal(gate, refused, self._address)
            return
        self._admitted = True
        self._raw_transport = transport  # type: ignore[assignment]
        super().connection_made(transport)
        self._head_timer = self._loop.call_later(gate.limits.header_timeout_s, self._head_missed)
        if self._handed is not None:
            handed, self._handed = self._handed, None
            self.data_received(handed)

    def data_received(self, data: bytes) -> None:
        if not self._admitted or self._gone:
            return
        if self._lane is not None or self._handoff is not None:
            if self._lane_waiting is not None:
                self._lane_waiting.append(data)  # answered after the held request, in order
                self._lane_waiting_size += len(data)
                if self._lane_waiting_size > LANE_WAITING_MAX and not self._lane_paused and self._raw_transport:
                    self._lane_paused = True  # a client pipelining while it waits sends no more until then
                    self._raw_transport.pause_reading()
                return
            if self._lane_clean and self._aiohttp_idle():
                if self._handoff is not None and self._hand_off(data):
                    return
                if self._lane is not None and self._lane.take(self, data):
                    return
            self._lane_clean = ends_bodyless_head(data)
        super().data_received(data)
        if self._head_timer is not None and self._request_count:
            self._head_timer.cancel()
            self._head_timer = None

    def _hand_off(self, data: bytes) -> bool:
        """Give the connection, with the request `data` just read, to the sibling worker `_handoff` names (it
        answers from then on); False keeps it here. Only between requests, with nothing left to write."""
        handoff = self._handoff
        target = handoff.target(data) if handoff is not None else None
        if target is None:
            return False
        transport = self._raw_transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size():
            return False
        sock = transport.get_extra_info("socket")
        if sock is None or not handoff.send(target, sock.fileno(), data):
            return False
        self._gone = True
        transport.abort()  # this process's descriptor only: the socket lives on in the sibling
        return True

    # ----- the fast lane (fastlane.py) ------------------------------------------------------------

    def _aiohttp_idle(self) -> bool:
        """aiohttp waits for this connection's next request, and has nothing of it yet; or it has had no
        request on this connection at all (its task may not have reached its wait when the first request
        arrives: nothing of aiohttp's can be in flight then either)."""
        waiter = self._waiter
        if waiter is None:
            waiting = self._request_count == 0
        else:
            waiting = not waiter.done()
        return (waiting and not self._messages and self._payload_parser is None
                and not self._upgraded and not self._force_close and not self._close)

    @property
    def lane_address(self) -> str:
        return self._address

    def lane_answered(self) -> None:
        """The lane answered a request: its head arrived, and the connection is alive for another keep-alive."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._keep_alive_until(self._loop.time() + self._keepalive_timeout)

    def lane_hold(self, deadline: float) -> None:
        """The lane holds a request (a blocking reload) until `deadline`: its head arrived whole, so the head
        deadline no longer applies (it would reset a connection whose first request waits that long)."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._lane_waiting = []
        self._lane_waiting_size = 0
        self._keep_alive_until(deadline + self._keepalive_timeout)

    def lane_release(self) -> None:
        """The held request is answered: what came behind it is taken now, as one read (so that a hand-off
        takes all of it to the sibling, not only its first piece)."""
        waiting, self._lane_waiting = self._lane_waiting, None
        if self._lane_paused:
            self._lane_paused = False
            transport = self._raw_transport
            if transport is not None and not transport.is_closing() and not (
                    self._reading_paused or self._buffer_paused):  # unless aiohttp holds it too
                transport.resume_reading()
        if waiting:
            self.data_received(waiting[0] if len(waiting) == 1 else b"".join(waiting))

    def _keep_alive_until(self, when: float) -> None:
        # aiohttp's keep-alive timer closes a connection idle that long; lane answers count as activity.
        if self._keepalive_timeout > 0 and when > self._next_keepalive_close_time:
            self._next_keepalive_close_time = when
            if self._keepalive_handle is None:
                self._keepalive_handle = self._loop.call_at(when, self._process_keepalive)

    def pause_writing(self) -> None:
        super().pause_writing()
        # aiohttp waits for a drain with no deadline: a reader that takes nothing of an answer (a playlist or
        # segment the full stack serves) would keep its connection and the kernel's send queue for ever. Reset
        # after twice http.write_timeout without progress.
        if self._stuck is not None and self._raw_transport is not None:
            self._stuck.wrote(self._raw_transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._gate.closed(self._address)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._raw_transport = None
        self._lane_waiting = None
        super().connection_lost(exc)

    def _head_missed(self) -> None:
        self._head_timer = None
        if self._raw_transport is None or self._request_count:
            return
        self._gate.head_timed_out()
        _log_refusal(self._gate, HEADER_TIMEOUT, self._address)
        self._raw_transport.abort()  # nothing to flush: the peer has not even finished asking


def ends_bodyless_head(data: bytes) -> bool:
    """Whether `data`, given to aiohttp's parser, leaves it between requests: it ends a head of a request
    that has no body (heads split over several reads, or with a body, leave the lane off the connection)."""
    if not data.endswith(b"\r\n\r\n") or not data.startswith((b"GET ", b"HEAD ", b"OPTIONS ")):
        return False
    lower = data.lower()
    return b"content-length" not in lower and b"transfer-encoding" not in lower and b"upgrade" not in lower


def _log_refusal(gate: ConnectionGate, reason: str, address: str) -> None:
    count = gate.log_gate.should_log((reason, address), time.monotonic())
    if not count:
        return
    limits = gate.limits
    if reason == HEADER_TIMEOUT:
        event(log, "http_header_timeout", logging.WARNING, peer=address, timeout_s=limits.header_timeout_s,
              closed=count, hint="a client opened connections without sending a request; raise "
                                 "http.header_timeout only for very slow links")
    elif reason == MAX_PER_IP:
        event(log, "http_connection_refused", logging.WARNING, limit="http.max_connections_per_ip", peer=address,
              maximum=limits.max_per_address, refused=count)
    else:
        event(log, "http_connection_refused", logging.WARNING, limit="http.max_connections", peer=address,
              current=gate.open, maximum=limits.max_connections, refused=count)


class GuardedSite(web.BaseSite):
    """A TCP listening socket whose connections go through the gate (aiohttp's TCPSite, guarded)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, gate: ConnectionGate,
                 handler_args: dict[str, Any], backlog: int = 1024, tls: TlsCertificate | None = None,
                 reuse_port: bool = False, handoff: HandOff | None = None) -> None:
        super().__init__(runner, backlog=backlog, ssl_context=tls.context if tls else None)
        self._tls = tls
        self._handoff = handoff if tls is None else None  # a TLS session cannot change process
        self._reuse_port = reuse_port
        """[server] workers > 1: every worker binds the port, the kernel spreads connections among them."""
        self._host = host
        self._port = port
        self._gate = gate
        self._handler_args = handler_args
        self._accepted: Callable[[bytes | None], GuardedRequestHandler] | None = None

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        gate, args, tls = self._gate, self._handler_args, self._tls
        lane = self._runner.app.get(FAST_LANE) if isinstance(self._runner, web.AppRunner) else None
        handoff = self._handoff
        # A backstop at twice the deadline: the FLV and VOD writers keep their own (and say why a viewer left).
        stuck = StuckWriters(lambda: 2 * gate.limits.write_timeout_s) if gate.limits.write_timeout_s > 0 else None

        def accepted(handed: bytes | None = None) -> GuardedRequestHandler:
            handler = GuardedRequestHandler(server, gate, lane, handoff, handed, stuck, loop=loop, **args)
            if tls is not None:  # made before the TLS handshake; connection_made only after it succeeds
                def check() -> None:
                    if not handler.made:
                        tls.failures.not_made()
                loop.call_later(gate.limits.header_timeout_s + 0.5, check)
            return handler

        self._accepted = accepted
        self._server = await loop.create_server(
            accepted,
            self._host, self._port, backlog=self._backlog, reuse_address=True, reuse_port=self._reuse_port or None,
            # HTTPS: the TLS handshake gets the head deadline too; the gate counts a connection after it.
            ssl=self._ssl_context, ssl_handshake_timeout=gate.limits.header_timeout_s if self._ssl_context else None,
        )

    async def adopt(self, sock: socket.socket, data: bytes) -> None:
        """Serve a connection a sibling worker accepted and handed over with the bytes `data` it had read from
        it, as if this site had accepted it (the gate counts it, the head deadline starts now)."""
        if self._accepted is None:
            sock.close()
            return
        accepted = self._accepted
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: accepted(data), sock)
        except OSError:
            sock.close()


def open_file_limit() -> int:
    """The process's limit on open files, raised first to the hard limit when that is higher (as Go and
    nginx do): sockets are files, and a viewer is a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    wanted = min(wanted, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_limits(max_connections: int, max_per_address: int, header_timeout_s: float,
                      write_timeout_s: float = 0.0) -> ConnectionLimits:
    """The caps in force: `max_connections` 0 means half the open-file limit (raised first, whatever the
    setting), leaving the other half to RTMP connections, pulls, webhooks and files."""
    files = open_file_limit()
    if max_connections == 0:
        max_connections = max(64, files // 2)
    return ConnectionLimits(max_connections, max_per_address, header_timeout_s, write_timeout_s)
