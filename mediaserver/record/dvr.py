"""The DVR window of a stream being recorded: the newest `record.dvr_window` seconds, across the files of
its recording (a file rotates every record.segment_minutes, and at a codec change).

A `DvrTrail` follows one recording: the manager tells it each file as it opens; `render` (blocking: it
reads the files' indexes, record/vod.py `index_path`, which reads a growing file from its last segment on)
writes the live HLS playlist over byte ranges of the files. Segment numbers run on across the files
(EXT-X-MEDIA-SEQUENCE never goes back at a rotation, which players take for a new stream), a codec change
between two files is an EXT-X-DISCONTINUITY (counted by EXT-X-DISCONTINUITY-SEQUENCE as the window slides),
and each file brings its own EXT-X-MAP. A file stays in the trail while any of it is in the window.
A file gone from the disk (retention, an operator) is left out, the ones after it numbered past it; with
record.storage = "s3" the uploader keeps a file's local copy while the window reaches it (`holds`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import MediaError
from .vod import VodFragment, VodIndex, index_path


MAX_FILES = 1000
"""Files a trail keeps when nobody renders it (a stream nobody plays back)."""


@dataclass(slots=True)
class DvrFile:
    """One file of the trail, with what is learnt of it as it is rendered."""

    rec_id: str
    path: Path
    started_at: float
    """Unix seconds at its first media."""
    sequence: int | None = None
    """Media sequence number of its first segment (known for the first file, then once the file before
    it is whole on disk and read)."""
    discontinuity: int | None = None
    """Discontinuity sequence number of its segments."""
    final_bytes: int | None = None
    """Its size once closed (`DvrTrail.closed`): its last pieces may still be on their way to the disk
    (record/writer.py), and the next file's numbers wait until they are there."""
    count: int = 0
    """Segments in its index when last read: the numbers it may have handed out."""
    gone: bool = False
    """Found missing from the disk: left out from then on, the files after it numbered past it (with a
    discontinuity: its time is missing)."""


def _shape(index: VodIndex) -> tuple:
    """(codecs, width, height): a change between files is a discontinuity."""
    return index.codecs, index.width, index.height


class DvrTrail:
    def __init__(self, window_s: float, clock: Callable[[], float] = time.time) -> None:
        if window_s <= 0:
            raise MediaError(f"DVR window {window_s} s must be > 0")
        self.window_s = window_s
        self._clock = clock
        self.files: list[DvrFile] = []
        self._deletions = 0

    def opened(self, rec_id: str, path: Path, started_at: float) -> None:
        """The recording goes on in a new file (called on the event loop)."""
        if not self.files:
            self.files.append(DvrFile(rec_id, path, started_at, 0, 0))
            return
        self.files.append(DvrFile(rec_id, path, started_at))
        horizon = self._clock() - self.window_s
        # A file leaves once the next one started before the window's beginning and the next one's numbers
        # are known (the next render learns them). A trail nobody renders is cut at MAX_FILES: with no
        # player holding its numbers, it may number again from 0.
        while len(self.files) > 1 and self.files[1].started_at < horizon and (
                self.files[1].sequence is not None or len(self.files) > MAX_FILES):
            self.files.pop(0)
            head = self.files[0]
            if head.sequence is None:
                head.sequence, head.discontinuity = 0, 0

    def closed(self, rec_id: str, size: int) -> None:
        """A file of the trail is closed at `size` bytes (called on the event loop)."""
        for f in reversed(self.files):
            if f.rec_id == rec_id:
                f.final_bytes = size
                return

    def deleted(self, rec_id: str) -> None:
        """A file was deleted (an operator, retention): if it is one of the trail's, the text rendered before
        lists it, so the next request renders again (and finds it gone)."""
        if any(f.rec_id == rec_id for f in self.files):
            self._deletions += 1

    def key(self) -> tuple[str, str, int, int, int]:
        """What the rendered text depends on: the oldest and newest files, the newest one's size and change
        time (a stat, no reading: a direct write that adds less than its block's padding leaves the size
        as it was) and the deletions of its files, so a cached text is reused until a fragment is added."""
        if not self.files:
            return "", "", -1, -1, self._deletions
        oldest, newest = self.files[0], self.files[-1]
        try:
            st = os.stat(newest.path)
            size, changed = st.st_size, st.st_mtime_ns
        except OSError:
            size = changed = -1
        return oldest.rec_id, newest.rec_id, size, changed, self._deletions

    def holds(self, rec_id: str) -> bool:
        """Whether the window still reaches the file: the newest, or the next one started inside the window.
        Its local copy is kept meanwhile (record.storage = "s3", record/uploader.py) for `render` to read."""
        horizon = self._clock() - self.window_s
        files = self.files
        for position, f in enumerate(files):
            if f.rec_id == rec_id:
                return position == len(files) - 1 or files[position + 1].started_at >= horizon
        return False

    def render(self, uri: Callable[[str], str]) -> str:
        """The live DVR playlist; `uri(rec_id)` names a file for the player. Blocking (reads indexes)."""
        files = list(self.files)
        listed: list[tuple[DvrFile, VodIndex, VodFragment, int]] = []
        following: int | None = None  # the next file's first number, once the files before it say it for sure
        discontinuity, shape, gap = 0, (), False
        for position, f in enumerate(files):
            try:
                index = None if f.gone else _read(f)
            except (OSError, MediaError):  # not readable yet (no whole init): the files after it wait
                following, gap = None, False
                continue
            if index is None:
                f.gone = True  # for good: the files after it may be numbered past what it held when last read
                if f.sequence is not None:
                    following, discontinuity = f.sequence + f.count, f.discontinuity or 0
                    if f.count:  # its segments may have been listed: a playlist drops segments from its head
                        listed.clear()  # only, never from its middle
                gap = True
                continue
            if f.sequence is None and following is not None:
                f.sequence = following
                f.discontinuity = discontinuity + (gap or _shape(index) != shape)
            whole = f.final_bytes is not None and index.total_bytes >= f.final_bytes  # (not its `free` padding)
            following = f.sequence + len(index.fragments) if f.sequence is not None and whole else None
            discontinuity, shape, gap = f.discontinuity or 0, _shape(index), False
            if f.sequence is None:
                continue  # its predecessor is not whole on disk, or unreadable: it waits for numbers it can keep
            newest = position == len(files) - 1
            fragments = index.fragments[:-1] if newest else index.fragments  # the newest may still grow
            listed += [(f, index, x, f.sequence + n) for n, x in enumerate(fragments)]
        if listed:
            _prefetch(listed[-1][0].path, listed[-1][2])
        return dvr_playlist(listed, self.window_s, uri)


