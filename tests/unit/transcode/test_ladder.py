"""The rendition ladder planned from the config and the source's picture size."""

from __future__ import annotations

import pytest

from mediaserver.config import DEFAULT_LADDER, RungConfig
from mediaserver.transcode.ladder import CARRIED, DEFAULT_PRESETS, applies, even, plan_ladder


def test_only_rungs_below_the_source_height_are_made_highest_first() -> None:
    assert [r.label for r in plan_ladder(DEFAULT_LADDER, 1280, 720)] == ["480p", "360p", "240p"]
    assert [r.label for r in plan_ladder(DEFAULT_LADDER, 1920, 1080)] == ["720p", "480p", "360p", "240p"]
    assert plan_ladder(DEFAULT_LADDER, 426, 240) == []  # nothing below the source: no ladder
    assert [r.label for r in plan_ladder(DEFAULT_LADDER, 3840, 2160)] == ["1080p", "720p", "480p", "360p", "240p"]


def test_sizes_keep_the_source_aspect_and_are_even() -> None:
    rungs = {r.label: r for r in plan_ladder(DEFAULT_LADDER, 1280, 720)}
    assert (rungs["480p"].width, rungs["480p"].height) == (854, 480)
    assert (rungs["360p"].width, rungs["360p"].height) == (640, 360)
    assert (rungs["240p"].width, rungs["240p"].height) == (426, 240)
    for width, height in ((1920, 1080), (1440, 1080), (1080, 1920), (1000, 750), (1918, 1078), (853, 481)):
        for rung in plan_ladder(DEFAULT_LADDER, width, height):
            assert rung.width % 2 == 0 and rung.height % 2 == 0
            assert rung.height < height
            assert abs(rung.width / rung.height - width / height) < 0.02 * width / height


def test_portrait_and_odd_heights() -> None:
    rungs = plan_ladder((RungConfig("odd", 241, 300),), 1080, 1920)
    assert (rungs[0].width, rungs[0].height) == (136, 240)  # even height (241 is as near 240 as 242); width from the aspect
    assert even(135.6) == 136 and even(1) == 2 and even(0) == 2


def test_explicit_width_codec_preset_threads_and_defaults() -> None:
    config = (
        RungConfig("wide", 360, 800, codec="hevc", width=800),
        RungConfig("av", 240, 300, codec="av1", preset="8", threads=4),
        RungConfig("vp", 180, 200, codec="vp9"),
    )
    rungs = {r.label: r for r in plan_ladder(config, 1280, 720)}
    assert (rungs["wide"].width, rungs["wide"].codec, rungs["wide"].preset) == (800, "hevc", DEFAULT_PRESETS["hevc"])
    assert (rungs["av"].preset, rungs["av"].threads) == ("8", 4)
    assert rungs["vp"].preset == DEFAULT_PRESETS["vp9"]
    assert rungs["wide"].stream_name("live/demo") == "live/demo@wide"
    assert rungs["av"].to_job() == {"label": "av", "width": 426, "height": 240, "video_kbps": 300, "codec": "av1",
                                    "preset": "8", "threads": 4}


def test_same_height_sorted_by_rate_and_bad_sources() -> None:
    config = (RungConfig("low", 360, 500), RungConfig("high", 360, 900))
    assert [r.label for r in plan_ladder(config, 1280, 720)] == ["high", "low"]
    assert plan_ladder(DEFAULT_LADDER, 0, 720) == []
    assert plan_ladder(DEFAULT_LADDER, 1280, -1) == []


@pytest.mark.parametrize(("family", "codec", "carried"), [
    ("ts", "h264", True), ("ts", "hevc", True), ("ts", "av1", False), ("ts", "vp9", False),
    ("cmaf", "vp9", True), ("cmaf", "av1", True), ("flv", "av1", True), ("flv", "h264", True),
])
def test_which_output_carries_which_codec(family: str, codec: str, carried: bool) -> None:
    assert (codec in CARRIED[family]) is carried


def test_applies_to_apps() -> None:
    assert applies(("*",), "live")
    assert applies(("live", "tv"), "tv")
    assert not applies(("live",), "tv")
    assert not applies((), "live")
