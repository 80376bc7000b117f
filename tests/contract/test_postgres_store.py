"""What the PostgreSQL store promises beyond the shared contract: one round trip per group commit,
compactions that never lose a row (advisory lock, exact deletes, consistent reads), and outages that
turn into StoreUnavailable and retries instead of hangs or lost updates."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from pycrdt import Text

from collab_server.errors import StoreUnavailable
from persistence import postgres
from persistence.merge import build_doc
from persistence.postgres import _APPEND_CONNECTIONS, PostgresStore
from persistence.writer import AppendWriter
from tests.support.documents import fold_here, typing_updates
from tests.support.eventually import eventually
from tests.support.postgres import ADMIN_URL, empty_document_tables, temporary_database
from tests.support.tcp_proxy import TcpProxy


def _edits(count: int, *, client: int = 1, start: int = 0) -> list[bytes]:
    return typing_updates(count, client=client, start=start)[1]


def _tokens(store_text: str) -> set[str]:
    return {token for token in store_text.split(",") if token}


async def _text(store: PostgresStore, room: str) -> str:
    stored = await store.load(room)
    assert stored is not None
    return str(build_doc(room, stored.snapshot, stored.updates).get("text", type=Text))


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.connect(postgres_url, keep_versions=3, pool_size=4)
    await empty_document_tables(postgres_url)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test database, to look at (and meddle with) what the store wrote."""
    conn = await asyncpg.connect(postgres_url)
    try:
        yield conn
    finally:
        await conn.close()


