"""The loop-lag monitor sees a turn that held the loop, and exports it; and it tells that from waiting for a
CPU that another process held."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import re
import sys
import time

import pytest
from prometheus_client import REGISTRY

from collab_server.looplag import LoopLagMonitor, RunQueueWait
from tests.support.eventually import eventually


def _kernel_counts_waits() -> bool:
    waits = RunQueueWait()
    try:
        return waits.seconds() is not None
    finally:
        waits.close()


_NO_SCHEDSTAT = not _kernel_counts_waits()


def _lag_samples() -> float:
    return REGISTRY.get_sample_value("collab_loop_lag_seconds_count") or 0.0


async def test_a_blocking_turn_shows_as_lag(caplog: pytest.LogCaptureFixture) -> None:
    before = _lag_samples()
    monitor = LoopLagMonitor(interval=0.01).start()

    def sampled() -> None:
        assert _lag_samples() > before

    def saw_the_stall() -> None:
        assert monitor.worst >= 0.05

    try:
        await eventually(sampled)  # the monitor runs on an idle loop
        time.sleep(0.1)  # noqa: ASYNC251 - holding the loop is the point: a long synchronous call
        await eventually(saw_the_stall)
    finally:
        with caplog.at_level(logging.INFO, logger="collab_server.looplag"):
            monitor.close()
    # the summary benchmarks read (bench/loop_lag.py)
    summary = re.search(r"event loop lag: (\d+) samples, (\d+) over 10 ms, worst ([\d.]+) ms", caplog.text)
    if not _NO_SCHEDSTAT:
        assert re.search(r"less waits for a CPU: \d+ over 10 ms, worst [\d.]+ ms", caplog.text)
    assert summary is not None and int(summary[2]) >= 1 and float(summary[3]) >= 50.0


@pytest.mark.skipif(_NO_SCHEDSTAT, reason="the kernel does not count run-queue waits here (not Linux)")
async def test_a_blocking_turn_is_the_loops_own_lag() -> None:
    monitor = LoopLagMonitor(interval=0.01).start()
    try:
        await eventually(lambda: _at_least(monitor.samples, 2))
        time.sleep(0.1)  # noqa: ASYNC251 - holding the loop is the point
        await eventually(lambda: _at_least(monitor.worst_running or 0.0, 0.05))
    finally:
        monitor.close()
    assert monitor.running_over_10ms >= 1


@pytest.mark.skipif(_NO_SCHEDSTAT, reason="the kernel does not count run-queue waits here (not Linux)")
async def test_lag_from_waiting_for_a_cpu_is_not_counted_as_the_loops_own() -> None:
    """A process that holds the loop's only CPU makes the timer late; none of that is the loop's running.
    The other process runs under SCHED_FIFO on the loop's CPU, so that the loop's thread cannot run at all
    until it is done (a real-time policy needs the privilege to set it: skipped without)."""
    cpu = min(os.sched_getaffinity(0))
    affinity = os.sched_getaffinity(0)
    monitor = LoopLagMonitor(interval=0.01).start()
    hog = multiprocessing.get_context("spawn").Process(target=_hold_the_cpu, args=(cpu, _HELD), daemon=True)
    try:
        os.sched_setaffinity(0, {cpu})
        await eventually(lambda: _at_least(monitor.samples, 2))
        hog.start()
        await asyncio.to_thread(hog.join)
    finally:
        os.sched_setaffinity(0, affinity)
        monitor.close()
        hog.join()
    if hog.exitcode == _NOT_PERMITTED:
        pytest.skip("no privilege to run a process under SCHED_FIFO here")
    assert hog.exitcode == 0
    assert monitor.worst >= _HELD / 2  # the timer waited for the other process
    assert monitor.worst_running is not None and monitor.worst_running < _HELD / 4


_HELD = 0.3  # seconds the other process holds the CPU
_NOT_PERMITTED = 3


def _hold_the_cpu(cpu: int, seconds: float) -> None:
    os.sched_setaffinity(0, {cpu})
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError:
        sys.exit(_NOT_PERMITTED)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _at_least(value: float, floor: float) -> None:
    assert value >= floor


def _running_samples() -> float:
    return REGISTRY.get_sample_value("collab_loop_lag_running_seconds_count") or 0.0
