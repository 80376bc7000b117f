"""Digests and the step1 payload (presence.sync), computed from the bytes a room hands out."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from collab_server.errors import ProtocolError
from collab_server.protocol import decode_state_vector
from presence.sync import Step1, delete_set_digest, digest, has_structs, lacks
from tests.unit.fakes import doc_of, make_room


def _two_replicas_of_one_history() -> tuple[Doc[Any], Doc[Any]]:
    """Two docs with the same content: one got every update on its own, the other all of them at once
    (so Yrs may encode their delete sets differently)."""
    author: Doc[Any] = Doc()
    text = author.get("t", type=Text)
    one: Doc[Any] = Doc()
    for n in range(6):
        before = author.get_state()
        text.insert(len(text), f"w{n} ")
        if n % 2:
            del text[0:2]
        one.apply_update(author.get_update(before))
    before = author.get_state()
    author.get("m", type=Map)["k"] = 1
    one.apply_update(author.get_update(before))
    other: Doc[Any] = Doc()
    other.apply_update(author.get_update())
    return one, other


def deletions(doc: Doc[Any]) -> bytes:
    """What ``SharedRoom.delete_set()`` answers for a room holding ``doc``."""
    return doc.get_update(doc.get_state())


def digest_of(doc: Doc[Any]) -> bytes:
    return digest(doc.get_state(), deletions(doc))


def test_equal_content_has_equal_digests_whatever_the_order_it_arrived_in() -> None:
    one, other = _two_replicas_of_one_history()
    assert str(one.get("t", type=Text)) == str(other.get("t", type=Text))
    assert digest_of(one) == digest_of(other)
    assert delete_set_digest(deletions(one)) == delete_set_digest(deletions(other))


def test_a_deletion_changes_the_digest_but_not_the_state_vector() -> None:
    one, other = _two_replicas_of_one_history()
    before = other.get_state()
    del other.get("t", type=Text)[0:1]
    assert other.get_state() == before
    assert delete_set_digest(deletions(one)) != delete_set_digest(deletions(other))
    assert digest_of(one) != digest_of(other)


def test_state_vector_helpers() -> None:
    doc: Doc[Any] = Doc()
    assert decode_state_vector(doc.get_state()) == {}
    doc.get("t", type=Text).insert(0, "abc")
    mine = decode_state_vector(doc.get_state())
    assert list(mine.values()) == [3]
    assert lacks({}, mine) and not lacks(mine, {}) and not lacks(mine, mine)
    assert has_structs(doc.get_update(b"\x00"))
    assert not has_structs(doc.get_update(doc.get_state()))


async def test_step1_round_trip() -> None:
    room, _ = make_room()
    doc_of(room).get("t", type=Text).insert(0, "x")
    step1 = await Step1.of(room, echo=True)
    assert step1 == Step1(doc_of(room).get_state(), delete_set_digest(deletions(doc_of(room))), echo=True)
    assert Step1.decode(step1.encode()) == step1
    assert Step1.decode(Step1(b"\x00", b"", echo=False).encode()) == Step1(b"\x00", b"", False)
    with pytest.raises(ProtocolError):
        Step1.decode(b"\x05")
