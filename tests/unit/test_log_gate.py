"""The log-once-per-interval gate (mediaserver/log.py), which every repeated warning goes through."""

from __future__ import annotations

from mediaserver.log import LogGate


def test_refusals_are_logged_once_per_interval_with_how_many_they_stand_for():
    gate = LogGate(interval_s=10)
    assert gate.should_log(("x",), 0.0) == 1
    assert [gate.should_log(("x",), t) for t in (1.0, 2.0, 9.9)] == [0, 0, 0]
    assert gate.should_log(("y",), 5.0) == 1
    assert gate.should_log(("x",), 10.0) == 4  # this refusal and the three kept quiet


def test_a_flood_of_addresses_keeps_the_log_gate_bounded():
    gate = LogGate(interval_s=1, max_keys=100)
    for i in range(1000):
        gate.should_log((str(i),), float(i))
    assert len(gate._logged) <= 101


def test_control_bytes_in_a_logged_value_are_escaped():
    from mediaserver.log import _fmt_value

    assert _fmt_value("fourcc:ab\x00\x01") == '"fourcc:ab\\u0000\\u0001"'
    assert _fmt_value("a\rb\x1b[2J") == '"a\\rb\\u001b[2J"'
    assert _fmt_value("plain") == "plain" and _fmt_value("caf\u00e9") == "caf\u00e9"
