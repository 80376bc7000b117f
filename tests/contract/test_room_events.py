"""Room events reach every replica once, the publisher included: in process and over Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from presence.room_events import LocalEventHub, LocalRoomEvents, RedisRoomEvents, RoomEvent, RoomEvents
from tests.contract.conftest_broker import REDIS_URL, redis_problem
from tests.support.eventually import eventually

Pair = tuple[RoomEvents, RoomEvents]


async def _local() -> Pair:
    hub = LocalEventHub()
    return LocalRoomEvents(hub), LocalRoomEvents(hub)


async def _redis() -> Pair:
    problem = await redis_problem()
    if problem is not None:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({problem})")
    prefix = f"events-{uuid.uuid4().hex[:8]}"
    return RedisRoomEvents(REDIS_URL, "a", prefix=prefix), RedisRoomEvents(REDIS_URL, "b", prefix=prefix)


BACKENDS: dict[str, Callable[[], Awaitable[Pair]]] = {"local": _local, "redis": _redis}


@pytest.fixture(params=sorted(BACKENDS))
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Pair, list[list[RoomEvent]]]]:
    pair = await BACKENDS[request.param]()
    seen: list[list[RoomEvent]] = [[], []]
    for events, log in zip(pair, seen, strict=True):
        async def handle(event: RoomEvent, log: list[RoomEvent] = log) -> None:
            log.append(event)

        await events.start(handle)
    for events in pair:
        if isinstance(events, RedisRoomEvents):
            await asyncio.wait_for(events.subscribed.wait(), 5)
    try:
        yield pair, seen
    finally:
        for events in pair:
            await events.close()


async def test_an_event_reaches_the_publisher_at_once_and_the_other_replica_once(
    replicas: tuple[Pair, list[list[RoomEvent]]],
) -> None:
    (first, second), (seen_first, seen_second) = replicas
    await first.publish(RoomEvent("room-1", "changed"))
    assert seen_first == [RoomEvent("room-1", "changed")], "the publisher applies its own event before returning"

    async def arrived() -> None:
        assert seen_second == [RoomEvent("room-1", "changed")]

    await eventually(arrived, timeout=5)
    await second.publish(RoomEvent("room-2", "deleted"))

    async def delivered() -> None:
        assert seen_second == [RoomEvent("room-1", "changed"), RoomEvent("room-2", "deleted")]
        assert seen_first == [RoomEvent("room-1", "changed"), RoomEvent("room-2", "deleted")]

    await eventually(delivered, timeout=5)


def test_envelopes_that_are_not_events_are_ignored() -> None:
    assert RoomEvent.decode(b"not json") is None
    assert RoomEvent.decode(b'{"replica": "a", "room": "r", "kind": "exploded"}') is None
    assert RoomEvent.decode(RoomEvent("r", "deleted").encode("a")) == ("a", RoomEvent("r", "deleted"))
