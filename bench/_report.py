"""Statistics and formatting for the benchmark's results."""

from __future__ import annotations

import math


def pct(values: list[float], p: float) -> float | None:
    """The p-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    s = sorted(values)
    if len(s) == 1:
        return float(s[0])
    k = (len(s) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (k - lo))


def summary(values: list[float], digits: int = 1) -> dict:
    """count, p50, p95, p99, max (rounded)."""
    def r(v):
        return None if v is None else round(v, digits)

    return {
        "count": len(values),
        "p50": r(pct(values, 50)),
        "p95": r(pct(values, 95)),
        "p99": r(pct(values, 99)),
        "max": r(max(values)) if values else None,
    }


def fmt_dist(d: dict, unit: str = "ms") -> str:
    if not d or not d.get("count"):
        return "n/a"
    return f"p50 {d['p50']} {unit}, p95 {d['p95']} {unit}, max {d['max']} {unit} (n={d['count']})"


def mib(n: float | None) -> float | None:
    return None if n is None else round(n / (1024 * 1024), 1)


def fmt(v, unit: str = "", digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        v = round(v, digits)
    return f"{v}{(' ' + unit) if unit else ''}"
