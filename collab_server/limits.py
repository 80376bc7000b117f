"""Rates and quotas: token buckets per peer and per client address, and the document size quota.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; taking more than it holds is
refused. Buckets compute their refill when asked (no timers), so an idle peer's bucket costs nothing.

- ``PeerRates``: bytes and messages per second one peer may send (sized so that a tldraw client dragging
  shapes at 60 fps — about 120 messages and a few hundred KB per second — never comes near, nor a script
  that writes one update per keystroke as fast as the server takes them); a peer past them is slowed
  first and refused only when it keeps on.
- ``AddressRates``: rooms one client address may open per minute. Behind a proxy the address is the
  proxy's unless uvicorn is told to trust its ``X-Forwarded-For`` (``FORWARDED_ALLOW_IPS``).
- ``DocumentSizes``: whether an update may still be added to a room's document (``admits``). The room
  code may report the real size (``set_size``); otherwise the document is measured through its CRDT
  engine when first seen, plus the bytes of every update admitted since, and measured again before a
  refusal stands.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from collab_server.errors import RateExceeded

if TYPE_CHECKING:
    from collab_server.settings import Settings


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst}, tokens={self.tokens:.0f})"

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if the bucket holds them."""
        tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if tokens < amount:
            self.tokens = tokens
            return False
        self.tokens = tokens - amount
        return True

    def charge(self, amount: float, now: float) -> None:
        """Take ``amount`` tokens even if the bucket holds fewer: it goes into debt (``debt``)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate) - amount
        self.updated = now

    def debt(self, now: float) -> float:
        """Seconds until the bucket is out of debt (0 if it is not in debt)."""
        tokens = self.tokens + (now - self.updated) * self.rate
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.updated) * self.rate >= self.burst


class PeerRates:
    """Bytes and messages per second of one peer's incoming frames: first slowed, then refused.

    A frame past the rates is still handled, but it leaves the peer in debt, and ``pause`` says how long
    to wait before reading its next frame: the peer's socket fills meanwhile and TCP slows its sends. That
    costs a real client that bursts (a paste, a reconnect) nothing but a short delay. Waiting draws on the
    peer's patience (``patience`` seconds, refilled at half a second per second): a peer that keeps
    sending faster than its rates runs out of it, and so does a frame that alone would need longer, and
    is then refused (``RateExceeded``: 4529, the client retries later).
    """

    __slots__ = ("_bytes", "_clock", "_messages", "_patience")

    def __init__(
        self,
        bytes_per_second: float,
        bytes_burst: float,
        messages_per_second: float,
        messages_burst: float,
        *,
        patience: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        now = clock()
        self._clock = clock
        self._bytes = TokenBucket(bytes_per_second, bytes_burst, now)
        self._messages = TokenBucket(messages_per_second, messages_burst, now)
        self._patience = TokenBucket(0.5, patience, now)

    def charge_frame(self, nbytes: int) -> None:
        """Charge one frame's bytes (before it is decoded)."""
        self._bytes.charge(nbytes, self._clock())

    def charge_messages(self, count: int) -> None:
        """Charge a decoded frame's messages."""
        self._messages.charge(count, self._clock())

    def pause(self) -> float:
        """Seconds to wait before reading the peer's next frame (0: none); RateExceeded past patience."""
        if self._bytes.tokens >= 0 and self._messages.tokens >= 0:
            # Not in debt as of the last charge, and buckets only refill since: no clock needed. This runs
            # for every frame, and is the answer for all but a flooding peer's.
            return 0.0
        now = self._clock()
        bytes_wait, messages_wait = self._bytes.debt(now), self._messages.debt(now)
        wait, bucket = (bytes_wait, self._bytes) if bytes_wait >= messages_wait else (messages_wait, self._messages)
        if wait <= 0:
            return 0.0
        if not self._patience.take(wait, now):
            if bucket is self._bytes:
                raise RateExceeded(f"sending faster than {bucket.rate:.0f} bytes per second")
            raise RateExceeded(f"sending more than {bucket.rate:.0f} messages per second")
        return wait


class AddressRates:
    """One bucket per client address, for actions counted per address (rooms opened per minute).

    Bounded: a bucket that has refilled completely is the same as no bucket, so it is dropped; past
    ``max_addresses`` the least recently used is dropped (that address then starts with a full bucket).
    """

    def __init__(self, per_minute: float, *, max_addresses: int = 100_000) -> None:
        self.per_minute = per_minute
        self._max = max_addresses
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.pop(address, None)
        if bucket is None:
            bucket = TokenBucket(self.per_minute / 60, self.per_minute, now)
        allowed = bucket.take(1, now)
        self._buckets[address] = bucket
        self._prune(now)
        return allowed

    def _prune(self, now: float) -> None:
        buckets = self._buckets
        while len(buckets) > self._max:
            buckets.popitem(last=False)
        # The oldest entries are the likeliest to have refilled: drop them while they have.
        while buckets:
            address, bucket = next(iter(buckets.items()))
            if not bucket.full(now):
                break
            del buckets[address]


