"""Token verification without a server: algorithms, claims, room tokens and invites."""

from __future__ import annotations

import time

import jwt
import pytest

from collab_server.api.ratelimit import AttemptLimiter
from collab_server.cli_token import mint, parse_duration
from collab_server.errors import AuthError, Forbidden, RateLimited
from collab_server.roles import Role
from collab_server.room_tokens import RoomTokens
from collab_server.secrets import Secret
from collab_server.settings import Settings
from collab_server.tokens import TokenVerifier
from tests.support import tokens

RSA = tokens.RsaKey()


def verifier(**options: str) -> TokenVerifier:
    return TokenVerifier(RoomTokens(tokens.SERVER_KEY), **options)  # type: ignore[arg-type]


async def test_hs256_with_the_secret_gives_the_principal_and_name() -> None:
    check = verifier(secret=tokens.SECRET, issuer=tokens.ISSUER, audience=tokens.AUDIENCE)
    principal = await check.verify(tokens.hs256("alice", name="Alice A."))
    assert (principal.user, principal.name, principal.room) == ("alice", "Alice A.", None)


async def test_rs256_with_the_public_key_and_no_confusion_with_hs256() -> None:
    check = verifier(secret=tokens.SECRET, public_key=RSA.public_pem)
    assert (await check.verify(RSA.sign(tokens.claims("bob")))).user == "bob"
    for bad in (tokens.hmac_with(RSA.public_pem), tokens.unsigned(), tokens.es256()):
        with pytest.raises(AuthError):
            await check.verify(bad)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: tokens.hs256(ttl=-120), id="expired"),
        pytest.param(lambda: tokens.hs256(nbf=int(time.time()) + 120), id="not yet valid"),
        pytest.param(lambda: tokens.hs256(iss="other"), id="issuer"),
        pytest.param(lambda: tokens.hs256(aud="other"), id="audience"),
        pytest.param(lambda: tokens.without_sub(), id="no sub"),
        pytest.param(lambda: jwt.encode({"sub": "a"}, tokens.SECRET, algorithm="HS256"), id="no exp"),
        pytest.param(lambda: "a.b", id="malformed"),
    ],
)
async def test_claims_are_checked(token: object) -> None:
    check = verifier(secret=tokens.SECRET, issuer=tokens.ISSUER, audience=tokens.AUDIENCE)
    with pytest.raises(AuthError):
        await check.verify(token())  # type: ignore[operator]


async def test_leeway_accepts_a_token_that_expired_moments_ago() -> None:
    check = TokenVerifier(RoomTokens(tokens.SERVER_KEY), secret=tokens.SECRET, leeway=30)
    assert (await check.verify(tokens.hs256(ttl=-5))).user == "alice"


async def test_room_tokens_and_invites_are_not_interchangeable() -> None:
    keys = RoomTokens(tokens.SERVER_KEY)
    room_token, _ = keys.mint(user="bob", room="r1", role=Role.VIEWER, via="password", password_epoch=3)
    principal = await verifier(secret=tokens.SECRET).verify(room_token)
    assert (principal.user, principal.room, principal.role, principal.via, principal.password_epoch) == (
        "bob", "r1", Role.VIEWER, "password", 3
    )
    invite, _ = keys.mint_invite(room="r1", role=Role.EDITOR, expires_in=60)
    assert keys.verify_invite(invite, "r1") is Role.EDITOR
    with pytest.raises(Forbidden):
        keys.verify_invite(invite, "r2")
    with pytest.raises(AuthError):
        keys.verify_invite(room_token, "r1")
    with pytest.raises(AuthError):
        await verifier(secret=tokens.SECRET).verify(invite)
    with pytest.raises(AuthError):
        RoomTokens("another-key-" * 4).verify_room_token(room_token)


def test_the_limiter_refuses_past_the_count_with_a_retry_after() -> None:
    limiter = AttemptLimiter(3, 60.0, max_keys=2)
    for _ in range(3):
        limiter.hit("r", "1.2.3.4")
    with pytest.raises(RateLimited) as refused:
        limiter.hit("r", "1.2.3.4")
    assert 1 <= refused.value.retry_after <= 60
    limiter.hit("other-room", "1.2.3.4")  # per room
    limiter.hit("r", "5.6.7.8")  # and per address; the oldest key is forgotten past max_keys
    limiter.hit("r", "1.2.3.4")


def test_cli_tokens_verify_on_a_server_with_the_same_settings() -> None:
    settings = Settings(jwt_secret=Secret(tokens.SECRET), jwt_issuer="iss", secret_key=Secret(tokens.SERVER_KEY))
    user_token = mint(settings, sub="alice", room=None, role=Role.EDITOR, ttl=parse_duration("1h"), name="A")
    claims = jwt.decode(user_token, tokens.SECRET, algorithms=["HS256"], issuer="iss")
    assert claims["sub"] == "alice" and claims["name"] == "A" and 3590 < claims["exp"] - claims["iat"] <= 3600
    room_token = mint(settings, sub="bob", room="r9", role=Role.VIEWER, ttl=parse_duration("15m"), name=None)
    principal = RoomTokens(tokens.SERVER_KEY).verify_room_token(room_token)
    assert (principal.room, principal.role, principal.via) == ("r9", Role.VIEWER, "issued")
    assert parse_duration("7d") == 7 * 86400
    with pytest.raises(ValueError):
        parse_duration("soon")
