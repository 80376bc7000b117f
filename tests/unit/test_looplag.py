"""The loop-lag monitor sees a turn that held the loop, and exports it."""

from __future__ import annotations

import logging
import re
import time

import pytest
from prometheus_client import REGISTRY

from collab_server.looplag import LoopLagMonitor
from tests.support.eventually import eventually


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
    assert summary is not None and int(summary[2]) >= 1 and float(summary[3]) >= 50.0
