"""What the soak watches and how it judges: readings of the server process and its /metrics, the
server log's tracebacks and errors, and the verdict per criterion.

A reading combines /proc (VmRSS, open file descriptors, threads of the server process itself) with
the gauges the server exports: streams in the hub (live + idle), viewers held by the hub (HTTP-FLV,
WebSocket-FLV, RTMP subscribers), packagers in the pools (HLS + CMAF) and asyncio tasks. Everything
here but `take_reading` is pure, so the verdicts are tested with numbers.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import _procstats

SUBSCRIBER_FORMATS = ("flv", "ws-flv", "rtmp")
"""Viewer kinds the hub holds a subscriber for (HLS viewers are addresses seen lately, not state)."""


@dataclass(frozen=True, slots=True)
class Reading:
    t: float
    """Seconds since the soak started."""
    phase: str
    """"cold", "prime", "baseline", "warmup", "run", "quiet"."""
    rss_bytes: int | None
    fds: int | None
    threads: int | None
    streams: int | None
    subscribers: int | None
    hls_clients: int | None
    packagers: int | None
    tasks: int | None

    def row(self) -> dict:
        return asdict(self)


def count_entries(path: str) -> int | None:
    """How many entries /proc/PID/fd or /proc/PID/task holds; None when the process is gone."""
    try:
        return len(os.listdir(path))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a Prometheus text exposition: (name, sorted labels) -> value; comments skipped."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = value
    return out


def server_gauges(samples: dict) -> dict[str, int | None]:
    """The hub's and pools' counts from parsed /metrics; None for a gauge the server does not export."""

    def total(name: str, label: str | None = None, values: tuple[str, ...] = ()) -> int | None:
        found = [v for (n, labels), v in samples.items() if n == name
                 and (label is None or dict(labels).get(label) in values)]
        return int(sum(found)) if found else None

    return {
        "streams": total("mediaserver_streams"),
        "subscribers": total("mediaserver_viewers", "format", SUBSCRIBER_FORMATS),
        "hls_clients": total("mediaserver_viewers", "format", ("hls",)),
        "packagers": total("mediaserver_packagers"),
        "tasks": total("mediaserver_asyncio_tasks"),
    }


async def take_reading(pid: int, metrics_get, t: float, phase: str) -> Reading:
    """Read /proc for `pid`, then /metrics through `metrics_get()` (a coroutine giving the body or None)."""
    status = _procstats.read_status_kb(pid, ("VmRSS",))
    rss = status.get("VmRSS")
    fds = count_entries(f"/proc/{pid}/fd")
    threads = count_entries(f"/proc/{pid}/task")
    body = await metrics_get()
    gauges = server_gauges(parse_prometheus(body.decode("utf-8", "replace"))) if body else dict.fromkeys(
        ("streams", "subscribers", "hls_clients", "packagers", "tasks"))
    return Reading(t=round(t, 2), phase=phase, rss_bytes=rss, fds=fds, threads=threads, **gauges)


def is_quiet(r: Reading, baseline: Reading) -> bool:
    """Nothing left in the hub and pools, and fds and tasks back to the baseline's."""
    return (r.streams == 0 and r.subscribers == 0 and r.packagers == 0
            and _at_most(r.fds, baseline.fds) and _at_most(r.tasks, baseline.tasks))


def _at_most(value: int | None, limit: int | None, slack: int = 0) -> bool:
    return value is not None and limit is not None and value <= limit + slack


# ----- the server log ------------------------------------------------------------------------------

_TEXT_LINE = re.compile(r'^\S+ (\w+) event=("(?:[^"\\]|\\.)*"|\S+)')
_TRACEBACK = "Traceback (most recent call last)"


def scan_log(path: Path, keep: int = 12) -> dict:
    """Tracebacks (log lines that hold one), ERROR/CRITICAL lines grouped by event and the exception
    that ended their traceback (with the first line of each group), and warning events by name, from a
    server log in the text or the JSON format."""
    tracebacks = 0
    errors: Counter[str] = Counter()
    first: dict[str, str] = {}
    warnings: Counter[str] = Counter()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        tracebacks += _TRACEBACK in line
        level, name, error = parse_log_line(line)
        if level in ("error", "critical"):
            key = name + (f" ({error})" if error else "")
            errors[key] += 1
            first.setdefault(key, line[:400])
        elif level == "warning":
            warnings[name] += 1
    return {
        "lines": len(lines),
        "tracebacks": tracebacks,
        "error_lines": sum(errors.values()),
        "errors_by_event": dict(errors.most_common(keep)),
        "first_error_lines": [first[n] for n, _ in errors.most_common(keep)],
        "warnings_by_event": dict(warnings.most_common(keep)),
    }


def parse_log_line(line: str) -> tuple[str | None, str, str]:
    """(level, event, the last line of its error field: the exception) of one server log line."""
    if line.startswith("{"):
        try:
            doc = json.loads(line)
        except ValueError:
            return None, "", ""
        return str(doc.get("level")), str(doc.get("event")), _last_line(str(doc.get("error") or ""))
    m = _TEXT_LINE.match(line)
    if m is None:
        return None, "", ""
    name = m.group(2)
    if name.startswith('"'):
        name = json.loads(name)
    error = ""
    at = line.find(' error="')
    if at >= 0:
        try:
            error = _last_line(json.JSONDecoder().raw_decode(line, at + 7)[0])
        except ValueError:
            pass
    return m.group(1), name, error


