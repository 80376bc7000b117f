"""Bounds for the document logic: every size or count that an untrusted update or patch controls."""

from __future__ import annotations

from dataclasses import dataclass

from collab_server.errors import DocumentError


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """Bounds applied to updates and patches before (and while) pycrdt sees them.

    The REST layer builds one from ``Settings`` when the routes land; the defaults suit a large tldraw board.
    """

    max_update_bytes: int = 16 * 1024 * 1024
    # Structs decoded from one update (a client section counts as one); ~60 bytes each while types are told.
    max_structs: int = 1_000_000
    max_roots: int = 1_000
    # Nesting of lib0 "any" values inside an update, and of values/types walked for the JSON view and the
    # restore: pycrdt converts nested values recursively in Rust, where a deep input could overflow the stack.
    max_depth: int = 64
    max_patch_records: int = 10_000
    max_id_length: int = 1_000


DEFAULT_LIMITS = DocumentLimits()


def check_update_size(update: bytes, limits: DocumentLimits) -> None:
    if not isinstance(update, bytes | bytearray | memoryview):
        raise DocumentError("malformed_update", f"an update is bytes, not {type(update).__name__}")
    if len(update) > limits.max_update_bytes:
        raise DocumentError(
            "too_large", f"update of {len(update)} bytes is over the limit of {limits.max_update_bytes} bytes"
        )
