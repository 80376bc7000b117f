"""Pick the replication from ``COLLAB_BROKER_URL``; the Redis backend is imported only when chosen.

- ``memory://`` (the default): one replica. No broker at all — the per-edit hot path does nothing, which
  is what the fan-out throughput benchmark measures — and presence in process (``PresenceOnly``).
  An in-process broker would only ever talk to itself here; ``presence.local.LocalBroker`` exists for
  several apps in one process (tests), passed to ``create_app(replication=...)``.
- ``redis://``, ``rediss://``, ``unix://``: ``BrokerReplication`` over Redis pub/sub, presence in Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collab_server.errors import ConfigError
from collab_server.settings import Settings

if TYPE_CHECKING:
    from persistence.base import DocumentStore
    from presence.replication import BrokerReplication, PresenceOnly

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


async def open_replication(
    settings: Settings, *, store: DocumentStore | None = None
) -> PresenceOnly | BrokerReplication:
    """Build and start the replication ``settings.broker_url`` names. Never waits for the broker: a
    replica starts (and serves its own peers) while Redis is down, and connects when it is back."""
    scheme = settings.broker_url.scheme
    heartbeat_ttl = 3 * settings.heartbeat_interval
    if scheme == "memory":
        from presence.local import LocalRegistry
        from presence.replication import PresenceOnly

        local = LocalRegistry(ttl=settings.presence_ttl, heartbeat_ttl=heartbeat_ttl)
        embedded = PresenceOnly(local, settings.replica_id, heartbeat_interval=settings.heartbeat_interval)
        await embedded.start()
        return embedded
    if scheme in REDIS_SCHEMES:
        try:
            from presence.redis import RedisBroker, RedisRegistry
        except ImportError as exc:
            raise ConfigError(f"COLLAB_BROKER_URL: the Redis backend is unavailable ({exc})") from exc
        from presence.replication import BrokerReplication

        broker = RedisBroker(settings.broker_url.reveal(), settings.replica_id, prefix=settings.broker_prefix)
        registry = RedisRegistry(
            settings.broker_url.reveal(),
            prefix=settings.broker_prefix,
            ttl=settings.presence_ttl,
            heartbeat_ttl=heartbeat_ttl,
            client_name=f"collab:{settings.broker_prefix}:{settings.replica_id}:registry",
        )
        replication = BrokerReplication(
            broker,
            registry,
            heartbeat_interval=settings.heartbeat_interval,
            anti_entropy_interval=settings.anti_entropy_interval,
            store=store,
        )
        await replication.start()
        return replication
    raise ConfigError(
        f"COLLAB_BROKER_URL={settings.broker_url}: unknown scheme {scheme!r} (use memory:// or redis://HOST:PORT/DB)"
    )
