"""PostgreSQL driver errors translated into the server's error tree, and the advisory-lock namespace.

Shared by the document store and the schema runner, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import asyncpg

from collab_server.errors import CorruptDocument, StoreUnavailable

# Advisory locks are keyed (namespace, key); the namespace spells "coll" and keeps us clear of other
# users of advisory locks in the same database. hashtext() collisions between two rooms only make their
# compactions take turns.
LOCK_NAMESPACE: Final = 0x636F6C6C

# Driver errors that mean "the database cannot be reached or talked to right now".
UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


@asynccontextmanager
async def translate_errors(operation: str, room: str | None = None) -> AsyncIterator[None]:
    """Turn driver errors raised inside the block into the server's StoreError types."""
    where = f" (room {room!r})" if room is not None else ""
    try:
        yield
    except (asyncpg.DataCorruptedError, asyncpg.IndexCorruptedError) as exc:
        raise CorruptDocument(f"postgresql {operation}{where}: stored data is unreadable ({exc})") from exc
    except UNAVAILABLE as exc:
        detail = str(exc) or "timed out"  # a TimeoutError has no message of its own
        raise StoreUnavailable(f"postgresql {operation}{where}: {type(exc).__name__}: {detail}") from exc
