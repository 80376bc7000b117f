"""Attempts per key (room and client address) in a sliding window, in memory, per replica.

Bounded: at most ``max_keys`` keys are tracked; past that the key seen least recently is forgotten
(a flood of distinct addresses can only make the limiter forget, never grow without bound).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

from collab_server.errors import RateLimited


class AttemptLimiter:
    """``attempts`` per ``window`` seconds per key; ``hit`` raises RateLimited past that."""

    def __init__(self, attempts: int, window: float, *, max_keys: int = 10_000) -> None:
        self.attempts = attempts
        self.window = window
        self._max_keys = max_keys
        self._hits: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"AttemptLimiter({self.attempts}/{self.window}s, keys={len(self._hits)})"

    def hit(self, room: str, client: str) -> None:
        now = time.monotonic()
        key = (room, client)
        hits = self._hits.pop(key, None) or deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.attempts:
            self._hits[key] = hits
            raise RateLimited("too many attempts; retry later", retry_after=max(hits[0] + self.window - now, 1.0))
        hits.append(now)
        self._hits[key] = hits
        while len(self._hits) > self._max_keys:
            self._hits.popitem(last=False)
