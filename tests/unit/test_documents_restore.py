"""Restore: one update that brings today's content back to an old version's, checked by pycrdt and by Yjs."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from collab_server.documents.infer import infer_types
from collab_server.documents.limits import DEFAULT_LIMITS
from collab_server.documents.patch import patch_update
from collab_server.documents.restore import restore_update
from collab_server.documents.values import describe, get_root
from collab_server.documents.view import document_json
from collab_server.errors import DocumentError
from tests.support.yjs_documents import yjs_apply, yjs_scenarios


def _apply(*updates: bytes) -> bytes:
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc.get_update()


def _content(update: bytes) -> dict[str, Any]:
    """Each non-empty root's typed description (kinds, formatting, attributes); empty roots equal absent ones."""
    types = infer_types(update)
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    described = {
        name: describe(get_root(doc, name, kind), DEFAULT_LIMITS) for name, kind in types.items() if kind is not None
    }
    if "tl_board" in described:  # tldraw records: entry order and superseded duplicates do not count
        described["tl_board"] = ("records", {entry[1]["key"]: entry[1]["val"] for entry in described["tl_board"][1]})
    return {name: value for name, value in described.items() if value[1] not in ([], {})}


def _restored(current: bytes, old: bytes, **kwargs: Any) -> bytes:
    return _apply(current, restore_update(current, old, **kwargs))


def _rich_document() -> tuple[Doc[Any], bytes]:
    """A document with every kind of root, nested types, formatting, XML and tldraw records; and its update."""
    doc: Doc[Any] = Doc(client_id=11)
    text = doc.get("text", type=Text)
    text.insert(0, "héllo wörld 😀", {})
    text.insert(0, "Title ", {"bold": True})
    settings = doc.get("settings", type=Map)
    settings["theme"] = "dark"
    settings["layout"] = Map({"columns": Array([1, 2, Map({"w": 3})]), "caption": Text("cap")})
    settings["plain"] = {"a": [1, 2], "b": None}
    doc.get("list", type=Array).extend(["a", "b", Map({"n": 1}), "c", "d"])
    fragment = doc.get("xml", type=XmlFragment)
    fragment.children.append(XmlElement("p", {"class": "lead", "id": "p1"}, [XmlText("hello")]))
    records = doc.get("tl_board", type=Array)
    records.extend(
        [{"key": f"shape:{i}", "val": {"id": f"shape:{i}", "typeName": "shape", "x": i}} for i in range(5)]
    )
    doc.get("meta", type=Map)["schema"] = {"schemaVersion": 2}
    doc.get("only_then", type=Array).extend([1, 2])
    doc.get("emptied_later", type=Map)["k"] = "v"
    return doc, doc.get_update()


def _edit_everything(doc: Doc[Any]) -> bytes:
    text = doc.get("text", type=Text)
    text.insert(len(text), " more", {"italic": True})
    del text[0:3]
    settings = doc.get("settings", type=Map)
    settings["theme"] = "light"
    settings["new"] = 5
    layout = settings["layout"]
    layout["columns"].append(9)
    layout["columns"][2]["w"] = 30
    layout["caption"].insert(0, "new ")
    del settings["plain"]
    listing = doc.get("list", type=Array)
    listing.insert(1, "inserted")
    del listing[3]
    listing.append(Map({"late": True}))
    fragment = doc.get("xml", type=XmlFragment)
    fragment.children[0].attributes["class"] = "changed"
    fragment.children.append(XmlText("tail"))
    records = doc.get("tl_board", type=Array)
    del records[1]
    records.append({"key": "shape:3", "val": {"id": "shape:3", "typeName": "shape", "x": 33}})
    records.append({"key": "shape:9", "val": {"id": "shape:9", "typeName": "shape", "x": 9}})
    doc.get("meta", type=Map)["schema"] = {"schemaVersion": 3}
    doc.get("only_now", type=Text).insert(0, "new root")
    doc.get("only_then", type=Array).clear()
    del doc.get("emptied_later", type=Map)["k"]
    return doc.get_update()


def test_restore_brings_back_every_kind_of_content() -> None:
    doc, old = _rich_document()
    current = _edit_everything(doc)
    assert _content(current) != _content(old)
    restored = _restored(current, old)
    assert _content(restored) == _content(old)
    assert document_json(restored).content["records"] == document_json(old).content["records"]


def test_restoring_the_pre_restore_version_brings_todays_content_back() -> None:
    doc, old = _rich_document()
    today = _edit_everything(doc)
    after_restore = _restored(today, old)
    undone = _restored(after_restore, today)
    assert _content(undone) == _content(today)
    assert _content(_restored(undone, old)) == _content(old)


