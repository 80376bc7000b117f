"""Durable documents: the DocumentStore seam, its backends and the group-commit writer.

Backends are chosen by URL scheme in :func:`persistence.factory.open_store` and imported lazily, so the
embedded default never imports a database driver it does not use.
"""

from persistence.base import DocumentStore, StoredDocument, Version

__all__ = ["DocumentStore", "StoredDocument", "Version"]
