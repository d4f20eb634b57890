"""StuckWriters: the fast lane's write deadline (`http.write_timeout`).

The lane writes an answer and forgets it: what a full socket does not take waits in the transport, and a
client that stops reading would keep it (and the connection) for ever. Closing does not help either: a
transport closes only once its buffer is flushed. So a transport left with bytes queued is watched; one
that sends none of them for `timeout_s` is reset (transports.reset), whatever its state, and the memory
goes with it, the kernel's send queue too.

One timer for all, ticking only while something is watched: an answer the socket takes whole (nearly all
of them) costs one `get_write_buffer_size` call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from ..transports import reset

TICKS_PER_TIMEOUT = 4


@dataclass(slots=True)
class _Watched:
    queued: int
    since: float
    """Loop time of the last progress (fewer bytes queued) or write."""


class StuckWriters:
    def __init__(self, timeout_s: Callable[[], float]) -> None:
        self._timeout_s = timeout_s
        """Read at each tick: the configured write_timeout."""
        self._watched: dict[asyncio.BaseTransport, _Watched] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.aborted = 0

    def __len__(self) -> int:
        return len(self._watched)

    def wrote(self, transport: asyncio.Transport) -> None:
        """Just written to `transport`: watched while bytes stay queued (a write counts as progress)."""
        queued = transport.get_write_buffer_size()
        if not queued:
            return
        loop = asyncio.get_running_loop()
        self._watched[transport] = _Watched(queued, loop.time())
        if self._timer is None:
            self._timer = loop.call_later(self._tick_s(), self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watched.clear()

    def _tick_s(self) -> float:
        return max(0.05, self._timeout_s() / TICKS_PER_TIMEOUT)

    def _tick(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        timeout = self._timeout_s()
        for transport, watched in list(self._watched.items()):
            try:
                queued = transport.get_write_buffer_size()
            except Exception:  # a transport torn down under us
                queued = 0
            if not queued:
                del self._watched[transport]
            elif queued < watched.queued:
                watched.queued, watched.since = queued, now
            elif now - watched.since >= timeout:
                del self._watched[transport]
                self.aborted += 1
                reset(transport, closing_too=True)
        if self._watched:
            self._timer = loop.call_later(self._tick_s(), self._tick)
