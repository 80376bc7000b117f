"""Logging setup: text for people, or one JSON object per line for log collectors."""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from typing import Any

# Attributes every LogRecord has; anything else came in through ``extra=`` (room, peer, replica).
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, *, json_lines: bool = False) -> dict[str, Any]:
    """Configure the root logger and return a matching dictConfig for uvicorn's own loggers."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if json_lines
        else {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}
    )
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        # Lines a client can cause, one per connection or frame: a few per message template per 10 s.
        "filters": {"flood": {"()": "collab_server.refusals.RateLimitFilter"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default", "stream": sys.stderr}},
        "root": {"handlers": ["default"], "level": level.upper()},
        # uvicorn logs every websocket handshake at info; that is noise at thousands of peers
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"level": "WARNING" if level.lower() == "info" else level.upper(), "filters": ["flood"]},
            "collab_server.peer": {"filters": ["flood"]},
            "collab_server.websocket": {"filters": ["flood"]},
            "uvicorn.access": {"level": "WARNING"},
        },
    }
    logging.config.dictConfig(config)
    return config

