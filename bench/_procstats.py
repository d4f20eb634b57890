"""CPU time and memory of process trees, read from /proc (Linux only).

A benchmark samples the server's whole tree (the server and every descendant, e.g. transcoder
processes) at the start and end of its measurement window: CPU is utime + stime, plus cutime + cstime
so that the time of children that exited and were reaped inside the tree is not lost. RSS is the sum of
VmRSS over the tree, sampled while the window runs (the peak of the sums is reported); VmHWM is each
process's own high-water mark, whose sum over the tree is an upper bound (the processes need not have
peaked at the same moment).

Nothing here keeps a process alive or signals it: a pid that vanishes between two reads simply
drops out of the sum.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/PID/stat a benchmark needs."""

    pid: int
    ppid: int
    comm: str
    cpu_s: float
    """utime + stime of the process itself (all its threads), in seconds."""
    user_s: float
    """utime alone: the process's own work (Python's, for ours)."""
    system_s: float
    """stime alone: the kernel's work on the process's behalf."""
    children_cpu_s: float
    """cutime + cstime: CPU of its children that exited and were waited for, in seconds."""
    rss_bytes: int


def read_stat(pid: int, tid: int | None = None) -> ProcStat | None:
    """Parse /proc/PID/stat, or with `tid` one thread's /proc/PID/task/TID/stat (the same fields, that thread's
    alone); None when the process is gone (or a zombie's fields are empty)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm is in parentheses and may itself contain spaces or ')': split at the last ')'.
    close = raw.rfind(b")")
    if close < 0:
        return None
    comm = raw[raw.find(b"(") + 1 : close].decode("utf-8", "replace")
    fields = raw[close + 2 :].split()
    # fields[0] is field 3 (state) of proc(5); utime is field 14, so index 11.
    try:
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        rss_pages = int(fields[21])
    except (IndexError, ValueError):
        return None
    return ProcStat(
        pid=pid,
        ppid=ppid,
        comm=comm,
        cpu_s=(utime + stime) / CLOCK_TICKS,
        user_s=utime / CLOCK_TICKS,
        system_s=stime / CLOCK_TICKS,
        children_cpu_s=(cutime + cstime) / CLOCK_TICKS,
        rss_bytes=rss_pages * PAGE_SIZE,
    )


def read_status_kb(pid: int, keys: tuple[str, ...] = ("VmRSS", "VmHWM")) -> dict[str, int]:
    """Selected `kB` fields of /proc/PID/status, in bytes; empty when the process is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                name, _, rest = line.partition(b":")
                key = name.decode()
                if key in keys:
                    out[key] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return out


def all_stats() -> dict[int, ProcStat]:
    """One pass over /proc: every process's stat, keyed by pid."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                stats[st.pid] = st
    return stats


def tree_pids(root: int, stats: dict[int, ProcStat] | None = None) -> list[int]:
    """The root and all its live descendants (the root first); [] when the root is gone."""
    stats = all_stats() if stats is None else stats
    if root not in stats:
        return []
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


@dataclass(frozen=True, slots=True)
class TreeSample:
    """One reading of a process tree."""

    pids: tuple[int, ...]
    cpu_s: float
    """Sum of utime + stime + cutime + cstime over the tree, in seconds."""
    rss_bytes: int
    hwm_bytes: int
    """Sum of VmHWM over the tree (an upper bound of the tree's peak)."""


def sample_tree(root: int, stats: dict[int, ProcStat] | None = None, memory: bool = True) -> TreeSample:
    """Read CPU (and, if `memory`, VmRSS and VmHWM) of `root` and its descendants."""
    stats = all_stats() if stats is None else stats
    pids = tree_pids(root, stats)
    cpu = sum(stats[p].cpu_s + stats[p].children_cpu_s for p in pids)
    rss = hwm = 0
    if memory:
        for p in pids:
            st = read_status_kb(p)
            rss += st.get("VmRSS", 0)
            hwm += st.get("VmHWM", 0)
    return TreeSample(pids=tuple(pids), cpu_s=cpu, rss_bytes=rss, hwm_bytes=hwm)


def sample_many(pids: list[int], stats: dict[int, ProcStat] | None = None) -> float:
    """Total CPU seconds of several unrelated processes (each counted with its own tree)."""
    stats = all_stats() if stats is None else stats
    seen: set[int] = set()
    total = 0.0
    for root in pids:
        for p in tree_pids(root, stats):
            if p not in seen:
                seen.add(p)
                total += stats[p].cpu_s + stats[p].children_cpu_s
    return total


class RssPeak:
    """Tracks the peak of a tree's summed VmRSS over repeated samples."""

    __slots__ = ("root", "peak_bytes", "last_bytes", "samples", "hwm_bytes")

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak_bytes = 0
        self.last_bytes = 0
        self.hwm_bytes = 0
        self.samples = 0

    def sample(self, stats: dict[int, ProcStat] | None = None) -> TreeSample:
        s = sample_tree(self.root, stats)
        self.samples += 1
        self.last_bytes = s.rss_bytes
        self.peak_bytes = max(self.peak_bytes, s.rss_bytes)
        self.hwm_bytes = max(self.hwm_bytes, s.hwm_bytes)
        return s
