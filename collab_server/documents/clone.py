"""Copying values read from one Doc into another, keeping their kinds (Y.Map stays Y.Map, formatting stays).

A shared type read from one Doc cannot be inserted into another; each is rebuilt: an empty type is
inserted first and then filled through its integrated handle, which is the only way pycrdt lets formatted
text and XML attributes be written. Depth is bounded by the caller's limits.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from collab_server.documents.limits import DocumentLimits
from collab_server.documents.values import attributes_of
from collab_server.errors import DocumentError

_SHARED = (Map, Array, Text, XmlFragment, XmlElement, XmlText, Doc)


def _deeper(depth: int, limits: DocumentLimits) -> int:
    if depth >= limits.max_depth:
        raise DocumentError("too_deep", f"the document nests deeper than {limits.max_depth} levels")
    return depth + 1


def set_value(target: Map[Any], key: str, value: Any, limits: DocumentLimits, depth: int = 0) -> None:
    """``target[key]`` becomes a copy of ``value``."""
    depth = _deeper(depth, limits)
    empty = _empty_like(value)
    if empty is None:
        target[key] = _plain(value)
        return
    target[key] = empty
    fill(target[key], value, limits, depth)


def insert_values(target: Array[Any], index: int, values: list[Any], limits: DocumentLimits, depth: int = 0) -> None:
    """Insert copies of ``values`` at ``index``; neighbouring plain values go in as one item, as Yjs does."""
    depth = _deeper(depth, limits)
    run: list[Any] = []
    for value in values:
        empty = _empty_like(value)
        if empty is None:
            run.append(_plain(value))
            continue
        if run:
            target[index:index] = run
            index += len(run)
            run = []
        target.insert(index, empty)
        fill(target[index], value, limits, depth)
        index += 1
    if run:
        target[index:index] = run


def fill(target: Any, source: Any, limits: DocumentLimits, depth: int = 0) -> None:
    """Fill the empty, integrated ``target`` with a copy of ``source``'s content (same kind)."""
    depth = _deeper(depth, limits)
    if isinstance(source, Map):
        for key in source.keys():
            set_value(target, key, source[key], limits, depth)
    elif isinstance(source, Array):
        insert_values(target, 0, list(source), limits, depth)
    elif isinstance(source, XmlText):
        fill_text(target, source)
        for key, value in attributes_of(source).items():
            target.attributes[key] = value
    elif isinstance(source, Text):
        fill_text(target, source)
    elif isinstance(source, XmlElement | XmlFragment):
        if isinstance(source, XmlElement):
            for key, value in attributes_of(source).items():
                target.attributes[key] = value
        for child in source.children:
            node = target.children.append(_empty_like(child))
            fill(node, child, limits, depth)
    # A subdocument is copied by its guid alone (its content lives in its own Doc); nothing to fill.


def fill_text(target: Text | XmlText, source: Text | XmlText) -> None:
    """Append ``source``'s chunks with their formatting; ``{}`` for plain chunks stops inherited formats."""
    for insert, attrs in source.diff():
        if isinstance(insert, str):
            target.insert(len(target), insert, dict(attrs) if attrs else {})
        else:
            target.insert_embed(len(target), _prelim(insert), dict(attrs) if attrs else None)


def _empty_like(value: Any) -> Any:
    """An empty prelim of the same kind as a shared value, or None for a plain value."""
    if isinstance(value, Map):
        return Map()
    if isinstance(value, Array):
        return Array()
    if isinstance(value, XmlText):
        return XmlText()
    if isinstance(value, Text):
        return Text()
    if isinstance(value, XmlElement):
        return XmlElement(value.tag)
    if isinstance(value, XmlFragment):
        return XmlFragment()
    if isinstance(value, Doc):
        return Doc(guid=value.guid)
    return None


def _prelim(value: Any) -> Any:
    """A prelim copy for a text embed: shared types can only be given whole there (plain text inside)."""
    if isinstance(value, Map):
        return Map({key: _prelim(value[key]) for key in value.keys()})
    if isinstance(value, Array):
        return Array([_prelim(item) for item in value])
    if isinstance(value, Text):
        return Text(str(value))
    if isinstance(value, _SHARED):
        raise DocumentError("unsupported", f"a {type(value).__name__} embedded in text cannot be copied")
    return _plain(value)


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, bytearray) else value
