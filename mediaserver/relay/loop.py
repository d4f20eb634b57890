"""Relay loops: a push or a pull whose URL names this server's own stream, through any name or address of
this host (loopback, every local interface address, the hostname, cluster.advertise_url's host).

A push of live/cam to rtmp://10.0.0.5:1935/live/cam on the machine holding 10.0.0.5 would publish onto
the stream it reads from; a pull of live/cam from http://myhost:8080/live/cam.flv would play the stream
it feeds. Both are refused: `push_loop` and `pull_loop` are pure and say why; `this_host` gathers the
host's names and addresses once, at start (no DNS: a name is matched as written).
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .pull_source import PullSource
from .target import LOCAL_NAMES, PushUrl

_SIOCGIFADDR = 0x8915


@dataclass(frozen=True, slots=True)
class ThisHost:
    """What names this server: host names and addresses (normalized), and its listening port per scheme."""

    hosts: frozenset[str] = frozenset()
    ports: Mapping[str, int] = field(default_factory=dict)
    """"rtmp", "rtmps", "http", "https" -> port; a scheme that is not served is absent."""

    @classmethod
    def of(cls, hosts: Iterable[str], ports: Mapping[str, int]) -> ThisHost:
        return cls(frozenset(n for n in (_normal(h) for h in hosts if h) if n), dict(ports))

    def names(self, host: str) -> bool:
        """Whether `host` (a URL's host) is this machine."""
        name = _normal(host)
        if name in LOCAL_NAMES or name in self.hosts:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return address.is_loopback or address.is_unspecified


def _normal(host: str) -> str:
    """Lower case without a trailing dot or brackets; an address in its canonical form (IPv4-mapped IPv6
    as IPv4, zone ids dropped)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return name
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def push_loop(target: PushUrl, app: str, stream: str, here: ThisHost) -> str | None:
    """Why pushing APP/STREAM to `target` loops back into that stream, or None."""
    if here.ports.get(target.scheme) != target.port or not here.names(target.host):
        return None
    if target.app != app or target.stream_name != stream:
        return None
    return (f"{target.redacted} is this server's own stream {app}/{stream} ({target.host} is this host): "
            "pushing it there would loop")


def pull_loop(source: PullSource, app: str, stream: str, here: ThisHost) -> str | None:
    """Why pulling APP/STREAM from `source` would play the stream it feeds, or None."""
    if here.ports.get(source.scheme) != source.port or not here.names(source.host):
        return None
    if source.rtmp:
        src_app, name = source.app, source.name.split("?", 1)[0]
    else:
        segments = [s for s in urlsplit(source.url).path.split("/") if s]
        if len(segments) != 2 or not segments[1].endswith(".flv"):
            return None
        src_app, name = segments[0], segments[1][: -len(".flv")]
    if src_app != app or name != stream:
        return None
    return (f"{source.shown} is this server's own stream {app}/{stream} ({source.host} is this host): "
            "pulling it would feed the stream from itself")


def this_host(extra: Iterable[str] = ()) -> list[str]:
    """The host's names and addresses: the hostname (and its first label), every IPv4 address of every
    interface and every IPv6 address (Linux: /proc/net/if_inet6), and `extra` (bind addresses,
    cluster.advertise_url's host). Best effort: what cannot be read is left out."""
    found = [socket.gethostname(), socket.gethostname().split(".", 1)[0], *extra]
    try:
        interfaces = [name for _, name in socket.if_nameindex()]
    except OSError:
        interfaces = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in interfaces:
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on it
            found.append(socket.inet_ntoa(answer[20:24]))
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                raw = line.split()[0]
                found.append(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    except (OSError, ValueError):
        pass
    return found
