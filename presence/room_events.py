"""Room control events between replicas: a room's access changed, or the room was deleted.

Every replica applies an event to the sockets it holds (re-deciding each one's role, or closing them
with 4404), so a revocation reaches open sockets everywhere within the time a pub/sub message takes.
``publish`` hands the event to this replica's handler directly, so a replica applies its own changes
even while Redis is unreachable, and ignores its own envelopes when they come back from Redis.

Backends: in-process (``LocalRoomEvents``; ``LocalEventHub`` links several apps in one process, for
tests) and Redis pub/sub (``RedisRoomEvents``, channel ``{prefix}:access``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from collab_server.secrets import redact_url

logger = logging.getLogger(__name__)

EventKind = Literal["changed", "deleted"]
Handler = Callable[["RoomEvent"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """Something about ``room``'s access changed (``changed``) or it is gone (``deleted``)."""

    room: str
    kind: EventKind

    def encode(self, replica: str) -> bytes:
        return json.dumps({"replica": replica, "room": self.room, "kind": self.kind}).encode()

    @classmethod
    def decode(cls, data: bytes) -> tuple[str, RoomEvent] | None:
        try:
            fields: dict[str, Any] = json.loads(data)
            kind = fields["kind"]
            if kind not in ("changed", "deleted") or not isinstance(fields["room"], str):
                return None
            return str(fields["replica"]), cls(fields["room"], kind)
        except (ValueError, KeyError, TypeError):
            return None


class RoomEvents(Protocol):
    """Delivery of room events to every replica, this one included."""

    async def start(self, handler: Handler) -> None:
        """Deliver every event (ours and other replicas') to ``handler`` from now on."""
        ...

    async def publish(self, event: RoomEvent) -> None:
        """Apply ``event`` here, then send it to the other replicas (best effort: never raises)."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...


async def _deliver(handler: Handler | None, event: RoomEvent) -> None:
    if handler is None:
        return
    try:
        await handler(event)
    except Exception:
        logger.exception("room event %s for room %r could not be applied", event.kind, event.room)


class LocalEventHub:
    """Links the LocalRoomEvents of several apps in one process (tests)."""

    def __init__(self) -> None:
        self.members: list[LocalRoomEvents] = []


class LocalRoomEvents:
    """In-process delivery: to this app, and to the other members of ``hub`` if given."""

    def __init__(self, hub: LocalEventHub | None = None) -> None:
        self._hub = hub or LocalEventHub()
        self._handler: Handler | None = None

    def describe(self) -> str:
        return "in process"

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        self._hub.members.append(self)

    async def publish(self, event: RoomEvent) -> None:
        await _deliver(self._handler, event)
        for member in list(self._hub.members):
            if member is not self:
                await _deliver(member._handler, event)

    async def close(self) -> None:
        if self in self._hub.members:
            self._hub.members.remove(self)


class RedisRoomEvents:
    """Redis pub/sub on ``{prefix}:access``; reconnects with backoff while Redis is away."""

    def __init__(self, url: str, replica_id: str, *, prefix: str = "collab") -> None:
        from redis.asyncio import Redis

        self.url = url
        self.replica_id = replica_id
        self.channel = f"{prefix}:access"
        self._redis = Redis.from_url(url, protocol=2, socket_timeout=5, socket_connect_timeout=5)
        self._handler: Handler | None = None
        self._reader: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def describe(self) -> str:
        return f"redis pub/sub at {redact_url(self.url)} (channel {self.channel!r})"

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="room-events")

    async def _read(self) -> None:
        from redis.exceptions import RedisError

        backoff = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is None or message.get("type") != "message":
                        continue
                    decoded = RoomEvent.decode(message["data"])
                    if decoded is not None and decoded[0] != self.replica_id:
                        await _deliver(self._handler, decoded[1])
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                logger.warning("room events: redis subscription lost (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def publish(self, event: RoomEvent) -> None:
        from redis.exceptions import RedisError

        await _deliver(self._handler, event)
        try:
            await self._redis.publish(self.channel, event.encode(self.replica_id))
        except (RedisError, OSError) as exc:
            logger.error("room event %s for room %r not sent to other replicas: %s", event.kind, event.room, exc)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._redis.aclose()


REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def open_room_events(broker_url: str, scheme: str, replica_id: str, prefix: str) -> RoomEvents:
    """In-process for ``memory://``, Redis pub/sub for a Redis broker URL."""
    if scheme in REDIS_SCHEMES:
        return RedisRoomEvents(broker_url, replica_id, prefix=prefix)
    return LocalRoomEvents()