def _last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1].strip()[:160] if lines else ""


# ----- verdicts ------------------------------------------------------------------------------------


def rss_drift(readings: list[Reading]) -> dict:
    """RSS after the warm-up against its first sample: min, max and last as signed percentages."""
    rows = [r for r in readings if r.phase == "run" and r.rss_bytes]
    if not rows:
        return {"samples": 0}
    ref = rows[0].rss_bytes
    pcts = [(r.rss_bytes - ref) * 100.0 / ref for r in rows]
    return {
        "samples": len(rows),
        "first_after_warmup_mib": round(ref / 2**20, 1),
        "min_mib": round(min(r.rss_bytes for r in rows) / 2**20, 1),
        "max_mib": round(max(r.rss_bytes for r in rows) / 2**20, 1),
        "last_mib": round(rows[-1].rss_bytes / 2**20, 1),
        "min_pct": round(min(pcts), 2),
        "max_pct": round(max(pcts), 2),
        "last_pct": round(pcts[-1], 2),
        "span_s": round(rows[-1].t - rows[0].t, 1),
    }


def rss_steps(readings: list[Reading], timeline: list[tuple[float, str]], min_step_mib: float = 1.0,
              keep: int = 10) -> list[dict]:
    """The largest RSS rises between two readings while clients ran, each with the bad inputs started
    in the interval before it (or the one before that): where the memory went, as a first clue."""
    rows = [r for r in readings if r.phase in ("warmup", "run") and r.rss_bytes]
    steps = []
    for i in range(1, len(rows)):
        rise = (rows[i].rss_bytes - rows[i - 1].rss_bytes) / 2**20
        if rise >= min_step_mib:
            since = rows[i - 2].t if i >= 2 else rows[i - 1].t
            steps.append({"t": rows[i].t, "rise_mib": round(rise, 1),
                          "bad_inputs_before": sorted({k for t, k in timeline if since <= t < rows[i].t})})
    steps.sort(key=lambda s: -s["rise_mib"])
    return steps[:keep]


@dataclass(frozen=True, slots=True)
class Verdict:
    criterion: str
    outcome: str
    """PASS, FAIL or SKIP (could not be measured: never a PASS)."""
    detail: str


def judge(readings: list[Reading], baseline: Reading, end: Reading, log: dict, *, rss_tolerance_pct: float,
          fd_slack: int, task_slack: int, min_rss_span_s: float, server_exit: int | None) -> list[Verdict]:
    """One verdict per criterion of the soak."""
    out = []
    drift = rss_drift(readings)
    if drift["samples"] < 2 or drift["span_s"] < min_rss_span_s:
        out.append(Verdict("rss_within_tolerance", "SKIP",
                           f"{drift['samples']} samples after the warm-up; too short a run to judge memory"))
    else:
        worst = max(abs(drift["min_pct"]), abs(drift["max_pct"]))
        out.append(Verdict("rss_within_tolerance", "PASS" if worst <= rss_tolerance_pct else "FAIL",
                           f"{drift['first_after_warmup_mib']} MiB after warm-up; min {drift['min_pct']:+.2f} %, "
                           f"max {drift['max_pct']:+.2f} %, last {drift['last_pct']:+.2f} % "
                           f"(limit ±{rss_tolerance_pct:g} %, {drift['samples']} samples over "
                           f"{drift['span_s']:.0f} s)"))

    def back(name: str, field: str, slack: int) -> None:
        b, e = getattr(baseline, field), getattr(end, field)
        if b is None or e is None:
            out.append(Verdict(name, "SKIP", f"{field} not measured (baseline {b}, end {e})"))
        else:
            out.append(Verdict(name, "PASS" if e <= b + slack else "FAIL",
                               f"{e} at the quiet end vs {b} at baseline" + (f" (slack {slack})" if slack else "")))

    back("fds_back_to_baseline", "fds", fd_slack)
    back("tasks_back_to_baseline", "tasks", task_slack)
    for name, field in (("no_packagers_left", "packagers"), ("no_subscribers_left", "subscribers"),
                        ("no_streams_left", "streams")):
        value = getattr(end, field)
        out.append(Verdict(name, "SKIP" if value is None else "PASS" if value == 0 else "FAIL",
                           f"{value} at the quiet end (baseline {getattr(baseline, field)})"))
    out.append(Verdict("zero_tracebacks", "PASS" if log["tracebacks"] == 0 else "FAIL",
                       f"{log['tracebacks']} in the server log"))
    out.append(Verdict("zero_error_lines", "PASS" if log["error_lines"] == 0 else "FAIL",
                       f"{log['error_lines']} ERROR/CRITICAL lines"
                       + (f" of {len(log['errors_by_event'])} kinds (listed above)" if log["error_lines"] else "")))
    out.append(Verdict("server_ran_and_stopped_cleanly", "PASS" if server_exit == 0 else "FAIL",
                       f"exit code {server_exit} after SIGINT"))
    return out


def passed(verdicts: list[Verdict]) -> bool:
    """Every criterion passed; a criterion that could not be measured does not fail the run."""
    return all(v.outcome != "FAIL" for v in verdicts)
