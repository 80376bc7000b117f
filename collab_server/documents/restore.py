"""Restore: the one update that makes a document's content equal to an older version's.

A CRDT cannot go back in time; the old content is written again as a new change on top of today's, so
every client receives it live and nothing is lost (restoring the version taken just before a restore
brings today's content back). Root by root:

- tldraw records array (``tl_*`` of ``{key, val}`` on both sides): records that are gone are deleted, records
  that differ or are missing are deleted and re-put (as ``YKeyValue.set``), equal records are left alone
- map: keys only today are deleted, differing keys are set; a nested map, array or text present on both
  sides is brought in line in place, recursively
- array: the differing middle (between the common prefix and suffix) is deleted and the old items inserted
- text and XML fragment: if different, emptied and written again (with formatting and attributes)
- a root only today is emptied; a root only in the old version is written

A root cannot change type in Yjs: a root known as one type today and another in the old version is a
DocumentError ``type_conflict``. A root whose items are all deleted takes the other side's type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pycrdt import Array, Map, Text, XmlFragment, XmlText

from collab_server.documents.clone import fill, fill_text, insert_values, set_value
from collab_server.documents.infer import RootType
from collab_server.documents.limits import DEFAULT_LIMITS, DocumentLimits
from collab_server.documents.loading import Loaded, call_pycrdt, load, one_update, single_update
from collab_server.documents.patch import delete_indices
from collab_server.documents.tldraw import Layout, find_layout
from collab_server.documents.values import describe, get_root
from collab_server.errors import DocumentError


def restore_update(
    current: bytes,
    old: bytes,
    *,
    types: Mapping[str, str] | None = None,
    room: str | None = None,
    limits: DocumentLimits = DEFAULT_LIMITS,
    client_id: int | None = None,
) -> bytes:
    """The update that, applied to ``current``, makes its content equal to ``old``'s (both full states).

    Equal content gives an empty update (``b"\\x00\\x00"``). ``types`` hints empty roots for both sides.
    """
    today = load(current, limits, types=types, client_id=client_id)
    then = load(old, limits, types=types)
    return call_pycrdt("restore failed", lambda: _restore(today, then, room, limits))


def _restore(today: Loaded, then: Loaded, room: str | None, limits: DocumentLimits) -> bytes:
    kinds = _root_kinds(today, then)
    layout_now = find_layout(today.doc, today.types, room)
    layout_then = find_layout(then.doc, then.types, room)
    records_root = None
    if layout_now is not None and layout_then is not None and layout_now.records_root == layout_then.records_root:
        records_root = layout_now.records_root
    with one_update(today.doc) as updates:
        for name, kind in kinds.items():
            target = get_root(today.doc, name, kind)
            if name == records_root:
                assert layout_now is not None and layout_then is not None and isinstance(target, Array)
                _sync_records(target, layout_now, layout_then, limits)
            else:
                _sync(target, get_root(then.doc, name, kind), limits)
    return single_update(updates)


def _root_kinds(today: Loaded, then: Loaded) -> dict[str, RootType]:
    kinds: dict[str, RootType] = {}
    for name in sorted(set(today.types) | set(then.types)):
        now, before = today.types.get(name), then.types.get(name)
        if now is not None and before is not None and now != before:
            raise DocumentError("type_conflict", f"root {name!r} is a {now} today but was a {before}")
        kind = now or before
        if kind is not None:  # empty on both sides: nothing to write
            kinds[name] = kind
    return kinds


def _sync_records(target: Array[Any], now: Layout, then: Layout, limits: DocumentLimits) -> None:
    current, wanted = now.records(), then.records()
    stale = {key for key in current if key not in wanted}
    for key, val in wanted.items():
        if key not in current or describe(current[key], limits) != describe(val, limits):
            stale.add(key)
    delete_indices(target, now.indices(stale))
    puts = [{"key": key, "val": val} for key, val in wanted.items() if key in stale]
    if puts:
        target.extend(puts)


def _sync(target: Any, source: Any, limits: DocumentLimits, depth: int = 0) -> None:
    """Make the integrated ``target`` equal in content to ``source`` (same kind)."""
    if depth >= limits.max_depth:
        raise DocumentError("too_deep", f"the document nests deeper than {limits.max_depth} levels")
    if isinstance(source, Map):
        _sync_map(target, source, limits, depth + 1)
    elif isinstance(source, Array):
        _sync_array(target, source, limits, depth + 1)
    elif describe(target, limits) != describe(source, limits):
        # Text, XmlText, XmlFragment: written again whole.
        if isinstance(source, Text | XmlText):
            target.clear()
            fill_text(target, source)
        else:
            assert isinstance(source, XmlFragment)
            count = len(target.children)
            if count:
                del target.children[0:count]
            fill(target, source, limits, depth + 1)


def _sync_map(target: Map[Any], source: Map[Any], limits: DocumentLimits, depth: int) -> None:
    for key in [key for key in target.keys() if key not in source]:
        del target[key]
    for key in source.keys():
        value = source[key]
        if key in target:
            present = target[key]
            if describe(present, limits) == describe(value, limits):
                continue
            if _same_container(present, value):
                _sync(present, value, limits, depth)
                continue
        set_value(target, key, value, limits, depth)


def _same_container(a: Any, b: Any) -> bool:
    # Kinds brought in line in place; XML nodes are replaced whole (tags and attributes may differ).
    if isinstance(a, XmlText) or isinstance(b, XmlText):
        return False
    return any(isinstance(a, kind) and isinstance(b, kind) for kind in (Map, Array, Text))


def _sync_array(target: Array[Any], source: Array[Any], limits: DocumentLimits, depth: int) -> None:
    have = [describe(item, limits, depth) for item in target]
    want = [describe(item, limits, depth) for item in source]
    prefix = 0
    while prefix < len(have) and prefix < len(want) and have[prefix] == want[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < len(have) - prefix and suffix < len(want) - prefix and have[-1 - suffix] == want[-1 - suffix]
    ):
        suffix += 1
    if len(have) - prefix - suffix:
        del target[prefix : len(have) - suffix]
    values = list(source)[prefix : len(want) - suffix]
    if values:
        insert_values(target, prefix, values, limits, depth)
