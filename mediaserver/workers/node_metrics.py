"""The node's /metrics from its workers' (sans-IO): every worker's Prometheus text, each sample labelled
worker="N", one HELP/TYPE per family, so `sum(...)` over the workers is the node.

A stream a worker pulls from a sibling would count twice (live on both workers) and its pull once as an
HTTP-FLV viewer of the publisher's worker; `merge` takes those out of mediaserver_streams{state="live"}
and mediaserver_viewers{format="flv"}, so streams and viewers add up to what the node serves. The bytes
of those pulls (ingress of the pulling worker, FLV egress of the pulled one) never leave the machine:
each worker's text carries its `SiblingTraffic` on a comment line, and `merge` takes it out of
mediaserver_ingress_bytes, mediaserver_ingress_frames and mediaserver_egress_bytes{format="flv"}.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

from ..cluster.locator import NodeInfo, Owner


@dataclass
class _Family:
    meta: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Pulls:
    """Per worker label: the streams it pulls from siblings, and the sibling pulls it serves."""

    pulling: Counter[str]
    served: Counter[str]

    @classmethod
    def of(cls, nodes: list[NodeInfo], claims: dict[str, Owner], label: dict[str, str]) -> Pulls:
        pulling: Counter[str] = Counter()
        served: Counter[str] = Counter()
        for node in nodes:
            for stream in node.pulling:
                owner = claims.get(stream)
                if owner is None or owner.node not in label or node.id not in label:
                    continue  # the publisher is gone: the copy ends soon
                pulling[label[node.id]] += 1
                served[label[owner.node]] += 1
        return cls(pulling, served)


SIBLING_TRAFFIC = "# mediaserver-sibling-traffic "
"""Starts the comment line a worker's own /metrics text carries its SiblingTraffic on (Prometheus skips it)."""


@dataclass(frozen=True, slots=True)
class SiblingTraffic:
    """A worker's traffic with its siblings since it started: counters, so they only grow."""

    ingress_bytes: int = 0
    """Media bytes of the streams it pulled from siblings (as mediaserver_ingress_bytes counts them)."""
    ingress_frames: int = 0
    egress_flv_bytes: int = 0
    """Bytes it sent to siblings pulling its streams over HTTP-FLV."""
    pulls_served: int = 0
    """Siblings' pulls it serves now (each one HTTP-FLV subscriber)."""

    def line(self) -> str:
        return SIBLING_TRAFFIC + json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def of(cls, text: str) -> SiblingTraffic | None:
        """The traffic a worker's text carries; None for a text without it (a worker of an older version)."""
        for line in text.splitlines():
            if line.startswith(SIBLING_TRAFFIC):
                try:
                    raw = json.loads(line[len(SIBLING_TRAFFIC):])
                    return cls(**{k: int(raw.get(k, 0)) for k in cls.__dataclass_fields__})
                except (ValueError, TypeError, AttributeError):
                    return None
        return None


def _adjust(sample: str, pulls: Pulls, worker: str, traffic: SiblingTraffic | None) -> str:
    name = sample.split("{", 1)[0].split(" ", 1)[0]
    # The node's own figures, and its internal ones (another node's pulls) the same way: siblings are no nodes.
    if (name == "mediaserver_streams" and 'state="live"' in sample) or name == "mediaserver_pulled_streams":
        minus = pulls.pulling[worker]
    elif (name == "mediaserver_viewers" and 'format="flv"' in sample) or name == "mediaserver_internal_viewers":
        minus = pulls.served[worker] if traffic is None else traffic.pulls_served
    elif traffic is not None and name in ("mediaserver_ingress_bytes_total", "mediaserver_pulled_ingress_bytes_total"):
        minus = traffic.ingress_bytes
    elif traffic is not None and name == "mediaserver_ingress_frames_total":
        minus = traffic.ingress_frames
    elif traffic is not None and ((name == "mediaserver_egress_bytes_total" and 'format="flv"' in sample)
                                  or name == "mediaserver_internal_egress_bytes_total"):
        minus = traffic.egress_flv_bytes
    else:
        return sample
    head, _, value = sample.rpartition(" ")
    try:
        return f"{head} {max(0.0, float(value) - minus)}"
    except ValueError:
        return sample


def _labelled(sample: str, worker: str) -> str:
    if "{" in sample:
        name, rest = sample.split("{", 1)
        return f'{name}{{worker="{worker}",{rest}' if not rest.startswith("}") else f'{name}{{worker="{worker}"{rest}'
    name, _, value = sample.partition(" ")
    return f'{name}{{worker="{worker}"}} {value}'


def merge(texts: dict[str, str], pulls: Pulls | None = None) -> str:
    """Prometheus text format (0.0.4) of several workers, by worker label, as one exposition."""
    families: dict[str, _Family] = {}
    for worker, text in texts.items():
        traffic = SiblingTraffic.of(text)
        current: _Family | None = None
        for line in text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                parts = line.split(" ", 3)
                if len(parts) < 3:
                    continue
                current = families.setdefault(parts[2], _Family())
                if line not in current.meta:
                    current.meta.append(line)
                continue
            if not line or line.startswith("#"):
                continue
            if current is None:  # a sample without HELP/TYPE: its own family
                current = families.setdefault(line.split("{", 1)[0].split(" ", 1)[0], _Family())
            if pulls is not None:
                line = _adjust(line, pulls, worker, traffic)
            current.samples.append(_labelled(line, worker))
    out: list[str] = []
    for family in families.values():
        out.extend(family.meta)
        out.extend(family.samples)
    return "\n".join(out) + "\n"


