"""Refusing a peer: a metric, one log line rate-limited per reason, and a close in our own words.

A hostile client can make the server refuse it thousands of times a second; the log must not grow with
it. Each reason may log ``burst`` lines per ``interval`` seconds; the next line that gets through says
how many were left out, and ``collab_log_lines_suppressed_total`` counts them. No traceback is ever
logged for what a client did. ``RateLimitFilter`` puts the same budget on loggers that are not ours
(uvicorn's); ``logs.configure_logging`` installs it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from collab_server import metrics
from collab_server.errors import CloseCode
from collab_server.peer import Peer

logger = logging.getLogger("collab_server.refusals")


class LogLimiter:
    """Allows ``burst`` lines per reason every ``interval`` seconds."""

    __slots__ = ("_burst", "_interval", "_windows")

    def __init__(self, burst: int = 10, interval: float = 10.0) -> None:
        self._burst = burst
        self._interval = interval
        # reason -> [window start, lines logged in it, lines suppressed since the last logged one]
        self._windows: dict[str, list[float]] = {}

    def allow(self, reason: str, now: float | None = None) -> int | None:
        """None if this line must be left out; else how many lines of ``reason`` were left out before it."""
        now = time.monotonic() if now is None else now
        window = self._windows.get(reason)
        if window is None or now - window[0] >= self._interval:
            suppressed = int(window[2]) if window is not None else 0
            self._windows[reason] = [now, 1, 0]
            return suppressed
        if window[1] < self._burst:
            window[1] += 1
            suppressed, window[2] = int(window[2]), 0
            return suppressed
        window[2] += 1
        metrics.LOG_LINES_SUPPRESSED.inc()
        return None


_limiter = LogLimiter()


class RateLimitFilter(logging.Filter):
    """A logging filter with the same budget per message template, for loggers whose lines a client can
    cause but whose calls are not ours (uvicorn's "Invalid HTTP request received.", one per connection)
    or not worth routing through ``log_refusal`` (a slow consumer, an internal error's traceback)."""

    def __init__(self, name: str = "", limiter: LogLimiter | None = None) -> None:
        super().__init__(name)
        self._limiter = limiter or LogLimiter()

    def filter(self, record: logging.LogRecord) -> bool:
        suppressed = self._limiter.allow(f"{record.name}:{record.msg}")
        if suppressed is None:
            return False
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} more like it not logged)"
            record.args = None
        return True


def log_refusal(reason: str, message: str, *args: Any, level: int = logging.INFO, **extra: Any) -> None:
    """Log one line about a refusal, unless ``reason`` has logged too much lately."""
    suppressed = _limiter.allow(reason)
    if suppressed is None:
        return
    if suppressed:
        message += " (%d more like it not logged)"
        args = (*args, suppressed)
    logger.log(level, message, *args, extra={"reason": reason, **extra})


def refuse(peer: Peer, code: CloseCode, reason: str, text: str, *, quota: bool = False) -> None:
    """Close ``peer`` with ``code`` and ``text`` (what the client did wrong, in our words), count it
    under ``reason``, and log it (rate-limited)."""
    metrics.PEERS_CLOSED.labels(reason).inc()
    if quota:
        metrics.QUOTA_REFUSALS.labels(reason).inc()
    log_refusal(
        reason,
        "refused peer %d in room %r (close %d): %s",
        peer.id,
        peer.room_name,
        code,
        text,
        room=peer.room_name,
        peer=peer.id,
    )
    peer.close(code, text)
