"""Backends for the contract tests. Each seam's tests take a fixture parametrized over its backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from persistence.base import DocumentStore
from persistence.memory import MemoryStore
from persistence.sqlite import SQLiteStore

StoreFactory = Callable[[], Awaitable[DocumentStore]]


async def _memory(tmp_path: Path) -> DocumentStore:
    return MemoryStore(keep_versions=3)


async def _sqlite(tmp_path: Path) -> DocumentStore:
    return await SQLiteStore(tmp_path / "store.sqlite3", keep_versions=3).open()


# Backends register here by name; a backend that needs a server adds itself in its own module.
STORE_BACKENDS: dict[str, Callable[[Path], Awaitable[DocumentStore]]] = {"memory": _memory, "sqlite": _sqlite}


@pytest.fixture(params=sorted(STORE_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DocumentStore]:
    """A fresh, empty store of each backend, closed after the test (keeps 3 snapshot versions)."""
    opened = await STORE_BACKENDS[request.param](tmp_path)
    try:
        yield opened
    finally:
        await opened.close()
