"""Who may enter, row by row, against a real server process: over REST and over the websocket.

The server checks HS256 user tokens (shared secret) and RS256 ones (public key), with issuer and
audience; rooms must be registered. Each row is one credential and what must happen to it; refused
websockets are closed with their 44xx code before any document byte (the first frame a socket receives
is either its close or the server's sync step1).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from collab_server.roles import Role
from collab_server.room_tokens import RoomTokens
from tests.support import tokens
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.e2e

RSA = tokens.RsaKey()


def access_env(directory: Path) -> dict[str, str]:
    return {
        "COLLAB_DATABASE_URL": f"sqlite:///{directory}/collab.sqlite3",
        "COLLAB_JWT_SECRET": tokens.SECRET,
        "COLLAB_JWT_PUBLIC_KEY": RSA.public_pem,
        "COLLAB_JWT_ISSUER": tokens.ISSUER,
        "COLLAB_JWT_AUDIENCE": tokens.AUDIENCE,
        "COLLAB_JWT_LEEWAY": "5",
        "COLLAB_SECRET_KEY": tokens.SERVER_KEY,
        "COLLAB_ROOMS": "registered",
        "COLLAB_BCRYPT_COST": "4",
        "COLLAB_ROOM_GRACE": "0.5",
    }


@dataclass
class World:
    """A server, and the rooms alice made on it."""

    server: ServerProcess
    private: str  # private, password "sesame"
    public: str
    deleted: str
    invite_viewer: str  # an invite to the private room, role viewer

    def room(self, key: str) -> str:
        return {"private": self.private, "public": self.public, "deleted": self.deleted}.get(key, key)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("access")
    server = ServerProcess(env=access_env(directory), log_path=directory / "server.log").start()
    alice = tokens.bearer(tokens.hs256("alice"))
    with httpx.Client(base_url=server.http, headers=alice) as client:
        def create(body: dict[str, object]) -> str:
            response = client.post("/api/rooms", json=body)
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        private = create({"name": "secret", "visibility": "private", "password": "sesame"})
        public = create({"name": "open"})
        deleted = create({"name": "gone"})
        assert client.delete(f"/api/rooms/{deleted}").status_code == 204
        invite = client.post(f"/api/rooms/{private}/invites", json={"role": "viewer", "expires_in": 600})
        assert invite.status_code == 201, invite.text
    yield World(server, private, public, deleted, invite.json()["token"])
    server.stop()


def room_token(world: World, room: str, role: Role = Role.EDITOR, user: str = "rita") -> str:
    token, _ = RoomTokens(tokens.SERVER_KEY).mint(user=user, room=room, role=role, via="issued")
    return token


def joined_token(world: World, body: dict[str, str], user: str | None = None) -> str:
    headers = tokens.bearer(tokens.hs256(user)) if user else {}
    response = httpx.post(f"{world.server.http}/api/rooms/{world.private}/join", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


Credential = Callable[[World], str | None]

# -- credentials that prove nothing: 401 over REST, 4401 on the websocket -------------------------------
BAD_TOKENS: dict[str, Credential] = {
    "no token": lambda w: None,
    "malformed": lambda w: "not.a.jwt",
    "garbage": lambda w: "x" * 300,
    "bad signature": lambda w: tokens.hs256("alice", key="an-entirely-different-secret-of-32-bytes"),
    "alg none": lambda w: tokens.unsigned("alice"),
    "HS256 signed with the RSA public key": lambda w: tokens.hmac_with(RSA.public_pem, "alice"),
    "unconfigured ES256 key": lambda w: tokens.es256("alice"),
    "expired": lambda w: tokens.hs256("alice", ttl=-60),
    "not yet valid": lambda w: tokens.hs256("alice", nbf=int(time.time()) + 120),
    "wrong issuer": lambda w: tokens.hs256("alice", iss="https://elsewhere.test"),
    "wrong audience": lambda w: tokens.hs256("alice", aud="another-app"),
    "no sub": lambda w: tokens.without_sub(),
    "room token signed with another key": lambda w: RoomTokens("k" * 40).mint(
        user="alice", room=w.private, role=Role.EDITOR, via="issued")[0],
    "invite used as a token": lambda w: w.invite_viewer,
}


async def ws_outcome(world: World, room: str, token: str | None) -> int | str:
    """The close code the server sends at once, or "open" when it sends the first sync message instead."""
    query = f"?token={token}" if token is not None else ""
    async with connect(f"{world.server.url}/{room}{query}", open_timeout=5) as ws:
        try:
            first = await ws.recv()
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code
        assert isinstance(first, bytes) and first[:2] == b"\x00\x00", "expected the server's sync step1"
        return "open"


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_credentials_are_refused_over_rest_and_websocket(world: World, case: str) -> None:
    token = BAD_TOKENS[case](world)
    headers = tokens.bearer(token) if token is not None else {}
    async with httpx.AsyncClient(base_url=world.server.http, headers=headers) as client:
        listed = await client.get("/api/rooms")
        assert listed.status_code == 401, listed.text
        assert listed.json()["error"] == "unauthenticated"
        assert (await client.get(f"/api/rooms/{world.public}")).status_code == 401
    assert await ws_outcome(world, world.public, token) == 4401


# -- websocket rows: (room, credential) → close code or "open" -----------------------------------------
WS_ROWS: dict[str, tuple[str, Credential, int | str]] = {
    "owner, HS256": ("private", lambda w: tokens.hs256("alice"), "open"),
    "owner, RS256 from the public key": ("private", lambda w: RSA.sign(tokens.claims("alice")), "open"),
    "stranger in a private room": ("private", lambda w: tokens.hs256("mallory"), 4403),
    "stranger in a public room": ("public", lambda w: tokens.hs256("mallory"), "open"),
    "room token for this room": ("private", lambda w: room_token(w, w.private), "open"),
    "room token for another room": ("private", lambda w: room_token(w, w.public), 4403),
    "room token from the password": ("private", lambda w: joined_token(w, {"password": "sesame"}), "open"),
    "room token from an invite": ("private", lambda w: joined_token(w, {"invite": w.invite_viewer}, "ivy"), "open"),
    "unregistered room": ("never-created-room", lambda w: tokens.hs256("alice"), 4404),
    "deleted room": ("deleted", lambda w: tokens.hs256("alice"), 4404),
}


@pytest.mark.parametrize("case", sorted(WS_ROWS))
async def test_websocket_admission(world: World, case: str) -> None:
    room, credential, expected = WS_ROWS[case]
    assert await ws_outcome(world, world.room(room), credential(world)) == expected


# -- REST rows: (method, path, credential, body) → status -----------------------------------------------
ALICE: Credential = lambda w: tokens.hs256("alice")  # noqa: E731
BOB: Credential = lambda w: tokens.hs256("bob")  # noqa: E731
REST_ROWS: dict[str, tuple[str, str, Credential, dict[str, object] | None, int]] = {
    "owner reads a private room": ("GET", "/api/rooms/{private}", ALICE, None, 200),
    "stranger reads a private room: 404, not 403": ("GET", "/api/rooms/{private}", BOB, None, 404),
    "stranger reads a public room": ("GET", "/api/rooms/{public}", BOB, None, 200),
    "room token for another room reads": ("GET", "/api/rooms/{private}", lambda w: room_token(w, w.public), None, 404),
    "room token reads its room": ("GET", "/api/rooms/{private}", lambda w: room_token(w, w.private), None, 200),
    "non-owner PATCH": ("PATCH", "/api/rooms/{public}", BOB, {"name": "mine now"}, 403),
    "non-owner DELETE": ("DELETE", "/api/rooms/{public}", BOB, None, 403),
    "non-owner lists participants": ("GET", "/api/rooms/{public}/participants", BOB, None, 403),
    "non-owner sets a role": ("PUT", "/api/rooms/{public}/participants/bob", BOB, {"role": "editor"}, 403),
    "non-owner removes a participant": ("DELETE", "/api/rooms/{public}/participants/alice", BOB, None, 403),
    "non-owner invites": ("POST", "/api/rooms/{public}/invites", BOB, {"role": "editor"}, 403),
    "editor by room token PATCHes": ("PATCH", "/api/rooms/{private}", lambda w: room_token(w, w.private),
                                     {"name": "x"}, 403),
    "owner changes the owner's role": ("PUT", "/api/rooms/{public}/participants/alice", ALICE, {"role": "viewer"},
                                       409),
    "wrong password": ("POST", "/api/rooms/{private}/join", BOB, {"password": "open sesame"}, 403),
    "expired invite": ("POST", "/api/rooms/{private}/join", BOB, {"invite": "{expired_invite}"}, 403),
    "invite for another room": ("POST", "/api/rooms/{private}/join", BOB, {"invite": "{public_invite}"}, 403),
    "both password and invite": ("POST", "/api/rooms/{private}/join", BOB, {"password": "a", "invite": "b"}, 422),
    "owner reads a deleted room": ("GET", "/api/rooms/{deleted}", ALICE, None, 404),
    "owner deletes a deleted room": ("DELETE", "/api/rooms/{deleted}", ALICE, None, 404),
    "owner lists participants": ("GET", "/api/rooms/{private}/participants", ALICE, None, 200),
    "owner renames": ("PATCH", "/api/rooms/{public}", ALICE, {"name": "renamed"}, 200),
    "invalid visibility": ("POST", "/api/rooms", ALICE, {"visibility": "secret"}, 422),
    "unknown field": ("POST", "/api/rooms", ALICE, {"name": "x", "owner": "bob"}, 422),
    "presence of a private room, stranger": ("GET", "/api/rooms/{private}/presence", BOB, None, 404),
    "presence of a public room, stranger": ("GET", "/api/rooms/{public}/presence", BOB, None, 200),
}


def _fill(world: World, text: str) -> str:
    keys = RoomTokens(tokens.SERVER_KEY)
    values = {
        "private": world.private, "public": world.public, "deleted": world.deleted,
        "expired_invite": keys.mint_invite(room=world.private, role=Role.EDITOR, expires_in=-120)[0],
        "public_invite": keys.mint_invite(room=world.public, role=Role.EDITOR, expires_in=600)[0],
    }
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.mark.parametrize("case", sorted(REST_ROWS))
async def test_rest_authorization(world: World, case: str) -> None:
    method, path, credential, body, expected = REST_ROWS[case]
    token = credential(world)
    headers = tokens.bearer(token) if token is not None else {}
    json_body = {key: _fill(world, value) if isinstance(value, str) else value for key, value in body.items()} if (
        body is not None) else None
    async with httpx.AsyncClient(base_url=world.server.http, headers=headers) as client:
        response = await client.request(method, _fill(world, path), json=json_body)
    assert response.status_code == expected, response.text
    if expected >= 400:
        assert set(response.json()) == {"error", "detail"}


async def test_refusals_are_counted_and_logged_without_token_contents(world: World) -> None:
    secret_looking = tokens.hs256("alice", key="another-secret-key-that-is-long-enough")
    before = world.server.metric('collab_security_events_total{kind="ws_unauthenticated"}', 0)
    assert await ws_outcome(world, world.public, secret_looking) == 4401
    assert world.server.metric('collab_security_events_total{kind="ws_unauthenticated"}') == before + 1
    signature = secret_looking.rsplit(".", 1)[1]
    assert signature not in world.server.log_text()
    assert "security: ws_unauthenticated" in world.server.log_text()


async def closed_code(ws: ClientConnection, timeout: float = 5.0) -> int:
    """Read until the server closes the socket; its close code."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await ws.recv()
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None
                return closed.rcvd.code


