"""Recorder: a hub Sink that writes a live stream to fragmented MP4 files, crash-safe.

One file per recording: `ftyp` + `moov` (one init describing the video and the audio track together),
then each CMAF segment of each track (the GOPs of `fragment_s` of video, the audio of the same stretch) as
moof+mdat fragments. The stream is cut by the GopFragmenter (fragmenter.py: the boxes of the project's own
CmafSegmenter, which the live CMAF outputs use, whole GOPs at a time), so recording adds one fragmenter and one
write per segment and track: no decoding, and no copy of the media in Python (a fragment's pieces, its
boxes' headers and views of the frames' payloads, go to one os.writev).

Crash safety: the file is opened O_APPEND and every piece (the init, then each segment) goes out in one
os.writev, so a process killed at any moment leaves a file that plays up to its last complete fragment;
vod.index_file() ignores the partial box at the end. The data reaches the disk when the kernel writes it
back, or at an fsync (every `fsync_interval_s`, as `take_sync_jobs()` is called, and at close).

Where the writes happen: given a `disk` (writer.DiskWriter, as the RecordingManager gives), the pieces of
each batch of frames (a fragment's video and audio together, one job and one writev), each fsync and
close go to its thread in order, so a disk that stalls never stalls the hub's callbacks (the event loop);
an error there comes back through `_disk_failed`. Creating a file (mkdir, open) goes there as well, first
in its queue: the file's name is made here from the template (no disk access), and what the owner hears
of a file (`on_file_opened`, `on_progress`, `on_file_closed`) waits until the thread has created it, in
that order, with the name it got. Without a DiskWriter all of it happens here, and `take_sync_jobs()`
hands the owner a callable per fsync due, holding its own duplicate of the descriptor, to run in a thread.

Rotation: a new file starts at a video segment (a keyframe) once the file holds `segment_minutes` of
media, and whenever a track's codec configuration changes (or a track appears) so each file has one
init. A discontinuity (a publisher reconnecting within the grace period) continues the same file: the
hub rebases the timestamps so they stay continuous. Times in a file are the stream's own (a rotated file
starts where the previous one ended).

A disk error (ENOSPC, EIO, ...) ends the recording: the file is closed (cut back to its last whole
fragment where the system lets us) and reported once through `on_file_closed` with status "failed";
nothing is raised into the hub. The writes happen in the hub's callbacks: each is one segment of one
track (a few hundred kB at most for a normal stream; CmafSegmenter bounds a segment at 64 MiB).
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config.record import DEFAULT_FRAGMENT_S, DEFAULT_TEMPLATE
from ..errors import MediaError, UsageError
from ..hub.stream import StreamKey
from ..log import event
from ..media.frames import Frame
from ..remux.cmaf import AUDIO, VIDEO, CmafInit, CmafPart, CmafSegment
from ..remux.fmp4 import Pieces, box
from .fragmenter import GopFragmenter
from .writer import DiskWriter, WriteV, write_whole

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_MINUTES = 60.0
DEFAULT_FSYNC_INTERVAL_S = 10.0
_MAX_NAME_TRIES = 100

# File statuses in FileClosed.
COMPLETE = "complete"
"""The stream ended (or the owner stopped the recording)."""
ROTATED = "rotated"
"""The file reached its length, or a codec changed: the recording goes on in the next file."""
FAILED = "failed"
"""A disk error ended the recording; the file plays up to its last whole fragment."""


@dataclass(frozen=True, slots=True)
class FileClosed:
    """What the owner learns when a file is done (for the catalog)."""

    path: Path
    started_at: float
    """Unix seconds at the file's first media."""
    duration_s: float
    bytes: int
    codecs: tuple[str, ...]
    """RFC 6381 codec strings, video first ("avc1.64001f", "mp4a.40.2")."""
    width: int
    height: int
    status: str
    """COMPLETE, ROTATED or FAILED."""
    error: str | None = None


