"""PostgreSQL DocumentStore (``postgresql://…``): the production backend, on asyncpg.

Reads and compactions use a pool; the group commit has a connection of its own (see ``append_many``).

Tables (``persistence/migrations/postgres/``): ``room_updates`` is the append-only log, keyed
``(room, seq)``; ``room_snapshots`` holds numbered snapshot versions, keyed ``(room, version)``.

- Append: a whole group-commit batch, across rooms, is one ``INSERT … SELECT FROM unnest($1, $2)``:
  one statement, so one implicit transaction and one round trip (Bind/Execute/Sync of a statement the
  connection has prepared before), however many rooms and updates the batch holds.
- Load: the newest snapshot and the log after it are read by *one* statement, so both come from one
  database snapshot. Two statements could straddle a compaction and see the old snapshot without the
  rows the new one folded in: a gap.
- Compact: one transaction under a per-room advisory lock (two replicas never fold one room at once):
  read as a load does, merge, insert the new version, delete exactly the rows the snapshot holds, prune.
  Deleting by the seqs folded, not ``seq <= max``, matters: seqs are handed out when an INSERT runs but
  become visible when it commits, so a row with a smaller seq can commit after the read, and a range
  delete would remove it unmerged. Rows whose dependencies are missing are not folded at all (see
  ``persistence.fold``): they stay in the log.

- Quarantine: rows the CRDT engine cannot apply move to ``room_quarantine`` (insert, then delete, in one
  transaction; never deleted from there).

Every driver error is translated here into StoreUnavailable (retryable: the writer buffers and retries,
a load refuses its joiners with 1011); corrupt pages surface as CorruptDocument. Yjs bytes are never
decoded here: the CRDT engine (in its worker processes) folds, and reports rows it could not apply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from collab_server import metrics
from collab_server.errors import ConfigError
from collab_server.secrets import redact_url
from persistence.base import Fold, PoisonRow, QuarantinedRow, StoredDocument, Version, poison_rows
from persistence.postgres_errors import LOCK_NAMESPACE, UNAVAILABLE, translate_errors
from persistence.postgres_schema import prepare_schema

# The writer commits two batches at once (persistence.writer); each needs a connection.
_APPEND_CONNECTIONS = 2
logger = logging.getLogger(__name__)

T = TypeVar("T")

# A compaction reads, merges and rewrites a whole room: after a long outage that can be a large log, and
# a compaction that always times out would never shrink it. Its statements get this many timeouts.
_COMPACT_TIMEOUT_FACTOR = 6

# Errors after which a read may be tried again at once, on another connection: the pool handed out a
# connection the server had already closed (a restart, a failover, an idle timeout in a proxy).
_STALE_CONNECTION: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    # asyncpg's protocol state machine trips over the server's FATAL message when a query is sent on a
    # connection whose termination it has not processed yet ("cannot switch to state ...").
    asyncpg.InternalClientError,
    ConnectionError,
)

_APPEND = """
INSERT INTO room_updates (room, "update")
SELECT room, data FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS batch (room, data, n)
ORDER BY n
"""
# part 0: the newest snapshot (seq = its version); part 1: the log. No ORDER BY on the union: sorting
# would copy a multi-megabyte snapshot through a sort node; the few rows are ordered in Python instead.
# A value over $2 bytes comes back as NULL with its size, and is read in slices (_read_document).
_READ_DOCUMENT = """
SELECT 0 AS part, s.version::bigint AS seq, CASE WHEN s.size <= $2 THEN s.snapshot END AS data, s.size
FROM (SELECT version, snapshot, octet_length(snapshot) AS size FROM room_snapshots WHERE room = $1
      ORDER BY version DESC LIMIT 1) AS s
