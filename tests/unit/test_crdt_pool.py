"""WorkerPool against real worker processes: batching per tick, the watchdog, the rebuild, the poison."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from collab_server.crdt.codec import Kind, Op, decode_ops, encode_results
from collab_server.crdt.engine import Applied, Refusal
from collab_server.crdt.pool import _MAX_BATCH_OPS, WorkerPool, _batch_end, _Lane, _Pending, default_workers, lane_of
from collab_server.crdt.process import WorkerProcess, _cpu_clock_of
from tests.support.answers import split_answer
from tests.support.documents import typing_updates
from tests.support.eventually import eventually
from tests.support.hostile import CRASH, HANG, room_on_other_worker
from tests.support.pools import Store, apply_all, text_of

REPO = Path(__file__).resolve().parents[2]


async def test_the_updates_of_one_tick_cross_in_one_request(pool: tuple[WorkerPool, Store]) -> None:
    engine, store = pool
    await engine.load("r", None, [])
    before = engine.requests
    outcomes = await apply_all(engine, store, "r", typing_updates(50)[1])
    assert all(o.accepted for o in outcomes)
    assert engine.requests - before == 1
    assert text_of(await engine.full_state("r")) == "".join(f"{i}," for i in range(50))


async def test_a_crash_restarts_the_worker_refuses_the_poison_and_keeps_the_rest(
    pool: tuple[WorkerPool, Store],
) -> None:
    engine, store = pool
    other = room_on_other_worker("r", engine.workers)
    await engine.load("r", None, typing_updates(1)[1])
    store.rows["r"] = typing_updates(1)[1]
    await engine.load(other, None, [])
    other_pid = engine.worker_pid(other)
    outcomes = await apply_all(engine, store, "r", CRASH)
    assert [o.refusal for o in outcomes] == [None] * 7 + [Refusal.CRASHED]
    assert "r" in store.rebuilt and store.lost == []
    assert engine.worker_pid(other) == other_pid  # the other worker never noticed
    assert text_of(await engine.full_state("r")) == "0,"
    # the same bytes again are refused on sight, without costing a worker
    pid = engine.worker_pid("r")
    [again] = await apply_all(engine, store, "r", CRASH[-1:])
    assert again.refusal is Refusal.POISON and engine.worker_pid("r") == pid


async def test_a_hang_is_cut_off_at_the_deadline(pool: tuple[WorkerPool, Store]) -> None:
    engine, store = pool
    await engine.load("r", None, [])
    started = time.monotonic()
    outcomes = await apply_all(engine, store, "r", HANG)
    assert [o.refusal for o in outcomes][-1] is Refusal.STALLED
    assert time.monotonic() - started < 5
    assert isinstance(await engine.state_vector("r"), bytes)


def _cpu_seconds_by_proc(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@contextlib.asynccontextmanager
async def _running_worker() -> AsyncIterator[tuple[WorkerProcess, int]]:
    """A started worker and its pid; killed on the way out."""
    worker = WorkerProcess(0)
    await worker.start(timeout=30)
    try:
        assert worker.pid is not None
        yield worker, worker.pid
    finally:
        await worker.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU clock of another process is Linux's")
async def test_a_worker_s_cpu_time_is_its_own_and_unknown_once_it_is_gone() -> None:
    async with _running_worker() as (worker, pid):
        spent = worker.cpu_seconds()
        by_proc = _cpu_seconds_by_proc(pid)  # the kernel's other account, in clock ticks
        # Starting Python and importing the library takes far more than nothing of a core.
        assert spent is not None and spent > 0.02
        assert abs(spent - by_proc) <= 2 / os.sysconf("SC_CLK_TCK") + 0.01
    assert worker.cpu_seconds() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU clock of another process is Linux's")
async def test_a_worker_that_died_on_its_own_has_no_cpu_time_even_if_its_pid_is_reused() -> None:
    async with _running_worker() as (worker, pid):
        os.kill(pid, signal.SIGKILL)  # it dies on its own: the pool's recovery has not killed it yet
        assert worker._process is not None
        await worker._process.wait()  # reaped: the pid is free for the next process the system starts
        # The pid reused: the clock's id now names a live process's CPU time (ours, to stand in for it).
        worker._cpu_clock = _cpu_clock_of(os.getpid())
        assert worker.cpu_seconds() is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_the_default_worker_count_is_the_cpus_the_server_may_run_on() -> None:
    pinned = subprocess.run(
        [sys.executable, "-c", _PINNED_WORKERS], capture_output=True, text=True, check=True, cwd=_REPO
    ).stdout.split()
    assert pinned == ["1", "1"]  # pinned to one CPU: one worker, however many the machine has
    assert default_workers() == min(len(os.sched_getaffinity(0)), 8)


_REPO = str(Path(__file__).resolve().parents[2])
_PINNED_WORKERS = """
import os
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from collab_server.crdt.pool import default_workers, usable_cpus
print(usable_cpus(), default_workers())
"""


async def _stop_the_worker_of_a_room_with_two_edits(engine: WorkerPool, store: Store) -> int:
    """Room "r" loaded with two edits, and its worker SIGSTOPped; its pid."""
    await engine.load("r", None, [])
    await apply_all(engine, store, "r", typing_updates(2)[1])
    pid = engine.worker_pid("r")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    return pid


async def test_a_worker_waiting_for_a_core_is_not_stalled(pool: tuple[WorkerPool, Store]) -> None:
    """The deadline is CPU time: a worker descheduled for longer than it (SIGSTOP here: what a machine
    kept busy by other work does to it) answers when it runs again and keeps its rooms."""
    engine, store = pool
    pid = await _stop_the_worker_of_a_room_with_two_edits(engine, store)
    try:
        answer = asyncio.ensure_future(engine.full_state("r"))
        await asyncio.sleep(3 * engine.deadline)  # stopped for three deadlines of wall time
        assert not answer.done()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert text_of(await answer) == "0,1,"
    assert engine.worker_pid("r") == pid and store.rebuilt == []


async def test_a_worker_that_never_runs_again_is_replaced_after_ten_deadlines(pool: tuple[WorkerPool, Store]) -> None:
    engine, store = pool
    pid = await _stop_the_worker_of_a_room_with_two_edits(engine, store)
    started = time.monotonic()
    assert text_of(await engine.full_state("r")) == "0,1,"  # from a fresh worker, rebuilt from the store
    assert engine.worker_pid("r") != pid and store.rebuilt == ["r"]
    assert 10 * engine.deadline <= time.monotonic() - started < 30 * engine.deadline


async def test_a_worker_killed_from_outside_is_replaced_and_its_rooms_rebuilt(
    pool: tuple[WorkerPool, Store],
) -> None:
    engine, store = pool
    await engine.load("r", None, [])
    await apply_all(engine, store, "r", typing_updates(3)[1])
    pid = engine.worker_pid("r")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert text_of(await engine.full_state("r")) == "0,1,2,"
    assert engine.worker_pid("r") != pid and store.rebuilt == ["r"]


_ORPHAN_MAKER = """
import asyncio, sys
from collab_server.crdt.pool import WorkerPool
from tests.support.hostile import HANG

