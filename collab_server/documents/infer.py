"""Telling each root's type from an update's own items.

pycrdt lists the roots of a loaded update but not their types (``Doc.items()`` yields ``None``), and a root
must be read as the right type to be read at all. An update records enough to tell: every item either names
its parent (a root name, or the ID of the item holding a nested type) or copies parent and parentSub from
its origin, as Yjs does when integrating. After resolving each item's root, the rules are, in this order:

- an item with a parentSub (a key) directly under the root  -> ``map``
- string, embed or format content                          -> ``text``
- only YXmlElement / YXmlText / YXmlHook nodes             -> ``xml_fragment``
- any other content without a parentSub                    -> ``array``

A root whose items are all deleted (GC'd content keeps its parent, not its kind) cannot be told apart:
its type is ``None`` unless the caller hints it (``types={"name": "text"}``); hints never override what the
update itself says.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from collab_server.documents.limits import DEFAULT_LIMITS, DocumentLimits, check_update_size
from collab_server.documents.structs import (
    KIND_NONE,
    KIND_TEXT,
    KIND_VALUE,
    KIND_XML,
    PARENT_INHERIT,
    PARENT_RESOLVING,
    PARENT_UNKNOWN,
    StructTable,
    decode_structs,
)
from collab_server.errors import DocumentError

__all__ = ["RootType", "infer_types", "parse_type_hints", "types_of"]


class RootType(StrEnum):
    """The shared type of a root, as the JSON view and the hints name it."""

    TEXT = "text"
    MAP = "map"
    ARRAY = "array"
    XML_FRAGMENT = "xml_fragment"


# Evidence bits collected per root.
_SUB, _TEXT, _XML, _VALUE = 1, 2, 4, 8
_KIND_BIT = {KIND_TEXT: _TEXT, KIND_XML: _XML, KIND_VALUE: _VALUE, KIND_NONE: 0}


def infer_types(
    update: bytes, *, types: Mapping[str, str] | None = None, limits: DocumentLimits = DEFAULT_LIMITS
) -> dict[str, RootType | None]:
    """``{root name: type}`` for every root that has an item in ``update`` (``None``: cannot be told).

    ``types`` hints the type of roots the update cannot tell (all their items deleted); a hint for a root
    the update does not have adds nothing, and a hint for a root whose type is known is ignored.
    """
    check_update_size(update, limits)
    hints = parse_type_hints(types or {})
    return types_of(decode_structs(update, limits), hints)


def types_of(table: StructTable, hints: Mapping[str, RootType]) -> dict[str, RootType | None]:
    """The rules above applied to a decoded update; ``hints`` fill in only what cannot be told."""
    evidence = _root_evidence(table)
    result: dict[str, RootType | None] = {}
    for index, name in enumerate(table.roots):
        inferred = _decide(evidence[index])
        result[name] = inferred if inferred is not None else hints.get(name)
    return result


def parse_type_hints(types: Mapping[str, str]) -> dict[str, RootType]:
    """Validate hints (``{"name": "text"}``); DocumentError ``invalid_types`` names the bad one."""
    hints: dict[str, RootType] = {}
    for name, value in types.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise DocumentError("invalid_types", "type hints map root names to type names")
        try:
            hints[name] = RootType(value)
        except ValueError:
            allowed = ", ".join(t.value for t in RootType)
            raise DocumentError("invalid_types", f"root {name!r}: unknown type {value!r} (one of {allowed})") from None
    return hints


def _decide(bits: int) -> RootType | None:
    if bits & _SUB:
        return RootType.MAP
    if bits & _TEXT:
        return RootType.TEXT
    if bits & _VALUE:
        # XML nodes mixed with other values: a Y.Array that happens to hold XML elements.
        return RootType.ARRAY
    if bits & _XML:
        return RootType.XML_FRAGMENT
    return None


def _root_evidence(table: StructTable) -> list[int]:
    evidence = [0] * len(table.roots)
    parent, sub, kind = table.parent, table.sub, table.kind
    for i in range(len(parent)):
        if parent[i] == PARENT_INHERIT:
            _resolve(table, i)
        root = parent[i]
        if root >= 0:
            evidence[root] |= _SUB if sub[i] else _KIND_BIT[kind[i]]
    return evidence


def _origin(table: StructTable, i: int) -> int | None:
    # Yjs takes the left origin when there is one, else the right one.
    if table.left_client[i] >= 0:
        return table.find(table.left_client[i], table.left_clock[i])
    if table.right_client[i] >= 0:
        return table.find(table.right_client[i], table.right_clock[i])
    return None


def _resolve(table: StructTable, i: int) -> None:
    """Give an inheriting item the parent (and parentSub) of its origin, as Yjs's ``Item.getMissing``.

    Origin chains can be as long as the document (a text typed character by character in many
    transactions) and cross clients in any order, so they are followed with an explicit stack and every
    item is resolved once. An origin outside the update, in a GC'd struct or in a cycle (only a crafted
    update has one) leaves the item without a known root.
    """
    parent = table.parent
    stack = [i]
    while stack:
        j = stack[-1]
        if parent[j] not in (PARENT_INHERIT, PARENT_RESOLVING):
            stack.pop()
            continue
        k = _origin(table, j)
        if k is None:
            parent[j] = PARENT_UNKNOWN
            stack.pop()
        elif parent[k] == PARENT_INHERIT:
            parent[j] = PARENT_RESOLVING
            stack.append(k)
        elif parent[k] == PARENT_RESOLVING:  # a cycle
            parent[j] = PARENT_UNKNOWN
            stack.pop()
        else:
            parent[j] = parent[k]
            table.sub[j] = table.sub[k]
            stack.pop()
