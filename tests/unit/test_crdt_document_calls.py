"""Document calls (JSON view, check, diff, patch, restore) in real CRDT worker processes: they run in the
document workers, apart from the rooms', and a call that crashes or hangs a worker costs only that call."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pycrdt import Array, Doc, Map

from collab_server.crdt.document_calls import Action, DocumentCall, decode_call, encode_call
from collab_server.crdt.engine import EngineError, Refusal
from collab_server.crdt.pool import WorkerPool
from collab_server.documents import DocumentLimits
from collab_server.errors import DocumentError
from tests.support.documents import typing_updates
from tests.support.hostile import CRASH, HANG


def board(records: dict[str, Any]) -> bytes:
    doc: Doc[Any] = Doc()
    meta: Map[Any] = Map()
    doc["meta"] = meta
    meta["schema"] = {"schemaVersion": 2}
    array: Array[Any] = Array()
    doc["tl_room"] = array
    array.extend([{"key": key, "val": val} for key, val in records.items()])
    return doc.get_update()


SHAPE = {"id": "shape:a", "typeName": "shape", "x": 1}


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    engine = await WorkerPool(1, document_workers=1, deadline=0.5).start()
    try:
        yield engine
    finally:
        await engine.close()


def test_a_call_crosses_the_pipe_unchanged() -> None:
    call = DocumentCall(Action.RESTORE, b"\x00\x00", b"old", {"t": "text"}, "room", DocumentLimits(max_depth=9))
    assert decode_call(encode_call(call)) == call


async def test_views_patches_and_restores_run_in_the_document_worker(pool: WorkerPool) -> None:
    assert pool.worker_pid("room") not in pool.document_worker_pids()
    current = board({"shape:a": SHAPE})
    view = await pool.compute("room", DocumentCall(Action.VIEW, current, room="room"))
    assert view.layout == "tldraw" and view.types == {"meta": "map", "tl_room": "array"}
    assert json.loads(view.content) == {"records": {"shape:a": SHAPE}, "meta": {"schema": {"schemaVersion": 2}}}

    patch = json.dumps({"put": [{"id": "shape:b", "typeName": "shape"}], "delete": ["shape:a"]}).encode()
    patched = await pool.compute("room", DocumentCall(Action.PATCH, current, patch, room="room"))
    doc: Doc[Any] = Doc()
    doc.apply_update(current)
    doc.apply_update(patched.update)
    after = doc.get_update()
    assert json.loads((await pool.compute("room", DocumentCall(Action.VIEW, after, room="room"))).content)[
        "records"
    ] == {"shape:b": {"id": "shape:b", "typeName": "shape"}}

    restore = await pool.compute("room", DocumentCall(Action.RESTORE, after, current, room="room"))
    doc.apply_update(restore.update)
    back = await pool.compute("room", DocumentCall(Action.VIEW, doc.get_update(), room="room"))
    assert json.loads(back.content)["records"] == {"shape:a": SHAPE}


async def test_refusals_come_back_as_document_errors(pool: WorkerPool) -> None:
    _, updates = typing_updates(2)
    with pytest.raises(DocumentError) as truncated:
        await pool.compute("room", DocumentCall(Action.CHECK, updates[1][:-3]))
    assert truncated.value.code == "malformed_update"
    with pytest.raises(DocumentError) as bad_patch:
        await pool.compute("room", DocumentCall(Action.PATCH, board({}), b'{"put": [{"id": 3}]}', room="room"))
    assert bad_patch.value.code == "invalid_patch" and "put[0].id" in bad_patch.value.detail
    with pytest.raises(DocumentError) as not_json:
        await pool.compute("room", DocumentCall(Action.PATCH, board({}), b"{nope", room="room"))
    assert not_json.value.code == "malformed_json"
    with pytest.raises(DocumentError) as bad_vector:
        await pool.compute("room", DocumentCall(Action.DIFF, updates[0], b"\xff\xff"))
    assert bad_vector.value.code == "invalid_state_vector"
    assert (await pool.compute("room", DocumentCall(Action.CHECK, updates[0]))).update == b""


@pytest.mark.parametrize("payload", [CRASH[0], HANG[0]], ids=["crash", "hang"])
async def test_a_call_that_kills_its_worker_is_refused_and_the_next_one_works(pool: WorkerPool, payload: bytes) -> None:
    before = pool.document_worker_pids()
    try:
        await pool.compute("room", DocumentCall(Action.CHECK, payload))
    except DocumentError as exc:  # our own decoder may refuse it before the library sees it
        assert exc.code == "malformed_update"
    except EngineError as exc:
        assert exc.refusal in (Refusal.CRASHED, Refusal.STALLED)
        assert pool.document_worker_pids() != before
    _, updates = typing_updates(1)
    assert (await pool.compute("room", DocumentCall(Action.CHECK, updates[0]))).update == b""


async def test_a_killed_document_worker_is_replaced(pool: WorkerPool) -> None:
    [pid] = pool.document_worker_pids()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    view = await pool.compute("room", DocumentCall(Action.VIEW, board({})))
    assert json.loads(view.content) == {"meta": {"schema": {"schemaVersion": 2}}}  # no records: plain roots
    assert pool.document_worker_pids() != [pid]
