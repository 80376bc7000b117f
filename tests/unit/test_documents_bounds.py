"""Untrusted bytes: every malformed, truncated, oversized or too-deep input is a DocumentError, nothing else."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest
from pycrdt import Doc, Map, write_var_uint

from collab_server.documents.infer import infer_types
from collab_server.documents.limits import DocumentLimits
from collab_server.documents.loading import call_pycrdt
from collab_server.documents.patch import patch_update
from collab_server.documents.restore import restore_update
from collab_server.documents.view import document_json
from collab_server.errors import DocumentError, ProtocolError
from collab_server.protocol import Reader
from tests.support.yjs_documents import lib0_var_ints, yjs_scenarios

SCENARIOS = ["text", "map", "array", "xml", "tldraw", "emptied"]


def _var_string(text: str) -> bytes:
    raw = text.encode()
    return write_var_uint(len(raw)) + raw


def _map_entry(content_ref: int, content: bytes, *, client: int = 1) -> bytes:
    """An update with one item in root map ``m`` under key ``k`` with the given content."""
    item = bytes([content_ref | 0x20]) + write_var_uint(1) + _var_string("m") + _var_string("k") + content
    return b"\x01\x01" + write_var_uint(client) + b"\x00" + item + b"\x00"


def _nested_any(depth: int) -> bytes:
    # lib0 any: 117 = array (then its length), 126 = null
    return write_var_uint(1) + bytes([117, 1]) * depth + bytes([126])


def _code(fn: Callable[[], object]) -> str:
    with pytest.raises(DocumentError) as caught:
        fn()
    return caught.value.code


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_truncation_of_a_yjs_update_is_refused(name: str) -> None:
    update = yjs_scenarios()[name].update
    for end in range(len(update)):
        cut = update[:end]
        assert _code(lambda: infer_types(cut)) == "malformed_update", end  # noqa: B023 (called at once)
        assert _code(lambda: document_json(cut)) == "malformed_update", end  # noqa: B023


def test_garbage_trailing_bytes_and_repeated_clients_are_refused() -> None:
    update = yjs_scenarios()["map"].update
    assert _code(lambda: document_json(b"\x01\x02\x03garbage")) == "malformed_update"
    assert _code(lambda: document_json(update + b"\x00")) == "malformed_update"  # pycrdt would accept it
    assert _code(lambda: document_json(b"")) == "malformed_update"
    doubled = _map_entry(8, write_var_uint(1) + bytes([126]))
    section = doubled[1:-1]  # one client section
    assert _code(lambda: infer_types(b"\x02" + section + section + b"\x00")) == "malformed_update"
    assert _code(lambda: document_json("not bytes")) == "malformed_update"  # type: ignore[arg-type]


@pytest.mark.parametrize("content_ref", [11, 12, 31])
def test_unknown_content_refs_are_refused(content_ref: int) -> None:
    assert _code(lambda: infer_types(_map_entry(content_ref, b"\x01"))) == "malformed_update"
    unknown_type = _map_entry(7, write_var_uint(9))
    assert _code(lambda: infer_types(unknown_type)) == "malformed_update"


def test_nesting_is_bounded_before_pycrdt_sees_it() -> None:
    limits = DocumentLimits(max_depth=16)
    shallow = _map_entry(8, _nested_any(10))
    view = document_json(shallow, limits=limits)
    value: Any = view.content["m"]["k"]
    for _ in range(10):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value is None
    # 10,000 levels would recurse in pycrdt's Rust conversion; it is refused while the update is decoded.
    assert _code(lambda: document_json(_map_entry(8, _nested_any(10_000)), limits=limits)) == "too_deep"


def test_sizes_and_counts_are_bounded() -> None:
    doc: Doc[Any] = Doc(client_id=1)
    for i in range(20):
        doc.get(f"root{i}", type=Map)["k"] = i
        doc.get("root0", type=Map)[f"k{i}"] = i
    update = doc.get_update()
    assert _code(lambda: infer_types(update, limits=DocumentLimits(max_update_bytes=len(update) - 1))) == "too_large"
    assert _code(lambda: infer_types(update, limits=DocumentLimits(max_structs=10))) == "too_large"
    assert _code(lambda: infer_types(update, limits=DocumentLimits(max_roots=5))) == "too_large"
    assert len(infer_types(update, limits=DocumentLimits(max_update_bytes=len(update), max_roots=20))) == 20
    # Empty client sections cost bookkeeping too: they count against the struct limit.
    empty_sections = b"".join(b"\x00" + write_var_uint(client) + b"\x00" for client in range(1, 101))
    many_clients = write_var_uint(100) + empty_sections + b"\x00"
    assert infer_types(many_clients) == {}
    assert _code(lambda: infer_types(many_clients, limits=DocumentLimits(max_structs=99))) == "too_large"
    # A count that claims more elements than there are bytes left is refused before anything is allocated.
    assert _code(lambda: infer_types(b"\xff\xff\xff\x7f")) == "malformed_update"


def test_mutated_updates_never_escape_as_anything_but_document_errors() -> None:
    rng = random.Random(20261128)
    scenarios = yjs_scenarios()
    old = scenarios["map"].update
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(400):
        mutated = bytearray(scenarios[rng.choice(SCENARIOS)].update)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(mutated))
            roll = rng.random()
            if roll < 0.6:
                mutated[at] = rng.randrange(256)
            elif roll < 0.8:
                del mutated[at]
            else:
                mutated.insert(at, rng.randrange(256))
        try:
            document_json(bytes(mutated))
            restore_update(bytes(mutated), old)
            patch_update(bytes(mutated), {"delete": ["shape:1"]}, room="board")
            outcomes["ok"] += 1
        except DocumentError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100 and outcomes["ok"] > 10, outcomes


class PanicException(BaseException):
    """Stands in for ``pyo3_runtime.PanicException``: pycrdt raises it by this name, as a BaseException."""


def test_pycrdt_panics_become_document_errors_but_cancellation_does_not() -> None:
    def panic() -> None:
        raise PanicException("called `Option::unwrap()` on a `None` value")

    def cancelled() -> None:
        raise asyncio.CancelledError

    assert _code(lambda: call_pycrdt("loading", panic)) == "malformed_update"
    assert _code(lambda: call_pycrdt("loading", lambda: Doc().apply_update(b"\x05"))) == "malformed_update"
    with pytest.raises(asyncio.CancelledError):
        call_pycrdt("loading", cancelled)


def test_signed_varints_read_as_lib0_writes_them() -> None:
    values = [0, 1, -1, 63, -63, 64, -64, 65, -65, 8191, -8192, 2**31 - 1, -(2**31), 2**53 - 1, -(2**53 - 1)]
    for value, encoded in zip(values, lib0_var_ints(values), strict=True):
        reader = Reader(encoded + b"\x7f")
        assert reader.var_int() == value, encoded.hex()
        assert reader.u8() == 0x7F  # exactly the varint was consumed
        assert reader.at_end()
    with pytest.raises(ProtocolError):
        Reader(b"\xff\xff").var_int()  # truncated
    with pytest.raises(ProtocolError):
        Reader(b"\x01").skip(2)

