"""What syncing from a cooled room costs its CRDT worker, per client (``collab_server.crdt.documents``).

A room idle for ``COLLAB_IDLE_DOCUMENT_SECONDS`` keeps only its snapshot, compressed. Clients that join or
reconnect are answered from it without a rebuild. This builds tldraw boards with Yjs (as
``bench/document_memory.py`` does), loads each into the worker's ``Documents``, cools it, and times, in this
process (the worker's code, without the pipe): clients syncing with an empty state vector (a page opened),
with the room's own state vector (reconnecting after a blip: they lack nothing), and one edit behind; then
the first update, which rebuilds the room.

    .venv/bin/python bench/cooled_sync.py --records 1000 10000 100000 --clients 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pycrdt import Array, Doc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.document_memory import build_board  # noqa: E402
from collab_server.crdt.documents import Documents  # noqa: E402


def _per_client(documents: Documents, state_vector: bytes, clients: int) -> float:
    """Milliseconds per client for ``clients`` syncs of the cooled room with ``state_vector``."""
    started = time.perf_counter()
    for _ in range(clients):
        answer = documents.diff("board", state_vector)
        assert isinstance(answer, bytes), answer
    return (time.perf_counter() - started) * 1000 / clients


def measure(board: bytes, clients: int) -> dict[str, float]:
    doc: Doc[Any] = Doc()
    doc.apply_update(board)
    behind = doc.get_state()
    doc.get("tl_board", type=Array).append({"key": "shape:new", "val": {"id": "shape:new", "typeName": "shape"}})
    edit = doc.get_update(behind)
    documents = Documents()
    documents.load("board", board, [edit])
    assert documents.cool_one(0)
    figures = {
        "fresh": _per_client(documents, b"\x00", clients),
        "up to date": _per_client(documents, doc.get_state(), clients),
        "one edit behind": _per_client(documents, behind, clients),
    }
    started = time.perf_counter()
    assert documents.apply("board", b"\x00\x00").refusal is None
    figures["first update (rebuild)"] = (time.perf_counter() - started) * 1000
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for records in args.records:
            board = build_board("tldraw", records, Path(folder) / f"board-{records}.bin")
            figures = measure(board, args.clients)
            line = ", ".join(f"{name} {value:.1f} ms" for name, value in figures.items())
            print(f"{records} records ({len(board) / 2**20:.1f} MiB), per client: {line}", flush=True)


if __name__ == "__main__":
    main()
