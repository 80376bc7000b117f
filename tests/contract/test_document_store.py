"""The DocumentStore contract: one body, run against every backend."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Map, Text

from persistence.base import DocumentStore, PoisonRow
from persistence.merge import build_doc
from tests.support.documents import fold_here, typing_updates


def _text(room: str, snapshot: bytes | None, updates: list[bytes]) -> str:
    return str(build_doc(room, snapshot, updates).get("text", type=Text))


async def _loaded_text(store: DocumentStore, room: str) -> str:
    stored = await store.load(room)
    assert stored is not None
    return _text(room, stored.snapshot, stored.updates)


async def test_unknown_room_loads_as_none(store: DocumentStore) -> None:
    assert await store.load("never-written") is None
    assert await store.versions("never-written") == []
    assert await store.compact("never-written", fold=fold_here) is None


async def test_appended_updates_load_in_order(store: DocumentStore) -> None:
    doc, updates = typing_updates(20)
    await store.append_many([("r", u) for u in updates[:5]])
    await store.append_many([("r", u) for u in updates[5:]])
    stored = await store.load("r")
    assert stored is not None
    assert stored.snapshot is None
    assert stored.updates == updates
    assert _text("r", None, stored.updates) == str(doc.get("text", type=Text))


async def test_one_batch_spans_rooms_without_mixing_them(store: DocumentStore) -> None:
    _, a = typing_updates(3, client=1)
    _, b = typing_updates(4, client=2)
    await store.append_many([("a", a[0]), ("b", b[0]), ("a", a[1]), ("b", b[1]), ("b", b[2]), ("a", a[2]), ("b", b[3])])
    loaded_a, loaded_b = await store.load("a"), await store.load("b")
    assert loaded_a is not None and loaded_b is not None
    assert loaded_a.updates == a
    assert loaded_b.updates == b


async def test_compaction_folds_the_log_into_a_snapshot(store: DocumentStore) -> None:
    doc, updates = typing_updates(30)
    await store.append_many([("r", u) for u in updates])
    version = await store.compact("r", fold=fold_here)
    assert version is not None and version.version == 1
    stored = await store.load("r")
    assert stored is not None
    assert stored.updates == []
    assert stored.snapshot is not None
    assert _text("r", stored.snapshot, []) == str(doc.get("text", type=Text))


async def test_updates_after_a_compaction_form_the_new_tail(store: DocumentStore) -> None:
    doc, updates = typing_updates(12)
    await store.append_many([("r", u) for u in updates[:8]])
    await store.compact("r", fold=fold_here)
    await store.append_many([("r", u) for u in updates[8:]])
    stored = await store.load("r")
    assert stored is not None
    assert stored.updates == updates[8:]
    assert _text("r", stored.snapshot, stored.updates) == str(doc.get("text", type=Text))


async def test_compaction_merges_what_other_writers_appended(store: DocumentStore) -> None:
    # Two replicas write one room; the snapshot must hold both, whoever compacts.
    first: Doc[Any] = Doc(client_id=1)
    second: Doc[Any] = Doc(client_id=2)
    first_updates: list[bytes] = []
    second_updates: list[bytes] = []
    first.observe(lambda e: first_updates.append(e.update))
    second.observe(lambda e: second_updates.append(e.update))
    first.get("map", type=Map)["a"] = 1
    second.get("map", type=Map)["b"] = 2
    await store.append_many([("r", first_updates[0]), ("r", second_updates[0])])
    await store.compact("r", fold=fold_here)
    stored = await store.load("r")
    assert stored is not None
    merged = build_doc("r", stored.snapshot, stored.updates)
    assert merged.get("map", type=Map).to_py() == {"a": 1, "b": 2}


async def test_versions_are_numbered_and_pruned_to_the_limit(store: DocumentStore) -> None:
    _, updates = typing_updates(6)
    for update in updates:
        await store.append_many([("r", update)])
        await store.compact("r", fold=fold_here)
    versions = await store.versions("r")
    # the fixture keeps 3 versions: the newest three remain, newest first
    assert [v.version for v in versions] == [6, 5, 4]
    assert all(v.size > 0 for v in versions)
    oldest_kept = await store.read_version("r", 4)
    assert oldest_kept is not None
    assert _text("r", oldest_kept, []) == "0,1,2,3,"
    assert await store.read_version("r", 1) is None


async def test_named_versions_survive_pruning(store: DocumentStore) -> None:
    _, updates = typing_updates(6)
    await store.append_many([("r", updates[0])])
    named = await store.compact("r", fold=fold_here, label="before the big change")
    assert named is not None and named.label == "before the big change"
    for update in updates[1:]:
        await store.append_many([("r", update)])
        await store.compact("r", fold=fold_here)
    versions = await store.versions("r")
    assert named.version in [v.version for v in versions]
    assert [v.label for v in versions if v.version == named.version] == ["before the big change"]
    kept = await store.read_version("r", named.version)
    assert kept is not None and _text("r", kept, []) == "0,"


async def test_a_corrupt_log_row_is_quarantined_by_compaction_and_kept(store: DocumentStore) -> None:
    _, updates = typing_updates(3)
    garbage = b"\x01\x02\x03 not an update"
    await store.append_many([("r", updates[0]), ("r", garbage), ("r", updates[1])])
    await store.compact("r", fold=fold_here)
    stored = await store.load("r")
    assert stored is not None and stored.updates == []
    assert _text("r", stored.snapshot, []) == "0,1,"
    [kept] = await store.quarantined("r")
    assert (kept.room, kept.kind, kept.data) == ("r", "update", garbage) and kept.reason


async def test_rows_moved_to_quarantine_leave_the_room_and_are_kept(store: DocumentStore) -> None:
    _, updates = typing_updates(3)
    await store.append_many([("r", updates[0]), ("other", updates[1])])
    await store.compact("r", fold=fold_here)
    await store.append_many([("r", updates[2])])
    stored = await store.load("r")
    assert stored is not None and stored.snapshot_version is not None and len(stored.seqs) == 1
    rows = [PoisonRow("snapshot", stored.snapshot_version, "test"), PoisonRow("update", stored.seqs[0], "test")]
    assert await store.quarantine("r", rows) == 2
    assert await store.load("r") is None
    assert await store.room_names() == ["other"]
    kept = await store.quarantined("r")
    assert [(row.kind, row.number) for row in kept] == [(r.kind, r.number) for r in rows]
    assert kept[1].data == updates[2]
    assert [row.room for row in await store.quarantined()] == ["r", "r"]
    assert await store.quarantine("r", rows) == 0  # already moved: nothing happens


async def test_an_update_whose_dependency_is_missing_stays_in_the_log(store: DocumentStore) -> None:
    # Another replica still holds the first edit (or a client will re-send it); the others build on it.
    _, updates = typing_updates(4)
    deletes: list[bytes] = []
    follower: Doc[Any] = Doc(client_id=9)
    follower.observe(lambda event: deletes.append(event.update))
    for update in updates:
        follower.apply_update(update)
    del follower.get("text", type=Text)[0:2]  # deletes "0,", which the store does not have either
    await store.append_many([("r", updates[1]), ("r", updates[3]), ("r", deletes[-1])])
    await store.compact("r", fold=fold_here)
    stored = await store.load("r")
    assert stored is not None
    assert stored.updates == [updates[1], updates[3], deletes[-1]]  # nothing was integrated: all kept
    await store.append_many([("r", updates[0]), ("r", updates[2])])  # the missing edits arrive
    await store.compact("r", fold=fold_here)
    stored = await store.load("r")
    assert stored is not None and stored.updates == []
    assert _text("r", stored.snapshot, stored.updates) == "1,2,3,"


async def test_delete_removes_log_snapshots_and_versions_of_that_room_only(store: DocumentStore) -> None:
    _doc, updates = typing_updates(6)
    await store.append_many([("gone", u) for u in updates[:3]] + [("kept", u) for u in updates])
    await store.compact("gone", label="named", fold=fold_here)
    await store.append_many([("gone", u) for u in updates[3:]])
    await store.delete("gone")
    assert await store.load("gone") is None
    assert await store.versions("gone") == []
    assert await _loaded_text(store, "kept") != ""
    await store.delete("never-written")  # deleting nothing is fine
