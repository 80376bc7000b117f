"""What one loaded tldraw board costs in memory, per byte of its encoded form: in our CRDT worker, in the
library alone (pycrdt, that is yrs), and in Yjs under Node (what the reference server and Hocuspocus
hold for it). Issue 13 asks for at most 3x the encoded size.

    .venv/bin/python bench/document_memory.py [--records 100000] [--kinds padded,tldraw]

Each board is built once by ``bench/document_memory.mjs`` (yjs of tests/js, run ``scripts/test`` once
first), then loaded by three fresh processes, each measuring its own resident memory before and after:

- ``worker``: ``Documents.load`` of collab_server.crdt.documents, as the worker loads a room: the
  document plus its base (the stored bytes kept to rebuild it after an update the library half-applies);
- ``pycrdt``: a bare ``Doc.apply_update``;
- ``yjs``: ``Y.applyUpdate`` under ``node --expose-gc``; its heap is what the document holds, its resident
  memory adds the heap's headroom.

The Python processes give their free memory back (``malloc_trim``) before each reading, as the worker
does after a large load. Kinds: ``padded`` is bench/large_document.py's board (a 440-byte text in every
record, 640 bytes a record); ``tldraw`` has records shaped like tldraw's geo shapes (every prop, a rich
text, random ids), about 500 bytes a record. Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NODE_HALF = REPO / "bench" / "document_memory.mjs"


def build_board(kind: str, records: int, path: Path) -> bytes:
    """A board of ``records`` records built by Yjs (``document_memory.mjs``; "tldraw" or "padded"), written
    to ``path``; its encoded bytes."""
    subprocess.run(
        ["node", str(NODE_HALF), "build", "--kind", kind, "--records", str(records), "--out", str(path)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return path.read_bytes()


# Run in a fresh interpreter: ``{kind}`` is "worker" or "pycrdt"; prints the resident bytes it added.
_LOAD = """
import ctypes, sys
sys.path.insert(0, {repo!r})
from pycrdt import Doc
from collab_server.crdt.documents import Documents

def resident():
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))

before = resident()
update = open({path!r}, "rb").read()  # as a request brings it: the worker keeps these bytes as the base
if {kind!r} == "worker":
    held = Documents()
    held.load("board", update, [])
else:
    held = Doc()
    held.apply_update(update)
del update
print(resident() - before)
"""


def python_load(kind: str, path: Path) -> int:
    code = _LOAD.format(repo=str(REPO), path=str(path), kind=kind)
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def yjs_load(path: Path) -> tuple[int, int]:
    """The heap and resident bytes Yjs added for the document."""
    out = subprocess.run(
        ["node", "--expose-gc", "--max-old-space-size=16000", str(NODE_HALF), "measure", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    measured = json.loads(out)
    return measured["heap"], measured["rss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--kinds", default="padded,tldraw")
    args = parser.parse_args()
    print("| board | encoded, MiB | our worker | pycrdt (yrs) | yjs heap | yjs resident |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            path = Path(tmp) / f"{kind}.bin"
            size = len(build_board(kind, args.records, path))
            worker, pycrdt, yjs = python_load("worker", path), python_load("pycrdt", path), yjs_load(path)

            cells = [f"{held / 2**20:,.0f} MiB = {held / size:.2f}x" for held in (worker, pycrdt, *yjs)]
            print(f"| {kind}, {args.records:,} records | {size / 2**20:.1f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
