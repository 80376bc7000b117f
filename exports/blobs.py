"""The blob store seam: where finished exports are kept and how a client downloads them.

Backends: a local folder (``file:///path``, the embedded default; downloads through this server with an
HMAC-signed, expiring URL) and S3 (``s3://bucket/prefix``; SigV4 presigned GET URLs). URLs are minted when
someone asks for a job's status, never stored: they expire, the key does not.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote


class BlobStore(Protocol):
    """Keeps export files under keys ``exports/{room}/{job}/{name}.{ext}``."""

    async def put(self, key: str, data: bytes, *, content_type: str, filename: str) -> None:
        """Store ``data``; a download later gets ``content_type`` and an attachment named ``filename``."""
        ...

    async def url(self, key: str, *, expires_in: int) -> str:
        """A URL that downloads the file for ``expires_in`` seconds (absolute, or relative to this server)."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...


def blob_key(room: str, job_id: str, extension: str) -> str:
    """The key of a job's file. The room is percent-encoded into one path segment (room names may hold
    ``/``); the file is named after the room so a download reads ``board.png``, not a uuid."""
    return f"exports/{quote(room, safe='')}/{job_id}/{_file_stem(room)}.{extension}"


def filename_of(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _file_stem(room: str) -> str:
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in room.rsplit("/", 1)[-1]).strip(".-")
    return stem[:80] or "board"
