"""Room names: strict UTF-8 from the raw path, one spelling per name (NFC), no invisible characters."""

from __future__ import annotations

import unicodedata

import pytest

from collab_server.names import room_name
from collab_server.websocket import requested_room


def test_plain_and_escaped_names() -> None:
    assert room_name(b"my-board") == ("my-board", None)
    assert room_name(b"team%2Fplan") == ("team/plan", None)
    assert room_name(b"h%C3%A9llo") == ("héllo", None)


@pytest.mark.parametrize("raw", [b"%FF", b"%FE", b"ok%C3", b"%C0%AF", b"%ED%A0%80"])
def test_invalid_utf8_is_refused_not_replaced(raw: bytes) -> None:
    assert room_name(raw)[1] == "room name is not valid UTF-8 once percent-decoded"


def test_nfc_and_nfd_spellings_are_one_room() -> None:
    nfd = unicodedata.normalize("NFD", "café").encode()
    nfc = unicodedata.normalize("NFC", "café").encode()
    assert nfd != nfc
    assert room_name(nfd) == room_name(nfc) == ("café", None)


@pytest.mark.parametrize(
    ("char", "what"),
    [
        ("\u202e", "invisible formatting characters"),  # right-to-left override
        ("\u2066", "invisible formatting characters"),  # left-to-right isolate
        ("\u200b", "invisible formatting characters"),  # zero-width space
        ("\u200d", "invisible formatting characters"),  # zero-width joiner
        ("\ufeff", "invisible formatting characters"),  # byte order mark
        ("\x00", "control characters"),
        ("\x7f", "control characters"),
    ],
)
def test_format_and_control_characters_are_refused(char: str, what: str) -> None:
    problem = room_name(f"board{char}1".encode())[1]
    assert problem is not None and what in problem


def test_empty_and_long_names_are_refused() -> None:
    assert room_name(b"")[1] == "room name is empty"
    assert room_name(b"a" * 513)[1] == "room name is longer than 512 bytes"
    assert room_name(b"a" * 512)[1] is None


def test_the_endpoint_reads_the_raw_path() -> None:
    # uvicorn's decoded "path" would hold U+FFFD here.
    scope = {"raw_path": b"/ws/%FF", "path": "/ws/\ufffd", "root_path": "", "path_params": {"room": "\ufffd"}}
    assert requested_room(scope)[1] == "room name is not valid UTF-8 once percent-decoded"
    scope = {"raw_path": b"/api/ws/a%20b", "root_path": "/api", "path_params": {"room": "a b"}}
    assert requested_room(scope) == ("a b", None)