async def test_going_private_and_changing_the_password_cut_off_open_sockets(world: World) -> None:
    alice = tokens.bearer(tokens.hs256("alice"))
    async with httpx.AsyncClient(base_url=world.server.http, headers=alice) as client:
        room = (await client.post("/api/rooms", json={"password": "one"})).json()["id"]
        async with httpx.AsyncClient(base_url=world.server.http, headers=tokens.bearer(tokens.hs256("pat"))) as pat:
            joined = await pat.post(f"/api/rooms/{room}/join", json={"password": "one"})
        assert joined.status_code == 200, joined.text
        base = f"{world.server.url}/{room}?token="
        async with connect(base + tokens.hs256("sam")) as sam, connect(base + joined.json()["token"]) as pat_ws:
            for ws in (sam, pat_ws):
                assert isinstance(await ws.recv(), bytes)  # admitted: the server's sync step1
            assert (await client.patch(f"/api/rooms/{room}", json={"visibility": "private"})).status_code == 200
            assert await closed_code(sam) == 4403  # a stranger had only the room's publicity
            assert (await client.patch(f"/api/rooms/{room}", json={"password": "two"})).status_code == 200
            assert await closed_code(pat_ws) == 4403  # pat was in by the old password
        assert await ws_outcome(world, room, joined.json()["token"]) == 4403


