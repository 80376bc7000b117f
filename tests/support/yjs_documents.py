"""Documents written and read by real Yjs under Node (``tests/js/documents.mjs``), for the document tests.

``yjs_scenarios()`` builds updates of every root type with Yjs's own encoder (and what Yjs reads back from
them); ``yjs_apply()`` applies updates in a fresh ``Y.Doc`` and returns what Yjs then shows, so updates made
by the server are checked by the real decoder too.
"""

from __future__ import annotations

import base64
import functools
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT: Path = Path(__file__).resolve().parent.parent / "js" / "documents.mjs"


@dataclass(frozen=True)
class Scenario:
    """One document written by Yjs: its full-state update, root types, and each root's ``toJSON()``."""

    update: bytes
    roots: dict[str, str]
    json: dict[str, Any]
    deltas: dict[str, Any]  # each text root's toDelta(): formatting and embeds as well as characters
    records: dict[str, Any] | None  # YKeyValue's records, for the tldraw layout


@dataclass(frozen=True)
class Applied:
    json: dict[str, Any]
    deltas: dict[str, Any]
    records: dict[str, Any] | None
    # What a YKeyValue attached after the first update (a connected tldraw client) shows, and the keys
    # its change events named.
    live_records: dict[str, Any] | None
    live_changed: list[str] | None
    pending: bool  # Yjs is still waiting for missing structs or deletions


def _run(request: Mapping[str, Any]) -> Any:
    done = subprocess.run(
        ["node", str(SCRIPT)],
        input=json.dumps(request).encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"documents.mjs failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return json.loads(done.stdout)


@functools.cache
def yjs_scenarios() -> dict[str, Scenario]:
    """Scenarios by name: text, map, array, xml, tldraw, emptied (built once per test session)."""
    raw = _run({"cmd": "build"})
    return {
        name: Scenario(base64.b64decode(s["update"]), s["roots"], s["json"], s["deltas"], s.get("records"))
        for name, s in raw.items()
    }


def yjs_apply(updates: list[bytes], roots: Mapping[str, str], records: str | None = None) -> Applied:
    """Apply ``updates`` in order to a fresh Y.Doc; read ``roots`` (name -> type) and the records array."""
    request: dict[str, Any] = {
        "cmd": "apply",
        "updates": [base64.b64encode(u).decode() for u in updates],
        "roots": dict(roots),
    }
    if records is not None:
        request["records"] = records
    raw = _run(request)
    return Applied(
        raw["json"], raw["deltas"], raw.get("records"), raw.get("liveRecords"), raw.get("liveChanged"), raw["pending"]
    )


def lib0_var_ints(values: list[int]) -> list[bytes]:
    """lib0's ``writeVarInt`` encoding of each number."""
    return [base64.b64decode(encoded) for encoded in _run({"cmd": "varints", "values": values})]

