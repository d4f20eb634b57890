"""Config: defaults work with no file; unknown keys and bad values are refused with a clear message."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mediaserver.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_no_file_gives_working_defaults():
    cfg = load_config()
    assert (cfg.rtmp.port, cfg.http.port) == (1935, 8080)
    assert cfg.hls.segment_duration == 2.0 and cfg.hls.playlist_length == 6


def test_file_and_overrides_are_applied(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[rtmp]\nbind = "127.0.0.1"\nport = 1936\n[http]\nport = 8081\n')
    cfg = load_config(f, ["http.port=9000", "hls.segment_duration=4", "log.format=json"])
    assert (cfg.rtmp.bind, cfg.rtmp.port, cfg.http.port) == ("127.0.0.1", 1936, 9000)
    assert cfg.hls.segment_duration == 4.0 and cfg.log.format == "json"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[hls]\nsegment_duraton = 2\n", "did you mean segment_duration?"),
        ("[rtpm]\nport = 1\n", "did you mean rtmp?"),
        ('[rtmp]\nport = "x"\n', "rtmp.port = 'x' must be a whole number"),
        ("[rtmp]\nport = 70000\n", "rtmp.port = 70000 is out of range; must be 1..65535"),
        ('[log]\nlevel = "loud"\n', "must be one of debug, info, warning, error"),
        ("rtmp = 3\n", "[rtmp] must be a table"),
        ("[rtmp\n", "is not valid TOML"),
        ("[hls]\nenabled = 1\n", "must be true or false"),
    ],
)
def test_bad_config_is_refused_naming_the_key(tmp_path, text, message):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert message in str(err.value)


def test_missing_file_says_what_to_check(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


def test_bad_override_shape_is_refused():
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        load_config(None, ["port=1"])


def test_example_config_documents_every_key_and_loads():
    text = (ROOT / "config.example.toml").read_text()
    raw = tomllib.loads(text)
    load_config(ROOT / "config.example.toml")
    defaults = Config()
    for section in ("server", "rtmp", "http", "hub", "hls", "log", "abr", "watermark", "thumbnails", "health", "record"):
        fields = getattr(defaults, section).__dataclass_fields__
        assert set(raw[section]) == set(fields), f"config.example.toml [{section}] must list every key"


def test_every_problem_in_a_config_is_reported_at_once(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[http]\nport = 0\nheader_timout = 5\n[hls]\nsegment_duration = "two"\n[rtmpp]\nport = 1\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["hub.reconnect_grace=-1", "nodot"])
    message = str(caught.value)
    assert message.startswith("6 problems in the configuration:"), message
    for part in ("http.port = 0 is out of range", "did you mean header_timeout?", "hls.segment_duration = 'two'",
                 "unknown section [rtmpp]; did you mean rtmp?", "hub.reconnect_grace = -1", "SECTION.KEY=VALUE"):
        assert part in message, (part, message)


def test_one_problem_reads_as_one_sentence():
    with pytest.raises(ConfigError, match=r"^unknown key \[http\]\.prot; did you mean port\?$"):
        load_config(None, ["http.prot=1"])


def test_help_names_every_output(capsys):
    from mediaserver.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "RTMP in; HTTP-FLV, WebSocket-FLV, RTMP, HLS, LL-HLS and MPEG-DASH out" in text


def test_ladder_labels_are_checked_and_source_is_kept_for_the_watermarked_top_rung(tmp_path):
    path = tmp_path / "ladder.toml"
    for table, words in (('label = "source"\nheight = 480\nvideo_kbps = 1000', "kept for the watermarked"),
                         ('label = "HD"\nheight = 480\nvideo_kbps = 1000', "must be 1-32"),
                         ('label = "a"\nheight = 480', "needs video_kbps"),
                         ('label = "a"\nheight = 480\nvideo_kbps = 1000\ncodec = "mpeg2"', "not accepted")):
        path.write_text(f"[[abr.ladder]]\n{table}\n")
        with pytest.raises(ConfigError, match=words):
            load_config(path)
    path.write_text('[[abr.ladder]]\nlabel = "a"\nheight = 480\nvideo_kbps = 900\n'
                    '[[abr.ladder]]\nlabel = "a"\nheight = 360\nvideo_kbps = 600\n')
    with pytest.raises(ConfigError, match="more than once"):
        load_config(path)


def test_s3_storage_needs_a_bucket_and_an_http_endpoint():
    cfg = load_config(None, ['record.storage="s3"', "record.s3.bucket=vod", "record.s3.endpoint=http://minio:9000",
                             "record.s3.part_size_mb=8"]).record
    assert (cfg.storage, cfg.s3.bucket, cfg.s3.endpoint, cfg.s3.part_size_mb) == ("s3", "vod", "http://minio:9000", 8.0)
    assert load_config().record.storage == "local"
    with pytest.raises(ConfigError, match=r'^record.storage = "s3" needs record.s3.bucket'):
        load_config(None, ['record.storage="s3"'])
    with pytest.raises(ConfigError, match=r"^record.s3.endpoint = 'minio:9000' must be an http:// or https:// URL"):
        load_config(None, ["record.s3.endpoint=minio:9000"])
    with pytest.raises(ConfigError, match=r"^record.s3.part_size_mb = 0.0 is out of range; must be 0.01..5120"):
        load_config(None, ["record.s3.part_size_mb=0"])
    with pytest.raises(ConfigError, match=r"^unknown key record.s3.secret_key; known keys: endpoint, bucket"):
        load_config(None, ["record.s3.secret_key=x"])
    with pytest.raises(ConfigError, match=r"^record.storage = 'gcs' is not accepted"):
        load_config(None, ["record.storage=gcs"])


@pytest.mark.parametrize("template, why", [
    ("{app}/{foo}.mp4", r"record.template '\{app\}/\{foo\}.mp4' is invalid \(KeyError\('foo'\)\); it may use"),
    ("{0}.mp4", "is invalid"),
    ("{start:%Y", "is invalid"),
    ("../../etc/{stream}.mp4", "which is not a file under record.path"),
    ("/var/{stream}.mp4", "which is not a file under record.path"),
    ("{app}/../../{stream}.mp4", "which is not a file under record.path"),
    ("{app}/", "which is not a file under record.path"),
    ("", "which is not a file under record.path"),
])
def test_a_recording_file_template_that_cannot_name_files_under_the_path_is_refused_at_load(template, why):
    with pytest.raises(ConfigError, match=why):
        load_config(None, [f"record.template={template!r}"])


def test_recording_file_templates_that_name_files_under_the_path_load():
    for template in ("{app}/{stream}/{start:%Y%m%d-%H%M%S}.mp4", "{stream}-{start:%s}.mp4", "{app}/../{stream}.mp4"):
        assert load_config(None, [f"record.template={template!r}"]).record.template == template
