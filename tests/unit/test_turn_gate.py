"""``LeaveGate``: lost connections start their last resume a few per loop turn, in the order they were
lost, and the drain is a task that a graceful shutdown waits for."""

from __future__ import annotations

import asyncio

from collab_server.transport import LeaveGate


class _Lost:
    """What the gate uses of a connection: its loop, and ``_start_resume``."""

    def __init__(self, number: int, started: list[int]) -> None:
        self.loop = asyncio.get_running_loop()
        self.number = number
        self._started = started

    def _start_resume(self) -> None:
        self._started.append(self.number)


def _gate_with(lost: int, per_turn: int) -> tuple[LeaveGate, set[asyncio.Task[None]], list[int]]:
    """A gate, its server's task set, and the numbers of the connections it started (``lost`` added)."""
    tasks: set[asyncio.Task[None]] = set()
    gate = LeaveGate(tasks, per_turn=per_turn)
    started: list[int] = []
    for number in range(lost):
        gate.add(_Lost(number, started))  # type: ignore[arg-type]
    return gate, tasks, started


async def test_a_burst_of_leaves_starts_per_turn_at_a_time_in_order() -> None:
    gate, tasks, started = _gate_with(8, per_turn=3)
    assert started == []  # nothing runs in the turn that lost them
    assert len(tasks) == 1  # one drain, in the server's task set

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


async def test_a_leave_after_the_drain_ended_starts_a_new_one() -> None:
    gate, tasks, started = _gate_with(1, per_turn=2)
    drain = next(iter(tasks))
    await drain
    gate.add(_Lost(1, started))  # type: ignore[arg-type]
    await next(iter(tasks))
    assert started == [0, 1]
    assert not tasks


async def test_leaves_that_arrive_while_draining_join_the_queue() -> None:
    gate, tasks, started = _gate_with(3, per_turn=2)
    await asyncio.sleep(0)
    assert started == [0, 1]
    gate.add(_Lost(3, started))  # type: ignore[arg-type]
    assert len(tasks) == 1  # the same drain takes it
    await next(iter(tasks))
    assert started == [0, 1, 2, 3]
