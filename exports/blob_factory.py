"""Pick the blob store ``COLLAB_BLOB_URL`` names; a backend is imported only when chosen (aioboto3 for S3).
Kept apart from ``exports.blobs`` (the seam), which the backends import."""

from __future__ import annotations

from urllib.parse import urlsplit

from collab_server.errors import ConfigError
from collab_server.secrets import Secret
from exports.blobs import BlobStore


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
            bucket=parts.netloc,
            prefix=parts.path.strip("/"),
            endpoint=s3_endpoint or None,
            region=s3_region or None,
            path_style=s3_path_style,
            access_key_id=(s3_access_key_id or Secret()).reveal() or None,
            secret_access_key=(s3_secret_access_key or Secret()).reveal() or None,
        )
    raise ConfigError(f"COLLAB_BLOB_URL={url!r}: use file:///path or s3://bucket/prefix")
