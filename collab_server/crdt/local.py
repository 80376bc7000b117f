"""``InProcessEngine``: the document engine in the calling process. For unit tests only.

It runs the very code a worker runs (``documents``, ``worker.handle``), with the same batching per
event-loop tick and the same ordering, but without the process boundary: a crash or a hang here takes the
caller down. The server always uses ``pool.WorkerPool``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from collab_server.crdt import document_calls
from collab_server.crdt.codec import Kind, Op, Result
from collab_server.crdt.documents import Documents
from collab_server.crdt.engine import Applied, EngineError, Loaded, OnApplied, Refusal
from collab_server.crdt.pool import _Pending, join_runs
from collab_server.crdt.worker import handle, handle_all
from persistence.base import Folded


class InProcessEngine:
    def __init__(self) -> None:
        self.documents = Documents()
        self._queue: list[_Pending] = []
        self._scheduled = False
        self.batches: list[int] = []  # ops per batch, for tests of the batching

    def __repr__(self) -> str:
        return f"InProcessEngine(rooms={len(self.documents.rooms)})"

    def describe(self) -> str:
        return "in-process CRDT engine (tests only)"

    def apply(self, room: str, update: bytes, on_applied: OnApplied, *, source: object = None) -> None:
        self._queue.append(_Pending(Op(Kind.APPLY, room, update), on_applied, source=source))  # type: ignore[arg-type]
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._queue = self._queue, []
        self.batches.append(len(batch))
        join_runs(batch)  # the pool's own rule for which applies share a transaction
        results = handle_all(self.documents, [pending.op for pending in batch])
        for pending, result in zip(batch, results, strict=True):
            assert isinstance(result, Applied)
            pending.done(result)

    async def _call(self, op: Op) -> Result:
        # After the applies queued before it, as a worker would handle them.
        if self._queue:
            self._flush()
        await asyncio.sleep(0)
        return handle(self.documents, op)

    async def load(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Loaded:
        result = await self._call(Op(Kind.LOAD, room, snapshot=snapshot, updates=tuple(updates)))
        assert isinstance(result, Loaded)
        return result

    async def _bytes(self, op: Op) -> bytes:
        result = await self._call(op)
        if isinstance(result, bytes):
            return result
        raise EngineError(result if isinstance(result, Refusal) else Refusal.LIBRARY_FAILURE)

    async def diff(self, room: str, state_vector: bytes) -> bytes:
        return await self._bytes(Op(Kind.DIFF, room, state_vector))

    async def state_vector(self, room: str) -> bytes:
        return await self._bytes(Op(Kind.STATE, room))

    async def delete_set(self, room: str) -> bytes:
        return await self._bytes(Op(Kind.DELETE_SET, room))

    async def full_state(self, room: str) -> bytes:
        return await self._bytes(Op(Kind.FULL, room))

    async def fold(self, room: str, snapshot: bytes | None, updates: Sequence[bytes]) -> Folded:
        result = await self._call(Op(Kind.FOLD, room, snapshot=snapshot, updates=tuple(updates)))
        assert isinstance(result, Folded)
        return result

    async def compute(self, room: str, call: document_calls.DocumentCall) -> document_calls.DocumentAnswer:
        answer = await self._bytes(Op(Kind.DOCUMENT, room, document_calls.encode_call(call)))
        return document_calls.decode_answer(answer)

    async def unload(self, room: str) -> None:
        await self._call(Op(Kind.UNLOAD, room))

    async def close(self) -> None:
        self.documents.rooms.clear()
