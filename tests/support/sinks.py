"""A hub Sink that keeps every frame it is handed: the other consumer beside the one under test."""

from __future__ import annotations


class CollectingSink:
    """Patient (it never makes the publisher's reads shorter) and keeps every frame in `frames`."""

    waits_for_frames = False

    def __init__(self) -> None:
        self.frames: list = []

    def next_output_ms(self) -> float:
        return float("inf")

    def on_frame(self, frame) -> None:
        self.frames.append(frame)

    def on_discontinuity(self) -> None:
        pass

    def on_end(self) -> None:
        pass