UNION ALL
SELECT 1, u.seq, CASE WHEN octet_length(u."update") <= $2 THEN u."update" END, octet_length(u."update")
FROM room_updates AS u WHERE u.room = $1
"""
# asyncpg copies a bytea result on the event loop twice (joining the message's pieces, then decoding
# it): a 54 MiB board's snapshot held every room for about 100 ms. A value larger than _INLINE_BYTES is
# read _SLICE_BYTES at a time instead, and the slices are joined in a thread (bytes.join lets go of the
# GIL for a large join). Not smaller slices: PostgreSQL decompresses a stored value from its start for
# each slice, and 1 MiB slices of a 54 MiB snapshot took 2.2 s to read, against 0.39 s for 4 MiB ones
# and 0.30 s for the whole value.
_INLINE_BYTES = 4 * 1024 * 1024
_SLICE_BYTES = 4 * 1024 * 1024
_SLICE = {
    0: "SELECT substring(snapshot FROM $3 FOR $4) FROM room_snapshots WHERE room = $1 AND version = $2",
    1: 'SELECT substring("update" FROM $3 FOR $4) FROM room_updates WHERE room = $1 AND seq = $2',
}
_INSERT_SNAPSHOT = """
INSERT INTO room_snapshots (room, version, snapshot, state_vector, label, created_by)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING extract(epoch FROM created_at)::float8
"""
# A snapshot over _INLINE_BYTES goes in slices of _SLICE_BYTES, one statement each, into a table that
# lives until the compaction's transaction ends, and is put together by the database: one parameter of
# 54 MiB was copied on the event loop in one piece (_write_snapshot).
_STAGE_SLICES = "CREATE TEMPORARY TABLE snapshot_slices (n int PRIMARY KEY, data bytea NOT NULL) ON COMMIT DROP"
_STAGE_SLICE = "INSERT INTO snapshot_slices (n, data) VALUES ($1, $2)"
_INSERT_STAGED_SNAPSHOT = """
INSERT INTO room_snapshots (room, version, snapshot, state_vector, label, created_by)
SELECT $1, $2, string_agg(data, ''::bytea ORDER BY n), $3, $4, $5 FROM snapshot_slices
RETURNING extract(epoch FROM created_at)::float8
"""
_DELETE_FOLDED = "DELETE FROM room_updates WHERE room = $1 AND seq = ANY($2::bigint[])"
# Named versions are the user's; only unnamed ones are pruned, to the configured count and age ($3 seconds,
# 0: no age limit). The newest version is the room's base: never pruned.
_PRUNE = """
DELETE FROM room_snapshots
WHERE room = $1 AND label IS NULL
  AND version < (SELECT max(version) FROM room_snapshots WHERE room = $1)
  AND (version NOT IN (
          SELECT version FROM room_snapshots WHERE room = $1 AND label IS NULL ORDER BY version DESC LIMIT $2)
       OR ($3::float8 > 0 AND created_at < now() - make_interval(secs => $3::float8)))
"""
_VERSIONS = """
SELECT version, extract(epoch FROM created_at)::float8 AS created_at, octet_length(snapshot) AS size, label,
       created_by
