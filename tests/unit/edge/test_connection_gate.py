"""The HTTP connection gate's bookkeeping: caps in total and per address, refusals counted by reason."""

from __future__ import annotations

import resource

from mediaserver.edge.connections import (
    HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_PER_IP, ConnectionGate, ConnectionLimits, connection_limits,
)


def test_one_address_is_capped_while_others_are_admitted_up_to_the_total():
    gate = ConnectionGate(ConnectionLimits(max_connections=5, max_per_address=2, header_timeout_s=10))
    assert [gate.opened("10.0.0.1") for _ in range(3)] == [None, None, MAX_PER_IP]
    assert [gate.opened("10.0.0.2") for _ in range(2)] == [None, None]
    assert gate.opened("10.0.0.3") is None and gate.open == 5
    assert gate.opened("10.0.0.4") == MAX_CONNECTIONS
    gate.closed("10.0.0.1")
    assert gate.opened("10.0.0.4") is None
    assert gate.refused == {MAX_PER_IP: 1, MAX_CONNECTIONS: 1}


def test_closed_connections_are_forgotten_so_the_table_stays_small():
    gate = ConnectionGate(ConnectionLimits(0, 0, 10))
    for i in range(1000):
        assert gate.opened(f"10.0.{i // 256}.{i % 256}") is None
    for i in range(1000):
        gate.closed(f"10.0.{i // 256}.{i % 256}")
    assert gate.open == 0 and gate._by_address == {}


def test_a_refusal_is_a_complete_503_naming_the_key_to_raise():
    gate = ConnectionGate(ConnectionLimits(100, 3, 10))
    answer = gate.answer(MAX_PER_IP)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head and b"http.max_connections_per_ip = 3" in body
    assert b"http.max_connections = 100" in gate.answer(MAX_CONNECTIONS)
    gate.head_timed_out()
    assert gate.refused[HEADER_TIMEOUT] == 1


def test_the_default_total_cap_is_half_the_open_file_limit():
    limits = connection_limits(0, 256, 10)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limits.max_connections == max(64, soft // 2)
    assert connection_limits(300, 0, 10).max_connections == 300


def test_trusted_proxies_are_spared_the_per_address_cap_but_not_the_total():
    gate = ConnectionGate(ConnectionLimits(max_connections=5, max_per_address=1, header_timeout_s=10),
                          uncapped=lambda address: address == "10.0.0.9")
    assert [gate.opened("10.0.0.9") for _ in range(3)] == [None, None, None]
    assert [gate.opened("10.0.0.1") for _ in range(2)] == [None, MAX_PER_IP]
    assert [gate.opened("10.0.0.9") for _ in range(2)] == [None, MAX_CONNECTIONS]
