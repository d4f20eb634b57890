"""The node's /metrics from its workers', [server] workers in the config, and the supervisor's port check."""

from __future__ import annotations

import socket

import pytest

from mediaserver.cluster.locator import NodeInfo, Owner
from mediaserver.config import ConfigError, load_config
from mediaserver.workers import cores, count
from mediaserver.workers.node_metrics import (Pulls, SiblingTraffic, merge, merge_history, merge_public_streams, merge_pulls,
                                               merge_streams)
from mediaserver.workers.supervisor import busy_port

WORKER0 = """# HELP mediaserver_streams Streams by state.
# TYPE mediaserver_streams gauge
mediaserver_streams{state="live"} 1.0
mediaserver_streams{state="idle"} 0.0
# HELP mediaserver_viewers Viewers by format.
# TYPE mediaserver_viewers gauge
mediaserver_viewers{format="flv"} 4.0
mediaserver_viewers{format="rtmp"} 1.0
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 2.5
"""
WORKER1 = WORKER0.replace("{format=\"flv\"} 4.0", "{format=\"flv\"} 3.0").replace("2.5", "1.5")


def node(name: str, pulling: list[str]) -> NodeInfo:
    return NodeInfo(id=name, role="both", http="", rtmp="", version="t", pulling=pulling)


def test_samples_are_labelled_by_worker_under_one_help_per_family():
    text = merge({"0": WORKER0, "1": WORKER1})
    lines = text.splitlines()
    assert lines.count("# HELP mediaserver_viewers Viewers by format.") == 1
    assert 'mediaserver_viewers{worker="0",format="flv"} 4.0' in lines
    assert 'mediaserver_viewers{worker="1",format="flv"} 3.0' in lines
    assert 'process_cpu_seconds_total{worker="1"} 1.5' in lines
    # a family's samples follow its TYPE line, all workers together
    start = lines.index("# TYPE mediaserver_viewers gauge")
    assert all(line.startswith("mediaserver_viewers{") for line in lines[start + 1:start + 5])


def test_a_sibling_pull_is_not_counted_as_a_stream_twice_nor_as_a_viewer():
    claims = {"live/s": Owner(node="worker0", http="", since=0, claim="c")}
    pulls = Pulls.of([node("worker0", []), node("worker1", ["live/s"])], claims, {"worker0": "0", "worker1": "1"})
    lines = merge({"0": WORKER0, "1": WORKER1}, pulls).splitlines()
    assert 'mediaserver_streams{worker="0",state="live"} 1.0' in lines
    assert 'mediaserver_streams{worker="1",state="live"} 0.0' in lines  # its copy of worker0's stream
    assert 'mediaserver_viewers{worker="0",format="flv"} 3.0' in lines  # worker1's pull is not a viewer
    assert 'mediaserver_viewers{worker="1",format="flv"} 3.0' in lines
    assert 'mediaserver_viewers{worker="0",format="rtmp"} 1.0' in lines


def test_workers_config_takes_a_number_or_auto():
    assert load_config(None, []).server.workers == "1"
    assert load_config(None, ["server.workers=3"]).server.workers == "3"
    assert count(load_config(None, ["server.workers=auto"]).server.workers) == cores()


@pytest.mark.parametrize("override, message", [
    ("server.workers=0", "must be 1..256"),
    ("server.workers=many", "whole number or \"auto\""),
    ("server.workers=true", "whole number or \"auto\""),
])
def test_bad_workers_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_workers_in_a_redis_cluster_are_refused_with_what_to_do():
    with pytest.raises(ConfigError, match="needs cluster.role = \"standalone\""):
        load_config(None, ["server.workers=2", "cluster.role=edge", "cluster.redis_url=redis://127.0.0.1:1/0"])


def test_the_supervisor_names_a_busy_port():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        config = load_config(None, ["rtmp.bind=127.0.0.1", "http.bind=127.0.0.1", f"http.port={port}",
                                    f"rtmp.port={_free()}"])
        problem = busy_port(config)
    assert problem is not None and f"http port 127.0.0.1:{port}" in problem and "--set http.port=N" in problem


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_node_stream_list_names_a_stream_once_with_its_viewers_added_up():
    def stream(name: str, publisher: str, viewers: dict) -> dict:
        return {"app": "live", "name": name, "publisher": publisher, "viewers": viewers}

    lists = {"0": [stream("s", "encoder:1", {"flv": 5, "rtmp": 1}), stream("idle", "", {})],
             "1": [stream("s", "pull", {"flv": 4})]}
    merged = merge_streams(lists, {"live/s": "0"})
    assert [m["name"] for m in merged] == ["idle", "s"]
    s = merged[1]
    assert s["publisher"] == "encoder:1" and s["worker"] == "0"  # described by the publisher's worker
    assert s["viewers"] == {"flv": 8, "rtmp": 1} and s["viewers_total"] == 9  # worker1's pull is not a viewer
    assert s["viewers_by_worker"] == {"0": 5, "1": 4}


