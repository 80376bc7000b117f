"""The access decision (collab_server.access.decide), table by table."""

from __future__ import annotations

import pytest

from collab_server.access import decide
from collab_server.errors import Forbidden, RoomNotFound
from collab_server.principal import ANONYMOUS, Principal
from collab_server.roles import Role
from persistence.room_store import Participant, RoomRecord

PRIVATE = RoomRecord(id="r1", name="", owner="alice", visibility="private", password_epoch=2)
PUBLIC = RoomRecord(id="r1", name="", owner="alice", visibility="public")
PUBLIC_VIEW = RoomRecord(id="r1", name="", owner="alice", visibility="public", settings={"default_role": "viewer"})


def row(role: Role, *, left: bool = False) -> Participant:
    return Participant("r1", "bob", role, "owner", 1.0, 2.0 if left else None)


def room_token(role: Role, *, room: str = "r1", via: str = "invite", epoch: int = 0) -> Principal:
    return Principal("bob", room=room, role=role, via=via, password_epoch=epoch)  # type: ignore[arg-type]


BOB = Principal("bob")

ALLOWED = [
    ("owner", PRIVATE, None, Principal("alice"), Role.OWNER),
    ("anonymous (auth off)", PRIVATE, None, ANONYMOUS, Role.OWNER),
    ("participant editor", PRIVATE, row(Role.EDITOR), BOB, Role.EDITOR),
    ("participant lowered to viewer, token says editor", PRIVATE, row(Role.VIEWER), room_token(Role.EDITOR),
     Role.VIEWER),
    ("participant raised, token says viewer", PRIVATE, row(Role.EDITOR), room_token(Role.VIEWER), Role.EDITOR),
    ("issued room token, no row", PRIVATE, None, room_token(Role.VIEWER, via="issued"), Role.VIEWER),
    ("password token of the current password", PRIVATE, None, room_token(Role.EDITOR, via="password", epoch=2),
     Role.EDITOR),
    ("stranger in a public room", PUBLIC, None, BOB, Role.EDITOR),
    ("stranger in a public room whose default is viewer", PUBLIC_VIEW, None, BOB, Role.VIEWER),
    ("unregistered room, open mode", None, None, BOB, Role.EDITOR),
]


@pytest.mark.parametrize(("case", "room", "participant", "principal", "role"), ALLOWED, ids=[a[0] for a in ALLOWED])
def test_allowed(case: str, room: RoomRecord | None, participant: Participant | None, principal: Principal,
                 role: Role) -> None:
    assert decide("r1", room, participant, principal, "open") == role


REFUSED = [
    ("stranger in a private room", PRIVATE, None, BOB),
    ("removed participant", PRIVATE, row(Role.EDITOR, left=True), BOB),
    ("removed participant in a public room", PUBLIC, row(Role.EDITOR, left=True), BOB),
    ("removed participant with a room token", PRIVATE, row(Role.EDITOR, left=True), room_token(Role.EDITOR)),
    ("room token for another room", PRIVATE, None, room_token(Role.EDITOR, room="r2")),
    ("room token for another room, unregistered room", None, None, room_token(Role.EDITOR, room="r2")),
    ("password token after the password changed", PRIVATE, None, room_token(Role.EDITOR, via="password", epoch=1)),
]


@pytest.mark.parametrize(("case", "room", "participant", "principal"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(case: str, room: RoomRecord | None, participant: Participant | None, principal: Principal) -> None:
    with pytest.raises(Forbidden):
        decide("r1", room, participant, principal, "open")


def test_registered_mode_knows_no_unregistered_rooms() -> None:
    with pytest.raises(RoomNotFound):
        decide("r1", None, None, BOB, "registered")
    with pytest.raises(RoomNotFound):
        decide("r1", None, None, ANONYMOUS, "registered")


def test_roles_are_ordered() -> None:
    assert Role.OWNER.at_least(Role.EDITOR) and Role.EDITOR.at_least(Role.VIEWER)
    assert not Role.VIEWER.at_least(Role.EDITOR)
    assert Role.EDITOR.can_write and not Role.VIEWER.can_write


def test_authentication_is_on_as_soon_as_a_jwt_setting_is_given() -> None:
    from collab_server.settings import Settings

    assert not Settings.from_env({}).auth_enabled
    for key in ("COLLAB_JWT_SECRET", "COLLAB_JWT_PUBLIC_KEY", "COLLAB_JWT_JWKS_URL", "COLLAB_JWT_ISSUER",
                "COLLAB_JWT_AUDIENCE"):
        assert Settings.from_env({key: "x"}).auth_enabled, key
    assert not Settings.from_env({"COLLAB_JWT_SECRET": "x", "COLLAB_AUTH": "off"}).auth_enabled
    assert "s3cr3t-value" not in repr(Settings.from_env({"COLLAB_JWT_SECRET": "s3cr3t-value"}))


def test_startup_refuses_an_open_postgresql_server_and_bad_access_settings() -> None:
    from collab_server.access_setup import check_auth_settings
    from collab_server.errors import ConfigError
    from collab_server.settings import Settings

    postgres = {"COLLAB_DATABASE_URL": "postgresql://u@h/db"}
    with pytest.raises(ConfigError, match="COLLAB_AUTH=off"):
        check_auth_settings(Settings.from_env(postgres))
    check_auth_settings(Settings.from_env({**postgres, "COLLAB_AUTH": "off"}))
    check_auth_settings(Settings.from_env({**postgres, "COLLAB_JWT_SECRET": "x"}))
    check_auth_settings(Settings.from_env({}))  # SQLite: runs open, with a warning
    for bad in ({"COLLAB_ROOMS": "some"}, {"COLLAB_AUTH": "maybe"}, {"COLLAB_BCRYPT_COST": "3"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)