class DocumentSizes:
    """The per-document size quota (``COLLAB_MAX_DOCUMENT_BYTES``), one estimate per room object.

    ``measure(room)`` gives the encoded size of a room's document, at once or as an awaitable (the
    document lives in a CRDT worker). A room is measured when first seen, and again when the estimate
    says an update would pass the limit (at most once per ``remeasure_after`` seconds: a full room that
    peers keep writing to is not encoded at every attempt). Between measurements the estimate adds the
    bytes of every admitted update, which over-counts (updates overlap), so a refusal on a stale estimate
    triggers a measurement and the peer, which retries (4513 is transient), is judged on it.
    """

    def __init__(
        self, max_bytes: int, measure: Callable[[Any], int | Awaitable[int]], *, remeasure_after: float = 10.0
    ) -> None:
        self.max_bytes = max_bytes
        self._measure = measure
        self._remeasure_after = remeasure_after
        # room -> (estimated size, when it was last measured)
        self._sizes: weakref.WeakKeyDictionary[Any, tuple[int, float]] = weakref.WeakKeyDictionary()
        self._measuring: weakref.WeakSet[Any] = weakref.WeakSet()
        # room -> bytes admitted since its measurement in flight was taken: not in what it will report
        self._admitted_since: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task[None]] = set()

    def set_size(self, room: Any, nbytes: int) -> None:
        """The room code reports the document's real size (after a load, a compaction)."""
        self._sizes[room] = (nbytes, time.monotonic())

    def admits(self, room: Any, nbytes: int) -> bool:
        """May an update of ``nbytes`` be applied to ``room``'s document? Counts it if so."""
        now = time.monotonic()
        known = self._sizes.get(room)
        if known is None:
            known = self._sizes[room] = (0, -math.inf)
            self._start_measuring(room)
            known = self._sizes[room]
        size, measured = known
        if size + nbytes > self.max_bytes and now - measured >= self._remeasure_after:
            # Updates overlap and deletions shrink documents: measure before refusing for long.
            self._start_measuring(room)
            size, measured = self._sizes[room]
        if size + nbytes > self.max_bytes:
            return False
        self._sizes[room] = (size + nbytes, measured)
        if self._admitted_since and room in self._admitted_since:  # a measurement is in flight (rare)
            self._admitted_since[room] += nbytes
        return True

    def _start_measuring(self, room: Any) -> None:
        if room in self._measuring:
            return
        result = self._measure(room)
        if not inspect.isawaitable(result):
            self._sizes[room] = (result, time.monotonic())
            return
        self._measuring.add(room)
        task = asyncio.get_running_loop().create_task(self._measured(room, result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _measured(self, room: Any, result: Awaitable[int]) -> None:
        # The measurement is taken here: its request goes to the engine behind every update admitted so
        # far. Updates admitted while it is in flight are not in it; they are added, or a measurement
        # that comes back late would forget them and let the document grow past the limit.
        self._admitted_since[room] = 0
        try:
            size = await result
        except Exception:  # the room is gone or its document is being rebuilt: keep the estimate
            return
        finally:
            self._measuring.discard(room)
            admitted = self._admitted_since.pop(room, 0)
        self._sizes[room] = (size + admitted, time.monotonic())


async def encoded_size(room: Any) -> int:
    """Bytes of a room's whole document, encoded (what a fresh client would be sent), from its engine."""
    return len(await room.engine.full_state(room.name))


class Quotas:
    """The app's shared rate and quota state, built once from the settings (lifespan state ``quotas``)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
        def peer_rates() -> PeerRates:
            return PeerRates(
                settings.peer_bytes_per_second,
                settings.peer_bytes_burst,
                settings.peer_messages_per_second,
                settings.peer_messages_burst,
                patience=settings.peer_rate_patience,
            )

        return cls(
            room_loads_per_minute=settings.room_loads_per_minute,
            max_document_bytes=settings.max_document_bytes,
            measure_document=encoded_size,
            peer_rates=peer_rates,
        )

    def __init__(
        self,
        *,
        room_loads_per_minute: float,
        max_document_bytes: int,
        measure_document: Callable[[Any], int | Awaitable[int]],
        peer_rates: Callable[[], PeerRates],
    ) -> None:
        self.room_loads = AddressRates(room_loads_per_minute)
        self.document_sizes = DocumentSizes(max_document_bytes, measure_document)
        self.peer_rates = peer_rates
