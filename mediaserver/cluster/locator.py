"""StreamLocator: where each live stream is published in a cluster, and the news about it.

An origin that accepts a publisher *announces* the stream: it claims the stream's key for itself, and a
claim held by another node means the stream is already published elsewhere (one publisher per stream
across the cluster). The claim is refreshed while the stream is live and *withdrawn* when the publisher
leaves; a node that dies stops refreshing, so its claims lapse on their own. An edge *looks up* the
owner of a stream before pulling it, and *watches* the news (published, unpublished, kick, node up and
down) to learn at once when a stream moves; the claims stay the truth, so a missed message costs only
a lookup.

Stream keys are plain "app/name" strings here, so this module depends on nothing in the project.
`InMemoryLocator` implements the protocol within one process, for tests and single-node use;
`redis_locator.RedisLocator` implements it over Redis.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

ROLES = ("standalone", "origin", "edge", "both", "transcoder")

PUBLISHED = "published"
UNPUBLISHED = "unpublished"
KICK = "kick"
NODE_UP = "node_up"
NODE_DOWN = "node_down"
ABR_WANTED = "abr_wanted"
"""A node needs the renditions of `stream` (the source): a transcoder that can take the job claims it."""
EVENT_KINDS = (PUBLISHED, UNPUBLISHED, KICK, NODE_UP, NODE_DOWN, ABR_WANTED)


class LocatorError(Exception):
    """A message or record from the cluster that cannot be understood (another version, or garbage)."""


@dataclass(frozen=True, slots=True)
class Owner:
    """Who publishes a stream: the node and the URL its viewers (and edges) reach it on."""

    node: str
    http: str
    """Base URL of the node's HTTP side, e.g. http://10.0.0.5:8080 (no trailing slash)."""
    since: float
    """Wall-clock time (s) the claim was made."""
    claim: str
    """Unique per claim, so that withdrawing an old claim can never delete a newer one."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Owner:
        try:
            raw = json.loads(text)
            return cls(node=str(raw["node"]), http=str(raw["http"]), since=float(raw["since"]), claim=str(raw["claim"]))
        except (ValueError, KeyError, TypeError) as err:
            raise LocatorError(f"stream owner record is not understood ({err}): {str(text)[:200]!r}") from None


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """One piece of news on the cluster channel."""

    kind: str
    """One of EVENT_KINDS."""
    sender: str
    """The node that sent it."""
    stream: str = ""
    """"app/name" for stream events, "" for node events."""
    owner: Owner | None = None
    reason: str = ""

    def to_json(self) -> str:
        raw: dict[str, Any] = {"kind": self.kind, "sender": self.sender, "stream": self.stream, "reason": self.reason}
        if self.owner is not None:
            raw["owner"] = asdict(self.owner)
        return json.dumps(raw, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ClusterEvent:
        try:
            raw = json.loads(text)
            kind = str(raw["kind"])
            if kind not in EVENT_KINDS:
                raise ValueError(f"unknown kind {kind!r}")
            owner = raw.get("owner")
            return cls(
                kind=kind, sender=str(raw["sender"]), stream=str(raw.get("stream", "")),
                owner=Owner.from_json(json.dumps(owner)) if owner else None, reason=str(raw.get("reason", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise LocatorError(f"cluster message is not understood ({err}): {str(text)[:200]!r}") from None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node's heartbeat record: identity, where to reach it, and its load."""

    id: str
    role: str
    http: str
    rtmp: str
    version: str
    streams: int = 0
    """Streams published on this node (relays pulled from elsewhere included)."""
    viewers: int = 0
    egress_bps: int = 0
    """Bytes per second sent to viewers, times 8, over the last heartbeat interval."""
    stream_viewers: dict[str, int] = field(default_factory=dict)
    """"app/name" -> viewers on this node, so a cluster-wide list can add them up."""
    pulling: list[str] = field(default_factory=list)
    """Streams this node pulls from another (each pull is one of the viewers its source counts)."""
    seen_at: float = 0.0
    max_viewers: int = 0
    """The node's viewer ceiling ([cluster] max_viewers; 0: none): at it, new viewers go to other edges."""
    max_egress_bps: int = 0
    """The node's egress ceiling in bit/s ([cluster] max_egress_mbps; 0: none)."""
    play_url: str = ""
    """The HTTP base URL players reach the node on ([cluster] public_url); "" is `http`."""
    outputs: list[str] = field(default_factory=list)
    """Play formats the node serves: flv, ws-flv, hls, llhls, dash, rtmp (empty: unknown, an older node)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> NodeInfo:
        try:
            raw = json.loads(text)
            return cls(
                id=str(raw["id"]), role=str(raw["role"]), http=str(raw["http"]), rtmp=str(raw.get("rtmp", "")),
                version=str(raw.get("version", "")), streams=int(raw.get("streams", 0)),
                viewers=int(raw.get("viewers", 0)), egress_bps=int(raw.get("egress_bps", 0)),
                stream_viewers={str(k): int(v) for k, v in dict(raw.get("stream_viewers", {})).items()},
                pulling=[str(p) for p in list(raw.get("pulling", []))],
                seen_at=float(raw.get("seen_at", 0.0)),
                max_viewers=int(raw.get("max_viewers", 0)), max_egress_bps=int(raw.get("max_egress_bps", 0)),
                play_url=str(raw.get("play_url", "")), outputs=[str(o) for o in list(raw.get("outputs", []))],
            )
        except (ValueError, KeyError, TypeError) as err:
            raise LocatorError(f"node record is not understood ({err}): {str(text)[:200]!r}") from None


EventCallback = Callable[[ClusterEvent], None]


class StreamLocator(Protocol):
    """Where streams live. Every method tolerates the backing store being away: claims are then kept
    locally and made good when it returns, lookups find nothing, news is not sent."""

    async def announce(self, stream: str, owner: Owner) -> Owner:
        """Claim `stream` for `owner`. Returns the holder: `owner` when the claim is new or its holder's
        node is dead, this node's earlier claim when it already holds the stream, another node's Owner
        when that (live) node does. Cancelled, it leaves no claim behind."""
        ...

    async def refresh(self) -> None:
        """Extend every claim this node holds (the implementation calls it on its own schedule too)."""
        ...

    async def withdraw(self, stream: str, owner: Owner) -> None:
        """Give up the claim, only if it is still `owner`'s (compare-and-delete)."""
        ...

    async def lookup(self, stream: str) -> Owner | None:
        """The current owner of `stream`, or None if nobody publishes it (its node is dead, or the store
        is away)."""
        ...

    def watch(self, callback: EventCallback) -> None:
        """Call `callback` (synchronously, on the event loop) with every event from other nodes."""
        ...

    async def send(self, event: ClusterEvent) -> None:
        """Tell the other nodes (at most once; nothing is sent while the store is away)."""
        ...

    async def nodes(self) -> list[NodeInfo]:
        """Every node whose heartbeat is current."""
        ...

    async def node(self, node_id: str) -> NodeInfo | None:
        """The node's heartbeat record while it is current (where to reach it), else None."""
        ...


