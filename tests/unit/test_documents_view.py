"""The JSON view: what Yjs itself shows for documents it wrote, and the tldraw layout as records."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from collab_server.documents.view import document_json
from tests.support.yjs_documents import yjs_apply, yjs_scenarios


@pytest.mark.parametrize("name", ["text", "map", "array", "xml", "emptied"])
def test_view_equals_what_yjs_shows(name: str) -> None:
    scenario = yjs_scenarios()[name]
    view = document_json(scenario.update)
    expected = dict(scenario.json)
    if name == "array":
        # Yjs's toJSON leaves a Uint8Array as it is (JSON.stringify makes an object of it); the view uses base64.
        assert expected["array"][-1] == {"0": 1, "1": 2}
        expected["array"][-1] = base64.b64encode(b"\x01\x02").decode()
    if name == "emptied":
        expected["gone"] = None  # type unknown without a hint
    assert view.layout == "roots"
    assert view.content == expected


def test_hint_gives_an_empty_root_its_empty_value() -> None:
    update = yjs_scenarios()["emptied"].update
    assert document_json(update, types={"gone": "text"}).content == {"gone": "", "kept": {"k": "v"}}
    assert document_json(update, types={"gone": "array"}).content["gone"] == []


def test_tldraw_layout_gives_records_with_the_right_most_entry_winning() -> None:
    scenario = yjs_scenarios()["tldraw"]
    keys = [entry["key"] for entry in scenario.json["tl_board"]]
    assert keys.count("shape:3") == 2  # the concurrent sets left a duplicate in the array
    view = document_json(scenario.update)
    assert view.layout == "tldraw"
    assert scenario.records is not None
    assert view.content == {"records": scenario.records, "meta": scenario.json["meta"]}
    assert view.content["records"]["shape:3"]["x"] == scenario.records["shape:3"]["x"]


def _board(*, extra: bool = False, second: str | None = None, bad_entry: bool = False) -> bytes:
    doc: Doc[Any] = Doc(client_id=4)
    records = doc.get("tl_room-1", type=Array)
    records.append({"key": "page:1", "val": {"id": "page:1", "typeName": "page", "index": 1}})
    doc.get("meta", type=Map)["schema"] = {"schemaVersion": 2}
    if bad_entry:
        records.append(["not", "an", "entry"])
    if second is not None:
        doc.get(second, type=Array).append({"key": "shape:9", "val": {"id": "shape:9", "typeName": "shape"}})
    if extra:
        doc.get("notes", type=Text).insert(0, "side note")
    return doc.get_update()


def test_tldraw_layout_keeps_other_roots_apart_and_picks_the_rooms_array() -> None:
    assert document_json(_board()).content == {
        "records": {"page:1": {"id": "page:1", "typeName": "page", "index": 1}},
        "meta": {"schema": {"schemaVersion": 2}},
    }
    assert document_json(_board(extra=True)).content["roots"] == {"notes": "side note"}
    two = _board(second="tl_other")
    assert document_json(two).layout == "roots"  # two candidate arrays and no room to choose by
    assert set(document_json(two, room="other").content["records"]) == {"shape:9"}
    assert set(document_json(two, room="room-1").content["records"]) == {"page:1"}
    assert document_json(_board(bad_entry=True)).layout == "roots"


def test_tldraw_layout_with_every_record_deleted_is_still_recognised() -> None:
    doc: Doc[Any] = Doc(client_id=4)
    records = doc.get("tl_room", type=Array)
    records.append({"key": "page:1", "val": {"id": "page:1", "typeName": "page"}})
    doc.get("meta", type=Map)["schema"] = {"schemaVersion": 2}
    del records[0]
    view = document_json(doc.get_update())
    assert view.types["tl_room"] is None
    assert view.content == {"records": {}, "meta": {"schema": {"schemaVersion": 2}}}


def test_values_are_json_as_javascript_writes_them() -> None:
    doc: Doc[Any] = Doc(client_id=4)
    m = doc.get("m", type=Map)
    m["int"] = 3
    m["float"] = 2.5
    m["nan"] = float("nan")
    m["bytes"] = b"\x00\xff"
    m["sub"] = Doc(guid="sub-guid")
    m["nested"] = Map({"t": Text("inner"), "a": Array([1, Map({"z": None})])})
    content = document_json(doc.get_update()).content["m"]
    assert content == {
        "int": 3,
        "float": 2.5,
        "nan": None,
        "bytes": "AP8=",
        "sub": {"guid": "sub-guid"},
        "nested": {"t": "inner", "a": [1, {"z": None}]},
    }
    assert isinstance(content["int"], int)


def test_xml_is_written_as_yjs_writes_it() -> None:
    doc: Doc[Any] = Doc(client_id=4)
    fragment = doc.get("x", type=XmlFragment)
    fragment.children.append(XmlElement("p", {"zeta": "1", "alpha": "2", "mid": "3"}, [XmlText("hi")]))
    formatted = fragment.children.append(XmlText())
    formatted.insert(0, "bold", {"b": True})
    formatted.insert(len(formatted), " plain", {})
    update = doc.get_update()
    ours = document_json(update).content["x"]
    assert ours == '<p alpha="2" mid="3" zeta="1">hi</p><b>bold</b> plain'
    assert ours == yjs_apply([update], {"x": "xml_fragment"}).json["x"]
