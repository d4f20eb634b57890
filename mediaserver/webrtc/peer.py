"""Peer connections made from [webrtc]: the ICE servers given, and never aiortc's default public STUN server
(a server must not call out to a third party unless configured to); host candidates bound inside
`udp_port_range` and advertised as `public_ip`.

aioice (aiortc's ICE) has no option for either: it binds each local address on a port the system picks
and advertises that address. The least intrusive way in is a subclass of its Connection that replaces
only the gathering of host candidates (`get_component_candidates`); a peer connection's ICE gatherers
get it by a class swap on their connection object, after `setRemoteDescription` created them and before
`setLocalDescription` gathers. aiortc itself is not patched, so other peer connections in the same
process (tests' clients) are left as they are.

With `public_ip`, one socket on the wildcard address (of the public address's family) is bound per
session and advertised as `public_ip` (behind a 1:1 NAT, or 127.0.0.1 for a loopback-only test); without
it, every address aioice would use is bound, each in the range. Server-reflexive candidates (STUN) are
asked for the bound sockets as aioice does; TURN relays are aioice's own.

Consent (RFC 7675): once connected, aioice asks the peer every 5 s and gives up after 6 checks in a row
went unanswered (each sent once): about 30 s, the longest the RFC lets a sender go on, in which a viewer
that vanished without DELETE (tab killed, network gone) keeps its place in the limits, the viewer lists and
metrics, and is sent its whole bit rate into the void. The same class swap gives the server's connections
`ConsentIceConnection.query_consent`: a check every `consent_timeout_s / 5` (at most 5 s, randomized as
RFC 7675 asks), each sent up to twice, the connection closed when none was answered for
`webrtc.consent_timeout_s` (10 s by default: a vanished viewer is gone within ~12 s; a client whose path
is lost longer than that reconnects, as it would have to after any ICE failure, ICE restarts being
unsupported). Closing it makes aiortc's connection "failed", which ends the session.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from dataclasses import dataclass

from aioice import Candidate, stun
from aioice import ice as aioice_ice
from aiortc import RTCConfiguration, RTCDtlsTransport, RTCIceServer, RTCPeerConnection

from ..config import WebrtcConfig
from ..log import event

log = logging.getLogger(__name__)

CONSENT_INTERVAL_MAX_S = 5.0
"""RFC 7675 section 5.1: a check every 5 s (randomized), unless consent must be learnt sooner."""
CONSENT_CHECKS_PER_TIMEOUT = 5
CONSENT_RETRANSMISSIONS = 1
"""A check is sent again once, after 0.5 s (aioice's RTO) before it counts as unanswered."""


def ice_servers(config: WebrtcConfig) -> list[RTCIceServer]:
    """`stun:HOST:PORT`, `turn:HOST:PORT?transport=udp` or `turn:USER:PASSWORD@HOST:PORT` entries."""
    servers = []
    for entry in config.ice_servers:
        scheme, _, rest = entry.partition(":")
        username = credential = None
        if scheme in ("turn", "turns") and "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            username, _, credential = userinfo.partition(":")
        servers.append(RTCIceServer(urls=f"{scheme}:{rest}", username=username, credential=credential))
    return servers


def parse_port_range(text: str) -> tuple[int, int] | None:
    """ "40000-40100" -> (40000, 40100); "" -> None. Raises ValueError saying what is accepted."""
    text = text.strip()
    if not text:
        return None
    low, sep, high = text.partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise ValueError(f"webrtc.udp_port_range = {text!r} is not FIRST-LAST, e.g. \"40000-40100\"") from None
    if not (1024 <= first <= last <= 65535):
        raise ValueError(f"webrtc.udp_port_range = {text!r}: ports must be 1024-65535, the first not above the last")
    return first, last


class NoFreePort(OSError):
    """Every port of webrtc.udp_port_range is taken on an address."""


def bind_udp(address: str, ports: tuple[int, int] | None, rng: random.Random | None = None) -> socket.socket:
    """A non-blocking UDP socket bound to `address` on a port of `ports` (any port when None), tried from a
    random place in the range so that sessions starting together do not all probe the same ports."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    if ports is None:
        candidates: list[int] | range = [0]
    else:
        first, last = ports
        start = (rng or random).randint(first, last)
        candidates = [*range(start, last + 1), *range(first, start)]
    for port in candidates:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
        except OSError:
            sock.close()
            if ports is None:
                raise
            continue
        sock.setblocking(False)
        return sock
    raise NoFreePort(f"no free UDP port in webrtc.udp_port_range {ports[0]}-{ports[1]} on {address}; "  # type: ignore[index]
                     "widen the range or lower webrtc.max_sessions")


@dataclass(frozen=True, slots=True)
class HostCandidates:
    """How host candidates are made: the ports to bind and the address to advertise."""

    ports: tuple[int, int] | None
    public_ip: str

    @classmethod
    def of(cls, config: WebrtcConfig) -> HostCandidates | None:
        ports = parse_port_range(config.udp_port_range)
        if ports is None and not config.public_ip:
            return None  # aioice's own way
        return cls(ports, config.public_ip)

    def bind_addresses(self, addresses: list[str]) -> list[tuple[str, str]]:
        """(address to bind, address to advertise) pairs for the addresses aioice would use."""
        if self.public_ip:
            wildcard = "::" if ipaddress.ip_address(self.public_ip).version == 6 else "0.0.0.0"
            return [(wildcard, self.public_ip)]
        return [(a, a) for a in addresses]


def consent_interval(timeout_s: float) -> float:
    """The mean time between consent checks for a consent timeout."""
    return min(CONSENT_INTERVAL_MAX_S, timeout_s / CONSENT_CHECKS_PER_TIMEOUT)


def consent_expired(last_answer: float, now: float, timeout_s: float) -> bool:
    """Whether consent expired: no check answered in the last `timeout_s`."""
    return now - last_answer >= timeout_s


MAX_QUEUED_DATAGRAMS = 1024
"""Datagrams a connection holds for aiortc's DTLS transport (about 1.4 MB), which reads them only once ICE
has connected: aioice's queue has no bound, so anything sent to the port before then would stay in memory."""


class ConsentIceConnection(aioice_ice.Connection):
    """aioice's Connection whose consent expires after `consent_timeout_s` (set on the instance), and which
    takes only the datagrams its peer could mean (see `data_received`)."""

    consent_timeout_s: float
    consent_lost = False
    """Set when consent expired: aiortc then reports the connection "closed" as often as "failed"."""
    dropped_datagrams = 0

    def data_received(self, data: bytes, component: int) -> None:
        """A datagram that is not STUN, from anywhere: an empty one would end the session (aiortc's DTLS
        reader takes its first byte unchecked), and past MAX_QUEUED_DATAGRAMS it is dropped, as a full socket
        buffer drops it (DTLS and SRTP recover)."""
        if not data or self._queue.qsize() >= MAX_QUEUED_DATAGRAMS:
            self.dropped_datagrams += 1
            return
        super().data_received(data, component)

    async def query_consent(self) -> None:
        assert self.remote_password is not None  # aioice starts this task once connect() has it
        loop = asyncio.get_running_loop()
        timeout = self.consent_timeout_s
        interval = consent_interval(timeout)
        key = self.remote_password.encode("utf8")
        last_answer = loop.time()
        while True:
            await asyncio.sleep(interval * (0.8 + 0.4 * random.random()))
            for pair in list(self._nominated.values()):
                try:
                    await pair.protocol.request(self.build_request(pair, nominate=False), pair.remote_addr,
                                                integrity_key=key, retransmissions=CONSENT_RETRANSMISSIONS)
                    last_answer = loop.time()
                except stun.TransactionError:
                    pass
            if consent_expired(last_answer, loop.time(), timeout):
                event(log, "webrtc_consent_expired", logging.INFO, unanswered_s=round(loop.time() - last_answer, 1))
                self.consent_lost = True
                self._query_consent_task = None  # close() must not cancel the task it runs in
                await self.close()
                return


class BoundIceConnection(ConsentIceConnection):
    """aioice's Connection with host candidates from `host_candidates` (set on the instance)."""

    host_candidates: HostCandidates

    async def get_component_candidates(self, component: int, addresses: list[str], timeout: int = 5) -> list[Candidate]:
        loop = asyncio.get_running_loop()
        candidates: list[Candidate] = []
        protocols: list[aioice_ice.StunProtocol] = []
        for bind, advertised in self.host_candidates.bind_addresses(addresses):
            try:
                sock = bind_udp(bind, self.host_candidates.ports)
            except NoFreePort:
                raise
            except OSError:
                continue  # an address that cannot be bound (as aioice skips it)
            _, protocol = await loop.create_datagram_endpoint(lambda: aioice_ice.StunProtocol(self), sock=sock)
            port = sock.getsockname()[1]
            protocol.local_candidate = Candidate(
                foundation=aioice_ice.candidate_foundation("host", "udp", advertised), component=component,
                transport="udp", priority=aioice_ice.candidate_priority(component, "host"), host=advertised,
                port=port, type="host",
            )
            candidates.append(protocol.local_candidate)
            protocols.append(protocol)
        self._protocols += protocols
        if self.stun_server and not self.host_candidates.public_ip:
            tasks = [asyncio.create_task(aioice_ice.server_reflexive_candidate(p, self.stun_server))
                     for p in protocols if ipaddress.ip_address(p.local_candidate.host).version == 4]
            if tasks:
                done, pending = await asyncio.wait(tasks, timeout=timeout)
                for task in pending:
                    task.cancel()
                candidates += [t.result()[0] for t in done if t.exception() is None]
        # TURN: aioice's own code, with no host addresses of its own to bind.
        stun_server, self.stun_server = self.stun_server, None
        try:
            candidates += await super().get_component_candidates(component, [], timeout)
        finally:
            self.stun_server = stun_server
        return candidates


def new_peer_connection(config: WebrtcConfig) -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(config)))