class _ReadyCounter:
    """Counts ReadyForQuery messages in what PostgreSQL sends: one per Sync, i.e. per round trip."""

    def __init__(self) -> None:
        self.ready = 0
        self._buffer = b""

    def __call__(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 5:
            length = int.from_bytes(self._buffer[1:5], "big")
            if len(self._buffer) < 1 + length:
                return
            if self._buffer[:1] == b"Z":
                self.ready += 1
            self._buffer = self._buffer[1 + length :]


# -- the write path --------------------------------------------------------------------------------


async def test_a_group_commit_is_one_round_trip_and_one_transaction(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    counter = _ReadyCounter()
    # sslmode=disable: no SSL negotiation byte, so every reply is a typed, length-prefixed message
    async with TcpProxy.for_url(postgres_url, on_reply=counter) as proxy:
        store = await PostgresStore.connect(proxy.url(postgres_url) + "?sslmode=disable", pool_size=1)
        await empty_document_tables(postgres_url)
        try:
            # connects and prepares the statement once on each of the group commit's connections
            for _ in range(_APPEND_CONNECTIONS):
                await store.append_many([("warm-up", _edits(1)[0])])
            before = counter.ready
            a, b, c = _edits(200, client=1), _edits(200, client=2), _edits(200, client=3)
            batch = [
                (room, update) for trio in zip(a, b, c, strict=True) for room, update in zip("abc", trio, strict=True)
            ]
            await store.append_many(batch)
            assert counter.ready - before == 1
        finally:
            await store.close()
    # ...and one transaction: every row of the batch carries the same inserting transaction id
    assert await admin.fetchval("SELECT count(DISTINCT xmin::text) FROM room_updates WHERE room <> 'warm-up'") == 1
    for room, updates in (("a", a), ("b", b), ("c", c)):
        rows = await admin.fetch('SELECT "update" FROM room_updates WHERE room = $1 ORDER BY seq', room)
        assert [row[0] for row in rows] == updates


# -- compaction ------------------------------------------------------------------------------------


async def test_a_compaction_waits_for_another_replicas_compaction_of_the_room(
    pg: PostgresStore, admin: asyncpg.Connection
) -> None:
    await pg.append_many([("r", u) for u in _edits(5)])
    # Another replica holds the room's compaction lock:
    await admin.execute("SELECT pg_advisory_lock($1, hashtext($2))", 0x636F6C6C, "r")
    compaction = asyncio.create_task(pg.compact("r", fold=fold_here))

    async def waiting_for_the_lock() -> None:
        waiting = await admin.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert waiting == 1

    await eventually(waiting_for_the_lock)
    assert not compaction.done()
    await admin.execute("SELECT pg_advisory_unlock($1, hashtext($2))", 0x636F6C6C, "r")
    version = await compaction
    assert version is not None and version.version == 1
    assert await _text(pg, "r") == "0,1,2,3,4,"


async def test_a_row_committed_during_a_compaction_is_never_deleted_unmerged(
    pg: PostgresStore, admin: asyncpg.Connection, postgres_url: str
) -> None:
    # Seqs are handed out when an INSERT runs but become visible at its commit: a row with a *smaller*
    # seq than the compaction read can commit while the compaction is running. Deleting "seq <= newest
    # read" would delete it without having merged it. Force exactly that interleaving: a trigger parks
    # the compaction right after its read, on a lock the test holds.
    # Two independent edits (two clients), so that each can be folded without the other.
    first, second = _edits(1, client=1)[0], _edits(1, client=2, start=1)[0]
    await admin.execute(
        """
        CREATE FUNCTION test_park_compaction() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$;
        CREATE TRIGGER test_park_compaction BEFORE INSERT ON room_snapshots
            FOR EACH ROW EXECUTE FUNCTION test_park_compaction();
        """
    )
    slow_writer = await asyncpg.connect(postgres_url)
    try:
        await admin.execute("SELECT pg_advisory_lock(4242)")
        slow = slow_writer.transaction()
        await slow.start()
        await slow_writer.execute('INSERT INTO room_updates (room, "update") VALUES ($1, $2)', "r", first)
        await pg.append_many([("r", second)])  # a larger seq, committed first
        compaction = asyncio.create_task(pg.compact("r", fold=fold_here))

        async def parked() -> None:
            assert await admin.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")

        await eventually(parked)
        await slow.commit()  # the smaller seq becomes visible while the compaction is between read and delete
        await admin.execute("SELECT pg_advisory_unlock(4242)")
        await compaction
    finally:
        await slow_writer.close()
        await admin.execute(
            "DROP TRIGGER IF EXISTS test_park_compaction ON room_snapshots;"
            " DROP FUNCTION IF EXISTS test_park_compaction();"
        )
    stored = await pg.load("r")
    assert stored is not None
    assert stored.updates == [first]  # still in the log: the snapshot holds only what was read
    assert _tokens(await _text(pg, "r")) == {"0", "1"}


async def test_replicas_compacting_and_appending_at_once_lose_nothing(pg: PostgresStore, postgres_url: str) -> None:
    other = await PostgresStore.connect(postgres_url, keep_versions=3, pool_size=4)
    try:
        updates = _edits(60)
        for start in range(0, 60, 6):
            await asyncio.gather(
                pg.append_many([("r", u) for u in updates[start : start + 3]]),
                other.append_many([("r", u) for u in updates[start + 3 : start + 6]]),
                pg.compact("r", fold=fold_here),
                other.compact("r", fold=fold_here),
            )
        numbers = [v.version for v in await pg.versions("r")]
        # Numbered in turn whoever compacted (a compaction that ran before any append wrote nothing).
        assert len(numbers) == 3 and numbers == list(range(numbers[0], numbers[0] - 3, -1))
        assert numbers[0] >= 18
        assert await _text(pg, "r") == "".join(f"{i}," for i in range(60))
    finally:
        await other.close()


async def test_a_load_never_straddles_a_compaction(pg: PostgresStore, postgres_url: str) -> None:
    # Reading the snapshot and the log in two statements could see the old snapshot and then a log the
    # new one has already emptied: a load missing updates. Loads race compactions of another replica.
    other = await PostgresStore.connect(postgres_url, keep_versions=3, pool_size=4)
    try:
        updates = _edits(40)
        for i, update in enumerate(updates):
            await pg.append_many([("r", update)])
            loaded, _ = await asyncio.gather(pg.load("r"), other.compact("r", fold=fold_here))
            assert loaded is not None
            text = str(build_doc("r", loaded.snapshot, loaded.updates).get("text", type=Text))
            assert _tokens(text) >= {str(n) for n in range(i + 1)}
    finally:
        await other.close()


async def test_a_corrupt_snapshot_is_handed_over_as_stored_and_quarantined_by_compaction(
    pg: PostgresStore, admin: asyncpg.Connection
) -> None:
    garbage = b"\xff\x00 definitely not a yjs update \x07"
    await admin.execute(
        "INSERT INTO room_snapshots (room, version, snapshot, state_vector) VALUES ('r', 1, $1, '')", garbage
    )
    tail = _edits(2)
    await pg.append_many([("r", u) for u in tail])
    stored = await pg.load("r")
    assert stored is not None and stored.snapshot == garbage  # the store hands over the bytes as stored
    assert stored.snapshot_version == 1
    version = await pg.compact("r", fold=fold_here)
    assert version is not None and version.version == 2
    rows = await admin.fetch("SELECT kind, number, data FROM room_quarantine WHERE room = 'r'")
    assert [(row["kind"], row["number"], row["data"]) for row in rows] == [("snapshot", 1, garbage)]
    assert await _text(pg, "r") == "".join(f"{i}," for i in range(2))


# -- outages ---------------------------------------------------------------------------------------


async def test_an_unreachable_database_is_store_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreUnavailable, match="postgresql"):
        await PostgresStore.connect(f"postgresql://postgres@127.0.0.1:{port}/none", timeout=2)


async def test_terminated_connections_are_replaced_and_the_writer_catches_up(
    pg: PostgresStore, admin: asyncpg.Connection
) -> None:
    writer = AppendWriter(pg, window=0.001)
    writer.start()
    try:
        updates = _edits(20)
        for update in updates[:10]:
            writer.append("r", update)
        await writer.flush(timeout=10)
        # A failover or an admin kills every connection of the store:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'collab-server'"
        )
        assert killed >= 1
        assert await _text(pg, "r") == "".join(f"{i}," for i in range(10))  # a read retries once, at once
        for update in updates[10:]:
            writer.append("r", update)
        await writer.flush(timeout=10)
        assert await _text(pg, "r") == "".join(f"{i}," for i in range(20))
    finally:
        await writer.close()


