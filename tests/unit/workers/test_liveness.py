"""The supervisor's liveness check: which listening workers have been silent too long."""

from __future__ import annotations

from mediaserver.workers.supervisor import hung


def test_a_listening_worker_silent_past_the_deadline_is_hung_and_a_starting_one_is_not():
    heard = {0: 100.0, 1: 95.0}
    assert hung(heard, {0, 1}, now=99.0, timeout_s=5.0) == {}
    assert hung(heard, {0, 1}, now=101.0, timeout_s=5.0) == {1: 6.0}
    assert hung(heard, {0}, now=200.0, timeout_s=5.0) == {0: 100.0}  # worker 1 is starting: not checked
    assert list(hung({}, {2}, now=1.0, timeout_s=5.0)) == [2]  # listening, never heard: hung
