"""The watermark stage: a PNG burnt into each rendition's pictures.

The PNG is read once (PyAV decodes it to RGBA). For each rendition size it is scaled once to `scale` x the
rendition's width (its aspect kept, sizes even for 4:2:0), converted to Y, U and V planes, and its alpha
(x opacity) turned into 8-bit blend weights at luma and chroma resolution. Marking a picture then touches
only the watermark's rectangle of the three planes, in place, with integer numpy arithmetic:
    out = (picture x (256 - w) + mark x w) >> 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from ..errors import MediaError

POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")


class WatermarkError(MediaError):
    """The watermark file cannot be used (missing, unreadable, not a picture)."""


@dataclass(frozen=True, slots=True)
class WatermarkSpec:
    file: str
    position: str = "top-right"
    margin: int = 16
    opacity: float = 0.8
    scale: float = 0.15

    @classmethod
    def from_job(cls, value: dict[str, Any]) -> WatermarkSpec:
        spec = cls(
            file=str(value["file"]), position=str(value.get("position", "top-right")),
            margin=int(value.get("margin", 16)), opacity=float(value.get("opacity", 0.8)),
            scale=float(value.get("scale", 0.15)),
        )
        if spec.position not in POSITIONS:
            raise WatermarkError(f"watermark position {spec.position!r} is unknown; use one of {', '.join(POSITIONS)}")
        if not 0.0 <= spec.opacity <= 1.0 or not 0.0 < spec.scale <= 1.0 or spec.margin < 0:
            raise WatermarkError("watermark opacity must be 0..1, scale above 0 up to 1, margin 0 or more")
        return spec


@dataclass(frozen=True, slots=True)
class _Overlay:
    """The watermark prepared for one picture size: where it goes and what it blends in."""

    x: int
    y: int
    planes: tuple[np.ndarray, np.ndarray, np.ndarray]
    """Y, U, V of the watermark (uint16, for the blend arithmetic)."""
    weights: tuple[np.ndarray, np.ndarray]
    """Blend weights 0..256 at luma and at chroma resolution (uint16)."""


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def load_rgba(path: str) -> np.ndarray:
    """The picture in `path` as an H x W x 4 RGBA array. Raises WatermarkError naming the path."""
    try:
        with av.open(path) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgba")
    except (OSError, av.FFmpegError, StopIteration) as exc:
        raise WatermarkError(f"watermark {path}: cannot read it as a picture ({exc}); check [watermark] file") from exc


class Watermark:
    """One watermark, marking pictures of any size (prepared once per size)."""

    def __init__(self, spec: WatermarkSpec, rgba: np.ndarray) -> None:
        self.spec = spec
        self._rgba = rgba
        self._overlays: dict[tuple[int, int], _Overlay | None] = {}

    @classmethod
    def load(cls, spec: WatermarkSpec) -> Watermark:
        return cls(spec, load_rgba(spec.file))

    def mark(self, frame: av.VideoFrame) -> None:
        """Blend the watermark into a yuv420p picture, in place."""
        key = (frame.width, frame.height)
        overlay = self._overlays.get(key)
        if overlay is None and key not in self._overlays:
            overlay = self._overlays[key] = self._prepare(frame.width, frame.height)
        if overlay is None:
            return  # the picture is too small to hold it
        x, y = overlay.x, overlay.y
        for index, plane in enumerate(frame.planes):
            mark = overlay.planes[index]
            weight = overlay.weights[0 if index == 0 else 1]
            sx, sy = (x, y) if index == 0 else (x // 2, y // 2)
            h, w = mark.shape
            rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
            region = rows[sy : sy + h, sx : sx + w]
            region[...] = (region * (256 - weight) + mark * weight) >> 8

    def _prepare(self, width: int, height: int) -> _Overlay | None:
        spec = self.spec
        src_h, src_w = self._rgba.shape[:2]
        w = _even(width * spec.scale)
        h = _even(w * src_h / src_w)
        room_w, room_h = width - 2 * spec.margin, height - 2 * spec.margin
        if w > room_w or h > room_h:
            shrink = min(room_w / w, room_h / h)
            w, h = _even(w * shrink), _even(h * shrink)
            if w > room_w or h > room_h:
                return None
        scaled = av.VideoFrame.from_ndarray(self._rgba, format="rgba").reformat(w, h, interpolation="BICUBIC")
        rgba = scaled.to_ndarray()
        yuv = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba[:, :, :3]), format="rgb24").reformat(format="yuv420p")
        planes = tuple(
            np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: (h if i == 0 else h // 2), : (w if i == 0 else w // 2)]
            .astype(np.uint16)
            for i, p in enumerate(yuv.planes)
        )
        luma_weight = np.rint(rgba[:, :, 3].astype(np.float32) * (spec.opacity * 256.0 / 255.0)).astype(np.uint16)
        chroma_weight = luma_weight.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).round().astype(np.uint16)
        left = spec.position.endswith("left")
        top = spec.position.startswith("top")
        if spec.position == "center":
            x, y = (width - w) // 2, (height - h) // 2
        else:
            x = spec.margin if left else width - spec.margin - w
            y = spec.margin if top else height - spec.margin - h
        return _Overlay(x=x // 2 * 2, y=y // 2 * 2, planes=planes, weights=(luma_weight, chroma_weight))  # type: ignore[arg-type]
