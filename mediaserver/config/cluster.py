"""How this node finds the others: [cluster]."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    role: str = "standalone"
    """standalone (no Redis), origin (takes publishers), edge (pulls for viewers), both, or transcoder (makes
    the renditions of other nodes' streams: ABR jobs claimed cluster-wide, sources pulled from origins)."""
    redis_url: str = ""
    """redis://HOST:PORT/DB shared by every node; required unless role is standalone."""
    node_id: str = ""
    """This node's name in the cluster; empty is HOSTNAME-HTTPPORT."""
    advertise_url: str = ""
    """The HTTP base URL other nodes reach this one on; empty is http://BIND:PORT (the hostname for 0.0.0.0)."""
    secret_env: str = "MEDIASERVER_CLUSTER_SECRET"
    """The environment variable holding the secret internal pulls present; every node needs the same."""
    claim_ttl: float = 15.0
    """Seconds a stream claim lives without a refresh (refreshed every third of it)."""
    node_ttl: float = 1.5
    """Seconds a node's heartbeat lives (kept alive every third of it); a dead node's claims move at once."""
    pull_grace: float = 10.0
    """Seconds an edge keeps pulling a stream after its last viewer left."""
    pull_wait: float = 5.0
    """Seconds a viewer waits for a starting pull's first keyframe."""
    upstream: str = ""
    """An edge's parent edge (http://HOST:PORT) to pull from instead of the origin (tiered)."""
    serve_edges: bool = False
    """Let other edges pull through this one (a parent edge in a tiered setup)."""
    max_pulls: int = 1000
    """Streams this node pulls from others at once; 0 is no limit."""
    max_pulls_per_client: int = 10
    """Running pulls one viewer address may have started; 0 is no limit."""
    max_viewers: int = 0
    """An edge with this many viewers sends new ones to a less loaded edge (302; the route skips it); 0: none."""
    max_egress_mbps: float = 0.0
    """The same for the bit rate the edge sends (Mbit/s); 0: none."""
    public_url: str = ""
    """The HTTP base URL players reach this node on (route answers, redirects); empty is advertise_url."""


# Accepted values, checked after types: KEY -> (min, max), or KEY -> choices.
RANGES: dict[str, tuple[float, float]] = {
    "cluster.claim_ttl": (1, 3600),
    "cluster.pull_grace": (0, 3600),
    "cluster.pull_wait": (0.1, 60),
    "cluster.node_ttl": (0.3, 600),
    "cluster.max_pulls": (0, 1_000_000),
    "cluster.max_pulls_per_client": (0, 1_000_000),
    "cluster.max_viewers": (0, 10_000_000),
    "cluster.max_egress_mbps": (0, 1_000_000),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "cluster.role": ("standalone", "origin", "edge", "both", "transcoder"),
}
URL_KEYS = ("cluster.advertise_url", "cluster.upstream", "cluster.public_url")