def _dtls_transports(pc: RTCPeerConnection) -> list[RTCDtlsTransport]:
    transports = [t for tr in pc.getTransceivers() for t in (tr.sender.transport, tr.receiver.transport)
                  if t is not None]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    return transports


def _ice_connections(pc: RTCPeerConnection) -> list[aioice_ice.Connection]:
    return [t.transport.iceGatherer._connection for t in _dtls_transports(pc)]


def ice_lost(pc: RTCPeerConnection) -> bool:
    """Whether `pc` ended because ICE failed or consent expired (not a DTLS close by the peer)."""
    return pc.iceConnectionState == "failed" or any(getattr(c, "consent_lost", False) for c in _ice_connections(pc))


def failure_reason(pc: RTCPeerConnection) -> str | None:
    """Why `pc` failed or closed, when it was not a close by the peer: "ice_failed" (no path, or consent
    expired) or "dtls_failed" (ICE connected but the handshake failed: a certificate that does not match the
    SDP's fingerprint); None for a peer's own close."""
    if ice_lost(pc):
        return "ice_failed"
    return "dtls_failed" if any(t.state == "failed" for t in _dtls_transports(pc)) else None


def bind_candidates(pc: RTCPeerConnection, config: WebrtcConfig) -> None:
    """Make `pc`'s ICE gatherers bind in udp_port_range and advertise public_ip (aioice's own gathering when
    neither is set), and their consent expire after consent_timeout_s. Call after setRemoteDescription (which
    creates them) and before setLocalDescription (which gathers)."""
    hosts = HostCandidates.of(config)
    for connection in _ice_connections(pc):
        if not isinstance(connection, ConsentIceConnection):
            connection.__class__ = BoundIceConnection if hosts is not None else ConsentIceConnection
            if hosts is not None:
                connection.host_candidates = hosts
        connection.consent_timeout_s = config.consent_timeout_s
