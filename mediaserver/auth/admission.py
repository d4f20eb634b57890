"""Admission: everything a listener (the RTMP server, the edge) consults before it lets a client in.

It bundles the AccessPolicy (credentials, blocks), the Limits, the webhook client (optional) and the
refusal bookkeeping: counts of refusals by action and reason for metrics, and the random delay a caller
waits before it answers a refused credential (so guessing keys or tokens is slow, and the answer's timing
tells nothing). Built once by the composition root and shared.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from .hooks import Hooks
from .limits import Limits
from .policy import AccessPolicy


@dataclass(slots=True)
class Admission:
    policy: AccessPolicy = field(default_factory=AccessPolicy)
    limits: Limits = field(default_factory=Limits)
    hooks: Hooks | None = None
    failure_delay_s: float = 0.5
    """A refusal of a credential is answered after uniform(failure_delay_s / 2, failure_delay_s)."""
    rng: random.Random = field(default_factory=random.Random)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Refused credentials by (action, reason), for metrics."""

    def refused(self, action: str, reason: str) -> float:
        """Count a refusal; returns how long to wait before answering it."""
        self.failures[(action, reason)] += 1
        d = self.failure_delay_s
        return self.rng.uniform(d / 2, d) if d > 0 else 0.0

    def wants_hook(self, event: str) -> bool:
        return self.hooks is not None and self.hooks.wants(event)
