"""The presence registry in Redis: :class:`RedisRegistry` (the PresenceRegistry of presence.registry).

A hash per room (client id → PresenceEntry JSON) that expires ``ttl`` after its last write, and a
string per replica with a TTL, its heartbeat (key names in presence.redis_wire). Imported only when
``COLLAB_BROKER_URL`` names Redis.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Final

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from collab_server.errors import BrokerError
from collab_server.secrets import redact_url
from presence.redis_wire import client_name, presence_key, replica_key
from presence.registry import PresenceEntry

# Delete the room's entries written by any replica in ARGV, atomically: a live replica may be rewriting
# an entry of the same client (it reconnected there) while the dead one's entries are pruned.
_PRUNE_SCRIPT: Final = """
local removed = 0
local fields = redis.call('HGETALL', KEYS[1])
local dead = {}
for i = 1, #ARGV do dead[ARGV[i]] = true end
for i = 1, #fields, 2 do
  local ok, entry = pcall(cjson.decode, fields[i + 1])
  if not ok or dead[entry['replica']] then
    redis.call('HDEL', KEYS[1], fields[i])
    removed = removed + 1
  end
end
return removed
"""


class RedisRegistry:
    """Presence in Redis: a hash per room, a heartbeat key per replica (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "collab",
        ttl: float = 60.0,
        replica_id: str = "",
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self._redis = Redis.from_url(
            url,
            protocol=2,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 1),  # one retry: a killed idle connection is replaced transparently
            client_name=client_name(prefix, replica_id, "registry"),
        )
        self._prune = self._redis.register_script(_PRUNE_SCRIPT)

    def __repr__(self) -> str:
        return f"RedisRegistry({redact_url(self.url)!r}, prefix={self.prefix!r})"

    def presence_key(self, room: str) -> str:
        return presence_key(self.prefix, room)

    def replica_key(self, replica: str) -> str:
        return replica_key(self.prefix, replica)

    async def write(self, room: str, upserts: Sequence[PresenceEntry], removals: Collection[int]) -> None:
        key = self.presence_key(room)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if removals:
                    pipe.hdel(key, *(str(client_id) for client_id in removals))
                if upserts:
                    pipe.hset(key, mapping={str(e.client_id): e.to_json() for e in upserts})
                    pipe.pexpire(key, int(self.ttl * 1000))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerError(f"presence write failed: {exc}") from exc

    async def list(self, room: str) -> list[PresenceEntry]:
        try:
            raw = await self._redis.hgetall(self.presence_key(room))
        except (RedisError, OSError) as exc:
            raise BrokerError(f"presence read failed: {exc}") from exc
        entries: list[PresenceEntry] = []
        for value in raw.values():
            try:
                entries.append(PresenceEntry.from_json(value))
            except (ValueError, KeyError, TypeError):
                continue
        alive = await self.alive({entry.replica for entry in entries})
        fresh_after = time.time() - self.ttl
        return sorted(
            (e for e in entries if e.replica in alive and e.last_seen >= fresh_after), key=lambda e: e.client_id
        )

    async def prune(self, room: str, replicas: Collection[str]) -> int:
        if not replicas:
            return 0
        try:
            removed = await self._prune(keys=[self.presence_key(room)], args=list(replicas))
        except (RedisError, OSError) as exc:
            raise BrokerError(f"presence prune failed: {exc}") from exc
        return int(removed)

    async def heartbeat(self, replica: str, ttl: float) -> bool:
        try:
            previous = await self._redis.set(self.replica_key(replica), str(time.time()), px=int(ttl * 1000), get=True)
        except (RedisError, OSError) as exc:
            raise BrokerError(f"heartbeat failed: {exc}") from exc
        return previous is not None

    async def alive(self, replicas: Collection[str]) -> set[str]:
        ordered = list(replicas)
        if not ordered:
            return set()
        try:
            values = await self._redis.mget([self.replica_key(replica) for replica in ordered])
        except (RedisError, OSError) as exc:
            raise BrokerError(f"heartbeat read failed: {exc}") from exc
        return {replica for replica, value in zip(ordered, values, strict=True) if value is not None}

    async def leave(self, replica: str) -> None:
        try:
            await self._redis.delete(self.replica_key(replica))
        except (RedisError, OSError) as exc:
            raise BrokerError(f"heartbeat removal failed: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()

    def describe(self) -> str:
        return f"redis presence at {redact_url(self.url)} (prefix {self.prefix!r})"
