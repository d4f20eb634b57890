"""The [auth], [api], [limits] and [webhooks] sections: defaults keep everything open, the example
documents every key, and bad values are refused naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mediaserver.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[3]
SECTIONS = ("auth", "api", "limits", "webhooks")


def test_defaults_keep_publishing_and_playing_open_and_the_api_off():
    cfg = load_config()
    assert cfg.auth.publish_open == ("*",) and cfg.auth.play_open == ("*",) and cfg.auth.stream_keys == ()
    assert cfg.api.token_env == "MEDIASERVER_ADMIN_TOKEN"
    assert (cfg.limits.max_connections_per_ip, cfg.limits.max_publishers_per_app, cfg.limits.max_viewers_per_stream) == (0, 0, 0)
    assert cfg.webhooks.on_publish == "" and cfg.webhooks.on_failure == "deny"


def test_the_example_config_documents_every_new_key():
    raw = tomllib.loads((ROOT / "config.example.toml").read_text())
    defaults = Config()
    for section in SECTIONS:
        fields = getattr(defaults, section).__dataclass_fields__
        assert set(raw[section]) == set(fields), f"config.example.toml [{section}] must list every key"


def test_lists_are_taken_from_toml_or_from_a_comma_separated_override():
    cfg = load_config(None, ['auth.play_open=["a", "b"]', "auth.publish_open=live,test", "api.cors_origins="])
    assert cfg.auth.play_open == ("a", "b") and cfg.auth.publish_open == ("live", "test") and cfg.api.cors_origins == ()


@pytest.mark.parametrize("override, message", [
    ("auth.play_open=[1, 2]", "must be a list of strings"),
    ("auth.failure_delay_ms=-1", "out of range"),
    ("limits.max_viewers_per_stream=-5", "out of range"),
    ("webhooks.on_failure=maybe", "must be one of deny, allow"),
    ("webhooks.on_play=file:///etc/passwd", "http:// or https://"),
    ("webhooks.timeout=0", "out of range"),
    ("api.metrics_publik=true", "did you mean metrics_public?"),
])
def test_bad_values_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
