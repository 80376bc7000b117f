"""Redis backends: pub/sub fan-out (:class:`RedisBroker`) and the presence registry (:class:`RedisRegistry`).

Imported only when ``COLLAB_BROKER_URL`` names Redis. Keys and channels, all under ``prefix``::

    {prefix}:room:{room}        channel: the room's envelopes (wire format below)
    {prefix}:ctl:{replica}      channel: keeps the subscriber connection in pub/sub mode, even with no room
    {prefix}:presence:{room}    hash: client id → PresenceEntry JSON; expires ``ttl`` after the last write
    {prefix}:replica:{replica}  string with a TTL: the replica's heartbeat

Wire format of one pub/sub message: a header, then the records of one or more envelopes of the room::

    message := u8 version (1) · varString sender · record+
    record  := u8 kind · varString target · varUint message id · varUint part · varUint parts ·
               varUint length · payload

The envelopes one publish batch has for a room travel together in as few messages as fit ``chunk_bytes``
(under load that is one PUBLISH, one fan-out and one parse per room per batch, not per edit; a replica
drops its own messages, which Redis echoes back, by the header alone). A payload over ``chunk_bytes``
goes in parts, one message each, so no pub/sub message approaches Redis's output-buffer limit for
subscribers (``client-output-buffer-limit pubsub 32mb``: one oversized message would get *every*
subscriber of this Redis disconnected, stalling all rooms). Parts are published in order on one
connection and reassembled by (sender, message id).

The subscriber is one raw connection (RESP2) read by one task; its liveness is checked by a PING every
``ping_interval``. When it breaks, it is re-established with backoff, every channel is subscribed again,
and each subscription gets a Gap once its channel is confirmed: the replication repairs what was lost.
Publishes go over separate connections, pipelined per batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Final

from pycrdt import write_var_uint
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from collab_server import metrics
from collab_server.errors import BrokerError, ProtocolError
from collab_server.secrets import redact_url
from presence.broker import Envelope, Kind, Subscription
from presence.registry import PresenceEntry

logger = logging.getLogger(__name__)

WIRE_VERSION: Final = 1
DEFAULT_CHUNK_BYTES: Final = 256 * 1024
_RECONNECT_MIN: Final = 0.05
_RECONNECT_MAX: Final = 1.0
_SUBSCRIBE_BATCH: Final = 1000
# Reassembly buffers of envelopes whose parts are still arriving: bounded, and forgotten after a while
# (a part lost with a broken connection never arrives; the Gap of the reconnect covers the loss).
_PARTIAL_MAX_BYTES: Final = 256 * 1024 * 1024
_PARTIAL_MAX_AGE: Final = 30.0

_DROPPED_UNDECODABLE = metrics.BROKER_DROPPED.labels("undecodable")


def _safe_name(text: str) -> str:
    # CLIENT SETNAME takes printable ASCII without spaces only.
    return "".join(c if "!" <= c <= "~" else "_" for c in text)[:120]


# -- wire format ------------------------------------------------------------------------------------


def _var_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return write_var_uint(len(raw)) + raw


def _record(envelope: Envelope, message_id: int, part: int, parts: int, payload: bytes | memoryview) -> bytes:
    return b"".join(
        (
            bytes((envelope.kind,)),
            _var_string(envelope.target),
            write_var_uint(message_id),
            write_var_uint(part),
            write_var_uint(parts),
            write_var_uint(len(payload)),
            payload,
        )
    )


def encode_messages(
    sender: str, envelopes: Sequence[Envelope], next_id: Iterator[int], chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> list[bytes]:
    """The pub/sub messages carrying ``envelopes`` (all for one room, in order)."""
    header = bytes((WIRE_VERSION,)) + _var_string(sender)
    messages: list[bytes] = []
    records: list[bytes] = []
    size = 0
    for envelope in envelopes:
        payload = envelope.payload
        if len(payload) > chunk_bytes:
            if records:
                messages.append(header + b"".join(records))
                records, size = [], 0
            message_id = next(next_id)
            parts = math.ceil(len(payload) / chunk_bytes)
            view = memoryview(payload)
            for index in range(parts):
                chunk = view[index * chunk_bytes : (index + 1) * chunk_bytes]
                messages.append(header + _record(envelope, message_id, index, parts, chunk))
            continue
        record = _record(envelope, 0, 0, 1, payload)
        if records and size + len(record) > chunk_bytes:
            messages.append(header + b"".join(records))
            records, size = [], 0
        records.append(record)
        size += len(record)
    if records:
        messages.append(header + b"".join(records))
    return messages


@dataclass(frozen=True, slots=True)
class Frame:
    """One record of a pub/sub message: a whole envelope, or one part of a large one."""

    kind: int
    replica: str
    target: str
    message_id: int
    part: int
    parts: int
    payload: bytes


def _read_uint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ProtocolError("truncated varint in envelope header")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ProtocolError("varint too long in envelope header")


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    length, pos = _read_uint(data, pos)
    end = pos + length
    if end > len(data):
        raise ProtocolError("truncated string in envelope header")
    try:
        return data[pos:end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise ProtocolError("envelope header is not UTF-8") from exc


def message_sender(data: bytes) -> tuple[str, int]:
    """(sender, offset of the first record) of a pub/sub message; ProtocolError if it is not one of ours."""
    if len(data) < 2 or data[0] != WIRE_VERSION:
        raise ProtocolError("not a version-1 envelope message")
    return _read_string(data, 1)


def decode_records(data: bytes, sender: str, pos: int) -> list[Frame]:
    """The records of a pub/sub message from ``pos`` on; ProtocolError for the whole message if one is bad."""
    frames: list[Frame] = []
    end = len(data)
    while pos < end:
        kind = data[pos]
        target, pos = _read_string(data, pos + 1)
        message_id, pos = _read_uint(data, pos)
        part, pos = _read_uint(data, pos)
        parts, pos = _read_uint(data, pos)
        length, pos = _read_uint(data, pos)
        if parts < 1 or part >= parts:
            raise ProtocolError(f"envelope part {part} of {parts}")
        if pos + length > end:
            raise ProtocolError("truncated envelope payload")
        frames.append(Frame(kind, sender, target, message_id, part, parts, data[pos : pos + length]))
        pos += length
    if not frames:
        raise ProtocolError("a message without envelopes")
    return frames


def decode_message(data: bytes) -> list[Frame]:
    sender, pos = message_sender(data)
    return decode_records(data, sender, pos)


@dataclass(slots=True)
class _Partial:
    channel: bytes
    kind: int
    target: str
    parts: list[bytes | None]
    received: int = 0
    size: int = 0
    started: float = field(default_factory=time.monotonic)


class _Reassembly:
    """Parts of large envelopes, by (sender, message id), until every part has arrived."""

    def __init__(self) -> None:
        self._partial: dict[tuple[str, int], _Partial] = {}
        self._bytes = 0

    def clear(self) -> None:
        self._partial.clear()
        self._bytes = 0

    def add(self, channel: bytes, frame: Frame) -> tuple[Envelope | None, list[bytes]]:
        """(the whole envelope once complete, channels whose partial envelopes had to be dropped)."""
        dropped: list[bytes] = []
        key = (frame.replica, frame.message_id)
        partial = self._partial.get(key)
        if partial is None:
            partial = _Partial(channel, frame.kind, frame.target, [None] * frame.parts)
            self._partial[key] = partial
            dropped = self._expire()
        if len(partial.parts) != frame.parts or partial.parts[frame.part] is not None:
            # A sender restarted its message ids, or a part arrived twice: this envelope is lost.
            self._forget(key)
            return None, [*dropped, channel]
        partial.parts[frame.part] = frame.payload
        partial.received += 1
        partial.size += len(frame.payload)
        self._bytes += len(frame.payload)
        if partial.received < len(partial.parts):
            while self._bytes > _PARTIAL_MAX_BYTES and self._partial:
                oldest = next(iter(self._partial))
                dropped.append(self._partial[oldest].channel)
                self._forget(oldest)
            return None, dropped
        self._forget(key)
        payload = b"".join(part for part in partial.parts if part is not None)
        return Envelope(frame.replica, Kind(partial.kind), payload, partial.target), dropped

    def _forget(self, key: tuple[str, int]) -> None:
        partial = self._partial.pop(key, None)
        if partial is not None:
            self._bytes -= partial.size

    def _expire(self) -> list[bytes]:
        limit = time.monotonic() - _PARTIAL_MAX_AGE
        stale = [key for key, partial in self._partial.items() if partial.started < limit]
        channels = [self._partial[key].channel for key in stale]
        for key in stale:
            self._forget(key)
        return channels


# -- broker -----------------------------------------------------------------------------------------


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
        self._room_prefix = f"{prefix}:room:".encode()
        self._control = f"{prefix}:ctl:{replica_id}".encode()
        self._channels: dict[bytes, _Channel] = {}
        self._inflight: dict[bytes, int] = {}  # SUBSCRIBE/UNSUBSCRIBE sent, reply not yet read
        self._reassembly = _Reassembly()
        self._message_ids = count(1)
        self._sub_conn: AbstractConnection | None = None
        self._send_lock = asyncio.Lock()
        self._idle_publishers: list[AbstractConnection] = []
        self._reader: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._last_read = 0.0
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
        name = _safe_name(f"collab:{self.prefix}:{self.replica_id}:{role}")
        return self._connection_class(**{**self._pool_kwargs, "client_name": name})

    def describe(self) -> str:
        return f"redis pub/sub at {redact_url(self.url)} (prefix {self.prefix!r})"

    @property
    def connected(self) -> bool:
        return self._sub_conn is not None

    def channel(self, room: str) -> bytes:
        return self._room_prefix + room.encode("utf-8", "surrogatepass")

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

    async def publish(self, room: str, envelope: Envelope) -> None:
        await self.publish_many([(room, envelope)])

    async def publish_many(self, batch: Sequence[tuple[str, Envelope]]) -> None:
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
            frames = decode_records(data, sender, pos)
        except ProtocolError:
            _DROPPED_UNDECODABLE.inc()
            return
        for frame in frames:
            if frame.target and frame.target != self.replica_id:
                continue
            if frame.parts == 1:
                try:
                    kind = Kind(frame.kind)
                except ValueError:
                    _DROPPED_UNDECODABLE.inc()
                    continue
                envelope: Envelope | None = Envelope(sender, kind, frame.payload, frame.target)
                dropped: list[bytes] = []
            else:
                try:
                    envelope, dropped = self._reassembly.add(name, frame)
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
        loop = asyncio.get_running_loop()
        while not self._closed:
            conn = self._new_connection("sub")
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                self._inflight.clear()
                # Take the channel list and publish the connection in one step (no await between), so a
                # room subscribing concurrently is either in this list or subscribes itself.
                self._sub_conn = conn
                names = [self._control, *self._channels]
                self._last_read = loop.time()
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
                self._last_read = loop.time()
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


# -- presence registry ------------------------------------------------------------------------------

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
        heartbeat_ttl: float = 6.0,
        client_name: str | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.heartbeat_ttl = heartbeat_ttl
        self._redis = Redis.from_url(
            url,
            protocol=2,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 1),  # one retry: a killed idle connection is replaced transparently
            client_name=_safe_name(client_name or f"collab:{prefix}:registry"),
        )
        self._prune = self._redis.register_script(_PRUNE_SCRIPT)

    def __repr__(self) -> str:
        return f"RedisRegistry({redact_url(self.url)!r}, prefix={self.prefix!r})"

    def presence_key(self, room: str) -> str:
        return f"{self.prefix}:presence:{room}"

    def replica_key(self, replica: str) -> str:
        return f"{self.prefix}:replica:{replica}"

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

    async def heartbeat(self, replica: str) -> bool:
        try:
            previous = await self._redis.set(
                self.replica_key(replica), str(time.time()), px=int(self.heartbeat_ttl * 1000), get=True
            )
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
