"""A database already poisoned (rows that panic, crash or loop forever on load) can never brick a room.

The rows are written straight into SQLite or PostgreSQL, as a buggy older server or a fuzzing client
would have left them. ``collab-server rooms check`` reports the rooms that do not load; ``--repair``
moves the rows that break them to ``room_quarantine`` (kept); afterwards every room loads. A server
started on the poisoned database without a repair quarantines the same rows itself as rooms load.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from persistence.sqlite import SQLiteStore
from tests.support.documents import typing_updates
from tests.support.hostile import CRASH, HANG, PANIC
from tests.support.postgres import reachable, run_sync, temporary_database
from tests.support.servers import REPO, ServerProcess
from tests.support.yjs_clients import YjsNode

StartServer = Callable[..., ServerProcess]
pytestmark = pytest.mark.e2e

# room -> (snapshot, logged updates, the text its good rows hold or None)
POISONED: dict[str, tuple[bytes | None, list[bytes], str | None]] = {
    "good": (None, typing_updates(3)[1], "0,1,2,"),
    "panics": (None, [*typing_updates(2, client=7)[1], *PANIC], "0,1,"),  # breaks encoding, not the apply
    "loops": (None, HANG, None),
    "crashes": (None, CRASH, None),
    "bad-snapshot": (PANIC[0], typing_updates(1, client=9)[1], "0,"),
}


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/collab.sqlite3"
        return
    problem = run_sync(reachable)
    if problem is not None:
        pytest.skip(f"PostgreSQL is not reachable ({problem})")
    with temporary_database("collab_poison") as url:
        yield url


async def _poison(url: str, prefix: str) -> None:
    if url.startswith("sqlite"):
        store = await SQLiteStore(url.removeprefix("sqlite:///")).open()
        await store.close()
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            for room, (snapshot, updates, _) in POISONED.items():
                if snapshot is not None:
                    db.execute(
                        "INSERT INTO room_snapshots (room, version, snapshot, state_vector, created_at)"
                        " VALUES (?, 1, ?, x'00', 0)",
                        (prefix + room, snapshot),
                    )
                db.executemany(
                    'INSERT INTO room_updates (room, "update", created_at) VALUES (?, ?, 0)',
                    [(prefix + room, update) for update in updates],
                )
        return
    from persistence.postgres import PostgresStore

    await (await PostgresStore.connect(url, pool_size=1)).close()  # brings the schema up
    conn = await asyncpg.connect(url)
    try:
        for room, (snapshot, updates, _) in POISONED.items():
            if snapshot is not None:
                await conn.execute(
                    "INSERT INTO room_snapshots (room, version, snapshot, state_vector) VALUES ($1, 1, $2, '')",
                    prefix + room,
                    snapshot,
                )
            await conn.executemany(
                'INSERT INTO room_updates (room, "update") VALUES ($1, $2)', [(prefix + room, u) for u in updates]
            )
    finally:
        await conn.close()


def _env(url: str) -> dict[str, str]:
    return {"COLLAB_DATABASE_URL": url, "COLLAB_CRDT_DEADLINE": "0.5", "COLLAB_CRDT_WORKERS": "2"}


async def _rooms_check(url: str, *args: str) -> tuple[int, str]:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "collab_server", "rooms", "check", *args],
        env={**os.environ, **_env(url)},
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    return done.returncode, done.stdout.decode() + done.stderr.decode()


async def _every_room_loads(node: YjsNode, server: ServerProcess, prefix: str) -> None:
    for room, (_, _, text) in POISONED.items():
        client = await node.connect(server.url, prefix + room)
        # Isolating the looping room's rows costs a deadline kill per try, and whether the library loops
        # or segfaults on them varies with the process's memory layout (a checkout's path changes it): 8 s
        # in one clone where another took 2 s. The test is about every room loading, not how fast.
        await client.wait_synced(timeout=30)
        if text is not None:
            assert await client.text() == text, room
        await client.destroy()


async def test_rooms_check_reports_and_repair_quarantines_so_that_every_room_loads(
    node: YjsNode, server_factory: StartServer, database_url: str, room_name: str
) -> None:
    prefix = room_name + "-"
    await _poison(database_url, prefix)
    code, report = await _rooms_check(database_url)
    assert code == 1, report
    for room in ("panics", "loops", "bad-snapshot"):
        assert f"'{prefix}{room}': " in report and "do not load" in report, report
    # The crash reads freed memory: whether that faults depends on what the worker did before (see
    # collab_server/crdt/process.py). Where it does not, the crash room loads and is not reported.
    assert report.count("do not load:") in (3, 4), report
    assert f"'{prefix}good'" not in report
    code, report = await _rooms_check(database_url, "--repair")
    assert code == 0, report
    # The crash is heap corruption: where it faults at its own row, that row is convicted and moved;
    # where it faults only when the rows are loaded together, the room is kept as built row by row.
    # Either way every room loads (below).
    assert report.count(": moved ") in (3, 4), report
    code, report = await _rooms_check(database_url)
    assert code == 0, report
    assert "checked 5 rooms: 0 cannot be loaded, 0 hold rows" in report and "quarantine holds" in report, report

    server = server_factory(_env(database_url))
    await _every_room_loads(node, server, prefix)
    # The crash room, if --repair kept it, may have its crash row convicted by this server's load.
    assert server.metric("collab_room_load_failures_total") <= 1
    assert server.metric("collab_quarantined_updates_total", 0) <= 1


async def test_a_server_on_a_poisoned_database_quarantines_as_rooms_load(
    node: YjsNode, server_factory: StartServer, tmp_path: Path, room_name: str
) -> None:
    url = f"sqlite:///{tmp_path}/collab.sqlite3"
    prefix = room_name + "-"
    await _poison(url, prefix)
    server = server_factory(_env(url))
    await _every_room_loads(node, server, prefix)
    assert server.process is not None and server.process.poll() is None
    assert server.metric("collab_room_load_failures_total") in (3, 4)  # the crash room: see above
    assert server.metric("collab_quarantined_updates_total") >= 3
    code, report = await _rooms_check(url)
    assert code == 0 and "0 cannot be loaded, 0 hold rows" in report, report
