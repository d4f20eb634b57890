"""/metrics for pushes: how many are in each state, and per relay (the first MAX_LABELLED, so the label
set stays bounded however many are added) its state, bytes sent and reconnects."""

from __future__ import annotations

from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .manager import RelayManager
from .state import RelayState

MAX_LABELLED = 100


class RelayCollector:
    def __init__(self, relays: RelayManager) -> None:
        self.relays = relays

    def collect(self) -> Any:
        pushers = self.relays.all()
        counts = {s: 0 for s in RelayState}
        for p in pushers:
            counts[p.status.state] += 1
        g = GaugeMetricFamily("mediaserver_relays", "Pushes to other servers by state.", labels=["state"])
        for state, n in counts.items():
            g.add_metric([state.value], n)
        yield g
        labels = ["stream", "relay"]
        state = GaugeMetricFamily("mediaserver_relay_state", "1 for each push's current state (connecting, live, "
                                  f"retrying, stopped); the first {MAX_LABELLED} pushes.", labels=[*labels, "state"])
        sent = CounterMetricFamily("mediaserver_relay_bytes", "Bytes a push sent to its target.", labels=labels)
        again = CounterMetricFamily("mediaserver_relay_reconnects", "Attempts a push made after its first.",
                                    labels=labels)
        for p in pushers[:MAX_LABELLED]:
            ids = [str(p.stream.key), p.id]
            state.add_metric([*ids, p.status.state.value], 1)
            sent.add_metric(ids, p.bytes_sent)
            again.add_metric(ids, p.status.reconnects)
        yield state
        yield sent
        yield again
