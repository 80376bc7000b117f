"""Token verification: user tokens from the app's identity provider, and the server's own room tokens.

- **User tokens** are JWTs as Supabase, Auth0, Clerk or Keycloak issue them: HS* with a shared secret,
  RS*/ES*/PS*/EdDSA with a public key, or keys from a JWKS URL. The algorithm is taken from the token's
  header but must belong to a configured key of the matching kind: an HS* token is only ever checked
  against the secret (so a token "signed" with the public key as an HMAC secret fails), an asymmetric
  one only against a public key, and ``none`` is never accepted. ``exp`` and ``sub`` are required;
  ``exp``/``nbf`` are checked with a small leeway, ``iss``/``aud`` when configured.
- **Room tokens** (the answer to a password or an invite) and **invites** are HS256 JWTs signed with
  ``COLLAB_SECRET_KEY``; their header ``kid`` says which of the two they are (``RoomTokens``).

Verification costs one signature check and no I/O (except the first use of a new JWKS key), which is
what makes a flood of bad tokens cheap to refuse.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from collab_server import metrics
from collab_server.errors import AuthError, ConfigError
from collab_server.jwks import JwksKeys
from collab_server.principal import Principal
from collab_server.room_tokens import ROOM_KID, RoomTokens
from collab_server.settings import Settings

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = frozenset({"ES256", "ES384", "ES512"})
OKP_ALGORITHMS = frozenset({"EdDSA"})


def read_public_key(text: str) -> tuple[Any, frozenset[str]]:
    """The PEM public key in ``text`` (or in the file ``@path``) and the algorithms it may verify."""
    pem = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"COLLAB_JWT_PUBLIC_KEY is not a PEM public key ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, EC_ALGORITHMS
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key, OKP_ALGORITHMS
    raise ConfigError("COLLAB_JWT_PUBLIC_KEY: only RSA, EC and Ed25519/Ed448 keys are supported")


class TokenVerifier:
    """Turns a bearer token (user or room token) into a Principal, or raises AuthError."""

    def __init__(
        self,
        room_tokens: RoomTokens,
        *,
        secret: str = "",
        public_key: str = "",
        jwks: JwksKeys | None = None,
        issuer: str = "",
        audience: str = "",
        name_claim: str = "name",
        leeway: float = 30.0,
    ) -> None:
        self.room_tokens = room_tokens
        self._secret = secret
        self._public_key: Any = None
        self._public_algorithms: frozenset[str] = frozenset()
        if public_key:
            self._public_key, self._public_algorithms = read_public_key(public_key)
        self._jwks = jwks
        self._issuer = issuer or None
        self._audience = audience or None
        self._name_claim = name_claim
        self._leeway = leeway

    @classmethod
    def from_settings(cls, settings: Settings, room_tokens: RoomTokens) -> TokenVerifier:
        if not settings.jwt_configured:
            raise ConfigError(
                "authentication is on but no key is set: set COLLAB_JWT_SECRET, COLLAB_JWT_PUBLIC_KEY or "
                "COLLAB_JWT_JWKS_URL (or COLLAB_AUTH=off)"
            )
        return cls(
            room_tokens,
            secret=settings.jwt_secret.reveal(),
            public_key=settings.jwt_public_key.reveal(),
            jwks=JwksKeys(settings.jwt_jwks_url) if settings.jwt_jwks_url else None,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            name_claim=settings.jwt_name_claim,
            leeway=settings.jwt_leeway,
        )

    def describe(self) -> str:
        ways = [
            name
            for name, on in (("HS secret", self._secret), ("public key", self._public_key), ("JWKS", self._jwks))
            if on
        ]
        return "user tokens checked with " + ", ".join(ways)

    async def verify(self, token: str) -> Principal:
        started = time.perf_counter()
        try:
            header = unverified_header(token)
            if header.get("kid") == ROOM_KID:
                return self.room_tokens.verify_room_token(token)
            return await self._verify_user(token, header)
        finally:
            metrics.TOKEN_VERIFY_SECONDS.observe(time.perf_counter() - started)

    async def _verify_user(self, token: str, header: dict[str, Any]) -> Principal:
        algorithm = header.get("alg")
        key: Any
        if algorithm in HMAC_ALGORITHMS and self._secret:
            key = self._secret
        elif algorithm in self._public_algorithms:
            key = self._public_key
        elif self._jwks is not None and isinstance(algorithm, str) and algorithm not in HMAC_ALGORITHMS | {"none"}:
            jwk = await self._jwks.key(header.get("kid"))
            if getattr(jwk, "algorithm_name", algorithm) != algorithm:
                raise AuthError("the token's algorithm does not match its key")
            key = jwk.key
        else:
            raise AuthError(f"token algorithm {str(algorithm)[:10]!r} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"token refused ({type(exc).__name__})") from None
        return principal_from_claims(claims, self._name_claim, leeway=self._leeway)


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, to pick the key; only the short first segment is decoded. (pyjwt's own
    get_unverified_header decodes, and validates character by character, the whole token: doing that
    twice per token doubled the cost of a connection.) The full token is then checked by ``jwt.decode``."""
    segment = token.split(".", 1)[0]
    if len(segment) > 2048 or token.count(".") != 2:
        raise AuthError("malformed token")
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError):
        raise AuthError("malformed token") from None
    if not isinstance(header, dict):
        raise AuthError("malformed token")
    return header


def principal_from_claims(claims: dict[str, Any], name_claim: str, *, leeway: float = 0.0) -> Principal:
    user = claims.get("sub")
    if not isinstance(user, str) or not user or len(user) > 256:
        raise AuthError("token sub must be a non-empty string")
    name = claims.get(name_claim)
    expires = claims.get("exp")
    return Principal(
        user,
        name=name[:200] if isinstance(name, str) else None,
        # The same leeway as at the door: a socket is not let in and closed in the same second.
        expires_at=float(expires) + leeway if isinstance(expires, int | float) else None,
    )
