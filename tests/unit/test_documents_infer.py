"""Root types told from an update's own items: real Yjs and pycrdt documents, crafted origin chains, hints."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText, write_var_uint

from collab_server.documents.infer import RootType, infer_types
from collab_server.errors import DocumentError
from tests.support.yjs_documents import yjs_scenarios

TEXT, MAP, ARRAY, XML = RootType.TEXT, RootType.MAP, RootType.ARRAY, RootType.XML_FRAGMENT


def _var_string(text: str) -> bytes:
    raw = text.encode()
    return write_var_uint(len(raw)) + raw


def _string_item(*, origin: tuple[int, int] | None = None, root: str | None = None, text: str = "a") -> bytes:
    """A v1 string item: with an origin (parent copied from it) or a root parent."""
    if origin is not None:
        return bytes([0x84]) + write_var_uint(origin[0]) + write_var_uint(origin[1]) + _var_string(text)
    assert root is not None
    return bytes([0x04]) + write_var_uint(1) + _var_string(root) + _var_string(text)


def _section(client: int, clock: int, *structs: bytes) -> bytes:
    return write_var_uint(len(structs)) + write_var_uint(client) + write_var_uint(clock) + b"".join(structs)


def _update(*sections: bytes) -> bytes:
    return write_var_uint(len(sections)) + b"".join(sections) + b"\x00"  # empty delete set


@pytest.mark.parametrize("name", ["text", "map", "array", "xml", "tldraw", "emptied"])
def test_types_of_documents_written_by_yjs(name: str) -> None:
    scenario = yjs_scenarios()[name]
    expected: dict[str, Any] = {root: RootType(kind) for root, kind in scenario.roots.items()}
    if name == "emptied":
        expected["gone"] = None  # every item deleted: nothing in the update tells the type
    assert infer_types(scenario.update) == expected


def test_types_of_a_pycrdt_document_with_every_kind() -> None:
    doc: Doc[Any] = Doc(client_id=3)
    text = doc.get("t", type=Text)
    text.insert(0, "hello")
    text.insert(0, ">", {"bold": True})
    doc.get("m", type=Map)["k"] = Map({"inner": Array([1, Text("x")])})
    doc.get("a", type=Array).extend([XmlFragment([XmlElement("b")]), 2])  # not XML at the root level
    fragment = doc.get("x", type=XmlFragment)
    fragment.children.append(XmlElement("p", {"id": "1"}, [XmlText("hi")]))
    doc.get("xt", type=XmlFragment).children.append(XmlText("only text nodes"))
    assert infer_types(doc.get_update()) == {"t": TEXT, "m": MAP, "a": ARRAY, "x": XML, "xt": XML}


def test_parent_followed_along_origin_chains_across_clients() -> None:
    # Two clients take turns appending to one text: every item's parent comes from an origin in the other
    # client's section, hundreds of links deep.
    a: Doc[Any] = Doc(client_id=1)
    b: Doc[Any] = Doc(client_id=2)
    for i in range(300):
        writer, reader = (a, b) if i % 2 == 0 else (b, a)
        text = writer.get("t", type=Text)
        before = reader.get_state()
        text.insert(len(text), "x")
        reader.apply_update(writer.get_update(before))
    update = a.get_update()
    assert infer_types(update) == {"t": TEXT}


def test_map_values_overwritten_inherit_the_key() -> None:
    # A second set of one key has the first value as its origin: no parent or key of its own in the update.
    doc: Doc[Any] = Doc(client_id=9)
    m = doc.get("m", type=Map)
    for i in range(5):
        m["k"] = i
    assert infer_types(doc.get_update()) == {"m": MAP}


def test_items_whose_origin_is_missing_or_cyclic_tell_nothing() -> None:
    chained = _update(_section(5, 0, _string_item(root="t"), _string_item(origin=(5, 0))))
    assert infer_types(chained) == {"t": TEXT}
    # Origins outside the update (a diff) and a cycle between two clients: no root is named at all.
    missing = _update(_section(5, 3, _string_item(origin=(7, 0))))
    assert infer_types(missing) == {}
    cycle = _update(_section(1, 0, _string_item(origin=(2, 0))), _section(2, 0, _string_item(origin=(1, 0))))
    assert infer_types(cycle) == {}
    self_loop = _update(_section(1, 0, _string_item(origin=(1, 0))))
    assert infer_types(self_loop) == {}


def test_hints_fill_in_only_what_cannot_be_told() -> None:
    update = yjs_scenarios()["emptied"].update
    assert infer_types(update, types={"gone": "text"}) == {"gone": TEXT, "kept": MAP}
    # The update says "kept" is a map: a hint never overrides that. A hint for an absent root adds nothing.
    assert infer_types(update, types={"kept": "text", "absent": "array"}) == {"gone": None, "kept": MAP}


@pytest.mark.parametrize("hints", [{"gone": "string"}, {"gone": 1}, {2: "text"}])
def test_bad_hints_are_refused(hints: Any) -> None:
    with pytest.raises(DocumentError) as caught:
        infer_types(yjs_scenarios()["emptied"].update, types=hints)
    assert caught.value.code == "invalid_types"


def test_empty_update_has_no_roots() -> None:
    assert infer_types(b"\x00\x00") == {}
    assert infer_types(Doc().get_update()) == {}
