"""Pick the replication from ``COLLAB_BROKER_URL``; the Redis backend is imported only when chosen.

- ``memory://`` (the default): one replica. No broker at all — the per-edit hot path does nothing —
  and presence in process (presence.embedded.PresenceOnly). An in-process broker would only ever talk
  to itself here; presence.local.LocalBroker exists for several apps in one process (tests), passed to
  ``create_app(replication=...)``.
- ``redis://``, ``rediss://``, ``unix://``: presence.broker_replication.BrokerReplication over Redis
  pub/sub (presence.redis_broker), presence in Redis (presence.redis_registry).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collab_server.errors import ConfigError
from collab_server.settings import Settings

if TYPE_CHECKING:
    from persistence.base import UpdateWriter
    from presence.broker_replication import BrokerReplication
    from presence.embedded import PresenceOnly

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


async def open_replication(
    settings: Settings, *, writer: UpdateWriter | None = None
) -> PresenceOnly | BrokerReplication:
    """Build and start the replication ``settings.broker_url`` names. Never waits for the broker: a
    replica starts (and serves its own peers) while Redis is down, and connects when it is back.

    ``writer`` is where a room's state is appended when a replica that held it dies (presence.liveness).
    """
    scheme = settings.broker_url.scheme
    if scheme == "memory":
        from presence.embedded import PresenceOnly
        from presence.local import LocalRegistry

        embedded = PresenceOnly(
            LocalRegistry(ttl=settings.presence_ttl),
            settings.replica_id,
            heartbeat_interval=settings.heartbeat_interval,
        )
        await embedded.start()
        return embedded
    if scheme in REDIS_SCHEMES:
        try:
            from presence.redis_broker import RedisBroker
            from presence.redis_registry import RedisRegistry
        except ImportError as exc:
            raise ConfigError(f"COLLAB_BROKER_URL: the Redis backend is unavailable ({exc})") from exc
        from presence.broker_replication import BrokerReplication

        url = settings.broker_url.reveal()
        prefix = settings.broker_prefix
        replication = BrokerReplication(
            RedisBroker(url, settings.replica_id, prefix=prefix),
            RedisRegistry(url, prefix=prefix, ttl=settings.presence_ttl, replica_id=settings.replica_id),
            heartbeat_interval=settings.heartbeat_interval,
            anti_entropy_interval=settings.anti_entropy_interval,
            writer=writer,
        )
        await replication.start()
        return replication
    raise ConfigError(
        f"COLLAB_BROKER_URL={settings.broker_url}: unknown scheme {scheme!r} (use memory:// or redis://HOST:PORT/DB)"
    )
