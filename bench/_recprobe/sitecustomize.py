"""Loaded into the server by `bench.record --probe` (this directory first on PYTHONPATH): times the recording's
own work where it runs, with `time.thread_time`, and writes the running totals as JSON to the file
MEDIASERVER_BENCH_RECPROBE names, every second: `Recorder.on_frames` on the event loop (and the frames it took)
and every job of the recording writer's thread (and the bytes it wrote), and the parts of each: the
GopFragmenter's cuts, the writer's copy and its pwrite calls. The toggle windows' figure moves by
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
_TARGETS = ("mediaserver.record.recorder", "mediaserver.record.writer", "mediaserver.record.fragmenter")
totals = {"frames": 0, "loop_s": 0.0, "writer_s": 0.0, "bytes": 0,
          "video_cut_s": 0.0, "audio_cut_s": 0.0, "views_s": 0.0, "moof_s": 0.0, "direct_s": 0.0, "pwrite_s": 0.0}
"""The loop's thread updates frames, loop_s and the cuts' parts (all within loop_s: the video cuts less the
audio fragments made in them, the audio fragments, and, within those, the video payloads' views and the
moofs), the writer's thread the others (within writer_s: the direct writes, and their pwrite calls): no key
has two writers."""


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
    elif module.__name__ == _TARGETS[2]:
        _patch_fragmenter(module, now)
    else:
        do = module.DiskWriter._do

        def timed_do(self, kind, file, arg):
            t = now()
            do(self, kind, file, arg)
            totals["writer_s"] += now() - t
            if kind == "write":
                totals["bytes"] += len(arg)
        module.DiskWriter._do = timed_do
        module.DiskWriter._write_direct = _timed(module.DiskWriter._write_direct, "direct_s", now)
        module.DiskWriter._put = _timed(module.DiskWriter._put, "pwrite_s", now)


def _timed(function, key, now):
    """`function` (a method too: `self` is its first argument), its time added to totals[key]."""
    def timed(*args, **kwargs):
        t = now()
        try:
            return function(*args, **kwargs)
        finally:
            totals[key] += now() - t
    timed.__name__ = f"timed_{function.__name__.lstrip('_')}"
    return timed


def _patch_fragmenter(module, now) -> None:
    """The cuts' parts: module-level helpers are looked up by name when called, so replacing them works."""
    fragmenter = module.GopFragmenter
    cut = fragmenter._cut

    def timed_cut(self, end_ms):
        audio_before = totals["audio_cut_s"]
        t = now()
        try:
            return cut(self, end_ms)
        finally:
            totals["video_cut_s"] += now() - t - (totals["audio_cut_s"] - audio_before)
    fragmenter._cut = timed_cut
    fragmenter._audio_fragment = _timed(fragmenter._audio_fragment, "audio_cut_s", now)
    module._payloads = _timed(module._payloads, "views_s", now)
    module.fragment_pieces = _timed(module.fragment_pieces, "moof_s", now)


class _PatchOnImport:
    """A meta path finder that lets the others find the modules of _TARGETS, then patches each once it has run."""

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


def _run_the_shadowed_sitecustomize() -> None:
    """The `sitecustomize` this one hides (the next on sys.path, such as Debian's), run as Python would have."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if _OUT:
    sys.meta_path.insert(0, _PatchOnImport())
    threading.Thread(target=_report, name="bench recording probe", daemon=True).start()
_run_the_shadowed_sitecustomize()