async def test_a_stalled_network_times_out_and_the_writer_flushes_after_it(postgres_url: str) -> None:
    async with TcpProxy.for_url(postgres_url) as proxy:
        store = await PostgresStore.connect(proxy.url(postgres_url), pool_size=2, timeout=0.5)
        await empty_document_tables(postgres_url)
        writer = AppendWriter(store, window=0.001)
        writer.start()
        try:
            updates = _edits(10)
            writer.append("r", updates[0])
            await writer.flush(timeout=5)
            proxy.stall()  # packets go nowhere: without timeouts the append would hang for ever
            for update in updates[1:]:
                writer.append("r", update)

            def failing() -> None:
                assert not writer.healthy

            await eventually(failing, timeout=10)
            with pytest.raises(StoreUnavailable):
                await store.load("r")
            proxy.restore()
            await writer.flush(timeout=15)
            assert writer.healthy
            assert await _text(store, "r") == "".join(f"{i}," for i in range(10))
        finally:
            await writer.close()
            await store.close()


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values over 50 bytes are read 7 bytes at a time (a board's snapshot over 4 MiB, 4 MiB at a time)."""
    monkeypatch.setattr(postgres, "_INLINE_BYTES", 50)
    monkeypatch.setattr(postgres, "_SLICE_BYTES", 7)


async def test_large_values_are_read_in_slices_and_come_back_whole(
    pg: PostgresStore, admin: asyncpg.Connection, small_slices: None
) -> None:
    doc, edits = typing_updates(30)
    await pg.append_many([("r", edit) for edit in edits])
    await pg.compact("r", fold=fold_here)  # writes a snapshot over 50 bytes
    before = doc.get_state()
    doc.get("text", type=Text).insert(0, "x" * 120)
    await pg.append_many([("r", doc.get_update(before))])  # a logged update over 50 bytes

    stored = await pg.load("r")

    assert stored is not None
    snapshot = await admin.fetchval("SELECT snapshot FROM room_snapshots WHERE room = 'r'")
    log = [row["update"] for row in await admin.fetch('SELECT "update" FROM room_updates WHERE room = $1', "r")]
    assert len(snapshot) > 50 and [len(update) > 50 for update in log] == [True]
    assert stored.snapshot == snapshot and stored.updates == log
    assert await _text(pg, "r") == "x" * 120 + "".join(f"{i}," for i in range(30))
    await pg.compact("r", fold=fold_here)  # reads both in slices under its lock, and folds them
    assert await _text(pg, "r") == "x" * 120 + "".join(f"{i}," for i in range(30))


async def test_a_row_gone_while_read_in_slices_is_read_again_in_one_database_snapshot(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch, small_slices: None
) -> None:
    """A compaction on another replica deletes a row between the first statement and its slices (here:
    injected, it is a matter of microseconds): the load reads again, in a repeatable-read transaction."""
    await pg.append_many([("r", edit) for edit in _edits(30)])
    await pg.compact("r", fold=fold_here)
    read_document = postgres._read_document
    in_transaction: list[bool] = []

    async def gone_the_first_time(conn: asyncpg.Connection, room: str, timeout: float | None = None) -> Any:
        in_transaction.append(conn.is_in_transaction())
        if len(in_transaction) == 1:
            raise postgres._RowGone("injected")
        return await read_document(conn, room, timeout)

    monkeypatch.setattr(postgres, "_read_document", gone_the_first_time)
    assert await _text(pg, "r") == "".join(f"{i}," for i in range(30))
    assert in_transaction == [False, True]


async def test_without_temporary_tables_a_large_snapshot_goes_in_one_piece(
    small_slices: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A role that may not create temporary tables (a hardened database) still compacts large rooms."""
    role = f"collab_notemp_{uuid.uuid4().hex[:8]}"
    try:
        await _compact_a_large_room_as(role, caplog)
    finally:
        await _drop_role(role)  # after its database is gone: it owned it


async def _compact_a_large_room_as(role: str, caplog: pytest.LogCaptureFixture) -> None:
    with temporary_database("collab_notemp") as url:
        name = url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(f'CREATE ROLE "{role}" LOGIN')
            await admin.execute(f'ALTER DATABASE "{name}" OWNER TO "{role}"')
            await admin.execute(f'REVOKE TEMPORARY ON DATABASE "{name}" FROM PUBLIC, "{role}"')
            store = await PostgresStore.connect(url.replace("postgres@", f"{role}@", 1), keep_versions=3)
            try:
                await store.append_many([("r", edit) for edit in _edits(30)])
                await store.compact("r", fold=fold_here)
                assert await admin.fetchval("SELECT octet_length(snapshot) FROM room_snapshots") > 50
                assert await _text(store, "r") == "".join(f"{i}," for i in range(30))
                assert "no temporary tables" in caplog.text
            finally:
                await store.close()
        finally:
            await admin.close()


async def _drop_role(role: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await admin.close()