FROM room_snapshots WHERE room = $1 ORDER BY version DESC
"""


class PostgresStore:
    """DocumentStore on PostgreSQL. Open it with :meth:`connect`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        url: str,
        keep_versions: int = 10,
        max_version_age: float = 0.0,
        timeout: float = 10.0,
    ) -> None:
        self._pool = pool
        self._url = url
        self._keep_versions = max(keep_versions, 1)
        self._max_version_age = max(max_version_age, 0.0)
        self._timeout = timeout
        # The group commit's own connection, outside the pool (see append_many); opened on first use.
        # Connections of the group commit's own, one per batch the writer has in flight (it has two);
        # each slot is opened on first use and after any failure.
        self._appenders: asyncio.Queue[asyncpg.Connection | None] = asyncio.Queue()
        for _ in range(_APPEND_CONNECTIONS):
            self._appenders.put_nowait(None)

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self._url)!r})"

    def describe(self) -> str:
        return (
            f"postgresql {redact_url(self._url)} (pool of up to {self._pool.get_max_size()} connections, "
            f"plus {_APPEND_CONNECTIONS} for the group commit)"
        )

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        keep_versions: int = 10,
        max_version_age: float = 0.0,
        pool_size: int = 10,
        timeout: float = 10.0,
        auto_migrate: bool = True,
    ) -> PostgresStore:
        """Open a pool on ``url`` and bring the schema up to date (or check that it is).

        ``timeout`` bounds connecting and every statement: past it the database counts as unreachable,
        so a network partition turns into StoreUnavailable (and retries) instead of a hung writer.
        """
        if pool_size < 1:
            raise ConfigError("COLLAB_DATABASE_POOL_SIZE must be at least 1")
        await prepare_schema(url, timeout=timeout, auto_migrate=auto_migrate)
        async with translate_errors("connect"):
            pool = await asyncpg.create_pool(
                url,
                # No floor: asyncpg would keep reconnecting to maintain it during an outage, logging a
                # traceback each time; connections are opened on demand (the writer's retries) instead.
                min_size=0,
                max_size=pool_size,
                timeout=timeout,
                command_timeout=timeout,
                reset=_keep_session,
                server_settings={"application_name": "collab-server"},
            )
        return cls(pool, url=url, keep_versions=keep_versions, max_version_age=max_version_age, timeout=timeout)

    # -- plumbing -------------------------------------------------------------------------------

    async def _with_connection(
        self,
        operation: str,
        room: str | None,
        work: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        retry_stale: bool = False,
    ) -> T:
        # acquire(timeout=) also bounds the release, whose reset would hang on a dead network.
        attempts = 2 if retry_stale else 1
        async with translate_errors(operation, room):
            for attempt in range(attempts):
                try:
                    async with self._pool.acquire(timeout=self._timeout) as conn:
                        return await work(conn)
                except _STALE_CONNECTION:
                    if attempt + 1 == attempts:
                        raise
                    logger.info("postgresql %s: connection was lost, retrying once on a new one", operation)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    # -- DocumentStore --------------------------------------------------------------------------

    async def load(self, room: str) -> StoredDocument | None:
        started = time.perf_counter()

        async def read(conn: asyncpg.Connection) -> list[_Row]:
            try:
                return await _read_document(conn, room)
            except _RowGone:
                # A compaction on another replica replaced the snapshot or folded a logged row between the
                # first read and a slice: read again, all of it from one database snapshot this time.
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    return await _read_document(conn, room)

        rows = await self._with_connection("load", room, read, retry_stale=True)
        elapsed = time.perf_counter() - started
        metrics.STORE_LOAD_SECONDS.observe(elapsed)
        if not rows:
            return None
        snapshot, version, log = _split(rows)
        logger.debug(
            "room %r read from postgresql in %.1f ms: snapshot %d bytes, %d logged updates",
            room,
            elapsed * 1000,
            len(snapshot) if snapshot is not None else 0,
            len(log),
            extra={"room": room},
        )
        return StoredDocument(
            snapshot,
            [update for _, update in log],
            version if snapshot is not None else None,
            [seq for seq, _ in log],
        )

    async def append_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        if not entries:
            return
        rooms = [room for room, _ in entries]
        updates = [update for _, update in entries]
        # A connection of its own rather than one from the pool: under fan-out load every event-loop
        # iteration is long, and the pool's acquire and release each cost a task, hence iterations, on
        # top of the round trip itself (bench/store_append.py, loop held 8 ms per turn: p50 from
        # arrival to commit 68 ms through the pool, 34 ms on a held connection). The writer sends one
        # batch per in-flight slot, so it takes a connection per slot.
        # Not retried here: the writer retries the whole batch with backoff. If a commit succeeded but
        # its reply was lost, the retry writes the updates twice, which the CRDT ignores.
        conn = await self._appenders.get()
        try:
            async with translate_errors("append"):
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(
                        self._url,
                        timeout=self._timeout,
                        command_timeout=self._timeout,
                        server_settings={"application_name": "collab-server"},
                    )
                try:
                    await conn.execute(_APPEND, rooms, updates)
                except BaseException:
                    # Whatever state the connection is in now (a lost reply, a half-read result, a cancel
                    # mid-statement), the next batch starts on a fresh one.
                    conn.terminate()
                    conn = None
                    raise
        finally:
            self._appenders.put_nowait(conn)

    async def compact(
        self, room: str, *, fold: Fold, label: str | None = None, created_by: str | None = None
    ) -> Version | None:
        started = time.perf_counter()
        timeout = self._timeout * _COMPACT_TIMEOUT_FACTOR

        async def compact_in_transaction(conn: asyncpg.Connection) -> Version | None:
            async with conn.transaction():
                # Waits for a compaction of this room on another replica; released at commit/rollback.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))", LOCK_NAMESPACE, room, timeout=timeout
                )
                # READ COMMITTED: this statement's snapshot starts after the lock was taken, so it sees
                # what a compaction that held the lock before us wrote and deleted.
                # Under the lock nothing deletes this room's rows, so slices of large ones stay consistent.
                rows = await _read_document(conn, room, timeout)
                if not rows:
                    return None
                snapshot, latest, log = _split(rows)
                # Folded by the CRDT engine, in a worker process; this transaction holds the lock meanwhile.
                result = await fold(room, snapshot, [update for _, update in log])
                if result.bad:
                    bad = poison_rows(result.bad, latest if snapshot is not None else None, [s for s, _ in log])
                    await _move_to_quarantine(conn, room, bad, timeout)
                version = latest + 1
                created_at = await _write_snapshot(
                    conn, room, version, result.snapshot, result.state_vector, label, created_by, timeout
                )
                if result.folded:
                    folded = [log[i][0] for i in result.folded]
                    await conn.execute(_DELETE_FOLDED, room, folded, timeout=timeout)
                waiting = result.pending(len(log))
                if waiting:
                    logger.warning(
                        "room %r: %d logged updates wait for updates the store does not have yet; they stay in the log",
                        room,
                        waiting,
                        extra={"room": room},
                    )
                await conn.execute(_PRUNE, room, self._keep_versions, self._max_version_age, timeout=timeout)
                return Version(version, created_at, len(result.snapshot), label, created_by)

        result = await self._with_connection("compact", room, compact_in_transaction)
        metrics.STORE_COMPACT_SECONDS.observe(time.perf_counter() - started)
        return result

    async def quarantine(self, room: str, rows: Sequence[PoisonRow]) -> int:
        async def move(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                return await _move_to_quarantine(conn, room, rows, self._timeout)

        return await self._with_connection("quarantine", room, move)

    async def quarantined(self, room: str | None = None) -> list[QuarantinedRow]:
        async def read(conn: asyncpg.Connection) -> list[Any]:
            return list(await conn.fetch(_QUARANTINED, room))

        rows = await self._with_connection("quarantined", room, read, retry_stale=True)
        return [
            QuarantinedRow(r["room"], r["kind"], r["number"], r["data"], r["reason"], r["quarantined_at"])
            for r in rows
        ]

    async def room_names(self) -> list[str]:
        async def read(conn: asyncpg.Connection) -> list[Any]:
            return list(
                await conn.fetch("SELECT room FROM room_snapshots UNION SELECT room FROM room_updates ORDER BY room")
            )

        return [r["room"] for r in await self._with_connection("room names", None, read, retry_stale=True)]

    async def versions(self, room: str) -> list[Version]:
        async def read(conn: asyncpg.Connection) -> list[Any]:
            return list(await conn.fetch(_VERSIONS, room))

        rows = await self._with_connection("versions", room, read, retry_stale=True)
        return [Version(r["version"], r["created_at"], r["size"], r["label"], r["created_by"]) for r in rows]

    async def read_version(self, room: str, version: int) -> bytes | None:
        async def read(conn: asyncpg.Connection) -> bytes | None:
            data: bytes | None = await conn.fetchval(
                "SELECT snapshot FROM room_snapshots WHERE room = $1 AND version = $2", room, version
            )
            return data

        return await self._with_connection("read version", room, read, retry_stale=True)

    async def delete(self, room: str) -> None:
        async def delete_in_transaction(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                # Under the room's compaction lock: a compaction running now must not write a snapshot
                # after the delete.
                await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", LOCK_NAMESPACE, room)
                await conn.execute("DELETE FROM room_updates WHERE room = $1", room)
                await conn.execute("DELETE FROM room_snapshots WHERE room = $1", room)

        await self._with_connection("delete", room, delete_in_transaction)

    async def close(self) -> None:
        for _ in range(_APPEND_CONNECTIONS):  # a batch being written finishes first
            appender = await self._appenders.get()
            if appender is not None:
                try:
                    await appender.close(timeout=self._timeout)
                except UNAVAILABLE:  # TimeoutError included
                    appender.terminate()
        try:
            await asyncio.wait_for(self._pool.close(), self._timeout)
        except UNAVAILABLE:  # TimeoutError included
            # Connections busy past the deadline (or on a dead network) are cut rather than waited for.
            self._pool.terminate()


_QUARANTINE_UPDATE = """
WITH moved AS (DELETE FROM room_updates WHERE room = $1 AND seq = $2 RETURNING "update")
INSERT INTO room_quarantine (room, kind, number, data, reason)
SELECT $1, 'update', $2, "update", $3 FROM moved
"""
_QUARANTINE_SNAPSHOT = """
WITH moved AS (DELETE FROM room_snapshots WHERE room = $1 AND version = $2 RETURNING snapshot)
INSERT INTO room_quarantine (room, kind, number, data, reason)
SELECT $1, 'snapshot', $2, snapshot, $3 FROM moved
"""
_QUARANTINED = """
SELECT room, kind, number, data, reason, extract(epoch FROM quarantined_at)::float8 AS quarantined_at
FROM room_quarantine WHERE $1::text IS NULL OR room = $1 ORDER BY id
"""


async def _move_to_quarantine(
    conn: asyncpg.Connection, room: str, rows: Sequence[PoisonRow], timeout: float
) -> int:
    moved = 0
    for row in rows:
        statement = _QUARANTINE_UPDATE if row.kind == "update" else _QUARANTINE_SNAPSHOT
        status: str = await conn.execute(statement, room, row.number, row.reason, timeout=timeout)
        moved += int(status.rsplit(" ", 1)[-1])
    return moved


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook that sends nothing. asyncpg's default resets every connection it takes back with
    a query (unlock advisory locks, RESET ALL, ...): one more round trip after every load. The store
    never leaves session state behind (its locks are transaction-scoped), and asyncpg still rolls back
    a transaction left open before calling this hook."""


async def _write_snapshot(
    conn: asyncpg.Connection,
    room: str,
    version: int,
    snapshot: bytes,
    state_vector: bytes,
    label: str | None,
    created_by: str | None,
    timeout: float,
) -> float:
    """Insert a snapshot version (in the caller's transaction); its creation time."""
    if len(snapshot) > _INLINE_BYTES and await _staging_table(conn, timeout):
        view = memoryview(snapshot)
        for n, first in enumerate(range(0, len(snapshot), _SLICE_BYTES)):
            await conn.execute(_STAGE_SLICE, n, view[first : first + _SLICE_BYTES], timeout=timeout)
        staged: float = await conn.fetchval(
            _INSERT_STAGED_SNAPSHOT, room, version, state_vector, label, created_by, timeout=timeout
        )
        return staged
    created_at: float = await conn.fetchval(
        _INSERT_SNAPSHOT, room, version, snapshot, state_vector, label, created_by, timeout=timeout
    )
    return created_at


async def _staging_table(conn: asyncpg.Connection, timeout: float) -> bool:
    """Create the slices' table for this transaction. False where the database role may not create
    temporary tables (a hardened setup can revoke that privilege): the snapshot then goes in one piece."""
    try:
        async with conn.transaction():  # a savepoint: the refusal must not abort the compaction
            await conn.execute(_STAGE_SLICES, timeout=timeout)
    except asyncpg.InsufficientPrivilegeError as exc:
        logger.warning("postgresql: no temporary tables (%s); a large snapshot is written in one piece", exc)
        return False
    return True


_Row = tuple[int, int, bytes]  # (part, seq, data) of _READ_DOCUMENT


class _RowGone(Exception):
    """A row being read in slices was deleted meanwhile."""


async def _read_document(conn: asyncpg.Connection, room: str, timeout: float | None = None) -> list[_Row]:
    """The room's newest snapshot and its log as ``_READ_DOCUMENT`` rows, large values read in slices.
    _RowGone if one of those was deleted after the first statement (outside a transaction that keeps
    one database snapshot, a compaction on another replica may do that)."""
    rows: list[_Row] = []
    for row in await conn.fetch(_READ_DOCUMENT, room, _INLINE_BYTES, timeout=timeout):
        part, seq, data = row["part"], row["seq"], row["data"]
        if data is None:
            slices = []
            for start in range(0, row["size"], _SLICE_BYTES):
                piece = await conn.fetchval(_SLICE[part], room, seq, start + 1, _SLICE_BYTES, timeout=timeout)
                if piece is None:
                    raise _RowGone(f"room {room!r}: part {part}, row {seq}")
                slices.append(piece)
            data = await asyncio.to_thread(b"".join, slices)
            if len(data) != row["size"]:  # deleted and written again meanwhile
                raise _RowGone(f"room {room!r}: part {part}, row {seq} changed while it was read")
        rows.append((part, seq, data))
    return rows


def _split(rows: list[_Row]) -> tuple[bytes | None, int, list[tuple[int, bytes]]]:
    """(newest snapshot or None, its version or 0, the log as (seq, update) in seq order)."""
    snapshot: bytes | None = None
    version = 0
    log: list[tuple[int, bytes]] = []
    for part, seq, data in rows:
        if part == 0:
            snapshot, version = data, seq
        else:
            log.append((seq, data))
    log.sort(key=lambda entry: entry[0])
    return snapshot, version, log
