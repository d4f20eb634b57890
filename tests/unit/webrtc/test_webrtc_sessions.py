"""The node's WebRTC sessions: limits of the node, of a stream, and of one address's sessions still connecting."""

from __future__ import annotations

from mediaserver.webrtc.sessions import Session, Sessions


async def _nothing(reason: str) -> None:
    pass


def test_one_address_may_hold_only_so_many_sessions_still_connecting_and_connected_ones_free_its_places():
    sessions = Sessions(max_sessions=10, max_connecting_per_client=2)
    first, second = (Session("viewer", "live", "cam", "10.0.0.1", _nothing) for _ in range(2))
    sessions.add(first)
    assert sessions.refusal("viewer", "live", "cam", "10.0.0.1") is None
    sessions.add(second)
    refused = sessions.refusal("viewer", "live", "cam", "10.0.0.1")
    assert refused is not None and "2 WebRTC sessions still connecting" in refused and not sessions.full
    assert sessions.refusal("publisher", "live", "other", "10.0.0.1") is not None  # publishers count too
    assert sessions.refusal("viewer", "live", "cam", "10.0.0.2") is None  # another address is not held up
    first.connected = True  # ICE and DTLS done
    assert sessions.refusal("viewer", "live", "cam", "10.0.0.1") is None
    sessions.remove(second)
    assert sessions.refusal("viewer", "live", "cam", "10.0.0.1") is None


def test_the_node_limit_comes_first_and_says_so():
    sessions = Sessions(max_sessions=1, max_connecting_per_client=5)
    sessions.add(Session("viewer", "live", "cam", "10.0.0.1", _nothing))
    assert sessions.full and "webrtc.max_sessions" in sessions.refusal("viewer", "live", "cam", "10.0.0.9")
    assert Sessions().refusal("viewer", "live", "cam", "10.0.0.1") is None  # 0: no limits
