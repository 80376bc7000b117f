"""The server's own tokens, signed with ``COLLAB_SECRET_KEY`` (HS256): room tokens and invites.

- A **room token** is what ``POST /api/rooms/{id}/join`` answers to a password or an invite (and what
  ``collab-server token --room`` prints): it authenticates ``sub`` for one room, with a role, until it
  expires. Header ``kid`` = ``collab-room``.
- An **invite** is a signed promise of a role in a room until it expires; it is exchanged for a room
  token at the join endpoint. Header ``kid`` = ``collab-invite``. An invite is never accepted as a room
  token, nor a room token as an invite: the ``typ`` claim and the ``kid`` must agree.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt

from collab_server.errors import AuthError, Forbidden
from collab_server.principal import Principal, Via
from collab_server.roles import Role

ROOM_KID = "collab-room"
INVITE_KID = "collab-invite"
_ISSUER = "collab-server"
_ALGORITHM = "HS256"
_VIAS: frozenset[str] = frozenset({"password", "invite", "issued"})


class RoomTokens:
    """Mints and checks room tokens and invites with the server's secret key."""

    def __init__(self, key: str, *, ttl: float = 3600.0, leeway: float = 30.0) -> None:
        # No key configured: a random one, good for this process only (the startup log says so).
        self._key = key or secrets.token_urlsafe(32)
        self.ephemeral = not key
        self.ttl = ttl
        self._leeway = leeway

    def __repr__(self) -> str:
        return f"RoomTokens(ttl={self.ttl}, ephemeral={self.ephemeral})"

    def _sign(self, kid: str, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM, headers={"kid": kid})

    def mint(
        self,
        *,
        user: str,
        room: str,
        role: Role,
        via: Via,
        password_epoch: int = 0,
        ttl: float | None = None,
        name: str | None = None,
    ) -> tuple[str, float]:
        """A room token and its expiry (Unix seconds)."""
        now = time.time()
        expires = now + (self.ttl if ttl is None else ttl)
        claims: dict[str, Any] = {
            "iss": _ISSUER, "typ": "room", "sub": user, "room": room, "role": role.value, "via": via,
            "pwe": password_epoch, "iat": int(now), "exp": int(expires),
        }
        if name:
            claims["name"] = name
        return self._sign(ROOM_KID, claims), float(int(expires))

    def mint_invite(self, *, room: str, role: Role, expires_in: float) -> tuple[str, float]:
        now = time.time()
        expires = int(now + expires_in)
        claims = {
            "iss": _ISSUER, "typ": "invite", "room": room, "role": role.value, "iat": int(now), "exp": expires,
            "jti": secrets.token_urlsafe(8),
        }
        return self._sign(INVITE_KID, claims), float(expires)

    def _decode(self, token: str, typ: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token, self._key, algorithms=[_ALGORITHM], issuer=_ISSUER, leeway=self._leeway,
                options={"require": ["exp", "room", "role", "typ"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"{typ} token refused ({type(exc).__name__})") from None
        if claims.get("typ") != typ or not isinstance(claims.get("room"), str):
            raise AuthError(f"not a {typ} token")
        return claims

    def verify_room_token(self, token: str) -> Principal:
        claims = self._decode(token, "room")
        user, via = claims.get("sub"), claims.get("via")
        if not isinstance(user, str) or not user or via not in _VIAS:
            raise AuthError("malformed room token")
        try:
            role = Role(claims["role"])
        except ValueError:
            raise AuthError("malformed room token") from None
        name = claims.get("name")
        return Principal(
            user, name=name if isinstance(name, str) else None, room=claims["room"], role=role, via=via,
            password_epoch=int(claims.get("pwe") or 0), expires_at=float(claims["exp"]),
        )

    def verify_invite(self, token: str, room: str) -> Role:
        """The role an invite for ``room`` grants; AuthError if it is invalid or expired, Forbidden if it
        is for another room."""
        claims = self._decode(token, "invite")
        if claims["room"] != room:
            raise Forbidden("this invite is for another room")
        try:
            role = Role(claims["role"])
        except ValueError:
            raise AuthError("malformed invite") from None
        if role is Role.OWNER:
            raise AuthError("malformed invite")
        return role
