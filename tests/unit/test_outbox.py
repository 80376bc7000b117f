"""A room's broadcasts written a slice of time per turn, in order (collab_server.outbox)."""

from __future__ import annotations

import asyncio

import pytest

from collab_server import outbox as outbox_module
from collab_server.outbox import Outbox
from tests.unit.fakes import ManualClock


class Reader:
    """A peer whose every write takes ``cost`` seconds of the clock."""

    def __init__(self, clock: ManualClock, cost: float) -> None:
        self.clock, self.cost = clock, cost
        self.received: list[bytes] = []

    def send(self, message: bytes, frame: bytes | None = None) -> None:
        self.received.append(message)
        self.clock.now += self.cost


def _outbox(clock: ManualClock, written: list[float]) -> Outbox:
    return Outbox(written.append, clock=clock)


async def _turn() -> None:
    await asyncio.sleep(0)


async def test_a_broadcast_to_many_peers_is_written_a_slice_per_turn() -> None:
    clock, written = ManualClock(), list[float]()
    outbox = _outbox(clock, written)
    readers = tuple(Reader(clock, cost=0.0001) for _ in range(100))  # 10 ms of writes in all
    outbox.send(b"m", None, readers)
    have = [sum(1 for r in readers if r.received)]
    while outbox.writing:
        await _turn()
        have.append(sum(1 for r in readers if r.received))
    # The clock is read every 32 writes: 32 of them (3.2 ms) pass the 2 ms slice, and the rest wait a turn.
    assert outbox_module.SLICE == 0.002
    assert have == [32, 64, 96, 100]
    assert all(r.received == [b"m"] for r in readers)
    assert written == [pytest.approx(0.01)]  # once, when all is written: the time of every slice


async def test_broadcasts_sent_while_one_is_written_follow_it_in_order() -> None:
    clock, written = ManualClock(), list[float]()
    outbox = _outbox(clock, written)
    readers = tuple(Reader(clock, cost=0.0001) for _ in range(70))
    outbox.send(b"first", None, readers)
    outbox.send(b"second", None, readers)
    outbox.send(b"third", None, readers[:10])
    assert outbox.writing and written == []
    while outbox.writing:
        await _turn()
    assert all(r.received == [b"first", b"second", b"third"] for r in readers[:10])
    assert all(r.received == [b"first", b"second"] for r in readers[10:])
    assert len(written) == 1


async def test_a_broadcast_to_a_few_peers_is_written_at_once_and_never_makes_a_rest() -> None:
    clock, written = ManualClock(), list[float]()
    outbox = _outbox(clock, written)
    readers = tuple(Reader(clock, cost=0.001) for _ in range(4))
    outbox.send(b"m", b"framed", readers)
    assert not outbox.writing
    assert all(r.received == [b"m"] for r in readers)
    assert written == []  # not timed: a few writes are never long (this clock says 4 ms; a real one, µs)


async def test_a_broadcast_to_a_few_peers_still_waits_for_the_one_being_written() -> None:
    clock, written = ManualClock(), list[float]()
    outbox = _outbox(clock, written)
    readers = tuple(Reader(clock, cost=0.0001) for _ in range(100))
    outbox.send(b"first", None, readers)
    outbox.send(b"second", None, readers[:4])
    assert readers[0].received == [b"first"]  # the second waits behind the first, even for a few peers
    while outbox.writing:
        await _turn()
    assert all(r.received == [b"first", b"second"] for r in readers[:4])


async def test_write_all_writes_everything_now() -> None:
    clock, written = ManualClock(), list[float]()
    outbox = _outbox(clock, written)
    readers = tuple(Reader(clock, cost=0.0001) for _ in range(100))
    outbox.send(b"m", None, readers)
    outbox.write_all()
    assert not outbox.writing
    assert all(r.received == [b"m"] for r in readers)
    await _turn()  # the continuation it had scheduled was cancelled: nothing is written twice
    assert all(r.received == [b"m"] for r in readers) and len(written) == 1


async def test_a_broadcast_sent_from_inside_a_write_follows_the_one_being_written() -> None:
    clock, written = ManualClock(), list[float]()
    outbox = _outbox(clock, written)

    class Closing(Reader):
        """A peer whose write makes the room broadcast (a slow peer closed: the others hear it left)."""

        def send(self, message: bytes, frame: bytes | None = None) -> None:
            super().send(message, frame)
            if message == b"first":
                outbox.send(b"it left", None, readers)

    readers: tuple[Reader, ...] = (Closing(clock, cost=0.0), *(Reader(clock, cost=0.0) for _ in range(40)))
    outbox.send(b"first", None, readers)
    while outbox.writing:
        await _turn()
    assert all(r.received == [b"first", b"it left"] for r in readers)
