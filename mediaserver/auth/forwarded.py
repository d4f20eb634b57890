"""The client's address behind reverse proxies: `X-Forwarded-For` or `Forwarded: for=` (RFC 7239),
believed only from peers listed in `http.trusted_proxies`.

Each proxy appends the address it received the request from, so the list is read from the right: the
peer's own claim first, then, while the address just read is itself a trusted proxy, the one before it.
The first address that is not a trusted proxy is the client; a hop that is not an IP address (`unknown`,
an obfuscated `_name`, garbage) ends the walk at the last address known to be real. A client can prepend
anything it likes to these headers; only what trusted proxies appended is ever used.

Pure: no sockets, no aiohttp; the edge calls `client_address` once per request.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from ..errors import UsageError
from .tokens import normalize_address

MAX_HOPS = 16
"""Hops read from the right at most: a header of thousands of hops costs no more than this."""

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    networks: tuple[_Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str], where: str = "http.trusted_proxies") -> TrustedProxies:
        """Addresses or CIDRs ("10.0.0.0/8", "::1", "fd00::/8"); a bad entry is a UsageError naming it."""
        networks: list[_Network] = []
        for entry in entries:
            text = entry.strip()
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise UsageError(f"{where} entry {entry!r} is not an IP address or CIDR; write e.g. "
                                 "\"127.0.0.1\", \"10.0.0.0/8\" or \"fd00::/8\"") from None
        return cls(tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(normalize_address(address))
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self.networks)


def client_address(peer: str, trusted: TrustedProxies, forwarded_for: str | None = None,
                   forwarded: str | None = None) -> str:
    """The client's normalized address. `peer` is the TCP peer; the header values are joined with ", "
    when a request repeats the header. X-Forwarded-For is read when present, else Forwarded."""
    client = normalize_address(peer)
    if not trusted.trusts(client):
        return client
    if forwarded_for:
        hops = forwarded_for.rsplit(",", MAX_HOPS)[-MAX_HOPS:]
    elif forwarded:
        hops = [_forwarded_for(element) for element in forwarded.rsplit(",", MAX_HOPS)[-MAX_HOPS:]]
    else:
        return client
    for hop in reversed(hops):
        address = _node_address(hop)
        if address is None:
            break
        client = address
        if not trusted.trusts(client):
            break
    return client


def _forwarded_for(element: str) -> str:
    """The `for=` value of one Forwarded element (`for=192.0.2.1;proto=https`), "" when it has none."""
    for pair in element.split(";"):
        name, sep, value = pair.partition("=")
        if sep and name.strip().lower() == "for":
            return value.strip()
    return ""


def _node_address(node: str) -> str | None:
    """An address as proxies write it (`192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`,
    quoted or not) -> its normalized text; None for anything else."""
    text = node.strip().strip('"').strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and not _is_port(text[end + 1:])):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not _is_port(":" + port):
            return None
        text = host
    if "%" in text:  # a zone id means nothing off this host
        return None
    try:
        return normalize_address(str(ipaddress.ip_address(text)))
    except ValueError:
        return None


def _is_port(text: str) -> bool:
    digits = text[1:]
    return text.startswith(":") and digits.isascii() and digits.isdigit() and len(digits) <= 5
