"""Blob store on a local folder; downloads go through this server with HMAC-signed, expiring URLs.

A URL is ``/api/blobs/{key}?expires={unix}&signature={hmac}``; the signature is HMAC-SHA256 of the key
and the expiry under the signing key, so it can be neither altered nor extended. ``open`` checks it and
resolves the key strictly inside the folder.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from urllib.parse import quote

from collab_server.secrets import Secret
from exports.blobs import filename_of

DOWNLOAD_PREFIX = "/api/blobs/"


class SignatureError(Exception):
    """A download URL whose signature is wrong or whose time ran out."""


def sign(signing_key: Secret, key: str, expires: int) -> str:
    mac = hmac.new(signing_key.reveal().encode(), f"{key}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


class FileBlobStore:
    """``file:///path`` (default ``./exports-data``). Each file has a ``.meta`` JSON beside it that holds
    its Content-Type and download name."""

    def __init__(self, root: str | Path, *, signing_key: Secret) -> None:
        self.root = Path(root).resolve()
        self._signing_key = signing_key

    def describe(self) -> str:
        return f"folder {self.root}"

    def path_of(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise SignatureError("key outside the blob folder")
        return path

    async def put(self, key: str, data: bytes, *, content_type: str, filename: str) -> None:
        await asyncio.to_thread(self._put, key, data, content_type, filename)

    def _put(self, key: str, data: bytes, content_type: str, filename: str) -> None:
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename: a reader never sees half a file, a crash leaves no truncated export
        for target, body in (
            (
                path.with_name(path.name + ".meta"),
                json.dumps({"content_type": content_type, "filename": filename}).encode(),
            ),
            (path, data),
        ):
            temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            temp.write_bytes(body)
            os.replace(temp, target)

    async def url(self, key: str, *, expires_in: int) -> str:
        expires = int(time.time()) + expires_in
        return f"{DOWNLOAD_PREFIX}{quote(key)}?expires={expires}&signature={sign(self._signing_key, key, expires)}"

    def verify(self, key: str, expires: str, signature: str) -> tuple[Path, str, str]:
        """(file, content type, download name) of a signed download; SignatureError otherwise."""
        try:
            deadline = int(expires)
        except ValueError:
            raise SignatureError("malformed expiry") from None
        if not hmac.compare_digest(sign(self._signing_key, key, deadline), signature):
            raise SignatureError("bad signature")
        if deadline < time.time():
            raise SignatureError("this download link has expired; ask for the export's status for a new one")
        path = self.path_of(key)
        meta_path = path.with_name(path.name + ".meta")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {"content_type": "application/octet-stream", "filename": filename_of(key)}
        return path, str(meta["content_type"]), str(meta["filename"])

    async def close(self) -> None:
        pass
