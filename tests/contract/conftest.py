"""Backends for the contract tests. Each seam's tests take a fixture parametrized over its backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from persistence.base import DocumentStore
from persistence.memory import MemoryStore
from persistence.sqlite import SQLiteStore
from tests.support.postgres import empty_document_tables, reachable, run_sync, temporary_database

StoreFactory = Callable[[], Awaitable[DocumentStore]]


async def _memory(tmp_path: Path, **options: Any) -> DocumentStore:
    return MemoryStore(**{"keep_versions": 3, **options})


async def _sqlite(tmp_path: Path, **options: Any) -> DocumentStore:
    return await SQLiteStore(tmp_path / "store.sqlite3", **{"keep_versions": 3, **options}).open()


# Backends register here by name; a backend that needs a server adds itself in its own module.
STORE_BACKENDS: dict[str, Callable[..., Awaitable[DocumentStore]]] = {"memory": _memory, "sqlite": _sqlite}


class ServerBackend:
    """A backend on a server: its URL comes from a session fixture, resolved when a test first needs it,
    so a run that selects only the embedded backends never touches the server."""

    def __init__(self, fixture: str, open_store: Callable[..., Awaitable[DocumentStore]]) -> None:
        self.fixture = fixture
        self.open_store = open_store
        self.url: str | None = None

    async def __call__(self, tmp_path: Path, **options: Any) -> DocumentStore:
        assert self.url is not None, f"the {self.fixture} fixture was not resolved"
        return await self.open_store(self.url, **options)


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database created for this test session (migrated by its first store), dropped at its end."""
    problem = run_sync(reachable)
    if problem is not None:
        pytest.skip(f"PostgreSQL is not reachable ({problem}); set COLLAB_TEST_POSTGRES_URL")
    with temporary_database() as url:
        yield url


async def _postgres(url: str, **options: Any) -> DocumentStore:
    from persistence.postgres import PostgresStore

    store = await PostgresStore.connect(url, **{"keep_versions": 3, "pool_size": 4, "timeout": 10, **options})
    await empty_document_tables(url)  # one database per session, clean tables per test
    return store


STORE_BACKENDS["postgres"] = ServerBackend("postgres_url", _postgres)


@pytest.fixture
def store_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Constructor options of the ``store`` fixture's backends; a test sets them with
    ``@pytest.mark.parametrize("store_options", [{...}], indirect=True)``."""
    return dict(getattr(request, "param", {}))


@pytest.fixture(params=sorted(STORE_BACKENDS))
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, store_options: dict[str, Any]
) -> AsyncIterator[DocumentStore]:
    """A fresh, empty store of each backend, closed after the test (keeps 3 snapshot versions)."""
    backend = STORE_BACKENDS[request.param]
    if isinstance(backend, ServerBackend):
        backend.url = request.getfixturevalue(backend.fixture)
    opened = await backend(tmp_path, **store_options)
    try:
        yield opened
    finally:
        await opened.close()


# -- Broker and presence registry (local, redis): fixtures live in conftest_broker.py ----------------
from tests.contract.conftest_broker import broker_backend  # noqa: E402, F401
from tests.contract.conftest_jobs import open_jobs  # noqa: E402, F401
