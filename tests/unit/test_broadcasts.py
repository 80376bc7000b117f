"""Rooms' flushes, a budget's worth per event-loop turn, and a long one's rest (collab_server.broadcasts)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from collab_server.broadcasts import Broadcasts
from tests.support.eventually import eventually
from tests.unit.fakes import ManualClock


class Flushing:
    """A room whose flush takes ``cost`` seconds of the clock and is logged. Given ``broadcasts``, it tells
    them how long its writing took, as a room does once its broadcast is written (``Room._written``)."""

    def __init__(
        self, name: str, log: list[str], clock: ManualClock, cost: float, broadcasts: Broadcasts | None = None
    ) -> None:
        self.name, self._log, self._clock, self._cost = name, log, clock, cost
        self._broadcasts = broadcasts
        self.rest_ends = 0.0

    def flush(self) -> None:
        self._log.append(self.name)
        self._clock.now += self._cost
        if self._broadcasts is not None:
            self._broadcasts.rest(self, self._cost)


async def _turns(log: list[str], count: int) -> None:
    """Mark the start of each of the next ``count`` loop turns in ``log``."""
    for _ in range(count):
        await asyncio.sleep(0)
        log.append("|")


async def test_rooms_are_flushed_in_order_a_budget_s_worth_per_turn() -> None:
    clock, log = ManualClock(), list[str]()
    broadcasts = Broadcasts(budget=0.003, clock=clock)
    for name in "abcde":
        broadcasts.add(Flushing(name, log, clock, cost=0.002))  # two fit in a turn's 3 ms, not three
    assert log == [] and len(broadcasts) == 5  # nothing is flushed where it is queued
    await _turns(log, 4)
    assert log == ["a", "b", "|", "c", "d", "|", "e", "|", "|"]
    assert len(broadcasts) == 0


async def test_a_turn_flushes_everything_due_within_the_budget_and_a_room_queued_later_the_next_turn() -> None:
    clock, log = ManualClock(), list[str]()
    broadcasts = Broadcasts(budget=0.003, clock=clock)
    for name in "abc":
        broadcasts.add(Flushing(name, log, clock, cost=0.0001))
    await _turns(log, 1)
    broadcasts.add(Flushing("d", log, clock, cost=0.0001))
    await _turns(log, 2)
    assert log == ["a", "b", "c", "|", "d", "|", "|"]


async def test_a_flush_over_the_budget_still_completes_and_the_rest_waits() -> None:
    clock, log = ManualClock(), list[str]()
    broadcasts = Broadcasts(budget=0.003, clock=clock)
    broadcasts.add(Flushing("huge", log, clock, cost=0.05))
    broadcasts.add(Flushing("small", log, clock, cost=0.0001))
    await _turns(log, 2)
    assert log == ["huge", "|", "small", "|"]


async def test_a_room_whose_broadcast_took_long_rests_twice_as_long_before_its_next() -> None:
    clock, log = ManualClock(), list[str]()
    broadcasts = Broadcasts(budget=0.003, clock=clock)
    hot = Flushing("hot", log, clock, cost=0.02, broadcasts=broadcasts)  # a thousand readers: 20 ms of writes
    broadcasts.add(hot)
    await _turns(log, 1)
    assert hot.rest_ends == pytest.approx(0.02 + 2 * 0.02)  # its flush ended at 20 ms; 40 ms of rest
    broadcasts.add(hot)  # more updates at once: they wait out its rest and go out together
    broadcasts.add(Flushing("small", log, clock, cost=0.0001))
    await _turns(log, 3)
    assert log == ["hot", "|", "small", "|", "|", "|"]
    await eventually(lambda: _flushed_twice(log, "hot"))


async def test_a_room_whose_broadcast_is_quick_never_rests() -> None:
    clock, log = ManualClock(), list[str]()
    broadcasts = Broadcasts(budget=0.003, clock=clock)
    room = Flushing("room", log, clock, cost=0.0005, broadcasts=broadcasts)  # a few peers
    for _ in range(3):
        broadcasts.add(room)
        await _turns(log, 1)
    assert log == ["room", "|", "room", "|", "room", "|"]


async def test_a_room_that_closes_while_it_rests_is_not_kept() -> None:
    clock, log = ManualClock(), list[str]()
    broadcasts = Broadcasts(budget=0.003, clock=clock)
    hot = Flushing("hot", log, clock, cost=0.01, broadcasts=broadcasts)
    broadcasts.add(hot)
    await _turns(log, 1)
    gone = weakref.ref(hot)
    del hot  # the room closes: the rest must not keep it

    def released() -> None:
        gc.collect()
        assert gone() is None

    await eventually(released)


def _flushed_twice(log: list[str], name: str) -> None:
    assert log.count(name) == 2
