"""JSON patches of tldraw records: strict validation, and updates that real Yjs (with YKeyValue) reads right."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pycrdt import Array, Doc, Map

from collab_server.documents.limits import DocumentLimits
from collab_server.documents.patch import patch_update
from collab_server.documents.view import document_json
from collab_server.errors import DocumentError
from collab_server.protocol import decode_state_vector
from tests.support.yjs_documents import yjs_apply, yjs_scenarios

ROOTS = {"tl_board": "array", "meta": "map"}


def _shape(shape_id: str, x: float) -> dict[str, Any]:
    return {"id": shape_id, "typeName": "shape", "type": "geo", "x": x, "y": 0, "props": {"w": 5, "h": 5}}


def test_put_and_delete_as_yjs_sees_them() -> None:
    scenario = yjs_scenarios()["tldraw"]
    assert scenario.records is not None
    patch = {"put": [_shape("shape:1", 99), _shape("shape:4", 4)], "delete": ["shape:3", "shape:never"]}
    update = patch_update(scenario.update, patch, room="board")
    expected = copy.deepcopy(scenario.records)
    expected["shape:1"] = _shape("shape:1", 99)
    expected["shape:4"] = _shape("shape:4", 4)
    del expected["shape:3"]
    applied = yjs_apply([scenario.update, update], ROOTS, records="tl_board")
    assert not applied.pending
    assert applied.records == expected
    assert applied.live_records == expected  # a connected YKeyValue client sees the same
    assert applied.live_changed == ["shape:1", "shape:3", "shape:4"]
    # Every entry of a touched key went, both duplicates of shape:3 included; one entry per record is left.
    keys = [entry["key"] for entry in applied.json["tl_board"]]
    assert sorted(keys) == sorted(expected)
    assert applied.json["meta"] == scenario.json["meta"]
    # The server's own reading agrees.
    doc: Doc[Any] = Doc()
    doc.apply_update(scenario.update)
    doc.apply_update(update)
    assert document_json(doc.get_update()).content["records"] == expected


def test_patch_writes_as_a_new_client() -> None:
    scenario = yjs_scenarios()["tldraw"]
    before: Doc[Any] = Doc()
    before.apply_update(scenario.update)
    clients = set(decode_state_vector(before.get_state()))
    before.apply_update(patch_update(scenario.update, {"put": [_shape("shape:5", 5)]}, room="board"))
    added = set(decode_state_vector(before.get_state())) - clients
    assert len(added) == 1


def test_patch_of_an_empty_document_creates_the_rooms_records_array() -> None:
    update = patch_update(b"\x00\x00", {"put": [_shape("shape:1", 1)]}, room="fresh")
    applied = yjs_apply([update], {"tl_fresh": "array"}, records="tl_fresh")
    assert applied.records == {"shape:1": _shape("shape:1", 1)}


def test_nothing_to_do_is_an_empty_update() -> None:
    scenario = yjs_scenarios()["tldraw"]
    assert patch_update(scenario.update, {"delete": ["shape:absent"]}, room="board") == b"\x00\x00"
    assert patch_update(scenario.update, {"put": []}, room="board") == b"\x00\x00"


def test_a_document_whose_records_root_holds_something_else_is_refused() -> None:
    doc: Doc[Any] = Doc(client_id=2)
    doc.get("tl_room", type=Map)["x"] = 1
    with pytest.raises(DocumentError) as caught:
        patch_update(doc.get_update(), {"delete": ["x"]}, room="room")
    assert caught.value.code == "not_tldraw"
    other: Doc[Any] = Doc(client_id=2)
    other.get("tl_room", type=Array).append(42)
    with pytest.raises(DocumentError) as caught:
        patch_update(other.get_update(), {"delete": ["x"]}, room="room")
    assert caught.value.code == "not_tldraw"


GOOD = {"id": "shape:1", "typeName": "shape"}


@pytest.mark.parametrize(
    ("patch", "says"),
    [
        ([GOOD], "a patch is an object"),
        ({}, "put and/or delete"),
        ({"put": [GOOD], "merge": []}, "unknown key(s) merge"),
        ({"put": GOOD}, "put must be an array"),
        ({"delete": "shape:1"}, "delete must be an array"),
        ({"put": ["shape:1"]}, "put[0] is a string"),
        ({"put": [{"typeName": "shape"}]}, "put[0].id must be a non-empty string"),
        ({"put": [{"id": "", "typeName": "shape"}]}, "put[0].id must be a non-empty string"),
        ({"put": [{"id": 7, "typeName": "shape"}]}, "put[0].id must be a non-empty string, not a number"),
        ({"put": [{"id": "shape:1"}]}, "put[0].typeName"),
        ({"put": [GOOD, GOOD]}, "appears twice"),
        ({"put": [GOOD], "delete": ["shape:1"]}, "appears twice"),
        ({"delete": [None]}, "delete[0] must be a non-empty string, not null"),
        ({"put": [{**GOOD, "x": float("nan")}]}, "put[0].x: nan is not a JSON number"),
        ({"put": [{**GOOD, "x": 2**60}]}, "beyond 2^53"),
        ({"put": [{**GOOD, "props": {1: "a"}}]}, "key 1 is not a string"),
        ({"put": [{**GOOD, "blob": b"bytes"}]}, "bytes is not a JSON value"),
        ({"put": [{**GOOD, "deep": [[[[[[[[[[1]]]]]]]]]]}]}, "nested deeper than 8 levels"),
        ({"delete": ["a"] * 5 + ["b"] * 5 + ["c"]}, "at most 10 per patch"),
        ({"delete": ["x" * 11]}, "longer than 10 characters"),
    ],
)
def test_malformed_patches_are_refused_with_what_is_wrong(patch: Any, says: str) -> None:
    limits = DocumentLimits(max_depth=8, max_patch_records=10, max_id_length=10)
    current = yjs_scenarios()["tldraw"].update
    with pytest.raises(DocumentError) as caught:
        patch_update(current, patch, room="board", limits=limits)
    assert caught.value.code == "invalid_patch"
    assert says in caught.value.detail


def test_the_size_of_what_a_patch_writes_is_bounded() -> None:
    current = yjs_scenarios()["tldraw"].update
    limits = DocumentLimits(max_update_bytes=len(current) + 1000)
    big = {"put": [{"id": "shape:big", "typeName": "shape", "text": "x" * 2000}]}
    with pytest.raises(DocumentError) as caught:
        patch_update(current, big, room="board", limits=limits)
    assert caught.value.code == "too_large"
    small = {"put": [{"id": "shape:small", "typeName": "shape", "text": "x" * 500}]}
    assert patch_update(current, small, room="board", limits=limits) != b"\x00\x00"

