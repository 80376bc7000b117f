"""Reading a loaded Doc's values: typed roots, JSON, and a typed description to compare content by.

Values are walked here, in Python with a depth bound, instead of with pycrdt's recursive ``to_py`` (which
also refuses XML). Numbers come out of Yjs as doubles; integral ones are written as JSON integers, as
JavaScript's ``JSON.stringify`` does.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from typing import Any, cast

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from collab_server.documents.infer import RootType
from collab_server.documents.limits import DocumentLimits
from collab_server.documents.loading import call_pycrdt
from collab_server.errors import DocumentError

Shared = Text | Map[Any] | Array[Any] | XmlFragment
_ROOT_CLASS: dict[RootType, type[Shared]] = {
    RootType.TEXT: Text,
    RootType.MAP: Map,
    RootType.ARRAY: Array,
    RootType.XML_FRAGMENT: XmlFragment,
}
_MAX_SAFE_INTEGER = 2**53 - 1


def get_root(doc: Doc[Any], name: str, root_type: RootType) -> Shared:
    """The root ``name`` read as ``root_type``."""
    cls = _ROOT_CLASS[root_type]
    root: Shared = call_pycrdt(f"root {name!r} cannot be read as {root_type}", lambda: doc.get(name, type=cls))
    return root


def attributes_of(node: XmlElement | XmlText) -> dict[str, Any]:
    # pycrdt types XmlAttributesView.__iter__ as returning an Iterable; it yields (name, value) pairs.
    return dict(cast(Iterable[tuple[str, Any]], node.attributes))


def empty_json(root_type: RootType | None) -> Any:
    if root_type is None:
        return None
    return {RootType.TEXT: "", RootType.MAP: {}, RootType.ARRAY: [], RootType.XML_FRAGMENT: ""}[root_type]


def _deeper(depth: int, limits: DocumentLimits) -> int:
    if depth >= limits.max_depth:
        raise DocumentError("too_deep", f"the document nests deeper than {limits.max_depth} levels")
    return depth + 1


def to_json(value: Any, limits: DocumentLimits, depth: int = 0) -> Any:
    """A JSON-ready copy of a pycrdt value.

    Text -> its string; XML -> its XML string; bytes -> base64 text; a subdocument -> ``{"guid": ...}``;
    non-finite numbers -> null. Map keys come out sorted so the same content gives the same JSON.
    """
    depth = _deeper(depth, limits)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() and abs(value) <= _MAX_SAFE_INTEGER else value
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, XmlFragment | XmlElement | XmlText):
        return xml_string(value, limits, depth)
    if isinstance(value, Text):
        return str(value)
    if isinstance(value, Map | dict):
        return {key: to_json(value[key], limits, depth) for key in sorted(value.keys())}
    if isinstance(value, Array | list | tuple):
        return [to_json(item, limits, depth) for item in value]
    if isinstance(value, Doc):
        return {"guid": value.guid}
    raise DocumentError("unsupported", f"a value of type {type(value).__name__} has no JSON form")


def xml_string(node: XmlFragment | XmlElement | XmlText, limits: DocumentLimits, depth: int = 0) -> str:
    """XML as Yjs's ``toString`` writes it: attributes sorted by name (pycrdt's order is not stable)."""
    depth = _deeper(depth, limits)
    if isinstance(node, XmlText):
        return str(node)  # formatting as nested tags, as Yjs does
    inner = "".join(xml_string(child, limits, depth) for child in node.children)
    if not isinstance(node, XmlElement):
        return inner
    attributes = "".join(f' {key}="{_attribute_text(value)}"' for key, value in sorted(attributes_of(node).items()))
    return f"<{node.tag}{attributes}>{inner}</{node.tag}>"


def _attribute_text(value: Any) -> str:
    # JavaScript's template literal: strings as they are, numbers without a trailing .0
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def describe(value: Any, limits: DocumentLimits, depth: int = 0) -> Any:
    """A comparable description of a value: content and shared-type kinds, not identities.

    Two values describe equal exactly when a client sees the same content in the same kinds of types
    (a Y.Map and a plain object with the same entries differ; formatting and XML attributes count).
    """
    depth = _deeper(depth, limits)
    if isinstance(value, Map):
        return ("map", {key: describe(value[key], limits, depth) for key in value.keys()})
    if isinstance(value, Array):
        return ("array", [describe(item, limits, depth) for item in value])
    if isinstance(value, XmlText):
        return ("xml_text", _describe_diff(value.diff(), limits, depth), attributes_of(value))
    if isinstance(value, Text):
        return ("text", _describe_diff(value.diff(), limits, depth))
    if isinstance(value, XmlElement):
        children = [describe(child, limits, depth) for child in value.children]
        return ("xml_element", value.tag, attributes_of(value), children)
    if isinstance(value, XmlFragment):
        return ("xml_fragment", [describe(child, limits, depth) for child in value.children])
    if isinstance(value, Doc):
        return ("doc", value.guid)
    return ("value", _plain(value, limits, depth))


def _describe_diff(diff: list[tuple[Any, Any]], limits: DocumentLimits, depth: int) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    for insert, attrs in diff:
        chunk = insert if isinstance(insert, str) else describe(insert, limits, depth)
        out.append((chunk, _plain(attrs or {}, limits, depth)))
    return out


def _plain(value: Any, limits: DocumentLimits, depth: int) -> Any:
    # Plain values compare with ==; only the depth needs watching.
    if isinstance(value, dict):
        depth = _deeper(depth, limits)
        return {key: _plain(item, limits, depth) for key, item in value.items()}
    if isinstance(value, list | tuple):
        depth = _deeper(depth, limits)
        return [_plain(item, limits, depth) for item in value]
    if isinstance(value, bytearray):
        return bytes(value)
    return value
