"""Metrics read from the hub at scrape time, parsed back with the Prometheus text parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mediaserver.auth.admission import Admission
from mediaserver.auth.limits import Limits
from mediaserver.edge.metrics import HLS_VIEWER_WINDOW_S, Metrics
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey


class FakePublisher:
    peer = "10.0.0.1:1"

    def close(self, reason: str) -> None:
        pass


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_streams_viewers_bytes_and_drops_are_read_from_the_hub():
    registry = StreamRegistry(call_later=lambda d, f: None)
    admission = Admission(limits=Limits(max_viewers_per_stream=1))
    metrics = Metrics(registry, admission, packager_count=lambda: 3)
    a = registry.claim_publisher(StreamKey("live", "a"), FakePublisher())
    b = registry.claim_publisher(StreamKey("live", "b"), FakePublisher())
    a.bytes_in, a.frames_in, a.frames_dropped = 1000, 10, 2
    b.bytes_in, b.frames_in = 500, 5
    flv, _ = a.subscribe("flv", "v1", 0.0)
    ws, _ = a.subscribe("ws-flv", "v2", 0.0)
    b.subscribe("rtmp", "v3", 0.0)
    registry.count_sent(flv, 300)
    registry.count_sent(ws, 200)
    metrics.hls_request("10.9.0.1", "live/a")
    admission.refused("play", "expired")
    admission.limits.check_viewers("live/a", 5)
    s = scrape(metrics)
    assert value(s, "mediaserver_streams", state="live") == 2
    assert [value(s, "mediaserver_viewers", format=f) for f in ("flv", "ws-flv", "rtmp", "hls")] == [1, 1, 1, 1]
    assert value(s, "mediaserver_ingress_bytes_total") == 1500
    assert value(s, "mediaserver_ingress_frames_total") == 15
    assert value(s, "mediaserver_frames_dropped_total") == 2
    assert value(s, "mediaserver_egress_bytes_total", format="flv") == 300
    assert value(s, "mediaserver_egress_bytes_total", format="ws-flv") == 200
    assert value(s, "mediaserver_auth_failures_total", action="play", reason="expired") == 1
    assert value(s, "mediaserver_limit_refusals_total", limit="viewers_per_stream") == 1
    assert value(s, "mediaserver_packagers") == 3
    assert ("process_resident_memory_bytes", ()) in s and ("process_cpu_seconds_total", ()) in s
    assert ("mediaserver_event_loop_lag_seconds_count", ()) in s


def test_counters_never_go_back_when_streams_end_and_viewers_leave():
    registry = StreamRegistry(call_later=lambda d, f: None)
    metrics = Metrics(registry)
    stream = registry.claim_publisher(StreamKey("live", "a"), FakePublisher())
    stream.bytes_in, stream.frames_dropped = 1000, 4
    ws, _ = stream.subscribe("ws-flv", "v", 0.0)
    flv, _ = stream.subscribe("flv", "w", 0.0)
    rtmp, _ = stream.subscribe("rtmp", "x", 0.0)
    for sub, sent in ((ws, 100), (flv, 700), (rtmp, 50)):
        registry.count_sent(sub, sent)
    before = scrape(metrics)
    for sub, sent in ((ws, 50), (flv, 20), (rtmp, 30)):  # sent more, then left:
        registry.count_sent(sub, sent)
        sub.close("viewer_left")
    metrics.response_done("ws-flv", 0)  # the edge counts an HTTP viewer's response, its bytes being the writer's
    metrics.response_done("flv", 0)
    registry.kick(stream.key)
    after = scrape(metrics)
    names = [("mediaserver_ingress_bytes_total", {}), ("mediaserver_frames_dropped_total", {})]
    names += [("mediaserver_egress_bytes_total", {"format": f}) for f in ("flv", "ws-flv", "rtmp")]
    for name, labels in names:
        assert value(after, name, **labels) >= value(before, name, **labels), name
    assert value(after, "mediaserver_ingress_bytes_total") == 1000
    assert [value(after, "mediaserver_egress_bytes_total", format=f) for f in ("flv", "ws-flv", "rtmp")] == [720, 150, 80]
    assert value(after, "mediaserver_streams", state="live") == 0


def test_viewers_that_come_and_go_between_scrapes_are_counted_in_full():
    registry = StreamRegistry(call_later=lambda d, f: None)
    metrics = Metrics(registry)
    stream = registry.claim_publisher(StreamKey("live", "a"), FakePublisher())
    assert value(scrape(metrics), "mediaserver_egress_bytes_total", format="rtmp") == 0
    for i in range(3):  # none of them is there at a scrape
        sub, _ = stream.subscribe("rtmp", f"p{i}", 0.0)
        registry.count_sent(sub, 1_000_000)
        registry.count_sent(sub, 500_000)
        sub.close("viewer_left")
    metrics.response_done("hls", 4000)
    s = scrape(metrics)
    assert value(s, "mediaserver_egress_bytes_total", format="rtmp") == 4_500_000
    assert value(s, "mediaserver_egress_bytes_total", format="hls") == 4000
    assert value(s, "mediaserver_egress_bytes_total", format="flv") == 0


def test_hls_viewers_are_client_addresses_that_fetched_lately():
    now = [100.0]
    metrics = Metrics(StreamRegistry(), clock=lambda: now[0])
    metrics.hls_request("old", "live/x")
    now[0] += HLS_VIEWER_WINDOW_S + 1
    for client in ("a", "b", "a"):
        metrics.hls_request(client, "live/x")
    metrics.hls_request("a", "live/y")
    assert value(scrape(metrics), "mediaserver_viewers", format="hls") == 3
