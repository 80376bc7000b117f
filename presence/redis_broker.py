"""Fan-out over Redis pub/sub: :class:`RedisBroker`, the Broker (presence.broker) of a cluster.

Imported only when ``COLLAB_BROKER_URL`` names Redis (presence.factory). Channels and the message format
are in presence.redis_wire: each publish batch goes out as one pipeline of PUBLISH commands, one or a
few messages per room.

The subscriber is one raw connection (RESP2) read by one task; its liveness is checked by a PING every
``ping_interval``, and a connection that stays silent through three of them is given up. When it
breaks, it is re-established with backoff, every channel is subscribed again, and each subscription
gets a Gap once its channel is confirmed: the replication repairs what was lost (presence.repair).
Publishes go over separate connections, pipelined per batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Final

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from collab_server import metrics
from collab_server.errors import BrokerError, ProtocolError
from collab_server.secrets import redact_url
from presence.broker import Envelope, Kind, Subscription
from presence.redis_wire import (
    DEFAULT_CHUNK_BYTES,
    Reassembly,
    client_name,
    control_channel,
    decode_records,
    encode_messages,
    message_sender,
    room_channel,
)

logger = logging.getLogger(__name__)

_RECONNECT_MIN: Final = 0.05
_RECONNECT_MAX: Final = 1.0
_SUBSCRIBE_BATCH: Final = 1000

_DROPPED_UNDECODABLE = metrics.BROKER_DROPPED.labels("undecodable")


@dataclass(slots=True, eq=False)
class _Channel:
    room: str
    subscriptions: set[Subscription] = field(default_factory=set)
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when anything published before the channel's (re)confirmation may have been missed.
    gap_on_confirm: bool = False


class RedisBroker:
    """Fan-out over Redis pub/sub (see the module docstring)."""

    def __init__(
        self,
        url: str,
        replica_id: str,
        *,
        prefix: str = "collab",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        ping_interval: float = 5.0,
        subscribe_timeout: float = 2.0,
        max_queue_messages: int = 10_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.url = url
        self.replica_id = replica_id
        self.prefix = prefix
        self.chunk_bytes = chunk_bytes
        self.ping_interval = ping_interval
        self.subscribe_timeout = subscribe_timeout
        self._max_messages = max_queue_messages
        self._max_bytes = max_queue_bytes
        self._pool_kwargs = self._connection_kwargs(url)
        self._control = control_channel(prefix, replica_id)
        self._channels: dict[bytes, _Channel] = {}
        self._inflight: dict[bytes, int] = {}  # SUBSCRIBE/UNSUBSCRIBE sent, reply not yet read
        self._reassembly = Reassembly()
        self._message_ids = count(1)
        self._sub_conn: AbstractConnection | None = None
        self._send_lock = asyncio.Lock()
        self._idle_publishers: list[AbstractConnection] = []
        self._reader: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._closed = False
        self._outage_logged = False
        self._down = asyncio.Event()  # set while connecting fails; clear once connected

    def __repr__(self) -> str:
        return f"RedisBroker({redact_url(self.url)!r}, channels={len(self._channels)}, connected={self.connected})"

    def _connection_kwargs(self, url: str) -> dict[str, Any]:
        pool = ConnectionPool.from_url(url)
        self._connection_class = pool.connection_class
        kwargs = dict(pool.connection_kwargs)
        for key in list(kwargs):
            # Cluster-maintenance hooks belong to a pool; these connections live on their own.
            if key.startswith(("maint_", "orig_")) or key == "himport_registry":
                kwargs.pop(key)
        kwargs.update(
            # RESP2: subscription messages come back as plain replies, read by our own loop.
            protocol=2,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            socket_keepalive=True,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),  # failures surface at once; reconnecting is our job
        )
        return kwargs

    def _new_connection(self, role: str) -> AbstractConnection:
        name = client_name(self.prefix, self.replica_id, role)
        return self._connection_class(**{**self._pool_kwargs, "client_name": name})

    def describe(self) -> str:
        return f"redis pub/sub at {redact_url(self.url)} (prefix {self.prefix!r})"

    @property
    def connected(self) -> bool:
        return self._sub_conn is not None

    def channel(self, room: str) -> bytes:
        return room_channel(self.prefix, room)

    async def start(self) -> None:
        if self._reader is None:
            loop = asyncio.get_running_loop()
            self._reader = loop.create_task(self._run(), name="redis-broker-reader")
            self._pinger = loop.create_task(self._ping(), name="redis-broker-ping")

    async def close(self) -> None:
        self._closed = True
        for task in (self._reader, self._pinger):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._reader, self._pinger) if t is not None), return_exceptions=True)
        for channel in self._channels.values():
            for subscription in channel.subscriptions:
                subscription.close()
        for conn in self._idle_publishers:
            await conn.disconnect(nowait=True)
        self._idle_publishers.clear()

    # -- publishing ---------------------------------------------------------------------------------

    async def publish(self, batch: Sequence[tuple[str, Envelope]]) -> None:
        if self._closed:
            raise BrokerError("broker is closed")
        if not batch:
            return
        # Each room's envelopes of this batch, in order, bundled into as few messages as fit.
        by_room: dict[str, list[Envelope]] = {}
        for room, envelope in batch:
            by_room.setdefault(room, []).append(envelope)
        commands: list[tuple[str, bytes, bytes]] = []
        for room, envelopes in by_room.items():
            channel = self.channel(room)
            for message in encode_messages(self.replica_id, envelopes, self._message_ids, self.chunk_bytes):
                commands.append(("PUBLISH", channel, message))
        conn = self._idle_publishers.pop() if self._idle_publishers else self._new_connection("pub")
        try:
            if not conn.is_connected:
                await conn.connect()  # type: ignore[no-untyped-call]
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            for _ in commands:
                await conn.read_response()
        except (RedisError, OSError) as exc:
            await conn.disconnect(nowait=True)
            raise BrokerError(f"publish to {redact_url(self.url)} failed: {exc}") from exc
        except BaseException:
            # Cancelled mid-pipeline: the replies still on the wire belong to nobody. Drop the connection.
            await conn.disconnect(nowait=True)
            raise
        self._idle_publishers.append(conn)

    # -- subscribing --------------------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(self, room: str) -> AsyncIterator[Subscription]:
        name = self.channel(room)
        subscription = Subscription(room, max_messages=self._max_messages, max_bytes=self._max_bytes)
        channel = self._channels.get(name)
        if channel is None:
            channel = _Channel(room)
            self._channels[name] = channel
            channel.subscriptions.add(subscription)
            conn = self._sub_conn
            if conn is not None:
                await self._send_subscription(conn, "SUBSCRIBE", [name])
        else:
            channel.subscriptions.add(subscription)
        try:
            if not channel.confirmed.is_set():
                await self._wait_live(channel)
                if not channel.confirmed.is_set():
                    # Serve without it for now (Redis is down or slow); repair once it is live.
                    channel.gap_on_confirm = True
            yield subscription
        finally:
            subscription.close()
            channel.subscriptions.discard(subscription)
            if not channel.subscriptions and self._channels.get(name) is channel:
                del self._channels[name]
                conn = self._sub_conn
                if conn is not None and not self._closed:
                    await self._send_subscription(conn, "UNSUBSCRIBE", [name])

    async def _wait_live(self, channel: _Channel) -> None:
        """Wait (briefly) for the channel's confirmation while Redis is up or still being reached for the
        first time; not while it is known to be down."""
        if self._sub_conn is None and self._down.is_set():
            return
        waiters = [asyncio.ensure_future(channel.confirmed.wait()), asyncio.ensure_future(self._down.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.subscribe_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _send_subscription(self, conn: AbstractConnection, command: str, names: list[bytes]) -> None:
        # Under one lock so that commands reach Redis in the order they were issued (an UNSUBSCRIBE of a
        # room that unloaded must not overtake the SUBSCRIBE of its reload).
        async with self._send_lock:
            if conn is not self._sub_conn or not conn.is_connected:
                return  # that connection is gone; the reconnect subscribes every channel anew
            for name in names:
                self._inflight[name] = self._inflight.get(name, 0) + 1
            try:
                await conn.send_command(command, *names, check_health=False)
            except (RedisError, OSError) as exc:
                # The reader notices the broken connection too, and reconnects.
                logger.debug("%s failed: %s", command, exc)
                await conn.disconnect(nowait=True)

    def _on_confirmed(self, name: bytes, subscribed: bool) -> None:
        pending = self._inflight.get(name, 0) - 1
        if pending > 0:
            self._inflight[name] = pending
            return
        self._inflight.pop(name, None)
        channel = self._channels.get(name)
        if channel is None or not subscribed:
            return
        channel.confirmed.set()
        if channel.gap_on_confirm:
            channel.gap_on_confirm = False
            for subscription in channel.subscriptions:
                subscription.gap("resubscribed")

    def _on_message(self, name: bytes, data: bytes) -> None:
        channel = self._channels.get(name)
        if channel is None:
            return
        try:
            sender, pos = message_sender(data)
            if sender == self.replica_id:
                return  # our own message, echoed back by Redis
            records = decode_records(data, sender, pos)
        except ProtocolError:
            _DROPPED_UNDECODABLE.inc()
            return
        for record in records:
            if record.target and record.target != self.replica_id:
                continue
            if record.parts == 1:
                try:
                    kind = Kind(record.kind)
                except ValueError:
                    _DROPPED_UNDECODABLE.inc()
                    continue
                envelope: Envelope | None = Envelope(sender, kind, record.payload, record.target)
                dropped: list[bytes] = []
            else:
                try:
                    envelope, dropped = self._reassembly.add(name, record)
                except ValueError:
                    _DROPPED_UNDECODABLE.inc()
                    continue
            for lost in dropped:
                metrics.BROKER_DROPPED.labels("incomplete").inc()
                lost_channel = self._channels.get(lost)
                if lost_channel is not None:
                    for subscription in lost_channel.subscriptions:
                        subscription.gap("incomplete envelope")
            if envelope is not None:
                for subscription in channel.subscriptions:
                    subscription.deliver(envelope)

    async def _run(self) -> None:
        delay = _RECONNECT_MIN
        while not self._closed:
            conn = self._new_connection("sub")
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                self._inflight.clear()
                # Take the channel list and publish the connection in one step (no await between), so a
                # room subscribing concurrently is either in this list or subscribes itself.
                self._sub_conn = conn
                names = [self._control, *self._channels]
                for start in range(0, len(names), _SUBSCRIBE_BATCH):
                    await self._send_subscription(conn, "SUBSCRIBE", names[start : start + _SUBSCRIBE_BATCH])
                self._down.clear()
                metrics.BROKER_CONNECTED.set(1)
                metrics.BROKER_RECONNECTS.inc()
                if self._outage_logged:
                    logger.warning("broker: connected to %s again; repairing rooms", redact_url(self.url))
                    self._outage_logged = False
                else:
                    logger.info("broker: subscribed at %s", redact_url(self.url))
                delay = _RECONNECT_MIN
                await self._read(conn)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                self._down.set()
                metrics.BROKER_ERRORS.labels("subscribe").inc()
                if not self._outage_logged:
                    logger.warning("broker: connection to %s lost or refused (%s); retrying", redact_url(self.url), exc)
                    self._outage_logged = True
            finally:
                self._sub_conn = None
                metrics.BROKER_CONNECTED.set(0)
                self._reassembly.clear()
                for channel in self._channels.values():
                    channel.confirmed.clear()
                    channel.gap_on_confirm = True
                await conn.disconnect(nowait=True)
            if self._closed:
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _RECONNECT_MAX)

    async def _read(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        stale_after = 3 * self.ping_interval
        on_message, on_confirmed = self._on_message, self._on_confirmed
        async with asyncio.timeout(None) as deadline:
            while True:
                # A connection that stays silent through three pings is dead even if TCP has not said so.
                # The timeout only fires on such a connection, which is thrown away with its half-read reply.
                deadline.reschedule(loop.time() + stale_after)
                reply = await conn.read_response(timeout=math.inf, disconnect_on_error=False)
                if not isinstance(reply, list) or len(reply) < 3:
                    continue
                what = reply[0]
                if what == b"message":
                    on_message(reply[1], reply[2])
                elif what == b"subscribe":
                    on_confirmed(reply[1], True)
                elif what == b"unsubscribe":
                    on_confirmed(reply[1], False)

    async def _ping(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.ping_interval)
            conn = self._sub_conn
            if conn is None:
                continue
            async with self._send_lock:
                if conn is not self._sub_conn:
                    continue
                try:
                    await conn.send_command("PING", check_health=False)
                except (RedisError, OSError):
                    await conn.disconnect(nowait=True)
