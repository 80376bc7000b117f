"""Room passwords: bcrypt, in a thread (a hash costs tens of milliseconds by design).

The password is first reduced to a SHA-256 digest (base64, 44 bytes): bcrypt reads at most 72 bytes, and
bcrypt 5 refuses longer input, so every password of any length and script hashes in full.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

import bcrypt


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest())


async def hash_password(password: str, cost: int) -> str:
    return await asyncio.to_thread(lambda: bcrypt.hashpw(_prehash(password), bcrypt.gensalt(cost)).decode())


async def check_password(password: str, hashed: str) -> bool:
    try:
        return await asyncio.to_thread(bcrypt.checkpw, _prehash(password), hashed.encode())
    except ValueError:  # a malformed stored hash never matches
        return False
