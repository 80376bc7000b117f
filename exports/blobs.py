"""The blob store seam: where finished exports are kept and how a client downloads them.

Backends: a local folder (``file:///path``, the embedded default; downloads through this server with an
HMAC-signed, expiring URL) and S3 (``s3://bucket/prefix``; SigV4 presigned GET URLs). URLs are minted when
someone asks for a job's status, never stored: they expire, the key does not.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote, urlsplit

from collab_server.errors import ConfigError
from collab_server.secrets import Secret


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


def open_blob_store(
    url: str,
    *,
    signing_key: Secret,
    s3_endpoint: str = "",
    s3_region: str = "",
    s3_path_style: bool = False,
    s3_access_key_id: Secret | None = None,
    s3_secret_access_key: Secret | None = None,
) -> BlobStore:
    """The store ``COLLAB_BLOB_URL`` names; the S3 backend (aioboto3) is imported only when chosen."""
    parts = urlsplit(url)
    if parts.scheme == "file" or (parts.scheme == "" and url):
        from exports.blobs_file import FileBlobStore

        path = parts.path if parts.scheme == "file" else url
        # file://relative/dir would put "relative" in the netloc: accept it as the first path segment
        if parts.scheme == "file" and parts.netloc:
            path = parts.netloc + parts.path
        return FileBlobStore(path, signing_key=signing_key)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError("COLLAB_BLOB_URL: s3 URLs look like s3://bucket/prefix")
        from exports.blobs_s3 import S3BlobStore

        return S3BlobStore(
            bucket=parts.netloc, prefix=parts.path.strip("/"), endpoint=s3_endpoint or None,
            region=s3_region or None, path_style=s3_path_style,
            access_key_id=(s3_access_key_id or Secret()).reveal() or None,
            secret_access_key=(s3_secret_access_key or Secret()).reveal() or None,
        )
    raise ConfigError(f"COLLAB_BLOB_URL={url!r}: use file:///path or s3://bucket/prefix")
