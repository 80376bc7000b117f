"""The identity provider's signing keys from its JWKS URL, cached, refetched when a token names a new kid.

``PyJWKClient`` fetches with blocking HTTP, so fetches run in a thread; the event loop only awaits.
Refetches are single-flight (every token that names an unknown kid waits for the same fetch) and at
most one per ``min_interval``: a flood of tokens with made-up kids costs at most a couple of fetches
a second, never one per token. Known keys stay usable while the provider is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import time

from jwt import PyJWK, PyJWKClient, PyJWKClientError

from collab_server import metrics
from collab_server.errors import AuthError, AuthUnavailable

logger = logging.getLogger(__name__)


class JwksKeys:
    """Signing keys by ``kid``, from one JWKS URL."""

    def __init__(self, url: str, *, min_interval: float = 0.5, timeout: float = 5.0) -> None:
        self.url = url
        self._client = PyJWKClient(url, cache_jwk_set=False, cache_keys=False, timeout=timeout)
        self._keys: dict[str | None, PyJWK] = {}
        self._min_interval = min_interval
        self._last_fetch = float("-inf")
        self._fetching: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"JwksKeys({self.url!r}, keys={len(self._keys)})"

    async def key(self, kid: str | None) -> PyJWK:
        """The key ``kid`` names; AuthError if the provider does not have it, AuthUnavailable if the
        provider cannot be reached and the key is not cached."""
        found = self._keys.get(kid)
        if found is not None:
            return found
        if self._fetching is None:
            self._fetching = asyncio.get_running_loop().create_task(self._fetch())
        # shield: a caller that gives up must not cancel the fetch the others wait for
        await asyncio.shield(self._fetching)
        found = self._keys.get(kid)
        if found is None:
            raise AuthError("the token's key id is not among the identity provider's keys")
        return found

    async def _fetch(self) -> None:
        try:
            wait = self._last_fetch + self._min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                jwk_set = await asyncio.to_thread(self._client.get_jwk_set, True)
            except PyJWKClientError as exc:
                metrics.JWKS_FETCHES.labels("failed").inc()
                logger.warning("JWKS %s could not be fetched: %s", self.url, exc)
                raise AuthUnavailable("the identity provider's keys cannot be fetched right now") from exc
            finally:
                self._last_fetch = time.monotonic()
            metrics.JWKS_FETCHES.labels("ok").inc()
            keys: dict[str | None, PyJWK] = {
                key.key_id: key for key in jwk_set.keys if key.public_key_use in (None, "sig")
            }
            if len(keys) == 1:
                keys[None] = next(iter(keys.values()))  # a token without kid, one key: that one
            self._keys = keys
        finally:
            self._fetching = None
