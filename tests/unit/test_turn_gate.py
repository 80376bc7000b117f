"""``TurnGate``: arriving connections start their app, and lost ones their last resume, a few per loop
turn in the order they were queued, and the drain is a task that a graceful shutdown waits for."""

from __future__ import annotations

import asyncio

from collab_server.transport import TurnGate


def _gate_with(queued: int, per_turn: int) -> tuple[TurnGate, set[asyncio.Task[None]], list[int]]:
    """A gate, its server's task set, and the numbers of the starts it called (``queued`` added)."""
    tasks: set[asyncio.Task[None]] = set()
    gate = TurnGate(tasks, per_turn=per_turn)
    started: list[int] = []
    for number in range(queued):
        _queue(gate, number, started)
    return gate, tasks, started


def _queue(gate: TurnGate, number: int, started: list[int]) -> None:
    gate.add(lambda: started.append(number), asyncio.get_running_loop())


async def test_a_burst_starts_per_turn_at_a_time_in_order() -> None:
    gate, tasks, started = _gate_with(8, per_turn=3)
    assert started == []  # nothing runs in the turn that queued them
    assert len(tasks) == 1  # one drain, in the server's task set
    assert len(gate) == 8

    per_turn = []
    while len(started) < 8:
        before = len(started)
        await asyncio.sleep(0)  # one loop turn: the drain takes one step
        per_turn.append(len(started) - before)
    assert per_turn == [3, 3, 2]
    assert started == list(range(8))

    await next(iter(tasks))  # the drain finds the queue empty and ends
    assert not tasks
    assert len(gate) == 0


async def test_a_start_after_the_drain_ended_starts_a_new_drain() -> None:
    gate, tasks, started = _gate_with(1, per_turn=2)
    drain = next(iter(tasks))
    await drain
    _queue(gate, 1, started)
    await next(iter(tasks))
    assert started == [0, 1]
    assert not tasks


async def test_starts_queued_while_draining_join_the_queue() -> None:
    gate, tasks, started = _gate_with(3, per_turn=2)
    await asyncio.sleep(0)
    assert started == [0, 1]
    _queue(gate, 3, started)
    assert len(tasks) == 1  # the same drain takes it
    await next(iter(tasks))
    assert started == [0, 1, 2, 3]
