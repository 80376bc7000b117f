"""Room names: invalid UTF-8 is refused (not folded into U+FFFD), NFC and NFD are one room, invisible
formatting characters are refused."""

from __future__ import annotations

import asyncio
import unicodedata
from urllib.parse import quote

import pytest
from websockets.asyncio.client import connect

from collab_server.protocol import encode_sync_step1
from tests.support.eventually import eventually
from tests.support.floods import close_code
from tests.support.servers import ServerProcess
from tests.support.yjs_clients import YjsNode


@pytest.mark.parametrize("path", ["%FF", "%FE", "board%C3", "%ED%A0%80"])
async def test_invalid_utf8_names_are_refused(server: ServerProcess, path: str) -> None:
    async with connect(f"{server.url}/{path}") as ws:
        code, reason = await close_code(ws)
    assert (code, reason) == (4400, "room name is not valid UTF-8 once percent-decoded")


@pytest.mark.parametrize(
    "char",
    ["\u202e", "\u2066", "\u200b", "\u200d", "\ufeff", "\u0007"],
    ids=["RLO", "LRI", "ZWSP", "ZWJ", "BOM", "BEL"],
)
async def test_invisible_and_control_characters_are_refused(server: ServerProcess, room_name: str, char: str) -> None:
    async with connect(f"{server.url}/{quote(room_name + char + 'x')}") as ws:
        code, reason = await close_code(ws)
    assert code == 4400
    assert reason.startswith("room name contains")


async def test_nfc_and_nfd_spellings_reach_one_room(node: YjsNode, server: ServerProcess, room_name: str) -> None:
    nfc = unicodedata.normalize("NFC", room_name + "-café")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    writer = await node.connect(server.url, nfd)
    await writer.wait_synced()
    await writer.insert_text(0, "one room")

    async def seen_through_nfc() -> None:
        async with connect(f"{server.url}/{quote(nfc)}") as reader:
            await reader.recv()
            await reader.send(encode_sync_step1(b"\x00"))
            while (reply := await asyncio.wait_for(reader.recv(decode=False), 5))[:2] != b"\x00\x01":
                pass
        assert b"one room" in reply

    await eventually(seen_through_nfc)
