"""The client address behind trusted reverse proxies, from X-Forwarded-For / Forwarded, under hostile values."""

from __future__ import annotations

import pytest

from mediaserver.auth.forwarded import MAX_HOPS, TrustedProxies, client_address
from mediaserver.errors import UsageError

PROXIES = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


def xff(peer: str, header: str | None, trusted: TrustedProxies = PROXIES) -> str:
    return client_address(peer, trusted, forwarded_for=header)


def fwd(peer: str, header: str | None) -> str:
    return client_address(peer, PROXIES, forwarded=header)


def test_an_untrusted_peer_is_the_client_whatever_it_claims():
    assert xff("198.51.100.7", "203.0.113.1") == "198.51.100.7"
    assert fwd("198.51.100.7", "for=203.0.113.1") == "198.51.100.7"
    assert xff("::ffff:198.51.100.7", "203.0.113.1") == "198.51.100.7"
    assert client_address("127.0.0.1", TrustedProxies(), "203.0.113.1") == "127.0.0.1"  # none configured


def test_a_trusted_peer_names_the_right_most_untrusted_address():
    assert xff("127.0.0.1", "203.0.113.1") == "203.0.113.1"
    assert xff("::ffff:127.0.0.1", " 203.0.113.1 ") == "203.0.113.1"
    # A client prepends what it likes; the proxies' own entries (from the right) are all that count.
    assert xff("127.0.0.1", "6.6.6.6, 203.0.113.1") == "203.0.113.1"
    assert xff("127.0.0.1", "6.6.6.6, 203.0.113.1, 10.1.2.3, 10.9.9.9") == "203.0.113.1"
    assert xff("fd00::5", "2001:db8::1, fd00::7") == "2001:db8::1"
    assert xff("127.0.0.1", None) == "127.0.0.1" and xff("127.0.0.1", "") == "127.0.0.1"


def test_ports_brackets_and_mapped_addresses_are_read():
    assert xff("127.0.0.1", "203.0.113.1:4711") == "203.0.113.1"
    assert xff("127.0.0.1", "[2001:db8::1]:4711") == "2001:db8::1"
    assert xff("127.0.0.1", "[2001:DB8:0::1]") == "2001:db8::1"
    assert xff("127.0.0.1", "::ffff:203.0.113.1") == "203.0.113.1"
    assert fwd("127.0.0.1", 'for="[2001:db8:cafe::17]:4711";proto=https') == "2001:db8:cafe::17"
    assert fwd("127.0.0.1", "for=192.0.2.60;proto=http;by=203.0.113.43") == "192.0.2.60"
    assert fwd("127.0.0.1", "FOR=192.0.2.60, For=10.0.0.3") == "192.0.2.60"
    assert fwd("127.0.0.1", "proto=https;for=192.0.2.61") == "192.0.2.61"


@pytest.mark.parametrize("hop", [
    "unknown", "_hidden", "_SEVKISEK", "garbage", "1.2.3", "999.1.1.1", "1.2.3.4:port", "1.2.3.4:99999999", "1.2.3.4:\u00b2",
    "[2001:db8::1", "[2001:db8::1]x", "[2001:db8::1]:", "fe80::1%eth0", "\x00\xff", "'1.2.3.4'", "1.2.3.4 5.6.7.8",
    "", ";;;", "[]", "[1.2.3.4]x:80",
])
def test_a_hop_that_is_no_address_ends_the_walk_at_the_last_real_one(hop):
    assert xff("127.0.0.1", hop) == "127.0.0.1"
    assert xff("127.0.0.1", f"203.0.113.1, {hop}") == "127.0.0.1"  # not skipped: what lies beyond it is unknown
    assert xff("127.0.0.1", f"{hop}, 10.0.0.2") == "10.0.0.2"
    assert fwd("127.0.0.1", f"for={hop}") == "127.0.0.1"


def test_forwarded_elements_without_for_and_garbage_headers():
    assert fwd("127.0.0.1", "proto=https;by=10.0.0.1") == "127.0.0.1"
    assert fwd("127.0.0.1", "for") == "127.0.0.1"
    assert fwd("127.0.0.1", "=,=,=;=") == "127.0.0.1"
    assert fwd("127.0.0.1", 'for="unknown"') == "127.0.0.1"


def test_x_forwarded_for_wins_over_forwarded():
    assert client_address("127.0.0.1", PROXIES, "203.0.113.1", "for=198.51.100.1") == "203.0.113.1"
    assert client_address("127.0.0.1", PROXIES, None, "for=198.51.100.1") == "198.51.100.1"


def test_many_hops_are_read_from_the_right_at_most_max_hops():
    chain = ", ".join(["10.0.0.1"] * 100_000)
    assert xff("127.0.0.1", chain) == "10.0.0.1"  # all trusted: the last one read
    assert xff("127.0.0.1", "203.0.113.9, " + chain) == "10.0.0.1"  # beyond MAX_HOPS: never reached
    near = ", ".join(["203.0.113.9"] + ["10.0.0.1"] * (MAX_HOPS - 1))
    assert xff("127.0.0.1", near) == "203.0.113.9"
    huge = "x" * 1_000_000 + ", 203.0.113.1"
    assert xff("127.0.0.1", huge) == "203.0.113.1"


def test_trusted_proxies_parse_addresses_and_cidrs_and_name_a_bad_entry():
    assert PROXIES.trusts("10.200.3.4") and PROXIES.trusts("fd12::1") and PROXIES.trusts("::ffff:127.0.0.1")
    assert not PROXIES.trusts("11.0.0.1") and not PROXIES.trusts("::1") and not PROXIES.trusts("garbage")
    assert TrustedProxies.parse(["10.0.0.1/8"]).trusts("10.3.3.3")  # host bits allowed, as operators write them
    with pytest.raises(UsageError, match="'10.0.0.0/33'"):
        TrustedProxies.parse(["127.0.0.1", "10.0.0.0/33"])
    with pytest.raises(UsageError, match="'proxy.example'"):
        TrustedProxies.parse(["proxy.example"])