def two_track_init(inits: list[CmafInit]) -> bytes:
    """One ftyp + moov describing every track of `inits` (each CmafInit is a one-track init).

    The trak boxes and trex entries are taken from each init as they are (track ids 1 and 2 already
    differ); mvhd is the first init's with next_track_ID raised past them all."""
    if not inits:
        raise UsageError("a recording's init needs at least one track")
    ftyp = b""
    mvhd = b""
    traks: list[bytes] = []
    trexs: list[bytes] = []
    for init in inits:
        top = dict(_children(init.data, 0, len(init.data)))
        ftyp = ftyp or top[b"ftyp"]
        moov = top[b"moov"]
        for kind, child in _children(moov, 8, len(moov)):
            if kind == b"mvhd" and not mvhd:
                mvhd = child
            elif kind == b"trak":
                traks.append(child)
            elif kind == b"mvex":
                trexs.extend(c for k, c in _children(child, 8, len(child)) if k == b"trex")
    # next_track_ID is mvhd's last field (version 0).
    mvhd = mvhd[:-4] + (len(traks) + 1).to_bytes(4, "big")
    return ftyp + box(b"moov", mvhd, *traks, box(b"mvex", *trexs))


def _children(data: bytes, start: int, end: int) -> list[tuple[bytes, bytes]]:
    """The boxes in data[start:end] as (type, whole box); our own inits, so plain 32-bit sizes."""
    out = []
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos:pos + 4], "big")
        if size < 8 or pos + size > end:
            raise MediaError(f"init segment box at byte {pos} has a bad size {size}")
        out.append((data[pos + 4:pos + 8], data[pos:pos + size]))
        pos += size
    return out


class _File:
    """One open recording file."""

    __slots__ = ("path", "fd", "started_at", "inits", "bytes", "start_ms", "end_ms", "synced_at", "fragments",
                 "creating", "closed")

    def __init__(self, path: Path, fd: int, started_at: float, inits: dict[str, CmafInit], now: float) -> None:
        self.path = path
        self.fd = fd
        """-1 until created (a DiskWriter's thread sets it)."""
        self.creating = fd < 0
        """A DiskWriter's thread has yet to create it: the owner hears of it once it has."""
        self.closed: tuple[str, str | None] | None = None
        """(status, error) of a close that came while `creating`, told once the file exists."""
        self.started_at = started_at
        self.inits = inits
        self.bytes = 0
        self.start_ms: float | None = None
        self.end_ms = 0.0
        self.synced_at = now
        self.fragments = 0

    @property
    def duration_s(self) -> float:
        return 0.0 if self.start_ms is None else max(0.0, self.end_ms - self.start_ms) / 1000


