"""Blob store on S3 or an S3-compatible store (MinIO, R2, ...) through aioboto3.

Objects get ``Content-Type`` and ``Content-Disposition: attachment`` at upload, so a presigned GET
downloads the file as what it is. Presigned URLs are SigV4 and minted per status request. Old exports
are best expired by a bucket lifecycle rule on the ``exports/`` prefix (e.g. 30 days): the server never
deletes files itself.
"""

from __future__ import annotations

import contextlib
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from exports.errors import RenderFailed


class S3BlobStore:
    """``s3://bucket/prefix``; keys are ``prefix/exports/...``."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        path_style: bool = False,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._endpoint = endpoint
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if path_style else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
        )
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()

    def describe(self) -> str:
        where = f" at {self._endpoint}" if self._endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _s3(self) -> Any:
        if self._client is None:
            self._client = await self._stack.enter_async_context(
                self._session.client("s3", endpoint_url=self._endpoint, config=self._config)
            )
        return self._client

    async def put(self, key: str, data: bytes, *, content_type: str, filename: str) -> None:
        try:
            await (await self._s3()).put_object(
                Bucket=self.bucket,
                Key=self._full(key),
                Body=data,
                ContentType=content_type,
                ContentDisposition=f'attachment; filename="{filename}"',
            )
        except (BotoCoreError, ClientError) as exc:
            # retryable: the render is redone on the next attempt, which is cheap next to losing the job
            raise RenderFailed(f"storing the export in s3://{self.bucket} failed: {exc}") from exc

    async def url(self, key: str, *, expires_in: int) -> str:
        url: str = await (await self._s3()).generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)}, ExpiresIn=expires_in
        )
        return url

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
