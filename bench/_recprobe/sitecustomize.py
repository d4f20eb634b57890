"""Loaded into the server by `bench.record --probe` (this directory first on PYTHONPATH): times the recording's
own work where it runs, with `time.thread_time`, and writes the running totals as JSON to the file
MEDIASERVER_BENCH_RECPROBE names, every second: `Recorder.on_frames` on the event loop (and the frames it took)
and every job of the recording writer's thread (and the bytes it wrote). The toggle windows' figure moves by
±0.003 CPU-s per stream-minute between runs of the same code, since it holds the whole server; this holds
only the recording's own work (bench/README.md, "Recording cost").

The modules are patched when the server imports them, from its own working directory (a worktree's copy, in
an A/B run), not here: at this point of start-up that directory is not on sys.path yet."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

_OUT = os.environ.get("MEDIASERVER_BENCH_RECPROBE")
_TARGETS = ("mediaserver.record.recorder", "mediaserver.record.writer")
totals = {"frames": 0, "loop_s": 0.0, "writer_s": 0.0, "bytes": 0}
"""The loop's thread updates frames and loop_s, the writer's thread the others: no key has two writers."""


def _patch(module) -> None:
    now = time.thread_time
    if module.__name__ == _TARGETS[0]:
        on_frames = module.Recorder.on_frames

        def timed_on_frames(self, frames):
            t = now()
            on_frames(self, frames)
            totals["loop_s"] += now() - t
            totals["frames"] += len(frames)
        module.Recorder.on_frames = timed_on_frames
    else:
        do = module.DiskWriter._do

        def timed_do(self, kind, file, arg):
            t = now()
            do(self, kind, file, arg)
            totals["writer_s"] += now() - t
            if kind == "write":
                totals["bytes"] += len(arg)
        module.DiskWriter._do = timed_do


class _PatchOnImport:
    """A meta path finder that lets the others find the two modules, then patches each once it has run."""

    def find_spec(self, name, path=None, target=None):
        if name not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                run = spec.loader.exec_module

                def exec_module(module, run=run):
                    run(module)
                    _patch(module)
                spec.loader.exec_module = exec_module
                return spec
        return None


def _report() -> None:
    while True:
        time.sleep(1.0)
        tmp = f"{_OUT}.tmp"
        with open(tmp, "w") as f:
            json.dump({**totals, "at": time.monotonic()}, f)
        os.replace(tmp, _OUT)


if _OUT:
    sys.meta_path.insert(0, _PatchOnImport())
    threading.Thread(target=_report, name="bench recording probe", daemon=True).start()
