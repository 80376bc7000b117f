"""``/metrics`` is rendered off the event loop: a scrape that takes long (at 10,000 sockets, listing the
process's descriptors alone takes milliseconds) must not stall the rooms meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

from collab_server.app import metrics_endpoint

_RENDER_SECONDS = 0.3


class _SlowCollector:
    """A collector that takes ``_RENDER_SECONDS`` to read: a slow scrape, injected."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        time.sleep(_RENDER_SECONDS)
        yield GaugeMetricFamily("collab_test_slow_collector", "a collector that is slow to read", value=1)


async def test_a_slow_scrape_leaves_the_loop_free_and_still_answers() -> None:
    collector = _SlowCollector()
    REGISTRY.register(collector)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    running = asyncio.create_task(ticker())
    try:
        request: Any = None  # the endpoint reads nothing from its request
        started = time.monotonic()
        response = await metrics_endpoint(request)
        elapsed = time.monotonic() - started
    finally:
        running.cancel()
        REGISTRY.unregister(collector)
    body = bytes(response.body).decode()
    assert "collab_test_slow_collector 1.0" in body
    assert "collab_loop_lag_seconds_bucket" in body
    assert elapsed >= _RENDER_SECONDS
    # On the loop, the ticker would not have run at all while the collector slept.
    assert ticks >= (_RENDER_SECONDS / 0.01) / 3
