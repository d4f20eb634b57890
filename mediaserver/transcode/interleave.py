"""Puts each rendition's video and the source's shared audio out in time order per rendition. Pure.

The audio is sent once (wire.AUDIO_TRACK) and goes into every rendition, so an audio tag may go out only
once every live rung has produced its video up to that time, and a rung's video may go out only up to the
next audio tag still held: a fast rung waits for the slow ones (at most AUDIO_LEAD_MS: a stalled rung or
a gap in the source's video must not hold the sound back, nor a gap in its audio the pictures).
"""

from __future__ import annotations

from collections import deque

AUDIO_LEAD_MS = 1000


class Interleaver:
    def __init__(self, rungs: int) -> None:
        self._audio: deque[tuple[int, bytes]] = deque()
        self._video: list[deque[tuple[int, bytes]]] = [deque() for _ in range(rungs)]
        self._produced: list[int | None] = [None] * rungs
        self._live = [True] * rungs
        self._video_start: int | None = None
        self._audio_clock: int | None = None
        """The newest source audio time seen: audio still to come is not older."""
        self._source_clock: int | None = None

    def source_time(self, ms: int, video: bool) -> None:
        """The source has reached `ms` (a video or audio tag was read)."""
        self._source_clock = ms if self._source_clock is None else max(self._source_clock, ms)
        if video and self._video_start is None:
            self._video_start = ms

    def audio(self, ms: int, message: bytes) -> None:
        self._audio.append((ms, message))
        self._audio_clock = ms if self._audio_clock is None else max(self._audio_clock, ms)

    def video(self, rung: int, ms: int, message: bytes) -> None:
        self._video[rung].append((ms, message))
        self._produced[rung] = ms

    def drop(self, rung: int) -> None:
        """The rung is no longer made (shed): nothing waits for it."""
        self._live[rung] = False
        self._video[rung].clear()

    def release(self, final: bool = False) -> list[bytes]:
        """The messages due now, in sending order; with `final` (the source ended), all of them."""
        out: list[bytes] = []
        audio = self._audio
        while True:
            head = audio[0][0] if audio else None
            for rung, queue in enumerate(self._video):
                while queue and self._video_due(queue[0][0], head, final):
                    out.append(queue.popleft()[1])
            if head is None or not (final or self._audio_due(head)):
                return out
            out.append(audio.popleft()[1])

    def _video_due(self, ms: int, audio_head: int | None, final: bool) -> bool:
        if audio_head is not None:
            return ms <= audio_head
        if final:
            return True
        clock = self._audio_clock
        if clock is None or ms <= clock:
            return True  # no audio in the source (yet), or none to come before this picture
        return self._source_clock is not None and self._source_clock - clock > AUDIO_LEAD_MS

    def _audio_due(self, ms: int) -> bool:
        if self._video_start is None:
            return True  # no video to wait for
        slowest: int | None = None
        for rung, produced in enumerate(self._produced):
            if not self._live[rung]:
                continue
            progress = self._video_start - 1 if produced is None else produced
            slowest = progress if slowest is None else min(slowest, progress)
        return slowest is None or ms <= slowest or ms > slowest + AUDIO_LEAD_MS