async def main():
    pool = await WorkerPool(1, document_workers=0, deadline=60).start()
    await pool.load("r", None, [])
    for update in HANG:  # the last one loops forever inside the library
        pool.apply("r", update, lambda applied: None)
    await asyncio.sleep(0.5)
    print(pool.worker_pid("r"), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_worker_looping_in_the_library_dies_with_its_server() -> None:
    """A looping worker never reads the end of its input: the kernel kills it when its server dies."""
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ORPHAN_MAKER, stdout=asyncio.subprocess.PIPE, cwd=str(REPO)
    )
    assert server.stdout is not None
    worker = int(await asyncio.wait_for(server.stdout.readline(), 30))
    assert _cpu_ticks(worker) is not None  # alive, looping on the last HANG update
    server.kill()  # SIGKILL: no shutdown code runs in the server
    await server.wait()

    def gone() -> None:
        assert _cpu_ticks(worker) is None, f"worker {worker} outlived its server"

    await eventually(gone, timeout=10)


def _cpu_ticks(pid: int) -> int | None:
    """The CPU ticks of a live ``pid``; None once it is gone (or a zombie nobody reaps)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == b"Z" else int(fields[11]) + int(fields[12])


async def test_rooms_are_spread_by_a_stable_hash() -> None:
    assert {lane_of(f"room-{i}", 4) for i in range(100)} == {0, 1, 2, 3}
    assert lane_of("room-1", 4) == lane_of("room-1", 4)


async def test_a_source_s_updates_of_one_tick_share_a_transaction(pool: tuple[WorkerPool, Store]) -> None:
    engine, _ = pool
    await engine.load("r", None, [])
    writer, other = object(), object()
    answers: list[tuple[object, Applied]] = []
    done = asyncio.Event()
    first, second = typing_updates(30)[1], typing_updates(2, client=2, name="other")[1]
    sources = [writer] * 30 + [other] * 2
    for source, update in zip(sources, [*first, *second], strict=True):

        def on_applied(applied: Applied, source: object = source) -> None:
            answers.append((source, applied))
            if len(answers) == len(sources):
                done.set()

        engine.apply("r", update, on_applied, source=source)
    await asyncio.wait_for(done.wait(), 10)
    assert all(applied.accepted for _, applied in answers)
    # one emitted update per source's run: the writer's 30 in one transaction, the other's 2 in another
    emitted = [(source, applied.update) for source, applied in answers if applied.update]
    assert [source for source, _ in emitted] == [writer, other]
    assert text_of(emitted[0][1]) == "".join(f"{i}," for i in range(30))


def test_when_a_retried_op_kills_a_fresh_worker_again_its_room_or_the_op_is_blamed() -> None:

    lane = _Lane(0)
    lane.rooms.add("r")

    def pending(kind: Kind, room: str = "r", *, track: bool = True) -> _Pending:
        return _Pending(Op(kind, room, b"x"), lambda result: None, track=track)

    # a client's update is the suspect the first time; a second one of the same room blames the room
    assert not WorkerPool._room_is_the_poison(lane, pending(Kind.APPLY), set())
    assert WorkerPool._room_is_the_poison(lane, pending(Kind.APPLY), {"r"})
    # a read carries no client bytes: the room's document is what kills the worker
    assert WorkerPool._room_is_the_poison(lane, pending(Kind.DIFF), set())
    assert WorkerPool._room_is_the_poison(lane, pending(Kind.STATE), set())
    # loads and folds are isolated by their callers; rooms not (or no longer) held are not judged
    assert not WorkerPool._room_is_the_poison(lane, pending(Kind.LOAD), {"r"})
    assert not WorkerPool._room_is_the_poison(lane, pending(Kind.FOLD), set())
    assert not WorkerPool._room_is_the_poison(lane, pending(Kind.DIFF, "elsewhere"), set())
    assert not WorkerPool._room_is_the_poison(lane, pending(Kind.APPLY, track=False), {"r"})


class ScriptedWorker:
    """Stands in for a ``WorkerProcess`` whose ops cost a scripted amount of CPU time: a legitimate op that
    needs more than the deadline (a heavy document) cannot be made to take a given CPU time for real. Each
    STATE op costs ``costs[room]`` seconds, spent (as wall time, reported as CPU time) before it answers."""

    def __init__(self, costs: dict[str, float]) -> None:
        self.index, self.pid = 0, 1
        self.costs = costs
        self.starts = 0
        self.request_sizes: list[int] = []  # ops per request, in order
        self._spent = 0.0
        self._busy: tuple[float, float] | None = None  # (since, cost) of the request being worked on

    def cpu_seconds(self) -> float:
        if self._busy is None:
            return self._spent
        since, cost = self._busy
        return self._spent + min(time.monotonic() - since, cost)

    async def start(self, timeout: float) -> None:
        self.starts += 1

    async def kill(self) -> None:
        pass

    async def request(self, frame: Sequence[bytes | bytearray]) -> tuple[bytes, list[bytes]]:
        ops = decode_ops(b"".join(frame)[4:])  # after the frame's length
        self.request_sizes.append(len(ops))
        cost = sum(self.costs[op.room] for op in ops)
        self._busy = (time.monotonic(), cost)
        try:
            await asyncio.sleep(cost)
        finally:
            self._spent, self._busy = self.cpu_seconds(), None
        return split_answer(b"".join(encode_results([b"state"] * len(ops))))


async def test_a_room_whose_legitimate_op_outlasts_the_deadline_gets_a_longer_one() -> None:
    engine = WorkerPool(1, document_workers=0, deadline=0.1)
    worker = ScriptedWorker({"heavy": 0.15, "light": 0.01})
    engine._lanes[0].process = worker  # type: ignore[assignment]
    try:
        # The first op is cut off (0.15 s > 0.1 s), the worker restarted, and the op completes on the
        # retry (0.2 s): the room is heavy, not hostile.
        assert await engine.state_vector("heavy") == b"state"
        assert worker.starts == 1
        # Its later ops get their own cost twice over on top of the deadline: no more restarts.
        for _ in range(3):
            assert await engine.state_vector("heavy") == b"state"
        assert worker.starts == 1
        assert engine.deadline_for([Op(Kind.STATE, "light")], heavy=engine._lanes[0].heavy) == engine.deadline
        # An endless op of a heavy room is still cut off, within its longer deadline.
        worker.costs["heavy"] = math.inf
        started = time.monotonic()
        assert await engine.call(Op(Kind.STATE, "heavy")) is Refusal.STALLED
        took = time.monotonic() - started  # the first try, then the retry at twice the deadline
        assert 3 * (0.1 + 2 * 0.15) <= took < 3 * (0.1 + 2 * 0.15) + 1
    finally:
        await engine.close()


async def test_a_request_of_many_legitimate_ops_gets_a_deadline_for_them_all() -> None:
    """One tick's batch on a busy server can hold thousands of ops, each cheap: 2,000 at 0.1 ms take twice
    the deadline together, and must not get the worker killed."""
    engine = WorkerPool(1, document_workers=0, deadline=0.1)
    worker = ScriptedWorker({"light": 0.0001})
    engine._lanes[0].process = worker  # type: ignore[assignment]
    try:
        answers = await asyncio.gather(*(engine.call(Op(Kind.STATE, "light")) for _ in range(2000)))
        assert answers == [b"state"] * 2000
        assert engine.requests == 1 and worker.starts == 0  # one request, no restart
    finally:
        await engine.close()


async def test_a_tick_of_more_ops_than_a_request_holds_goes_in_several() -> None:
    """However many ops a tick queues, a request carries at most ``_MAX_BATCH_OPS``: the per-op allowance
    never lets a hang hidden in a huge batch run for tens of deadlines before the watchdog."""
    engine = WorkerPool(1, document_workers=0, deadline=0.1)
    worker = ScriptedWorker({"light": 0.00001})
    engine._lanes[0].process = worker  # type: ignore[assignment]
    try:
        answers = await asyncio.gather(*(engine.call(Op(Kind.STATE, "light")) for _ in range(5000)))
        assert answers == [b"state"] * 5000  # all answered, in order of the queue
        assert worker.request_sizes == [_MAX_BATCH_OPS, _MAX_BATCH_OPS, 5000 - 2 * _MAX_BATCH_OPS]
        assert worker.starts == 0
        most = engine.deadline_for([Op(Kind.STATE, "light")] * _MAX_BATCH_OPS)
        assert most == pytest.approx(engine.deadline * (1 + (_MAX_BATCH_OPS - 1) / 500))
    finally:
        await engine.close()


def test_a_request_stops_at_a_megabyte_but_always_carries_one_op() -> None:
    def queued(*sizes: int) -> list[Any]:
        return [SimpleNamespace(op=SimpleNamespace(size=size)) for size in sizes]

    assert _batch_end(queued(100, 200, 300)) == 3
    assert _batch_end(queued(600_000, 600_000, 10)) == 1  # the second would pass 1 MiB
    assert _batch_end(queued(5_000_000, 10)) == 1  # one huge update still goes, alone
    assert _batch_end(queued(*[1] * (_MAX_BATCH_OPS + 5))) == _MAX_BATCH_OPS


@pytest.mark.parametrize("row_by_row", [False, True])
async def test_a_rebuild_names_the_rows_it_left_out(pool: tuple[WorkerPool, Store], row_by_row: bool) -> None:
    """A stored row the fresh worker cannot apply (one accepted by a worker whose heap a crash had already
    corrupted) is left out of the rebuild, and named to the source, which moves it to quarantine: not
    replayed one by one again at every later restart."""
    engine, store = pool
    good = typing_updates(2)[1]
    await engine.load("r", None, good)
    store.rows["r"] = [good[0], b"\x07\x07 not an update", good[1]]
    lane = engine._lanes[lane_of("r", engine.workers)]
    if row_by_row:
        lane.row_by_row.add("r")  # as after a load of all the rows together killed the worker
    pid = engine.worker_pid("r")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await engine.state_vector("r")  # finds the worker dead: restarts it and rebuilds its rooms
    assert store.left_out["r"] == [1]
    assert text_of(await engine.full_state("r")) == "0,1,"


async def test_workers_run_below_the_server_s_priority() -> None:
    """Under a CPU shortage the process holding the sockets is served first (``crdt_worker_nice``)."""
    engine = await WorkerPool(1, document_workers=0, nice=7).start()
    try:
        pid = engine._lanes[0].process.pid
        assert pid is not None
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 7
    finally:
        await engine.close()


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are a Linux feature")
async def test_a_worker_s_pipes_hold_a_mebibyte() -> None:
    """A board's snapshot crosses the request pipe one pipe-full per write (``worker.widen_pipes``)."""
    engine = await WorkerPool(1, document_workers=0).start()
    try:
        process = engine._lanes[0].process._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        # The server's ends of the worker's request and answer pipes.
        requests = process.stdin.transport.get_extra_info("pipe")
        answers = process.stdout._transport.get_extra_info("pipe")  # type: ignore[attr-defined]
        pipes = [requests, answers]
        assert [fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) for pipe in pipes] == [1 << 20, 1 << 20]
    finally:
        await engine.close()
