"""Several worker processes on one machine: `[server] workers = N | "auto"`.

The process `python -m mediaserver` starts becomes a supervisor (supervisor.py): it runs the node-local
stream book (service.py, a JSON-lines protocol over a Unix socket, protocol.py) and starts N workers, each
a whole server binding the public RTMP/HTTP ports with SO_REUSEPORT, so the kernel spreads connections
among them. The workers are the nodes of a cluster that needs no Redis: a publisher's worker claims its
stream in the book; a viewer landing on another worker pulls the stream from it over the worker's
private loopback HTTP port, as an edge pulls from its origin (client.py: a StreamLocator over the
socket). A stream's HLS, LL-HLS and DASH packager runs on its publisher's worker only: a player's connection
asking for them elsewhere is handed to that worker, socket and all (handoff.py). A worker's part of the composition root is wiring/worker.py: /metrics, /streams.json and the
API show the whole node (node_metrics.py merges the workers' answers, without their pulls of each other,
which wiring/worker_traffic.py counts); a viewer's id names its worker, so listing and kicking viewers
reach every worker; a WHEP/WHIP session's URL names the worker holding it; the route API answers on the
URL the player came by. The supervisor restarts a worker that dies, and kills (then restarts) one that
stops reporting to the book for 10 s.
"""

from __future__ import annotations

import os

WORKER_ENV = "MEDIASERVER_WORKER"
"""Set by the supervisor in a worker's environment: "INDEX:SOCKET_PATH"."""
SECRET_ENV = "MEDIASERVER_WORKER_SECRET"
"""The secret the workers' internal pulls present to each other (made by the supervisor per start)."""


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def count(workers: str) -> int:
    """[server] workers as a number of processes: "auto" is one per core this process may run on."""
    return cores() if workers == "auto" else int(workers)
