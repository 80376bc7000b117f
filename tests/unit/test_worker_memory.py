"""A CRDT worker gives the memory a board's large requests leave behind back to the system."""

from __future__ import annotations

import io

import pytest

from collab_server.crdt import worker
from collab_server.crdt.codec import Kind, Op, decode_results, encode_ops, frame
from collab_server.crdt.engine import Refusal


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(worker._malloc_trim is None, reason="glibc's malloc_trim is not available here")
def test_release_free_memory_gives_freed_heap_back() -> None:
    # Blocks below glibc's mmap threshold live in the heap; freeing every other one leaves holes that
    # free() alone keeps resident.
    blocks = [bytes(64 * 1024) for _ in range(2000)]
    del blocks[::2]
    before = _resident_mib()
    worker.release_free_memory()
    assert before - _resident_mib() > 30  # about 62 MiB were freed
    assert len(blocks) == 1000


def _trims(ops: list[Op], monkeypatch: pytest.MonkeyPatch) -> int:
    """How many times the worker released memory while it served ``ops``, one request each."""
    trims: list[None] = []
    monkeypatch.setattr(worker, "release_free_memory", lambda: trims.append(None))
    requests = io.BytesIO(b"".join(b"".join(encode_ops([op])) for op in ops))
    answers = io.BytesIO()
    worker.serve(requests, answers)
    assert answers.getvalue().startswith(frame(worker.READY))
    return len(trims)


def test_the_worker_trims_after_a_large_request_only(monkeypatch: pytest.MonkeyPatch) -> None:
    small = Op(Kind.DIFF, "room", b"\x00")
    large = Op(Kind.DIFF, "board", b"\x00" * worker._TRIM_AFTER)
    assert _trims([small, small], monkeypatch) == 0
    assert _trims([small, large, small], monkeypatch) == 1


def test_the_answer_to_a_large_request_is_written_before_the_trim() -> None:
    requests = io.BytesIO(b"".join(encode_ops([Op(Kind.DIFF, "board", b"\x00" * worker._TRIM_AFTER)])))
    answers = io.BytesIO()
    worker.serve(requests, answers)
    body = answers.getvalue()[len(frame(worker.READY)) + 4 :]
    assert decode_results([Kind.DIFF], body) == [Refusal.NOT_LOADED]