def _prefetch(path: Path, fragment: VodFragment) -> None:
    """Ask the kernel to read the live edge's segment into the page cache now (POSIX_FADV_WILLNEED, which
    does not wait): the files are written past the cache (record/writer.py), and the viewers who fetch the
    segment next would otherwise have the first of them read it from the disk inside a sendfile on the
    event loop (edge/sendfile.py). Once per segment, when a playlist that lists it is rendered."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        advise(fd, fragment.offset, fragment.size, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass  # only advice
    finally:
        os.close(fd)


def _read(f: DvrFile) -> VodIndex | None:
    """The file's index, None once it is gone (retention, an operator, its upload to object storage), its
    count of segments noted: the numbers the files after it take, should it go."""
    try:
        index = index_path(f.path)
    except FileNotFoundError:
        return None  # (a Recorder creates its file before telling of it: missing is gone, not yet to come)
    f.count = max(f.count, len(index.fragments))
    return index


def dvr_playlist(listed: Sequence[tuple[DvrFile, VodIndex, VodFragment, int]], window_s: float,
                 uri: Callable[[str], str]) -> str:
    """A sliding live playlist of the newest segments of `listed` (file, its index, segment, number) that
    fit in `window_s` (the newest one whatever its length)."""
    first = len(listed)
    total = 0.0
    while first > 0:
        f, index, x, _ = listed[first - 1]
        seconds = index.fragment_seconds(x)
        if first < len(listed) and total + seconds > window_s:
            break
        first -= 1
        total += seconds
    window = listed[first:]
    target = max(1, max((math.ceil(i.fragment_seconds(x) - 0.001) for _, i, x, _ in window), default=1))
    head = window[0] if window else None
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{target}",
             f"#EXT-X-MEDIA-SEQUENCE:{head[3] if head else 0}",
             f"#EXT-X-DISCONTINUITY-SEQUENCE:{(head[0].discontinuity or 0) if head else 0}"]
    if window and all(x.keyframe for _, _, x, _ in window):
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    if total > 3 * target:
        # A DVR viewer starts at the live edge (three target durations back, as RFC 8216 asks of a live
        # start) and scrubs back from there; without this, players may start at the window's beginning.
        lines.append(f"#EXT-X-START:TIME-OFFSET=-{3 * target},PRECISE=NO")
    current: DvrFile | None = None
    for f, index, x, _ in window:
        name = uri(f.rec_id)
        if f is not current:
            if current is not None and f.discontinuity != current.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f'#EXT-X-MAP:URI="{name}",BYTERANGE="{index.init_size}@{index.init_offset}"')
            current = f
        lines += [f"#EXTINF:{index.fragment_seconds(x):.3f},", f"#EXT-X-BYTERANGE:{x.size}@{x.offset}", name]
    return "\n".join(lines) + "\n"
