"""Folding (collab_server.crdt.documents): a snapshot never claims rows it could not integrate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text

from collab_server.crdt import documents as documents_module
from collab_server.crdt.documents import Documents, _digest, _loads_back
from collab_server.crdt.engine import Refusal
from persistence.base import Folded
from tests.support.documents import folded_by, typing_updates


def fold(snapshot: bytes | None, updates: list[bytes]) -> Folded:
    return folded_by(Documents(), "r", snapshot, updates)


def _text(snapshot: bytes, rest: list[bytes] | None = None) -> str:
    doc: Doc[Any] = Doc()
    for update in [snapshot, *(rest or [])]:
        doc.apply_update(update)
    return str(doc.get("text", type=Text))


def test_a_complete_log_folds_entirely() -> None:
    _, updates = typing_updates(5)
    result = fold(None, updates)
    assert result.folded == [0, 1, 2, 3, 4]
    assert result.pending(len(updates)) == 0
    assert _text(result.snapshot) == "0,1,2,3,4,"


def test_rows_waiting_for_a_missing_update_are_not_folded() -> None:
    _, updates = typing_updates(5)
    log = [updates[0], updates[2], updates[3], updates[4]]  # updates[1] is still elsewhere
    result = fold(None, log)
    assert result.folded == [0]
    assert _text(result.snapshot) == "0,"
    # the snapshot plus the rows left in the log plus the late update: everything
    assert _text(result.snapshot, [*log[1:], updates[1]]) == "0,1,2,3,4,"


def test_a_delete_of_an_item_the_log_lacks_is_not_folded() -> None:
    doc, updates = typing_updates(2)
    deletes: list[bytes] = []
    doc.observe(lambda event: deletes.append(event.update))
    del doc.get("text", type=Text)[0:2]  # deletes "0,"
    result = fold(None, [updates[1], deletes[0]])  # without the insert of "0,"
    assert result.folded == []
    later = fold(result.snapshot, [updates[1], deletes[0], updates[0]])
    assert later.folded == [0, 1, 2]
    assert _text(later.snapshot) == "1,"


def test_rows_already_in_the_snapshot_fold() -> None:
    _, updates = typing_updates(3)
    first = fold(None, updates)
    again = fold(first.snapshot, updates)  # duplicates, as a retried append leaves them
    assert again.folded == [0, 1, 2]
    assert _text(again.snapshot) == "0,1,2,"


def test_undecodable_bytes_are_reported_bad_and_the_rest_folds() -> None:
    _, updates = typing_updates(2)
    result = fold(None, [updates[0], b"\x05 garbage", updates[1]])
    assert [index for index, _ in result.bad] == [1]
    assert result.folded == [0, 2]
    assert _text(result.snapshot) == "0,1,"


def test_a_bad_snapshot_is_reported_and_the_log_folds_without_it() -> None:
    _, updates = typing_updates(2)
    result = fold(b"\x05 garbage", updates)
    assert [index for index, _ in result.bad] == [-1]
    assert _text(result.snapshot) == "0,1,"


def _deleting(doc: Doc[Any], index: int, length: int) -> bytes:
    before = doc.get_state()
    del doc.get("text", type=Text)[index : index + length]
    return doc.get_update(before)


def test_a_loaded_room_folds_from_its_live_document_without_replaying() -> None:
    writer, updates = typing_updates(5)
    updates.append(_deleting(writer, 0, 2))  # "0," deleted
    documents = Documents()
    documents.load("r", None, updates[:3])
    for update in updates[3:]:
        assert documents.apply("r", update).accepted
    unstored = typing_updates(6, start=0)[1][5]  # accepted, not stored yet: the snapshot may hold it
    assert documents.apply("r", unstored).accepted
    result = folded_by(documents, "r", None, updates)
    assert result.folded == [0, 1, 2, 3, 4, 5] and result.bad == []
    assert _text(result.snapshot) == "1,2,3,4,5,"
    # what the live document held: the very state it reports
    assert result.state_vector == documents.state_vector("r")


def test_a_row_the_live_document_has_not_seen_stays_in_the_log() -> None:
    # Another replica stored a delete this replica has not applied yet (it is on its way through the
    # broker): its deleted range is below the state vector, but not in the document's delete set.
    writer, updates = typing_updates(3)
    elsewhere = _deleting(writer, 0, 2)
    documents = Documents()
    documents.load("r", None, updates)
    result = folded_by(documents, "r", None, [*updates, elsewhere])
    assert result.folded == [0, 1, 2]  # the delete stays in the log, to be folded once it is held
    assert _text(result.snapshot, [elsewhere]) == "1,2,"


def test_a_stored_snapshot_the_live_document_lacks_is_replayed() -> None:
    _, updates = typing_updates(3)
    _, other = typing_updates(2, client=7, name="other")
    documents = Documents()
    documents.load("r", None, updates)
    snapshot = other[0]  # not in the live document: fold by replaying what is stored
    result = folded_by(documents, "r", snapshot, updates)
    assert result.folded == [0, 1, 2]
    doc: Doc[Any] = Doc()
    doc.apply_update(result.snapshot)
    assert str(doc.get("other", type=Text)) == "0," and str(doc.get("text", type=Text)) == "0,1,2,"


def test_a_delete_in_a_run_counts_as_news_and_is_stored() -> None:
    writer, updates = typing_updates(3)
    delete = _deleting(writer, 0, 2)
    documents = Documents()
    documents.load("r", None, updates)
    more = typing_updates(4, start=0)[1][3]
    answers = documents.apply_run("r", [delete, more])
    assert [answer.new for answer in answers] == [True, True]


def test_a_snapshot_the_room_was_loaded_from_or_folded_into_is_not_decoded_again() -> None:
    _, updates = typing_updates(4)
    documents = Documents()
    documents.load("r", None, updates[:2])
    first = folded_by(documents, "r", None, updates[:2])
    assert _digest(first.snapshot) in documents.rooms["r"].snapshots  # remembered, not decoded again
    documents.apply_run("r", updates[2:])
    # The stored snapshot is the one this document folded into: known by its digest, held for sure.
    second = folded_by(documents, "r", first.snapshot, updates[2:])
    assert second.folded == [0, 1] and _text(second.snapshot) == "0,1,2,3,"
    reloaded = Documents()
    reloaded.load("r", second.snapshot, [])
    assert folded_by(reloaded, "r", second.snapshot, []).state_vector == second.state_vector


# Encoded by the library from a fuzzed room's document in fuzz run G (docs/benchmarks.md), stored as that
# room's snapshot, and panicking on every load of it since.
UNLOADABLE_SNAPSHOT = (Path(__file__).parents[1] / "support" / "payloads" / "unloadable-snapshot.bin").read_bytes()


def test_a_snapshot_that_does_not_load_back_is_found() -> None:
    _, updates = typing_updates(3)
    good = fold(None, updates)
    assert _loads_back(good)
    assert not _loads_back(Folded(UNLOADABLE_SNAPSHOT, good.state_vector, [0, 1, 2]))
    # one that loads, but not to the state it claims (rows it would drop from the log)
    assert not _loads_back(Folded(fold(None, updates[:2]).snapshot, good.state_vector, [0, 1, 2]))


def test_a_fold_whose_snapshot_would_not_load_back_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library encoding a document into bytes it cannot load is not something a test can make it
    do on demand (the room above took a long fuzz run): the encoder is replaced by one that returns those
    bytes. Neither the live document's fold nor the replay may then reach the store: the rows stay."""
    _, updates = typing_updates(3)
    documents = Documents()
    documents.load("r", None, updates)

    def unloadable(doc: Doc[Any], *args: Any) -> Folded:
        return Folded(UNLOADABLE_SNAPSHOT, doc.get_state(), list(range(len(updates))))

    monkeypatch.setattr(documents_module, "fold_loaded", unloadable)
    monkeypatch.setattr(documents_module, "fold_doc", unloadable)
    assert documents.fold("r", None, updates) is Refusal.LIBRARY_FAILURE
    assert Documents().fold("r", None, updates) is Refusal.LIBRARY_FAILURE  # the replay's fold too