def test_yjs_sees_the_old_content_after_a_restore() -> None:
    doc, old = _rich_document()
    current = _edit_everything(doc)
    roots = {"text": "text", "settings": "map", "list": "array", "xml": "xml_fragment", "tl_board": "array"}
    roots |= {"meta": "map", "only_now": "text", "only_then": "array", "emptied_later": "map"}
    applied = yjs_apply([current, restore_update(current, old, room="board")], roots, records="tl_board")
    wanted = yjs_apply([old], roots, records="tl_board")
    assert not applied.pending
    assert applied.records == wanted.records
    assert applied.live_records == wanted.records
    del applied.json["tl_board"], wanted.json["tl_board"]  # entry order differs; records are what count
    assert applied.json == wanted.json


def _edited_in_pycrdt(update: bytes, name: str) -> bytes:
    doc: Doc[Any] = Doc(client_id=77)
    doc.apply_update(update)
    if name == "text":
        text = doc.get("text", type=Text)
        text.insert(0, "zzz ")
        del text[6:9]
    elif name == "map":
        m = doc.get("map", type=Map)
        m["added"] = 1
        del m["s"]
        m["nested"]["list"].append(4)
        m["nested"]["t"].insert(0, "changed ")
    elif name == "array":
        arr = doc.get("array", type=Array)
        arr.append("late")
        del arr[0]
    elif name == "xml":
        frag = doc.get("xml", type=XmlFragment)
        frag.children.append(XmlElement("hr"))
        frag.children[0].attributes["class"] = "other"
    elif name == "tldraw":
        patch = {"put": [{"id": "shape:1", "typeName": "shape", "x": -1}], "delete": ["page:page"]}
        doc.apply_update(patch_update(update, patch, room="board"))
    elif name == "emptied":
        doc.get("gone", type=Text).insert(0, "back again")
        doc.get("kept", type=Map)["k"] = "w"
    return doc.get_update()


@pytest.mark.parametrize("name", ["text", "map", "array", "xml", "tldraw", "emptied"])
def test_restore_of_documents_written_by_yjs(name: str) -> None:
    scenario = yjs_scenarios()[name]
    current = _edited_in_pycrdt(scenario.update, name)
    hints = {"gone": "text"} if name == "emptied" else None
    update = restore_update(current, scenario.update, types=hints, room="board")
    records = "tl_board" if name == "tldraw" else None
    applied = yjs_apply([current, update], scenario.roots, records=records)
    assert not applied.pending
    if name == "tldraw":
        assert applied.records == scenario.records
        assert applied.live_records == scenario.records  # what a connected tldraw client shows
        assert applied.live_changed == ["page:page", "shape:1"]  # only the records the edit touched
        assert applied.json["meta"] == scenario.json["meta"]
    else:
        assert applied.json == scenario.json
        assert applied.deltas == scenario.deltas  # formatting and embeds of texts too


def test_unchanged_records_are_left_where_they_are() -> None:
    _, old = _rich_document()
    current = _apply(old, patch_update(old, {"put": [{"id": "shape:2", "typeName": "shape", "x": 20}]}, room="board"))
    restored = _restored(current, old)
    doc: Doc[Any] = Doc()
    doc.apply_update(restored)
    keys = [entry["key"] for entry in doc.get("tl_board", type=Array)]
    # Only shape:2 was deleted and put again (at the end); the others were not touched.
    assert keys == ["shape:0", "shape:1", "shape:3", "shape:4", "shape:2"]


def test_equal_content_needs_no_change() -> None:
    _, old = _rich_document()
    assert restore_update(old, old) == b"\x00\x00"
    # A different history with the same content is equal too.
    scenario = yjs_scenarios()["map"]
    again = _restored(_edited_in_pycrdt(scenario.update, "map"), scenario.update)
    assert restore_update(again, scenario.update) == b"\x00\x00"


def test_a_root_cannot_change_type() -> None:
    then: Doc[Any] = Doc(client_id=1)
    then.get("r", type=Text).insert(0, "text")
    now: Doc[Any] = Doc(client_id=2)
    now.get("r", type=Map)["k"] = "map"
    with pytest.raises(DocumentError) as caught:
        restore_update(now.get_update(), then.get_update())
    assert caught.value.code == "type_conflict"


def test_restore_from_and_to_an_empty_document() -> None:
    _, rich = _rich_document()
    emptied = _restored(rich, b"\x00\x00")
    assert _content(emptied) == {}
    assert document_json(emptied).content["records"] == {}
    assert _content(_restored(emptied, rich)) == _content(rich)
