"""Tokens for tests: keys generated per run, well-formed and deliberately broken JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = secrets.token_urlsafe(32)  # the identity provider's HS256 secret
SERVER_KEY = secrets.token_urlsafe(32)  # COLLAB_SECRET_KEY
ISSUER = "https://issuer.test"
AUDIENCE = "collab-tests"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class RsaKey:
    """An RSA key pair; ``kid`` names it in a JWKS."""

    kid: str = field(default_factory=lambda: secrets.token_hex(4))
    private: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))

    @property
    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**data, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def sign(self, claims: dict[str, Any], *, kid: bool = True) -> str:
        headers = {"kid": self.kid} if kid else None
        return jwt.encode(claims, self.private, algorithm="RS256", headers=headers)


def claims(sub: str = "alice", *, ttl: float = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + int(ttl), "iss": ISSUER, "aud": AUDIENCE, **extra}


def hs256(sub: str = "alice", *, key: str = SECRET, **extra: Any) -> str:
    return jwt.encode(claims(sub, **extra), key, algorithm="HS256")


def unsigned(sub: str = "alice") -> str:
    """``alg: none``."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims(sub)).encode())}."


def hmac_with(key_text: str, sub: str = "alice") -> str:
    """HS256 'signed' with ``key_text`` (e.g. the public PEM): the algorithm-confusion attack."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims(sub)).encode())
    signature = hmac.new(key_text.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def es256(sub: str = "alice") -> str:
    """Signed with a fresh EC key nobody configured."""
    return jwt.encode(claims(sub), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def without_sub() -> str:
    payload = claims("x")
    del payload["sub"]
    return jwt.encode(payload, SECRET, algorithm="HS256")
