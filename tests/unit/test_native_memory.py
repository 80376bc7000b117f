"""The worker and the server give the memory a board's large requests and answers leave behind back to
the system (``collab_server.native_memory``)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from pycrdt import Doc, Text

from collab_server import native_memory
from collab_server.crdt import pool as pool_module
from collab_server.crdt import worker
from collab_server.crdt.codec import Kind, Op, answer_frame, decode_results, encode_ops
from collab_server.crdt.engine import Refusal
from collab_server.crdt.pool import WorkerPool
from tests.support.answers import split_answer
from tests.support.documents import typing_updates
from tests.support.eventually import eventually


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(native_memory._malloc_trim is None, reason="glibc's malloc_trim is not available here")
def test_release_free_memory_gives_freed_heap_back() -> None:
    # Blocks below glibc's mmap threshold live in the heap; freeing every other one leaves holes that
    # free() alone keeps resident.
    blocks = [bytes(64 * 1024) for _ in range(2000)]
    del blocks[::2]
    before = _resident_mib()
    native_memory.release_free_memory()
    assert before - _resident_mib() > 30  # about 62 MiB were freed
    assert len(blocks) == 1000


def _trims(ops: list[Op], monkeypatch: pytest.MonkeyPatch) -> int:
    """How many times the worker released memory while it served ``ops``, one request each."""
    trims: list[None] = []
    monkeypatch.setattr(worker, "release_free_memory", lambda: trims.append(None))
    requests = io.BytesIO(b"".join(b"".join(encode_ops([op])) for op in ops))
    answers = io.BytesIO()
    worker.serve(requests, answers)
    assert answers.getvalue().startswith(b"".join(answer_frame(worker.READY)))
    return len(trims)


def test_the_worker_trims_after_a_large_request_only(monkeypatch: pytest.MonkeyPatch) -> None:
    small = Op(Kind.DIFF, "room", b"\x00")
    large = Op(Kind.DIFF, "board", b"\x00" * native_memory.RELEASE_AFTER_BYTES)
    assert _trims([small, small], monkeypatch) == 0
    assert _trims([small, large, small], monkeypatch) == 1


def test_the_answer_to_a_large_request_is_written_before_the_trim() -> None:
    requests = io.BytesIO(b"".join(encode_ops([Op(Kind.DIFF, "board", b"\x00" * native_memory.RELEASE_AFTER_BYTES)])))
    answers = io.BytesIO()
    worker.serve(requests, answers)
    body, strings = split_answer(answers.getvalue()[len(b"".join(answer_frame(worker.READY))) :])
    assert decode_results([Kind.DIFF], body, strings) == [Refusal.NOT_LOADED]


async def test_the_server_releases_memory_once_after_large_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    releases: list[None] = []
    monkeypatch.setattr(pool_module, "release_free_memory", lambda: releases.append(None))
    board: Doc[Any] = Doc()
    board.get("t", type=Text).insert(0, "x" * native_memory.RELEASE_AFTER_BYTES)
    engine = await WorkerPool(1, document_workers=0, deadline=30).start()
    try:
        await engine.load("board", board.get_update(), [])
        await engine.load("small", None, [])
        assert len(await engine.diff("small", b"\x00")) < 100
        assert releases == []
        # Two syncs of the board in a row (two clients joining): one release, a second after them.
        for _ in range(2):
            assert len(await engine.diff("board", b"\x00")) > native_memory.RELEASE_AFTER_BYTES

        def released_once() -> None:
            assert len(releases) == 1

        await eventually(released_once)
    finally:
        await engine.close()


def test_the_worker_trims_once_the_rooms_it_unloaded_add_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A room that moved to a large room's worker, or many rooms closed, leave their documents' memory
    free in the worker: given back once they add up to the threshold."""
    _, rows = typing_updates(120)
    stored = sum(map(len, rows))
    monkeypatch.setattr(worker, "RELEASE_AFTER_BYTES", stored * 3 // 2)  # a request of the rows stays below it

    def load(room: str) -> Op:
        return Op(Kind.LOAD, room, snapshot=None, updates=tuple(rows))

    assert _trims([load("a"), Op(Kind.UNLOAD, "a")], monkeypatch) == 0
    assert _trims([load("a"), load("b"), Op(Kind.UNLOAD, "a"), Op(Kind.UNLOAD, "b")], monkeypatch) == 1