class InMemoryLocator:
    """A StreamLocator for one process: claims in a dict, news delivered to every watcher at once.
    Several nodes in one test can share one instance."""

    def __init__(self) -> None:
        self.claims: dict[str, Owner] = {}
        self.node_records: dict[str, NodeInfo] = {}
        self.dead: set[str] = set()
        """Nodes whose heartbeat lapsed (tests add them): their claims can be taken over."""
        self._watchers: list[EventCallback] = []
        self.sent: list[ClusterEvent] = []

    async def announce(self, stream: str, owner: Owner) -> Owner:
        held = self.claims.get(stream)
        if held is not None and held.node not in self.dead:
            return held  # another node's, or this node's own earlier claim (kept as it is)
        self.claims[stream] = owner
        return owner

    async def refresh(self) -> None:
        return None

    async def withdraw(self, stream: str, owner: Owner) -> None:
        if self.claims.get(stream) == owner:
            del self.claims[stream]

    async def lookup(self, stream: str) -> Owner | None:
        held = self.claims.get(stream)
        return held if held is not None and held.node not in self.dead else None

    def watch(self, callback: EventCallback) -> None:
        self._watchers.append(callback)

    async def send(self, event: ClusterEvent) -> None:
        self.sent.append(event)
        for callback in list(self._watchers):
            try:
                callback(event)
            except Exception:
                log.exception("cluster event watcher %r failed for %s", callback, event.kind)

    async def nodes(self) -> list[NodeInfo]:
        return list(self.node_records.values())

    async def node(self, node_id: str) -> NodeInfo | None:
        return self.node_records.get(node_id) if node_id not in self.dead else None

    def heartbeat(self, info: NodeInfo) -> None:
        self.node_records[info.id] = info