async def test_a_flood_of_bad_tokens_loads_no_room(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.server.http, headers=tokens.bearer(tokens.hs256("alice"))) as client:
        room = (await client.post("/api/rooms", json={"name": "quiet"})).json()["id"]
    loads = world.server.metric("collab_room_load_seconds_count", 0)
    for n in range(30):
        bad = BAD_TOKENS[sorted(BAD_TOKENS)[n % len(BAD_TOKENS)]](world)
        assert await ws_outcome(world, room, bad) == 4401
    assert world.server.metric("collab_room_load_seconds_count", 0) == loads
    assert await ws_outcome(world, room, tokens.hs256("alice")) == "open"
    assert world.server.metric("collab_room_load_seconds_count") == loads + 1


async def test_a_socket_is_closed_when_the_token_that_opened_it_expires(world: World) -> None:
    # 2 s of life plus the server's 5 s leeway: closed with 4401 then, and not before.
    token = tokens.hs256("alice", ttl=2)
    opened = time.monotonic()
    async with connect(f"{world.server.url}/{world.public}?token={token}") as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 30)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "token expired: reconnect with a fresh token")
    assert time.monotonic() - opened >= 5.0  # never before the token (with its leeway) expired


async def test_an_invite_links_to_the_app_page_when_one_is_configured(tmp_path: Path) -> None:
    env = {**access_env(tmp_path), "COLLAB_INVITE_URL": "https://app.example/board/{room}?invite={invite}"}
    server = ServerProcess(env=env).start()
    try:
        async with httpx.AsyncClient(base_url=server.http, headers=tokens.bearer(tokens.hs256("alice"))) as client:
            room = (await client.post("/api/rooms", json={"name": "r"})).json()["id"]
            invite = (await client.post(f"/api/rooms/{room}/invites", json={"role": "viewer"})).json()
        assert invite["url"] == f"https://app.example/board/{room}?invite={invite['token']}"
        # what the app's page then does with it: exchange it for a room token (as a guest: no user token)
        async with httpx.AsyncClient(base_url=server.http) as guest:
            joined = await guest.post(f"/api/rooms/{room}/join", json={"invite": invite["token"]})
        assert joined.status_code == 200 and joined.json()["role"] == "viewer"
    finally:
        server.stop()