RESTARTS = "mediaserver_worker_restarts_total"


def restarts_family(restarts: dict[str, int]) -> str:
    """The supervisor's count of each worker's restarts (the book keeps it; no worker knows its own) as
    Prometheus text, by worker label like the merged families; "" when the book did not answer."""
    if not restarts:
        return ""
    lines = [f"# HELP {RESTARTS} Times the supervisor started a worker again (it exited, hung, or did not "
             "listen in time).", f"# TYPE {RESTARTS} counter"]
    lines += [f'{RESTARTS}{{worker="{w}"}} {n}' for w, n in sorted(restarts.items(), key=lambda i: int(i[0]))]
    return "\n".join(lines) + "\n"


def merge_streams(lists: dict[str, list[dict]], owners: dict[str, str]) -> list[dict]:
    """GET /api/v1/streams for the node from each worker's list: a stream once, described by the worker
    that has its publisher (`owners`: "app/name" -> worker label), with its viewers added up over the
    workers; a sibling's pull is not counted as a viewer (it is one HTTP-FLV subscriber of the publisher's
    worker per worker holding a copy). Each stream says which worker publishes it and the viewers on each."""
    by_stream: dict[str, dict[str, dict]] = {}
    for worker, streams in lists.items():
        for stream in streams:
            by_stream.setdefault(f"{stream.get('app')}/{stream.get('name')}", {})[worker] = stream
    merged = []
    for name in sorted(by_stream):
        held = by_stream[name]
        owner = owners.get(name)
        main = held.get(owner) if owner is not None else None
        if main is None:
            owner, main = next(iter(held.items()))
        copies = sum(1 for w in held if w != owner)
        viewers: Counter[str] = Counter()
        per_worker = {}
        for worker, stream in held.items():
            counts = Counter({k: int(v) for k, v in dict(stream.get("viewers") or {}).items()})
            if worker == owner and copies:
                counts["flv"] = max(0, counts["flv"] - copies)
            viewers.update(counts)
            per_worker[worker] = sum(counts.values())
        merged.append({**main, "viewers": {k: v for k, v in viewers.items() if v},
                       "viewers_total": sum(viewers.values()), "worker": owner, "viewers_by_worker": per_worker})
    return merged


def merge_public_streams(answers: list[dict], limit: int) -> dict:
    """GET /streams.json for the node from each worker's answer: a stream once (live if any worker has it
    live, its renditions gathered from every worker), sorted as one node lists them, at most `limit`."""
    by_key: dict[tuple[str, str], dict] = {}
    truncated = False
    for answer in answers:
        truncated = truncated or bool(answer.get("truncated"))
        for stream in answer.get("streams") or []:
            key = (str(stream.get("app")), str(stream.get("name")))
            held = by_key.get(key)
            if held is None or (stream.get("live") and not held.get("live")):
                renditions = set(held.get("renditions", [])) if held is not None else set()
                by_key[key] = held = {**stream}
                held["renditions"] = sorted(renditions | set(stream.get("renditions") or []))
            else:
                held["renditions"] = sorted(set(held.get("renditions", [])) | set(stream.get("renditions") or []))
    streams = [by_key[k] for k in sorted(by_key)]
    return {"streams": streams[:limit], "truncated": truncated or len(streams) > limit}


def merge_history(answers: list[dict]) -> dict:
    """GET /console/history.json for the node from each worker's answer: a stream once, with the ingest of
    the worker that has its publisher (a sibling's copy brings the same bytes again) and the viewers of every
    worker at the same reading, less one per copy (each copy's pull is a viewer on the publisher's worker).
    Workers sample on their own clocks at the same interval: readings are matched from the newest back."""
    by_key: dict[tuple[str, str], list[dict]] = {}
    for answer in answers:
        for entry in answer.get("streams") or []:
            by_key.setdefault((str(entry.get("app")), str(entry.get("name"))), []).append(entry)
    streams = []
    for key in sorted(by_key):
        entries = by_key[key]
        own = [e for e in entries if not e.get("pulled")]
        base = max(own or entries, key=lambda e: len(e.get("at") or []))
        copies = [e for e in entries if e is not base]
        viewers = list(base.get("viewers") or [])
        for copy in copies:
            theirs = copy.get("viewers") or []
            for back in range(1, min(len(viewers), len(theirs)) + 1):
                viewers[-back] += theirs[-back] - (1 if copy.get("pulled") else 0)
        streams.append({**base, "viewers": [max(0, v) for v in viewers], "pulled": False,
                        "segment_viewers": sum(int(e.get("segment_viewers") or 0) for e in entries)})
    first = answers[0] if answers else {}
    return {"interval_s": first.get("interval_s"), "window_s": first.get("window_s"), "streams": streams}


_PULL_STATE_RANK = {"live": 0, "connecting": 1, "retrying": 2, "idle": 3, "standby": 4, "stopped": 5}


def merge_pulls(answers: list[dict]) -> dict:
    """GET /api/v1/pulls for the node: every worker runs the configured pulls, and one holds each stream
    (the others wait or retry): a pull once, as the worker furthest along has it."""
    best: dict[tuple[str, str], dict] = {}
    for answer in answers:
        for pull in answer.get("pulls") or []:
            key = (str(pull.get("app")), str(pull.get("stream")))
            rank = _PULL_STATE_RANK.get(str(pull.get("state")), len(_PULL_STATE_RANK))
            held = best.get(key)
            if held is None or rank < _PULL_STATE_RANK.get(str(held.get("state")), len(_PULL_STATE_RANK)):
                best[key] = pull
    return {"pulls": [best[k] for k in sorted(best)]}
