"""Benchmark: what auth costs on the hot path, per core.

A viewer's play token is checked on every HTTP-FLV or WebSocket-FLV connect, and on every HLS playlist
and segment request (a player makes one or two a second); the check is one HMAC-SHA256 over ~70 bytes
and a constant-time compare. When a token is in use, an HLS playlist is also rendered per request (its
segment URIs carry that viewer's token) instead of once per change for everyone. This measures:

  - token checks per second: a valid token (one secret, and two during a rotation), a forged one (the
    refusal path also tries the other action to log why), and an open app (no check at all);
  - a publisher's stream key checked among 100 configured keys (every key is compared);
  - an HLS playlist (6 segments) rendered with a token query, against the shared cached one.

Single-threaded, so each figure is what one core does. Prints the best of --repeat runs.

    python bench/auth_cost.py [--seconds 1.0] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from types import SimpleNamespace

from mediaserver.auth.policy import AccessPolicy
from mediaserver.auth.tokens import Action, AuthError, mint, verify
from mediaserver.config import HlsConfig
from mediaserver.edge.packagers import HlsPackager
from mediaserver.hub.stream import StreamKey
from mediaserver.remux.segment import Segment

SECRET = b"bench-secret-0123456789abcdefghij"
OLD_SECRET = b"bench-old-secret-0123456789abcdef"
NOW = 1_800_000_000.0


def rate(fn: Callable[[], object], seconds: float, repeat: int) -> float:
    """Best calls per second of `fn` over `repeat` runs of about `seconds` each."""
    best = 0.0
    batch = 1000
    for _ in range(repeat):
        calls = 0
        started = time.perf_counter()
        while True:
            for _ in range(batch):
                fn()
            calls += batch
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                break
        best = max(best, calls / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    good = mint(SECRET, Action.PLAY, "live", "cam", int(NOW + 3600))
    rotated = mint(OLD_SECRET, Action.PLAY, "live", "cam", int(NOW + 3600))
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    closed = AccessPolicy(play_open=(), publish_open=(), secrets=(SECRET,),
                          stream_keys=[("live", f"s{i}", f"key-{i:04d}-abcdefgh", f"K{i}") for i in range(100)])
    open_policy = AccessPolicy()

    def refused() -> None:
        try:
            verify(forged, Action.PLAY, "live", "cam", NOW, (SECRET,))
        except AuthError:
            pass

    cases: list[tuple[str, Callable[[], object]]] = [
        ("verify a valid play token (1 secret)", lambda: verify(good, Action.PLAY, "live", "cam", NOW, (SECRET,))),
        ("verify a valid play token (2 secrets, rotation)",
         lambda: verify(rotated, Action.PLAY, "live", "cam", NOW, (SECRET, OLD_SECRET))),
        ("refuse a forged play token", refused),
        ("authorize_play, closed app (policy + verify)", lambda: closed.authorize_play("live", "cam", good, None, NOW)),
        ("authorize_play, open app (the default)", lambda: open_policy.authorize_play("live", "cam", "", None, NOW)),
        ("authorize_publish, stream key among 100", lambda: closed.authorize_publish("live", "key-0099-abcdefgh", "",
                                                                                     None, NOW)),
    ]

    packager = HlsPackager(SimpleNamespace(key=StreamKey("live", "cam")), HlsConfig(), wall_clock=lambda: NOW)
    for seq in range(6):
        packager.window.add(Segment(seq, b"", seq * 2000, 2000, NOW + seq * 2))
    query = f"token={good}"
    cases += [
        ("HLS playlist, shared (no token)", lambda: packager.playlist()),
        ("HLS playlist rendered with a token query", lambda: packager.playlist(query)),
    ]

    print(f"{'operation':<52} {'per second':>12} {'us each':>9}")
    for name, fn in cases:
        per_s = rate(fn, args.seconds, args.repeat)
        print(f"{name:<52} {per_s:>12,.0f} {1e6 / per_s:>9.2f}")


if __name__ == "__main__":
    main()