def test_the_public_stream_list_of_the_node_lists_each_stream_once_live_where_any_worker_has_it_live():
    publisher = {"streams": [{"app": "live", "name": "b", "live": True, "video": "h264", "audio": "aac",
                              "renditions": ["480p"]}], "truncated": False}
    other = {"streams": [{"app": "live", "name": "b", "live": False, "video": None, "audio": None,
                          "renditions": ["720p"]},
                         {"app": "live", "name": "a", "live": True, "video": "h264", "audio": None,
                          "renditions": []}], "truncated": False}
    merged = merge_public_streams([other, publisher], limit=10)
    assert [(s["name"], s["live"], s["renditions"]) for s in merged["streams"]] == [
        ("a", True, []), ("b", True, ["480p", "720p"])]
    assert merged["streams"][1]["video"] == "h264" and not merged["truncated"]
    assert merge_public_streams([other], limit=1) == {"streams": [other["streams"][1]], "truncated": True}


def test_sibling_traffic_is_taken_out_of_the_node_totals_and_its_line_is_not_shown():
    puller = ("# TYPE mediaserver_ingress_bytes_total counter\nmediaserver_ingress_bytes_total 1500.0\n"
              "# TYPE mediaserver_ingress_frames_total counter\nmediaserver_ingress_frames_total 30.0\n"
              + SiblingTraffic(ingress_bytes=1000, ingress_frames=20).line() + "\n")
    pulled = ('# TYPE mediaserver_egress_bytes_total counter\nmediaserver_egress_bytes_total{format="flv"} 900.0\n'
              'mediaserver_egress_bytes_total{format="hls"} 50.0\n'
              '# TYPE mediaserver_viewers gauge\nmediaserver_viewers{format="flv"} 3.0\n'
              + SiblingTraffic(egress_flv_bytes=600, pulls_served=1).line() + "\n")
    text = merge({"0": puller, "1": pulled}, Pulls.of([], {}, {}))
    assert 'mediaserver_ingress_bytes_total{worker="0"} 500.0' in text
    assert 'mediaserver_ingress_frames_total{worker="0"} 10.0' in text
    assert 'mediaserver_egress_bytes_total{worker="1",format="flv"} 300.0' in text
    assert 'mediaserver_egress_bytes_total{worker="1",format="hls"} 50.0' in text
    assert 'mediaserver_viewers{worker="1",format="flv"} 2.0' in text
    assert "sibling-traffic" not in text
    assert SiblingTraffic.of("mediaserver_up 1\n") is None


def test_the_node_history_takes_ingest_from_the_publishers_worker_and_adds_every_workers_viewers():
    own = {"app": "live", "name": "cam", "pulled": False, "segment_viewers": 2,
           "at": [10.0, 12.0, 14.0], "kbps": [2500.0, 2600.0, 2550.0], "viewers": [3, 4, 5]}  # 1 of them: the pull
    copy = {"app": "live", "name": "cam", "pulled": True, "segment_viewers": 1,
            "at": [13.1, 15.1], "kbps": [2550.0, 2540.0], "viewers": [6, 7]}
    other = {"app": "live", "name": "solo", "pulled": False, "segment_viewers": 0, "at": [14.0], "kbps": [800.0],
             "viewers": [1]}
    merged = merge_history([{"interval_s": 2.0, "window_s": 360.0, "streams": [copy]},
                            {"interval_s": 2.0, "window_s": 360.0, "streams": [own, other]}])
    assert (merged["interval_s"], merged["window_s"]) == (2.0, 360.0)
    cam, solo = merged["streams"]
    assert (cam["name"], cam["at"], cam["kbps"]) == ("cam", own["at"], own["kbps"])  # the copy's bytes: no second time
    assert cam["viewers"] == [3, 4 + 6 - 1, 5 + 7 - 1]  # readings matched from the newest; the pull is no person
    assert cam["segment_viewers"] == 3 and cam["pulled"] is False
    assert solo == {**other, "viewers": [1]}
    assert merge_history([]) == {"interval_s": None, "window_s": None, "streams": []}


def test_the_node_pull_list_names_each_pull_once_as_the_worker_furthest_along_has_it():
    live = {"app": "live", "stream": "cam", "state": "live", "bytes": 1000}
    waiting = {"app": "live", "stream": "cam", "state": "retrying", "bytes": 0, "last_error": "the stream is held"}
    idle = {"app": "live", "stream": "door", "state": "idle", "bytes": 0}
    assert merge_pulls([{"pulls": [waiting, idle]}, {"pulls": [live, idle]}]) == {"pulls": [live, idle]}
    assert merge_pulls([{"pulls": [live]}, {"pulls": [waiting]}]) == {"pulls": [live]}
    assert merge_pulls([{}, {"pulls": None}]) == {"pulls": []}
