"""Structured logging: one line per event, key=value (or JSON), with the context bound once.

Library modules only call `logging.getLogger(__name__)` and `event(logger, name, **fields)`; the only
place that installs handlers and levels is `setup()`, called by the cli. Nothing here runs per frame.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


def _fmt_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=') or not text.isprintable():  # control bytes escaped too
        return json.dumps(text)
    return text


def event(logger: logging.Logger | logging.LoggerAdapter, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event. Fields become key=value pairs; the event name comes first."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


class Bound(logging.LoggerAdapter):
    """A logger that adds fixed fields (conn, peer, stream) to every event it logs."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = kwargs.setdefault("extra", {})
        extra["fields"] = {**self.extra, **extra.get("fields", {})}
        return msg, kwargs


class LogGate:
    """Lets one log line through per key per interval, and says how many events it stands for, so a
    repeated warning (a client retrying a refused request, a failing webhook, slow viewers) is written
    once per `interval_s` with a count instead of once per event. Time comes in as `now`; memory is
    bounded by `max_keys` (old keys are forgotten under a flood of distinct keys)."""

    def __init__(self, interval_s: float = 10.0, max_keys: int = 10_000) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._logged: dict[object, tuple[float, int]] = {}

    def should_log(self, key: object, now: float) -> int:
        """0 when a line for `key` was written less than `interval_s` ago (this event is counted), else
        how many events the line written now stands for (this one and those kept quiet)."""
        logged_at, pending = self._logged.get(key, (float("-inf"), 0))
        pending += 1
        if now - logged_at < self.interval_s:
            self._logged[key] = (logged_at, pending)
            return 0
        self._logged[key] = (now, 0)
        if len(self._logged) > self.max_keys:
            cutoff = now - self.interval_s
            self._logged = {k: v for k, v in self._logged.items() if v[0] >= cutoff}
        return pending


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [ts, record.levelname.lower(), f"event={_fmt_value(record.getMessage())}"]
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={_fmt_value(value)}")
        if record.exc_info:
            parts.append("error=" + json.dumps(self.formatException(record.exc_info)))
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        doc.update({k: v if isinstance(v, (int, float, bool, type(None))) else str(v) for k, v in getattr(record, "fields", {}).items()})
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would add a line per segment request; our own events say what matters.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
