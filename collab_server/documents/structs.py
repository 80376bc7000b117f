"""Decoding the struct sections of a Yjs v1 update, bounded, into a compact table.

    update      = varUint(clients) { varUint(structs) varUint(client) varUint(clock) struct* }  delete set
    struct      = info:uint8 ...      info & 0x1F: 0 GC varUint(len), 10 Skip varUint(len), else an Item:
    item        = [origin ID if info&0x80] [right origin ID if info&0x40]
                  [parent if neither origin: varUint(1) varString(root name) | varUint(0) ID]
                  [parentSub varString if neither origin and info&0x20]  content
    content ref = 1 deleted, 2 JSON, 3 binary, 4 string, 5 embed, 6 format, 7 type, 8 any, 9 doc
    delete set  = varUint(clients) { varUint(client) varUint(ranges) { varUint(clock) varUint(len) } }

Only what type inference needs is kept, in ``array`` columns (a few bytes per struct, not a Python object
each): where each struct sits in its client's clock space, how its parent is given, whether it has a
parentSub, and what kind of content it holds. Contents are read only to be skipped, but read strictly: a
truncated or malformed update is refused whole, lib0 ``any`` values nested deeper than the limit are
refused before pycrdt converts them recursively, and trailing bytes are refused (pycrdt ignores them).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from dataclasses import dataclass, field

from collab_server.documents.limits import DocumentLimits
from collab_server.errors import DocumentError, ProtocolError
from collab_server.protocol import Reader

# What a struct's content says about the type holding it (see infer.py).
KIND_NONE = 0  # GC, Skip, deleted content: says nothing
KIND_TEXT = 1  # string, embed, format: only a Y.Text holds these
KIND_XML = 2  # a YXmlElement / YXmlText / YXmlHook node
KIND_VALUE = 3  # JSON, binary, any, subdoc, any other shared type: an array element (or a map value)

# How a struct's parent is known, before resolution (parent column; >= 0 is a root index).
PARENT_UNKNOWN = -1  # GC/Skip, or resolution failed (origin missing, GC'd, cyclic)
PARENT_NESTED = -2  # the parent is a nested shared type, given by the ID of the item holding it
PARENT_INHERIT = -3  # copied from the origin (or right origin) item, as Yjs does
PARENT_RESOLVING = -4  # used by the resolver while following an origin chain

_NO_ID = -1

_TYPE_REF_XML_ELEMENT = 3
_TYPE_REF_XML_HOOK = 5
_TYPE_REF_XML_TEXT = 6
_TYPE_REF_MAX = 6

# lib0 "any" tags (readAny reads 127 - tag as an index).
_ANY_UNDEFINED, _ANY_NULL, _ANY_INT, _ANY_F32, _ANY_F64, _ANY_BIGINT = 127, 126, 125, 124, 123, 122
_ANY_FALSE, _ANY_TRUE, _ANY_STRING, _ANY_OBJECT, _ANY_ARRAY, _ANY_BYTES = 121, 120, 119, 118, 117, 116


def _column(code: str) -> array[int]:
    return array(code)


@dataclass(slots=True)
class StructTable:
    """Every struct of an update, in the order of the update (each client's structs together, by clock).

    Column ``i`` of each array describes struct ``i``; ``clients`` maps a client id to the range of its
    structs and the clock just past its last one. One set of columns for all clients keeps the cost per
    client to one dict entry, however many clients a (crafted) update names.
    """

    roots: list[str] = field(default_factory=list)
    clients: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # client -> (first, stop, end clock)
    starts: array[int] = field(default_factory=lambda: _column("q"))
    parent: array[int] = field(default_factory=lambda: _column("q"))
    sub: array[int] = field(default_factory=lambda: _column("b"))
    kind: array[int] = field(default_factory=lambda: _column("b"))
    # Origin IDs (client _NO_ID when absent): where an inheriting item's parent is found.
    left_client: array[int] = field(default_factory=lambda: _column("q"))
    left_clock: array[int] = field(default_factory=lambda: _column("q"))
    right_client: array[int] = field(default_factory=lambda: _column("q"))
    right_clock: array[int] = field(default_factory=lambda: _column("q"))

    def add(
        self, clock: int, parent: int, sub: bool, kind: int, left: tuple[int, int], right: tuple[int, int]
    ) -> None:
        self.starts.append(clock)
        self.parent.append(parent)
        self.sub.append(1 if sub else 0)
        self.kind.append(kind)
        self.left_client.append(left[0])
        self.left_clock.append(left[1])
        self.right_client.append(right[0])
        self.right_clock.append(right[1])

    def find(self, client: int, clock: int) -> int | None:
        """The index of the struct holding ``clock`` of ``client``, if the update has it."""
        section = self.clients.get(client)
        if section is None:
            return None
        first, stop, end = section
        if clock >= end:
            return None
        index = bisect_right(self.starts, clock, first, stop) - 1
        return index if index >= first else None


def decode_structs(update: bytes, limits: DocumentLimits) -> StructTable:
    """Decode ``update``'s structs; DocumentError ``malformed_update``/``too_large``/``too_deep`` if unusable."""
    try:
        return _Decoder(bytes(update), limits).run()
    except ProtocolError as exc:
        raise DocumentError("malformed_update", f"not a Yjs v1 update: {exc}") from exc


class _Decoder:
    __slots__ = ("limits", "reader", "root_index", "structs", "table")

    def __init__(self, update: bytes, limits: DocumentLimits) -> None:
        self.reader = Reader(update)
        self.limits = limits
        self.table = StructTable()
        self.root_index: dict[str, int] = {}
        self.structs = 0

    def run(self) -> StructTable:
        r = self.reader
        table = self.table
        for _ in range(self._count("client count")):
            structs = self._count("struct count")
            client = r.var_uint("client id")
            clock = r.var_uint("clock")
            if client in table.clients:
                # Yjs and Yrs write each client once; a second section would silently replace the first in Yjs.
                raise DocumentError("malformed_update", f"client {client} appears twice in the update")
            # A client section counts as a struct: an update of empty sections must not be free.
            self.structs += structs + 1
            if self.structs > self.limits.max_structs:
                raise DocumentError("too_large", f"update has more than {self.limits.max_structs} structs")
            first = len(table.starts)
            for _ in range(structs):
                clock += self._struct(clock)
            table.clients[client] = (first, len(table.starts), clock)
        self._delete_set()
        if not r.at_end():
            raise DocumentError("malformed_update", f"{len(r.data) - r.pos} trailing bytes after the delete set")
        return table

    def _count(self, what: str) -> int:
        # Every counted element takes at least one byte: a count beyond the bytes left is a lie.
        count = self.reader.var_uint(what)
        if count > len(self.reader.data) - self.reader.pos:
            raise DocumentError("malformed_update", f"{what} {count} is more than the bytes that remain")
        return count

    def _struct(self, clock: int) -> int:
        """Read one struct starting at ``clock``; return its length."""
        r = self.reader
        info = r.u8("struct info")
        ref = info & 0x1F
        if ref in (0, 10):  # GC, Skip
            length = self._length("GC/skip length")
            self.table.add(clock, PARENT_UNKNOWN, False, KIND_NONE, (_NO_ID, 0), (_NO_ID, 0))
            return length
        left = (r.var_uint("origin client"), r.var_uint("origin clock")) if info & 0x80 else (_NO_ID, 0)
        right = (r.var_uint("right origin client"), r.var_uint("right origin clock")) if info & 0x40 else (_NO_ID, 0)
        parent = PARENT_INHERIT
        sub = False
        if not info & 0xC0:
            if r.var_uint("parent info") == 1:
                parent = self._root(r.var_string("parent root name"))
            else:
                r.var_uint("parent client")
                r.var_uint("parent clock")
                parent = PARENT_NESTED
            if info & 0x20:
                r.var_string("parentSub")
                sub = True
        length, kind = self._content(ref)
        self.table.add(clock, parent, sub, kind, left, right)
        return length

    def _root(self, name: str) -> int:
        index = self.root_index.get(name)
        if index is None:
            roots = self.table.roots
            if len(roots) >= self.limits.max_roots:
                raise DocumentError("too_large", f"update has more than {self.limits.max_roots} roots")
            index = self.root_index[name] = len(roots)
            roots.append(name)
        return index

    def _length(self, what: str) -> int:
        length = self.reader.var_uint(what)
        if length == 0:
            raise DocumentError("malformed_update", f"{what} is zero")
        return length

    def _content(self, ref: int) -> tuple[int, int]:
        """Skip one item's content; return its length in clock units and its kind."""
        r = self.reader
        if ref == 1:  # deleted
            return self._length("deleted length"), KIND_NONE
        if ref == 2:  # JSON: strings of JSON text (or "undefined")
            count = self._count("JSON count")
            for _ in range(count):
                r.var_bytes("JSON value")
            return self._nonzero(count, "JSON count"), KIND_VALUE
        if ref == 3:
            r.var_bytes("binary content")
            return 1, KIND_VALUE
        if ref == 4:
            # Clock length is the string's UTF-16 length, as in JavaScript.
            text = r.var_string("string content")
            length = len(text) + sum(1 for char in text if ord(char) > 0xFFFF)
            return self._nonzero(length, "string length"), KIND_TEXT
        if ref == 5:
            r.var_bytes("embed")
            return 1, KIND_TEXT
        if ref == 6:
            r.var_bytes("format key")
            r.var_bytes("format value")
            return 1, KIND_TEXT
        if ref == 7:
            type_ref = r.var_uint("type ref")
            if type_ref > _TYPE_REF_MAX:
                raise DocumentError("malformed_update", f"unknown type ref {type_ref}")
            if type_ref in (_TYPE_REF_XML_ELEMENT, _TYPE_REF_XML_HOOK):
                r.var_bytes("XML node name")
            xml = type_ref in (_TYPE_REF_XML_ELEMENT, _TYPE_REF_XML_HOOK, _TYPE_REF_XML_TEXT)
            return 1, KIND_XML if xml else KIND_VALUE
        if ref == 8:
            count = self._count("any count")
            self._skip_any(count)
            return self._nonzero(count, "any count"), KIND_VALUE
        if ref == 9:
            r.var_bytes("subdocument guid")
            self._skip_any(1)
            return 1, KIND_VALUE
        raise DocumentError("malformed_update", f"unknown content ref {ref}")

    @staticmethod
    def _nonzero(length: int, what: str) -> int:
        if length == 0:
            raise DocumentError("malformed_update", f"{what} is zero")
        return length

    def _skip_any(self, count: int) -> None:
        """Skip ``count`` lib0 any values without building them; iterative, nesting bounded."""
        r = self.reader
        # One entry per open container: [values left, 1 if an object (a key precedes each value)].
        stack: list[list[int]] = [[count, 0]]
        while stack:
            top = stack[-1]
            if top[0] == 0:
                stack.pop()
                continue
            top[0] -= 1
            if top[1]:
                r.var_bytes("any object key")
            tag = r.u8("any tag")
            if tag in (_ANY_UNDEFINED, _ANY_NULL, _ANY_FALSE, _ANY_TRUE):
                continue
            if tag == _ANY_INT:
                r.var_int("any integer")
            elif tag == _ANY_F32:
                r.skip(4, "any float32")
            elif tag in (_ANY_F64, _ANY_BIGINT):
                r.skip(8, "any float64/bigint")
            elif tag in (_ANY_STRING, _ANY_BYTES):
                r.var_bytes("any string/bytes")
            elif tag in (_ANY_OBJECT, _ANY_ARRAY):
                if len(stack) >= self.limits.max_depth:
                    raise DocumentError("too_deep", f"a value is nested deeper than {self.limits.max_depth} levels")
                stack.append([self._count("any container size"), 1 if tag == _ANY_OBJECT else 0])
            else:
                raise DocumentError("malformed_update", f"unknown any tag {tag}")

    def _delete_set(self) -> None:
        r = self.reader
        for _ in range(self._count("delete set client count")):
            r.var_uint("delete set client")
            for _ in range(self._count("delete set range count")):
                r.var_uint("delete set clock")
                r.var_uint("delete set length")
