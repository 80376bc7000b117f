"""Builds the access layer from settings at startup: room store, token verification, room events.

The startup decisions of issue 9 live here: authentication is on as soon as a ``COLLAB_JWT_*`` key is
set; with none the server runs open with a loud warning, except on PostgreSQL (a shared, deployed
store), where it refuses to start unless ``COLLAB_AUTH=off`` says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from collab_server.access import Access
from collab_server.api.ratelimit import AttemptLimiter
from collab_server.errors import ConfigError
from collab_server.room_tokens import RoomTokens
from collab_server.settings import Settings
from collab_server.tokens import TokenVerifier
from persistence.factory import open_room_store
from persistence.room_store import RoomStore
from presence.room_events import RoomEvents, open_room_events

logger = logging.getLogger(__name__)


@dataclass
class AccessParts:
    access: Access
    events: RoomEvents
    limiter: AttemptLimiter


def check_auth_settings(settings: Settings) -> None:
    """ConfigError if the server must not start with these settings; the loud warning if it runs open."""
    if settings.auth_enabled:
        return
    scheme = urlsplit(settings.database_url.reveal()).scheme
    if scheme in {"postgres", "postgresql"} and settings.auth != "off":
        raise ConfigError(
            "no COLLAB_JWT_* key is set and the store is PostgreSQL: refusing to serve every room to anyone. "
            "Set COLLAB_JWT_SECRET, COLLAB_JWT_PUBLIC_KEY or COLLAB_JWT_JWKS_URL, or COLLAB_AUTH=off to run "
            "without authentication on purpose"
        )
    logger.warning(
        "AUTHENTICATION IS OFF: anyone who can reach this server can read, change and delete every room. "
        "Set COLLAB_JWT_SECRET, COLLAB_JWT_PUBLIC_KEY or COLLAB_JWT_JWKS_URL to require tokens."
    )


async def open_access(settings: Settings, *, rooms: RoomStore | None = None) -> AccessParts:
    check_auth_settings(settings)
    room_tokens = RoomTokens(settings.secret_key.reveal(), ttl=settings.room_token_ttl, leeway=settings.jwt_leeway)
    verifier = TokenVerifier.from_settings(settings, room_tokens) if settings.auth_enabled else None
    if verifier is not None and room_tokens.ephemeral:
        logger.warning(
            "COLLAB_SECRET_KEY is not set: room tokens and invites are signed with a random key that dies "
            "with this process and is unknown to other replicas"
        )
    room_store = rooms if rooms is not None else await open_room_store(
        settings.database_url.reveal(), auto_migrate=settings.auto_migrate, timeout=settings.database_timeout
    )
    access = Access(room_store, room_tokens, verifier, mode="registered" if settings.rooms == "registered" else "open")
    events = open_room_events(
        settings.broker_url.reveal(), settings.broker_url.scheme, settings.replica_id, settings.broker_prefix
    )
    logger.info(
        "access: %s; rooms %s; room store: %s; room events: %s",
        verifier.describe() if verifier is not None else "authentication off",
        settings.rooms, room_store.describe(), events.describe(),
    )
    return AccessParts(access, events, AttemptLimiter(settings.join_attempts, settings.join_window))
