"""Folding (collab_server.crdt.documents): a snapshot never claims rows it could not integrate."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Text

from collab_server.crdt.documents import Documents
from persistence.base import Folded
from tests.support.documents import typing_updates


def fold(snapshot: bytes | None, updates: list[bytes]) -> Folded:
    return Documents().fold(snapshot, updates)


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
