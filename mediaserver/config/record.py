"""Recording, DVR and VOD: [record], [record.s3], [[record.retention]]."""

from __future__ import annotations

import datetime as dt
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .base import ConfigError, TableRule

if TYPE_CHECKING:
    from .schema import Config


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """One app's retention limits (`[[record.retention]]`), in place of [record]'s for that app."""

    app: str
    max_age_days: float = -1.0
    """Left out (-1): record.max_age_days; 0 keeps this app's recordings whatever their age."""
    max_total_gb: float = -1.0
    """Left out (-1): the app's files count in record.max_total_gb; else the app's own budget (0: no limit)."""


@dataclass(frozen=True, slots=True)
class S3Config:
    """[record.s3]: the bucket finished recordings go to when record.storage = "s3". The credentials come
    from the environment only (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or any source botocore reads)."""

    endpoint: str = ""
    """http(s)://HOST:PORT of an S3-compatible store (MinIO, Ceph); "" is AWS's own endpoint for `region`."""
    bucket: str = ""
    prefix: str = ""
    """Put before each file's name under record.path to make its key (e.g. "recordings/")."""
    region: str = "us-east-1"
    part_size_mb: float = 16.0
    """Files larger than this are sent in parts of this size (multipart upload); S3 wants at least 5."""
    presign: bool = False
    """/vod/ID.mp4 answers with a redirect to a presigned URL (the bucket serves the bytes), else streams
    the ranges itself."""


DEFAULT_TEMPLATE = "{app}/{stream}/{start:%Y%m%d-%H%M%S}.mp4"
DEFAULT_FRAGMENT_S = 6.0
"""record.fragment_duration's default, and the Recorder's."""


@dataclass(frozen=True, slots=True)
class RecordConfig:
    mode: str = "api"
    """api (an operator starts and stops recordings through the admin API), all (every stream of `apps`), off."""
    apps: tuple[str, ...] = ("*",)
    path: str = "recordings"
    """Directory of the recording files (and of the SQLite catalog unless database_url names another)."""
    template: str = DEFAULT_TEMPLATE
    """A file's path under `path`: {app}, {stream}, {start:STRFTIME} (UTC)."""
    segment_minutes: float = 60.0
    """A new file starts at the first keyframe after this long (and at a codec change)."""
    fragment_duration: float = DEFAULT_FRAGMENT_S
    """Seconds of media per fragment (moof+mdat, cut at the first keyframe after this long), each written to
    the file in one go: the most a server killed mid-recording loses, and the DVR's and VOD's segment length.
    Shorter costs more per stream (a write and a cut per fragment: bench/README.md)."""
    fsync_interval: float = 10.0
    """Seconds between fsyncs of a file being written (in a thread): what a power cut may lose at most."""
    direct_io: bool = True
    """Write the files with O_DIRECT (record/writer.py): they never pass through the page cache; false, or a
    filesystem without O_DIRECT, writes them buffered."""
    database_url: str = ""
    """The catalog: "" is a SQLite file `recordings.db` in `path`; postgresql+asyncpg://... for a cluster."""
    dvr_window: float = 7200.0
    """Seconds of a recorded live stream that /APP/NAME/dvr.m3u8 lets a viewer scrub back through."""
    max_age_days: float = 0.0
    """Recordings whose end is older than this are deleted (file and row); 0 keeps them whatever their age."""
    max_total_gb: float = 0.0
    """This node's recordings (and the bucket's) beyond this many GB are deleted, oldest first; 0 is no limit."""
    retention: tuple[RetentionRule, ...] = ()
    """Per-app limits ([[record.retention]] app = "live", max_age_days = 7, max_total_gb = 50)."""
    min_free_gb: float = 1.0
    """Under this much free space on record.path every recording of the node stops (live streaming goes on);
    they resume by themselves above it plus 10 %. 0 never stops them."""
    storage: str = "local"
    """Where finished files live: "local" (record.path) or "s3" (uploaded to [record.s3], then removed here)."""
    s3: S3Config = field(default_factory=S3Config)


# Accepted values, checked after types: KEY -> (min, max), or KEY -> choices.
RANGES: dict[str, tuple[float, float]] = {
    "record.segment_minutes": (0.01, 1440),
    "record.fragment_duration": (0.5, 60),
    "record.fsync_interval": (0.1, 3600),
    "record.dvr_window": (10, 7 * 86_400),
    "record.max_age_days": (0, 36_500),
    "record.max_total_gb": (0, 1_000_000),
    "record.min_free_gb": (0, 1_000_000),
    "retention.max_age_days": (0, 36_500),
    "retention.max_total_gb": (0, 1_000_000),
    "s3.part_size_mb": (0.01, 5120),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "record.mode": ("api", "all", "off"),
    "record.storage": ("local", "s3"),
}
URL_KEYS = ("s3.endpoint",)


def _check_retention(here: str, built: dict[str, Any]) -> None:
    if not built["app"].strip():
        raise ConfigError(f"{here}.app is empty; name the app whose recordings these limits keep")


TABLES = {"record.retention": TableRule(RetentionRule, 'app = "live"', unique="app", check=_check_retention)}


def template_problem(template: str) -> str | None:
    """Why `template` cannot name recording files (None: it can): a field it may not use or a bad format, or a
    path that leaves record.path (absolute, or climbing out with "..") or names no file."""
    try:
        relative = template.format(app="app", stream="stream", start=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as err:
        return (f"record.template {template!r} is invalid ({err!r}); it may use {{app}}, {{stream}} and "
                "{start:STRFTIME} (UTC), e.g. " + DEFAULT_TEMPLATE)
    normal = posixpath.normpath(relative.replace("\\", "/"))
    if relative.startswith(("/", "\\")) or normal == "." or normal == ".." or normal.startswith("../") \
            or relative.endswith(("/", "\\")):
        return (f"record.template {template!r} makes {relative!r}, which is not a file under record.path; "
                "give a relative file path such as " + DEFAULT_TEMPLATE)
    return None


def problems(config: Config) -> list[str]:
    """What one key alone cannot say: S3 storage needs a bucket; the file-name template must name files
    under record.path (refused at start, not at the first recording)."""
    found = []
    if config.record.storage == "s3" and not config.record.s3.bucket:
        found.append('record.storage = "s3" needs record.s3.bucket (the bucket finished recordings go to); '
                     'or set record.storage = "local"')
    if (why := template_problem(config.record.template)) is not None:
        found.append(why)
    return found
