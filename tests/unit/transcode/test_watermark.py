"""The watermark stage: a PNG read once, prepared per picture size, blended into the planes in place."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from mediaserver.transcode.watermark import Watermark, WatermarkError, WatermarkSpec, load_rgba


def write_png(path: Path, rgba: np.ndarray) -> None:
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = rgba.shape[1], rgba.shape[0], "rgba"
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(rgba, format="rgba")), *stream.encode(None)]:
            container.mux(packet)


def grey_picture(width: int, height: int, luma: int = 100) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    for index, plane in enumerate(frame.planes):
        np.frombuffer(plane, np.uint8)[:] = luma if index == 0 else 128
    return frame


def luma(frame: av.VideoFrame) -> np.ndarray:
    plane = frame.planes[0]
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]


def chroma_v(frame: av.VideoFrame) -> np.ndarray:
    plane = frame.planes[2]
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height // 2, : frame.width // 2]


def solid(width: int, height: int, rgba: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros((height, width, 4), np.uint8)
    out[...] = rgba
    return out


def test_png_is_read_once_as_rgba(tmp_path: Path) -> None:
    png = tmp_path / "w.png"
    write_png(png, solid(30, 10, (255, 0, 0, 200)))
    rgba = load_rgba(str(png))
    assert rgba.shape == (10, 30, 4)
    assert tuple(rgba[5, 5]) == (255, 0, 0, 200)


@pytest.mark.parametrize("path", ["/nonexistent/logo.png", "__file__"])
def test_unreadable_file_is_an_error_naming_it(path: str) -> None:
    if path == "__file__":
        path = __file__  # a file that is not a picture
    with pytest.raises(WatermarkError, match="logo.png|test_watermark.py"):
        Watermark.load(WatermarkSpec(file=path))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(WatermarkError, match="position"):
        WatermarkSpec.from_job({"file": "x.png", "position": "middle"})
    with pytest.raises(WatermarkError, match="opacity"):
        WatermarkSpec.from_job({"file": "x.png", "opacity": 1.5})
    spec = WatermarkSpec.from_job({"file": "x.png"})
    assert (spec.position, spec.margin, spec.opacity, spec.scale) == ("top-right", 16, 0.8, 0.15)


@pytest.mark.parametrize(("position", "x", "y"), [
    ("top-left", 10, 10), ("top-right", 320 - 10 - 64, 10), ("bottom-left", 10, 240 - 10 - 32),
    ("bottom-right", 320 - 10 - 64, 240 - 10 - 32), ("center", (320 - 64) // 2, (240 - 32) // 2),
])
def test_position_margin_and_scale(position: str, x: int, y: int) -> None:
    # A 2:1 white mark at 20 % of a 320-wide picture: 64x32, opaque.
    mark = Watermark(WatermarkSpec(file="-", position=position, margin=10, opacity=1.0, scale=0.2),
                     solid(100, 50, (255, 255, 255, 255)))
    frame = grey_picture(320, 240)
    mark.mark(frame)
    y_plane = luma(frame)
    changed = np.argwhere(y_plane != 100)
    assert changed.min(axis=0).tolist() == [y, x]
    assert changed.max(axis=0).tolist() == [y + 31, x + 63]
    assert int(y_plane[y + 16, x + 32]) == 235  # white, limited range


def test_opacity_and_alpha_blend() -> None:
    rgba = solid(40, 40, (255, 255, 255, 255))
    rgba[:, 20:, 3] = 0  # the right half is transparent
    mark = Watermark(WatermarkSpec(file="-", position="top-left", margin=0, opacity=0.5, scale=0.5), rgba)
    frame = grey_picture(80, 60, luma=16)
    mark.mark(frame)
    y_plane = luma(frame)
    # half of white (235) over black (16)
    assert abs(int(y_plane[10, 10]) - (16 + 235) / 2) <= 2
    assert int(y_plane[10, 30]) == 16  # transparent: untouched
    assert int(y_plane[50, 10]) == 16  # outside: untouched


def test_colour_reaches_the_chroma_planes() -> None:
    mark = Watermark(WatermarkSpec(file="-", position="top-left", margin=4, opacity=1.0, scale=0.5),
                     solid(40, 20, (255, 0, 0, 255)))
    frame = grey_picture(64, 48)
    mark.mark(frame)
    assert abs(int(luma(frame)[10, 10]) - 81) <= 2  # BT.601 red
    assert int(chroma_v(frame)[5, 5]) >= 235
    assert int(chroma_v(frame)[20, 25]) == 128


def test_prepared_once_per_size_and_skipped_where_it_does_not_fit() -> None:
    mark = Watermark(WatermarkSpec(file="-", margin=16, opacity=1.0, scale=0.5), solid(10, 10, (0, 0, 0, 255)))
    for _ in range(3):
        mark.mark(grey_picture(320, 240))
    mark.mark(grey_picture(160, 120))
    assert len(mark._overlays) == 2
    tiny = grey_picture(30, 30)
    mark.mark(tiny)  # no room inside the margins: the picture is left alone
    assert (luma(tiny) == 100).all()
