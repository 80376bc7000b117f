"""A JSON patch of tldraw records, turned into one Yjs update against the current document.

    {"put": [record, ...], "delete": [id, ...]}     either key may be left out; no other key is allowed

A record is a JSON object with a non-empty string ``id`` and ``typeName`` (every tldraw record has both).
``put`` does what y-utility's ``YKeyValue.set`` does: it deletes every entry with the record's id and pushes
``{key: id, val: record}`` at the end; ``delete`` deletes every entry with the id (an id that is not there
is not an error: deleting is idempotent). An id may appear once in the whole patch.

Values must be exactly representable in JavaScript: no NaN or infinities, integers within 2^53.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pycrdt import Array

from collab_server.documents.infer import RootType
from collab_server.documents.limits import DEFAULT_LIMITS, DocumentLimits
from collab_server.documents.loading import EMPTY_UPDATE, Loaded, call_pycrdt, load, one_update, single_update
from collab_server.documents.tldraw import RECORDS_PREFIX, find_layout, read_entries
from collab_server.documents.values import get_root
from collab_server.errors import DocumentError

_MAX_SAFE_INTEGER = 2**53 - 1


@dataclass(frozen=True, slots=True)
class RecordPatch:
    """A validated patch: records to put (in order) and ids to delete."""

    put: tuple[dict[str, Any], ...]
    delete: tuple[str, ...]


def parse_patch(patch: object, limits: DocumentLimits = DEFAULT_LIMITS) -> RecordPatch:
    """Validate a decoded JSON patch; DocumentError ``invalid_patch`` says what is wrong and where."""
    if not isinstance(patch, Mapping):
        raise _invalid(f"a patch is an object with put and/or delete, not {_json_type(patch)}")
    unknown = sorted(str(key) for key in patch if key not in ("put", "delete"))
    if unknown:
        raise _invalid(f"unknown key(s) {', '.join(unknown)}: a patch has only put and delete")
    if "put" not in patch and "delete" not in patch:
        raise _invalid("a patch has put and/or delete")
    puts = _list(patch, "put")
    deletes = _list(patch, "delete")
    if len(puts) + len(deletes) > limits.max_patch_records:
        raise _invalid(f"{len(puts) + len(deletes)} operations; at most {limits.max_patch_records} per patch")
    seen: set[str] = set()
    records: list[dict[str, Any]] = []
    size = 0
    for index, record in enumerate(puts):
        where = f"put[{index}]"
        if not isinstance(record, dict):
            raise _invalid(f"{where} is {_json_type(record)}, not a record object")
        record_id = _id(record.get("id"), f"{where}.id", limits)
        if not isinstance(record.get("typeName"), str) or not record["typeName"]:
            raise _invalid(f"{where}.typeName must be a non-empty string")
        size += _check_json(record, where, limits)
        if size > limits.max_update_bytes:
            raise DocumentError("too_large", f"the records put are over {limits.max_update_bytes} bytes")
        if record_id in seen:
            raise _invalid(f"{where}: id {record_id!r} appears twice in the patch")
        seen.add(record_id)
        records.append(record)
    ids: list[str] = []
    for index, value in enumerate(deletes):
        record_id = _id(value, f"delete[{index}]", limits)
        if record_id in seen:
            raise _invalid(f"delete[{index}]: id {record_id!r} appears twice in the patch")
        seen.add(record_id)
        ids.append(record_id)
    return RecordPatch(tuple(records), tuple(ids))


def patch_update(
    current: bytes,
    patch: object,
    *,
    room: str,
    limits: DocumentLimits = DEFAULT_LIMITS,
    client_id: int | None = None,
) -> bytes:
    """The update that applies ``patch`` to the document ``current`` (a full-state update).

    The records array is the document's ``tl_<room>`` (or its only ``tl_*`` records array); a document
    without one gets ``tl_<room>``. DocumentError ``not_tldraw`` if that root holds something else.
    """
    parsed = parse_patch(patch, limits)
    loaded = load(current, limits, client_id=client_id)
    return call_pycrdt("patch cannot be applied", lambda: _patch(loaded, parsed, room))


def _patch(loaded: Loaded, parsed: RecordPatch, room: str) -> bytes:
    doc = loaded.doc
    layout = find_layout(doc, loaded.types, room)
    name = layout.records_root if layout is not None else RECORDS_PREFIX + room
    kind = loaded.types.get(name)
    if kind not in (None, RootType.ARRAY):
        raise DocumentError("not_tldraw", f"root {name!r} is a {kind}, not a tldraw records array")
    array = get_root(doc, name, RootType.ARRAY)
    assert isinstance(array, Array)
    entries = layout.entries if layout is not None and layout.records_root == name else read_entries(array)
    if entries is None:
        raise DocumentError("not_tldraw", f"root {name!r} holds values that are not {{key, val}} entries")
    touched = {record["id"] for record in parsed.put} | set(parsed.delete)
    doomed = [entry.index for entry in entries if entry.key in touched]
    if not doomed and not parsed.put:
        return EMPTY_UPDATE
    with one_update(doc) as updates:
        _edit(array, doomed, parsed.put)
    return single_update(updates)


def _edit(array: Array[Any], doomed: list[int], put: tuple[dict[str, Any], ...]) -> None:
    delete_indices(array, doomed)
    if put:
        array.extend([{"key": record["id"], "val": record} for record in put])


def delete_indices(array: Array[Any], indices: list[int]) -> None:
    """Delete the entries at ``indices`` (ascending), one range per run of neighbours, from the end."""
    end = len(indices)
    while end > 0:
        start = end - 1
        while start > 0 and indices[start - 1] == indices[start] - 1:
            start -= 1
        del array[indices[start] : indices[end - 1] + 1]
        end = start


def _invalid(detail: str) -> DocumentError:
    return DocumentError("invalid_patch", detail)


def _list(patch: Mapping[str, Any], key: str) -> list[Any]:
    value = patch.get(key, [])
    if not isinstance(value, list):
        raise _invalid(f"{key} must be an array, not {_json_type(value)}")
    return value


def _id(value: object, where: str, limits: DocumentLimits) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(f"{where} must be a non-empty string, not {_json_type(value)}")
    if len(value) > limits.max_id_length:
        raise _invalid(f"{where} is longer than {limits.max_id_length} characters")
    return value


def _check_json(value: object, where: str, limits: DocumentLimits) -> int:
    """Only JSON values, nested at most ``max_depth`` deep; iterative, so any input is safe to check.

    Returns a rough encoded size (string lengths plus a few bytes a value), to bound what a patch writes.
    """
    size = 0
    stack: list[tuple[object, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        size += len(item) + 2 if isinstance(item, str) else 2
        if item is None or isinstance(item, bool | str):
            continue
        if isinstance(item, int):
            if abs(item) > _MAX_SAFE_INTEGER:
                raise _invalid(f"{path}: integer {item} is beyond 2^53 and would change in JavaScript")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _invalid(f"{path}: {item} is not a JSON number")
        elif isinstance(item, dict | list):
            if depth >= limits.max_depth:
                raise _invalid(f"{path}: nested deeper than {limits.max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise _invalid(f"{path}: key {key!r} is not a string")
                    size += len(key) + 1
                    stack.append((child, f"{path}.{key}", depth + 1))
            else:
                stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        else:
            raise _invalid(f"{path}: {_json_type(item)} is not a JSON value")
    return size


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    for cls, name in names.items():
        if isinstance(value, cls):
            return name
    return "a number" if isinstance(value, int | float) else type(value).__name__
