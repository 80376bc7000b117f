"""Security events: failed authentications, refusals, rate limits, revocations. One log line each (on the
``collab_server.security`` logger, never with token contents) and one count in
``collab_security_events_total{kind}``."""

from __future__ import annotations

import logging

from collab_server import metrics

logger = logging.getLogger("collab_server.security")


def security_event(kind: str, detail: str, *, room: str | None = None, client: str | None = None) -> None:
    """Record one event; ``kind`` is one of a handful of fixed words (it labels a metric)."""
    metrics.SECURITY_EVENTS.labels(kind).inc()
    logger.info(
        "security: %s: %s (room %r, client %s)", kind, detail, room, client,
        extra={"room": room, "security_event": kind},
    )
