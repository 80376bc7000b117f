"""Loading update bytes into pycrdt, and taking the update of one edit back out.

pycrdt is a trust boundary: on bad input it raises ValueError or a Rust panic (``pyo3_runtime.
PanicException``, a BaseException). Both become ``DocumentError`` here, at the call; a Doc that failed to
load is dropped, never used. The bytes are first decoded by ``structs`` (bounded, strict), so pycrdt only
sees updates that parse and whose values nest within the limit.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pycrdt import Doc, TransactionEvent

from collab_server.documents.infer import RootType, parse_type_hints, types_of
from collab_server.documents.limits import DocumentLimits, check_update_size
from collab_server.documents.structs import decode_structs
from collab_server.errors import DocumentError

EMPTY_UPDATE = b"\x00\x00"
T = TypeVar("T")


@dataclass(slots=True)
class Loaded:
    """A Doc holding an update, and each root's type (``None``: empty and not hinted)."""

    doc: Doc[Any]
    types: dict[str, RootType | None]


def is_panic(exc: BaseException) -> bool:
    """True for pycrdt's Rust panics, which are BaseExceptions that must not pass as cancellations."""
    return type(exc).__name__ == "PanicException"


def call_pycrdt(what: str, fn: Callable[[], T]) -> T:
    """Run one pycrdt call; its errors and panics become DocumentError ``malformed_update``."""
    try:
        return fn()
    except DocumentError:
        raise
    except Exception as exc:
        raise DocumentError("malformed_update", f"{what}: {exc}") from exc
    except BaseException as exc:
        if is_panic(exc):
            raise DocumentError("malformed_update", f"{what}: pycrdt panicked ({exc})") from exc
        raise


def load(
    update: bytes, limits: DocumentLimits, *, types: Mapping[str, str] | None = None, client_id: int | None = None
) -> Loaded:
    """Decode and type ``update`` (bounded), then load it into a fresh Doc.

    ``client_id`` is the id the Doc writes with; by default a random one the update does not use, so an
    edit made here never collides with a client's own history.
    """
    check_update_size(update, limits)
    hints = parse_type_hints(types or {})
    table = decode_structs(update, limits)
    root_types = types_of(table, hints)
    data = bytes(update)
    if client_id is None:
        client_id = _unused_client_id(set(table.clients))
    doc: Doc[Any] = Doc(client_id=client_id)
    call_pycrdt("update cannot be applied", lambda: doc.apply_update(data))
    return Loaded(doc, root_types)


def _unused_client_id(used: set[int]) -> int:
    while True:
        candidate = secrets.randbits(32)  # Yjs client ids are random uint32s
        if candidate not in used:
            return candidate


@contextmanager
def one_update(doc: Doc[Any]) -> Iterator[list[bytes]]:
    """Run the edits of the ``with`` body in one transaction; the list then holds that transaction's update.

    Only the structs and deletions of this transaction are sent, not the whole delete set of the
    document that ``Doc.get_update(state)`` would add. No edit means no update (the list stays empty).
    """
    updates: list[bytes] = []

    def collect(event: TransactionEvent) -> None:
        updates.append(event.update)

    subscription = doc.observe(collect)
    try:
        with doc.transaction():
            yield updates
    finally:
        doc.unobserve(subscription)


def single_update(updates: list[bytes]) -> bytes:
    if not updates:
        return EMPTY_UPDATE
    if len(updates) != 1:  # one transaction makes one update; anything else is a bug here
        raise DocumentError("internal", f"expected one update, got {len(updates)}")
    return updates[0]
