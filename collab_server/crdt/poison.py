"""Updates recently found poisonous (they killed or stalled a worker): refused on sight for a while.

A client whose update was refused is closed with 4400, but nothing stops it (or another copy of the same
buggy client) from sending the same bytes again; each time would cost a worker restart. So the digest of
a poisonous update is remembered for ``ttl`` seconds, and a match is refused without reaching a worker.
The check costs nothing while the list is empty, which is almost always.
"""

from __future__ import annotations

import hashlib
import time

_MAX_ENTRIES = 10_000


def _digest(update: bytes) -> bytes:
    return hashlib.blake2b(update, digest_size=16).digest()


class PoisonList:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._until: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def add(self, update: bytes) -> None:
        if self.ttl <= 0:
            return
        if len(self._until) >= _MAX_ENTRIES:
            self._expire(time.monotonic())
            if len(self._until) >= _MAX_ENTRIES:
                self._until.pop(next(iter(self._until)))
        self._until[_digest(update)] = time.monotonic() + self.ttl

    def __contains__(self, update: object) -> bool:
        if not self._until or not isinstance(update, bytes):
            return False
        until = self._until.get(_digest(update))
        if until is None:
            return False
        if until < time.monotonic():
            del self._until[_digest(update)]
            return False
        return True

    def _expire(self, now: float) -> None:
        for key in [key for key, until in self._until.items() if until < now]:
            del self._until[key]
