"""The sibling-traffic counter (wiring/worker_traffic.py): ended pulls keep their bytes in the counters and
are let go, also when nobody scrapes /metrics."""

from __future__ import annotations

from types import SimpleNamespace

from mediaserver.edge.flv import VIEWER
from mediaserver.edge.origin_pull import CREDENTIAL_HEADER
from mediaserver.hub.registry import StreamRegistry
from mediaserver.wiring.worker_traffic import SWEEP_AT, SiblingCounter


class Pull(dict):
    """A sibling's HTTP-FLV request as the response-prepare hook sees it."""

    def __init__(self, sent: int, closed: bool) -> None:
        super().__init__()
        self.headers = {CREDENTIAL_HEADER: "secret"}
        self.path = "/live/cam.flv"
        self.transport = object()
        self[VIEWER] = SimpleNamespace(id=id(self), closed=closed, bytes_sent=sent)


async def test_ended_pulls_keep_their_bytes_and_are_let_go_without_a_scrape():
    counter = SiblingCounter(StreamRegistry())
    for _ in range(SWEEP_AT):
        await counter._prepared(Pull(sent=10, closed=True), None)
    live = Pull(sent=5, closed=False)
    await counter._prepared(live, None)  # the ended ones are let go here
    assert len(counter._pulls) == 1
    traffic = counter.now()
    assert traffic.egress_flv_bytes == 10 * SWEEP_AT + 5 and traffic.pulls_served == 1
    assert counter.pull_viewer_ids() == {id(live)}
    viewer = live[VIEWER]
    viewer.closed, viewer.bytes_sent = True, 7
    assert counter.now().egress_flv_bytes == 10 * SWEEP_AT + 7  # a counter: it never goes down
    assert counter.now().pulls_served == 0 and counter._pulls == {}
