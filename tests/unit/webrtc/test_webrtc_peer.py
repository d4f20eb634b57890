"""ICE host candidates from [webrtc]: bound inside udp_port_range, advertised as public_ip, on loopback; consent
checks paced by consent_timeout_s."""

from __future__ import annotations

import random
import socket

import aioice
import pytest

from mediaserver.config import ConfigError, WebrtcConfig, load_config
from mediaserver.webrtc.peer import (
    MAX_QUEUED_DATAGRAMS, BoundIceConnection, ConsentIceConnection, NoFreePort, bind_candidates, bind_udp, consent_expired, consent_interval,
    new_peer_connection, parse_port_range,
)


def test_port_ranges_parse_and_bad_ones_say_what_is_accepted():
    assert parse_port_range("") is None
    assert parse_port_range("40000-40100") == (40000, 40100)
    assert parse_port_range("40000") == (40000, 40000)
    for bad in ("40100-40000", "x-y", "80-90", "40000-70000"):
        with pytest.raises(ValueError, match="udp_port_range"):
            parse_port_range(bad)


def test_the_config_refuses_a_bad_range_a_bad_address_and_a_non_ice_url_at_start():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["webrtc.udp_port_range=9-1", "webrtc.public_ip=my.host", 'webrtc.ice_servers=["http://x"]'])
    text = str(err.value)
    assert "udp_port_range" in text and "public_ip" in text and "ice_servers" in text


def test_a_socket_is_bound_inside_the_range_and_a_full_range_is_said_so():
    held = [bind_udp("127.0.0.1", None)]
    port = held[0].getsockname()[1]
    held[0].close()
    first = bind_udp("127.0.0.1", (port, port + 2), random.Random(1))
    second = bind_udp("127.0.0.1", (port, port + 2), random.Random(1))
    try:
        assert {first.getsockname()[1], second.getsockname()[1]} <= {port, port + 1, port + 2}
        assert first.getsockname()[1] != second.getsockname()[1]
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        taken.bind(("127.0.0.1", 0))
        only = taken.getsockname()[1]
        with pytest.raises(NoFreePort, match="udp_port_range"):
            bind_udp("127.0.0.1", (only, only))
        taken.close()
    finally:
        first.close()
        second.close()


async def test_a_peer_connection_gathers_one_host_candidate_in_the_range_advertised_as_public_ip():
    config = WebrtcConfig(public_ip="127.0.0.1", udp_port_range="43000-43999")
    pc = new_peer_connection(config)
    try:
        pc.addTransceiver("video", direction="recvonly")
        bind_candidates(pc, config)
        gatherer = pc.getTransceivers()[0].receiver.transport.transport.iceGatherer
        assert isinstance(gatherer._connection, BoundIceConnection)
        await pc.setLocalDescription(await pc.createOffer())
        candidates = [line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate:")]
        assert len(candidates) == 1, candidates
        fields = candidates[0].split()
        assert fields[4] == "127.0.0.1" and 43000 <= int(fields[5]) <= 43999 and fields[7] == "host"
    finally:
        await pc.close()


async def test_without_range_or_public_ip_aioice_gathers_as_it_always_did_and_asks_no_stun_server():
    config = WebrtcConfig()
    pc = new_peer_connection(config)
    try:
        pc.addTransceiver("audio", direction="recvonly")
        bind_candidates(pc, config)
        connection = pc.getTransceivers()[0].receiver.transport.transport.iceGatherer._connection
        assert type(connection) is ConsentIceConnection and connection.consent_timeout_s == config.consent_timeout_s
        assert connection.stun_server is None, "never aiortc's default public STUN server"
    finally:
        await pc.close()


def test_consent_is_checked_at_least_five_times_per_timeout_and_at_most_every_5_s():
    assert consent_interval(10.0) == 2.0 and consent_interval(30.0) == 5.0 and consent_interval(2.0) == 0.4
    assert not consent_expired(100.0, 109.9, 10.0) and consent_expired(100.0, 110.0, 10.0)


async def test_an_empty_datagram_is_dropped_and_what_waits_for_dtls_is_bounded():
    connection = aioice.Connection(ice_controlling=False)
    connection.__class__ = ConsentIceConnection  # as bind_candidates makes every connection
    connection.data_received(b"", 1)  # aiortc's DTLS reader would raise on it and end the session
    assert connection._queue.qsize() == 0 and connection.dropped_datagrams == 1
    for _ in range(MAX_QUEUED_DATAGRAMS + 500):  # garbage sent to the port before ICE connects
        connection.data_received(b"\x17" * 1400, 1)
    assert connection._queue.qsize() == MAX_QUEUED_DATAGRAMS and connection.dropped_datagrams == 501
    assert connection._queue.get_nowait() == (b"\x17" * 1400, 1)  # what was kept is read as before
    await connection.close()