def create_file(path: Path) -> tuple[Path, int]:
    """A new, empty file at `path`, its directories made; at "NAME-1.mp4", "-2", ... when the name is taken
    (a restart within the same second). Blocks on the disk: the DiskWriter's thread runs it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    candidate = path
    for n in range(1, _MAX_NAME_TRIES + 1):
        try:
            return candidate, os.open(candidate, flags, 0o644)
        except FileExistsError:
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    raise OSError(errno.EEXIST, f"{_MAX_NAME_TRIES} recordings named like {path} already exist")


def _sync_job(fd: int) -> Callable[[], None]:
    """fsync a duplicate of `fd`, then close the duplicate (run in a thread, once)."""
    dup = os.dup(fd)

    def run() -> None:
        try:
            os.fsync(dup)
        finally:
            os.close(dup)
    return run


class Recorder:
    """Records one stream into fragmented MP4 files under `root` (see the module docstring).

    Attach it as Stream.add_sink after feeding it Stream.history(). File names: `template` under `root`,
    with {app}, {stream} and {start} (the file's first media, a UTC datetime); a second file of the same
    name gets "-1", "-2", ... Callbacks (all optional, called
    from the hub's callbacks: keep them quick): `on_file_opened(path, started_at)`,
    `on_progress(bytes, duration_s)` after each write to the current file, `on_file_closed(FileClosed)`,
    `on_tail_lost(path, bytes, error)` when pieces of a file closed already could not be written (the
    writer's thread cut it back to `bytes`).
    """

    waits_for_frames = False
    """Nobody watches the file as frames come (it grows a fragment at a time; DVR and VOD read what is
    written): a stream only recorded may have its publisher's reads merged as if unwatched."""

    def next_output_ms(self) -> float:
        """No frame is due for anyone: the file may take frames as late as the widest read merge."""
        return math.inf

    def __init__(
        self,
        key: StreamKey,
        root: Path | str,
        *,
        template: str = DEFAULT_TEMPLATE,
        segment_minutes: float = DEFAULT_SEGMENT_MINUTES,
        fragment_s: float = DEFAULT_FRAGMENT_S,
        fsync_interval_s: float = DEFAULT_FSYNC_INTERVAL_S,
        wall_clock: Callable[[], float] = time.time,
        on_file_opened: Callable[[Path, float], None] | None = None,
        on_progress: Callable[[int, float], None] | None = None,
        on_file_closed: Callable[[FileClosed], None] | None = None,
        on_tail_lost: Callable[[Path, int, OSError], None] | None = None,
        write: WriteV = os.writev,
        disk: DiskWriter | None = None,
    ) -> None:
        if segment_minutes <= 0:
            raise UsageError(f"recording segment_minutes {segment_minutes} must be > 0")
        if fsync_interval_s < 0:
            raise UsageError(f"recording fsync_interval_s {fsync_interval_s} must be >= 0 (0: only at close)")
        try:  # a bad template is the operator's to fix now, not a failure in the middle of a stream
            template.format(app="a", stream="s", start=dt.datetime.now(dt.UTC))
        except (KeyError, IndexError, ValueError, AttributeError) as err:
            raise UsageError(
                f"recording template {template!r} is invalid ({err!r}); it may use {{app}}, {{stream}} and "
                "{start:STRFTIME} (UTC), e.g. " + DEFAULT_TEMPLATE
            ) from err
        self.key = key
        self.root = Path(os.path.abspath(root))  # (not resolve(): no disk access on the event loop)
        self.template = template
        self.max_ms = segment_minutes * 60_000
        self.fsync_interval_s = fsync_interval_s
        self._wall = wall_clock
        self._on_opened = on_file_opened
        self._on_progress = on_progress
        self._on_closed = on_file_closed
        self._on_tail_lost = on_tail_lost
        self._write = write
        self._disk = disk
        """Given: the writes, fsyncs and closes go to its thread (the event loop never waits for the disk);
        else they happen here, with `write` (tests, tools)."""
        self._handing: _File | None = None
        self._hand: list[bytes | bytearray | Pieces] = []
        """Pieces of `_handing` gathered for one write (see `_append`)."""
        self.segmenter = GopFragmenter(fragment_s, max(10.0, 2 * fragment_s))
        self._file: _File | None = None
        self._first_sequence = 0
        self._sync_jobs: list[Callable[[], None]] = []
        self.files: list[FileClosed] = []
        """Every file closed so far, in order."""
        self.stopped = False
        """True once the recording ended (stream end, stop(), or a disk error): later frames are ignored."""
        self.frames_skipped = 0
        """Frames the segmenter could not use (malformed), skipped."""
        self.segments_dropped = 0
        """Segments that belonged to a file already closed at a config change (left out)."""

    # ----- Sink ----------------------------------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        if self.stopped:
            return
        try:
            items = self.segmenter.push(frame, self._wall())
        except MediaError:
            self.frames_skipped += 1
            return
        self._store(items)

    def on_frames(self, frames: list[Frame]) -> None:
        """A socket read's frames at once (Stream.flush_sinks): one clock read and one call per batch."""
        if self.stopped:
            return
        segmenter = self.segmenter
        skipped = segmenter.skipped
        items = segmenter.push_many(frames, self._wall())
        self.frames_skipped += segmenter.skipped - skipped
        if items:
            self._store(items)

    def on_discontinuity(self) -> None:
        # The segments open now close (they come out of the next push); the file goes on.
        if not self.stopped:
            self.segmenter.discontinuity()

    def on_end(self) -> None:
        """The stream ended: write what is left and close the file. Safe to call twice."""
        self.stop()

    def stop(self) -> None:
        """End the recording now (the owner's stop): the last segments are written, the file closed."""
        if self.stopped:
            return
        try:
            self._store(self.segmenter.finish(self._wall()))
        except MediaError:
            self.frames_skipped += 1
        if self._file is not None:
            self._close(COMPLETE)
        self.stopped = True

    # ----- fsync hook ----------------------------------------------------------------------------

    def take_sync_jobs(self) -> list[Callable[[], None]]:
        """The fsyncs due (the open file every `fsync_interval_s`, every file at its close): callables
        for the owner to run in a thread. Call it every second or so."""
        f = self._file
        if f is not None and self.fsync_interval_s and self._wall() - f.synced_at >= self.fsync_interval_s:
            f.synced_at = self._wall()
            if self._disk is not None:
                self._disk.sync(f)  # after the writes queued before it
            else:
                self._sync_jobs.append(_sync_job(f.fd))
        jobs, self._sync_jobs = self._sync_jobs, []
        return jobs

    @property
    def current_path(self) -> Path | None:
        return self._file.path if self._file is not None else None

    # ----- writing -------------------------------------------------------------------------------

    def _store(self, items: list[CmafPart | CmafSegment]) -> None:
        for item in items:
            if isinstance(item, CmafSegment) and not self.stopped:
                self._store_segment(item)
        self._hand_over()

    def _store_segment(self, seg: CmafSegment) -> None:
        f = self._file
        if f is not None:
            known = f.inits.get(seg.track)
            if known is None or known.data != seg.init.data:
                if known is not None and seg.track == AUDIO and seg.sequence < self._first_sequence:
                    self.segments_dropped += 1  # the old file's audio, after the cut: its init is gone
                    return
                self._close(ROTATED)
                f = None
            elif (
                seg.independent
                and seg.track == (VIDEO if VIDEO in f.inits else AUDIO)  # cut where a player can start
                and f.start_ms is not None
                and seg.start_ms - f.start_ms >= self.max_ms
            ):
                self._close(ROTATED)
                f = None
        if f is None:
            if self.stopped:
                return  # the closed file's last pieces could not be handed over: the recording failed
            f = self._open(seg)
            if f is None:
                return
        if not self._append(f, self._numbered(f, seg.data)):
            return
        f.start_ms = seg.start_ms if f.start_ms is None else min(f.start_ms, seg.start_ms)
        f.end_ms = max(f.end_ms, seg.start_ms + seg.duration * 1000 / seg.timescale)
        if self._on_progress is not None and not f.creating:
            self._on_progress(f.bytes, f.duration_s)

    def _open(self, seg: CmafSegment) -> _File | None:
        inits: dict[str, CmafInit] = {}
        for track in (VIDEO, AUDIO):
            init = seg.init if track == seg.track else self.segmenter.init(track)
            if init is not None:
                inits[track] = init
        started_at = seg.program_date_time
        try:
            path, fd = self._name(started_at), -1  # -1: the DiskWriter's thread creates it
            if self._disk is None:
                path, fd = create_file(path)
        except (OSError, UsageError) as err:
            self._fail(None, err if isinstance(err, OSError) else OSError(errno.EINVAL, str(err)))
            return None
        f = self._file = _File(path, fd, started_at, inits, self._wall())
        self._first_sequence = seg.sequence
        if self._disk is not None:
            self._disk.create(f, path, create_file, self._disk_failed, self._created)
        elif self._on_opened is not None:
            self._on_opened(path, started_at)
        if not self._append(f, two_track_init([inits[t] for t in (VIDEO, AUDIO) if t in inits])):
            return None
        return f

    def _created(self, f: _File, path: Path) -> None:
        """The DiskWriter's thread created `f` at `path` (on the event loop): the owner hears of it now, and
        of what came meanwhile (its figures; its close, if it came)."""
        f.path = path
        f.creating = False
        if self._on_opened is not None:
            self._on_opened(path, f.started_at)
        if f.closed is not None:
            status, error = f.closed
            self._closed(f, status, error)
        elif self._on_progress is not None and f.bytes:
            self._on_progress(f.bytes, f.duration_s)

    @staticmethod
    def _numbered(f: _File, data: bytes | Pieces) -> bytes | bytearray | Pieces:
        """The segment's fragments with the file's own moof sequence numbers (mfhd): within one file they
        must run 1, 2, 3, ... The GopFragmenter numbers them so already (until a file is rotated): then the
        bytes go out as they are; else one copy of the segment (~10 us per 100 kB), renumbered (of a
        GopFragmenter's one fragment in pieces, only its head: the moof)."""
        if isinstance(data, Pieces):
            head = data.parts[0]
            if head[4:8] != b"moof" or head[12:16] != b"mfhd":
                return data  # never from the fragmenter; the bytes go out as they are
            f.fragments += 1
            if int.from_bytes(head[20:24], "big") == f.fragments:
                return data
            renumbered = bytearray(head)
            renumbered[20:24] = f.fragments.to_bytes(4, "big")
            return Pieces((bytes(renumbered), *data.parts[1:]), data.size)
        pos = 0
        wanted = f.fragments
        while pos + 24 <= len(data):
            size = int.from_bytes(data[pos:pos + 4], "big")
            if size < 8:
                break
            if data[pos + 4:pos + 8] == b"moof" and data[pos + 12:pos + 16] == b"mfhd":
                wanted += 1
                if int.from_bytes(data[pos + 20:pos + 24], "big") != wanted:
                    break
            pos += size
        else:
            f.fragments = wanted
            return data
        out = bytearray(data)
        pos = 0
        while pos + 24 <= len(out):
            size = int.from_bytes(out[pos:pos + 4], "big")
            if size < 8:
                break  # never from the segmenter; the bytes go out as they are
            if out[pos + 4:pos + 8] == b"moof" and out[pos + 12:pos + 16] == b"mfhd":
                f.fragments += 1
                out[pos + 20:pos + 24] = f.fragments.to_bytes(4, "big")
            pos += size
        return out

    def _name(self, started_at: float) -> Path:
        """The file's path from the template, checked to stay under the root (by its text alone: no disk)."""
        start = dt.datetime.fromtimestamp(started_at, dt.UTC)
        relative = self.template.format(app=self.key.app, stream=self.key.name, start=start)
        path = Path(os.path.normpath(self.root / relative))
        if not path.is_relative_to(self.root) or path == self.root:
            raise UsageError(f"recording path {relative!r} escapes the recording root {self.root}; fix the template")
        return path

    def _append(self, f: _File, data: bytes | bytearray | Pieces) -> bool:
        """One piece, whole, in one write (a short write on a full disk is finished or fails). Given a
        DiskWriter, the pieces of one `_store` (a fragment's video and audio, a new file's init and
        first fragment) go to it together at its end, `_hand_over`: one job and one writev, not one each."""
        if self._disk is not None:
            if self._handing is not f:
                self._hand_over()
                self._handing = f
            self._hand.append(data)
            f.bytes += len(data)
            return True
        try:
            write_whole(f.fd, data, self._write)
        except OSError as err:
            self._fail(f, err)
            return False
        f.bytes += len(data)
        return True

    def _hand_over(self) -> None:
        """The pieces `_append` gathered, to the DiskWriter as one write (their order kept)."""
        f, pieces = self._handing, self._hand
        if f is None or not pieces:
            return
        self._handing, self._hand = None, []
        assert self._disk is not None
        if len(pieces) == 1:
            data = pieces[0]
        else:
            parts: list[bytes | bytearray | memoryview] = []
            for piece in pieces:
                if isinstance(piece, Pieces):
                    parts += piece.parts
                else:
                    parts.append(piece)
            data = Pieces(tuple(parts), sum(map(len, pieces)))
        if not self._disk.write(f, data):
            f.bytes -= len(data)  # never written
            self._fail(f, OSError(errno.ENOBUFS, f"the disk does not keep up: more than "
                                  f"{self._disk.max_queued_bytes >> 20} MB of recordings wait to be written"))

    def _close(self, status: str, error: str | None = None) -> None:
        self._hand_over()  # what this file gathered goes before its close
        f = self._file
        if f is None:
            return  # the hand-over failed and closed it
        self._file = None
        if self._disk is not None:
            self._disk.close(f, sync=status != FAILED)  # once its writes are done
        else:
            if status != FAILED:
                try:
                    self._sync_jobs.append(_sync_job(f.fd))
                except OSError:
                    pass
            try:
                os.close(f.fd)
            except OSError:
                pass
        if f.creating:
            f.closed = (status, error)  # told once the file exists (`_created`), or that it never will
        else:
            self._closed(f, status, error)

    def _closed(self, f: _File, status: str, error: str | None) -> None:
        video = f.inits.get(VIDEO)
        closed = FileClosed(
            path=f.path, started_at=f.started_at, duration_s=round(f.duration_s, 3), bytes=f.bytes,
            codecs=tuple(f.inits[t].codec_string for t in (VIDEO, AUDIO) if t in f.inits),
            width=video.width if video else 0, height=video.height if video else 0, status=status, error=error,
        )
        self.files.append(closed)
        if self._on_closed is not None:
            self._on_closed(closed)

    def _disk_failed(self, f: _File, err: OSError, good_bytes: int) -> None:
        """The writer's thread could not write `f` (it cut the file back to `good_bytes`), or could not create
        it: on the event loop."""
        if f.creating:  # never created: nothing of it exists, nor will
            f.creating = False
            f.bytes = 0
            if self._file is f:
                self._fail(f, err)
            elif f.closed is not None:
                self._closed(f, FAILED, str(err))
            return
        if self._file is not f:
            # Closed already (its FileClosed counted the pieces still queued): the file plays up to its
            # last whole fragment, which is what a reader indexes; `on_tail_lost` corrects its row.
            event(log, "recording_tail_lost", logging.WARNING, stream=str(self.key), path=str(f.path),
                  error=str(err), bytes=good_bytes)
            if self._on_tail_lost is not None:
                self._on_tail_lost(f.path, good_bytes, err)
            return
        f.bytes = good_bytes
        self._fail(f, err)

    def _fail(self, f: _File | None, err: OSError) -> None:
        """A disk error: the recording ends here, reported once through on_file_closed (its owner logs it,
        knowing the file's catalog row); never raised into the hub."""
        reason = str(err)
        if self._on_closed is None:
            event(log, "recording_failed", logging.ERROR, stream=str(self.key), path=str(f.path if f else self.root),
                  error=reason, hint="free disk space or fix the recording directory; the file plays up to its "
                  "last fragment")
        if f is not None:
            if self._disk is None:
                try:
                    os.ftruncate(f.fd, f.bytes)  # drop a partly written fragment, if the system lets us
                except OSError:
                    pass
            self._close(FAILED, reason)
        else:
            self.files.append(FileClosed(self.root, self._wall(), 0.0, 0, (), 0, 0, FAILED, reason))
            if self._on_closed is not None:
                self._on_closed(self.files[-1])
        self.stopped = True
