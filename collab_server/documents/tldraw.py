"""The tldraw layout: records as key/value entries in a ``tl_<room>`` Y.Array, the schema in ``meta``.

tldraw's Yjs binding (tldraw-yjs-example) keeps each record as a plain ``{key: id, val: record}`` object in
the Y.Array ``tl_<room>``, through y-utility's ``YKeyValue``: setting a key deletes the entries with that
key and pushes a new one at the end, and when concurrent sets leave several entries for one key, the
right-most wins. The Y.Map ``meta`` holds the store's serialized schema under ``schema``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Doc

from collab_server.documents.infer import RootType
from collab_server.documents.values import get_root

RECORDS_PREFIX = "tl_"
META_ROOT = "meta"


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``{key, val}`` entry of a records array, at its index."""

    index: int
    key: str
    val: Any


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a document keeps its tldraw records; ``entries`` in array order, duplicates included."""

    records_root: str
    entries: tuple[Entry, ...]

    def records(self) -> dict[str, Any]:
        """``{id: record}``: for a key with several entries, the right-most one."""
        return {entry.key: entry.val for entry in self.entries}

    def indices(self, keys: set[str]) -> list[int]:
        """Indices of every entry whose key is in ``keys``, ascending."""
        return [entry.index for entry in self.entries if entry.key in keys]


def read_entries(array: Array[Any]) -> tuple[Entry, ...] | None:
    """The array's entries if every one is a plain ``{key: str, val}`` object, else None."""
    entries: list[Entry] = []
    for index, item in enumerate(array):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or "val" not in item:
            return None
        entries.append(Entry(index, item["key"], item["val"]))
    return tuple(entries)


def find_layout(doc: Doc[Any], types: dict[str, RootType | None], room: str | None = None) -> Layout | None:
    """The document's records array: ``tl_<room>`` if it qualifies, else the only ``tl_*`` root that does.

    A ``tl_*`` root qualifies when it is an array of ``{key, val}`` entries, or has no items left (an empty
    root whose type the update cannot tell). Several qualifying roots and none named for ``room``: None.
    """
    candidates: dict[str, tuple[Entry, ...]] = {}
    for name, root_type in types.items():
        if not name.startswith(RECORDS_PREFIX):
            continue
        if root_type is None:
            candidates[name] = ()
        elif root_type is RootType.ARRAY:
            root = get_root(doc, name, RootType.ARRAY)
            assert isinstance(root, Array)
            entries = read_entries(root)
            if entries is not None:
                candidates[name] = entries
    if room is not None and RECORDS_PREFIX + room in candidates:
        name = RECORDS_PREFIX + room
        return Layout(name, candidates[name])
    if len(candidates) == 1:
        ((name, entries),) = candidates.items()
        return Layout(name, entries)
    return None
