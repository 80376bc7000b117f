"""Load time of a big room from PostgreSQL: a ~5 MB snapshot plus a 10k-row log.

Builds the document once (a Y.Text of ~50k inserts, mostly typed at the end, some in the middle,
then 10k small edits by another client as the log tail), stores it through the real store (one
compaction for the snapshot, appends for the log), then times, ``--reps`` times each:

- fetch: ``PostgresStore.load`` (one statement; the snapshot and 10k rows over the wire, decoded);
- build, row by row: ``persistence.merge.build_doc(snapshot, rows)``, what RoomManager does today;
- build, tail merged first: pycrdt ``merge_updates`` over the rows in chunks of 50 (it grows badly on
  long lists), then ``build_doc(snapshot, [merged])``, i.e. what a store returning a pre-merged tail
  would cost;
- compaction of that room (``PostgresStore.compact``: read, fold, write a 5 MB version, delete 10k rows),
  on a copy so that every rep starts from the same state.

    .venv/bin/python bench/store_load.py [--mb 5] [--rows 10000] [--reps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
from pycrdt import Doc, Text, merge_updates

from persistence.merge import build_doc
from persistence.postgres import PostgresStore

ADMIN_URL = os.environ.get("COLLAB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
WORDS = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]


def make_document(megabytes: float, rows: int) -> tuple[bytes, list[bytes]]:
    rnd = random.Random(5)
    doc: Doc[Any] = Doc(client_id=1)
    text = doc.get("text", type=Text)
    inserted = 0
    while True:
        with doc.transaction():
            for _ in range(1000):
                # mostly typed at the end, a tenth in the middle: items interleave as in real documents
                pos = len(text) if rnd.random() >= 0.1 else rnd.randint(0, len(text))
                text.insert(pos, " ".join(rnd.choices(WORDS, k=rnd.randint(3, 30))))
                inserted += 1
        if inserted % 10000 == 0 and len(doc.get_update()) >= megabytes * 1_000_000:
            break
    snapshot = doc.get_update()
    other: Doc[Any] = Doc(client_id=2)
    other.apply_update(snapshot)
    other_text = other.get("text", type=Text)
    tail: list[bytes] = []
    other.observe(lambda event: tail.append(event.update))
    for i in range(rows):
        if i % 4 == 3 and len(other_text) > 10:
            start = rnd.randint(0, len(other_text) - 5)
            del other_text[start : start + 3]
        else:
            other_text.insert(rnd.randint(0, len(other_text)), f"e{i}")
    return snapshot, tail


def chunked_merge(updates: list[bytes], size: int = 50) -> bytes:
    while len(updates) > 1:
        updates = [merge_updates(*updates[i : i + size]) for i in range(0, len(updates), size)]
    return updates[0]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return (time.perf_counter() - started) * 1000, result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=5)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    started = time.perf_counter()
    snapshot, tail = make_document(args.mb, args.rows)
    print(
        f"document: snapshot {len(snapshot) / 1e6:.2f} MB, tail {len(tail)} rows "
        f"({sum(map(len, tail)) / 1e3:.0f} kB), built in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    database = f"collab_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{database}"')
    url = urlsplit(ADMIN_URL)._replace(path=f"/{database}").geturl()
    store = await PostgresStore.connect(url)
    results: dict[str, list[float]] = {}
    try:
        await store.append_many([("template", snapshot)])
        await store.compact("template")
        for start in range(0, len(tail), 2000):
            await store.append_many([("template", u) for u in tail[start : start + 2000]])
        db = await asyncpg.connect(url)
        expected = str(build_doc("check", snapshot, tail).get("text", type=Text))
        for rep in range(args.reps):
            room = f"room-{rep}"
            # A copy of the template room, so that each compaction starts from the same state.
            await db.execute(
                "INSERT INTO room_snapshots (room, version, snapshot, state_vector)"
                " SELECT $1, version, snapshot, state_vector FROM room_snapshots WHERE room = 'template'",
                room,
            )
            await db.execute(
                'INSERT INTO room_updates (room, "update") SELECT $1, "update" FROM room_updates'
                " WHERE room = 'template' ORDER BY seq",
                room,
            )
            fetch_started = time.perf_counter()
            stored = await store.load(room)
            results.setdefault("fetch (PostgresStore.load)", []).append((time.perf_counter() - fetch_started) * 1000)
            assert stored is not None and len(stored.updates) == len(tail)
            ms, doc = timed(partial(build_doc, room, stored.snapshot, stored.updates))
            results.setdefault("build_doc, row by row (today)", []).append(ms)
            assert str(doc.get("text", type=Text)) == expected
            ms, merged = timed(partial(chunked_merge, list(stored.updates)))
            results.setdefault("  merge_updates of the tail, chunks of 50", []).append(ms)
            ms, _ = timed(partial(build_doc, room, stored.snapshot, [merged]))
            results.setdefault("  build_doc(snapshot, merged tail)", []).append(ms)
            results.setdefault("build, tail merged first (sum)", []).append(
                results["  merge_updates of the tail, chunks of 50"][-1] + ms
            )
            compact_started = time.perf_counter()
            version = await store.compact(room)
            results.setdefault("compaction (read, fold, write, delete)", []).append(
                (time.perf_counter() - compact_started) * 1000
            )
            assert version is not None
            fetch_started = time.perf_counter()
            compacted = await store.load(room)
            results.setdefault("fetch after compaction (snapshot only)", []).append(
                (time.perf_counter() - fetch_started) * 1000
            )
            assert compacted is not None and compacted.updates == []
            ms, _ = timed(partial(build_doc, room, compacted.snapshot, []))
            results.setdefault("build_doc after compaction", []).append(ms)
        await db.close()
    finally:
        await store.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    fetch = results["fetch (PostgresStore.load)"]
    build = results["build_doc, row by row (today)"]
    results["load total = fetch + build_doc (today)"] = [f + b for f, b in zip(fetch, build, strict=True)]
    print(f"\n| step ({args.reps} reps) | median ms | min ms | max ms |")
    print("|---|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
