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
    if text == "" or any(c in text for c in ' "=\n'):
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
