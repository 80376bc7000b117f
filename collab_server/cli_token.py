"""``collab-server token``: print a token for local use (development, scripts, tests).

    collab-server token --sub alice                       a user token, signed with COLLAB_JWT_SECRET
    collab-server token --sub alice --room ID --role viewer --ttl 1h
                                                          a room token, signed with COLLAB_SECRET_KEY

A user token carries ``iss``/``aud`` when COLLAB_JWT_ISSUER/AUDIENCE are set, so the server accepts it.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence

import jwt

from collab_server.cli_args import build_parser, settings_from_args
from collab_server.errors import ConfigError
from collab_server.roles import Role
from collab_server.room_tokens import RoomTokens
from collab_server.settings import Settings

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` → seconds."""
    match = _DURATION.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def mint(settings: Settings, *, sub: str, room: str | None, role: Role, ttl: float, name: str | None) -> str:
    if room is not None:
        if not settings.secret_key:
            raise ConfigError("room tokens are signed with COLLAB_SECRET_KEY: set it (the server must have the same)")
        token, _ = RoomTokens(settings.secret_key.reveal()).mint(
            user=sub, room=room, role=role, via="issued", ttl=ttl, name=name
        )
        return token
    if not settings.jwt_secret:
        raise ConfigError(
            "user tokens are signed with COLLAB_JWT_SECRET: set it, or pass --room for a room token "
            "(with an RS/ES key or JWKS, your identity provider issues user tokens)"
        )
    now = int(time.time())
    claims: dict[str, object] = {"sub": sub, "iat": now, "exp": now + int(ttl)}
    if name:
        claims[settings.jwt_name_claim] = name
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret.reveal(), algorithm="HS256")


def token_main(argv: Sequence[str]) -> int:
    parser = build_parser("collab-server token", "Print a user token (or, with --room, a room token).")
    parser.add_argument("--sub", required=True, help="the user id (the token's sub)")
    parser.add_argument("--name", default=None, help="display name")
    parser.add_argument("--room", default=None, help="make a room token for this room")
    parser.add_argument("--role", default="editor", choices=[r.value for r in Role], help="role of a room token")
    parser.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 7d (default 1h)")
    args = parser.parse_args(argv)
    try:
        ttl = parse_duration(args.ttl)
        settings = settings_from_args(args)
        print(mint(settings, sub=args.sub, room=args.room, role=Role(args.role), ttl=ttl, name=args.name))
    except (ConfigError, ValueError) as exc:
        print(f"collab-server token: {exc}", file=sys.stderr)
        return 2
    return 0
