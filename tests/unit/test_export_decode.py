"""exports.decode.Decoder: one child process per document, the next one started ahead, none left behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from exports.decode import Decoder
from exports.errors import InvalidBoard
from exports.priority import descendants
from tests.support.boards import base_records, board_update, geo
from tests.support.eventually import eventually


def _decode_children() -> list[int]:
    found = []
    for pid in descendants(os.getpid()):
        try:
            if b"exports.decode" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass  # exited meanwhile
    return found


async def test_a_child_is_kept_started_for_the_next_document_and_stopped_on_close() -> None:
    decoder = Decoder(timeout=30)
    update = board_update("r", [*base_records(), geo("shape:a", text="A")])
    try:
        board = await decoder.decode("r", None, [update])
        assert board.records[-1]["id"] == "shape:a"
        spare = _decode_children()
        assert len(spare) == 1  # the next document's child, waiting on stdin
        assert os.getpriority(os.PRIO_PROCESS, spare[0]) >= 10
        assert (await decoder.decode("r", None, [update])).records[-1]["id"] == "shape:a"
        assert _decode_children() != spare  # that one decoded and exited; another waits
    finally:
        await decoder.close()
    assert _decode_children() == []


async def test_a_child_that_died_while_waiting_is_replaced() -> None:
    decoder = Decoder(timeout=30)
    update = board_update("r", [*base_records(), geo("shape:a")])
    try:
        await decoder.decode("r", None, [update])
        killed = _decode_children()
        for pid in killed:
            os.kill(pid, signal.SIGKILL)

        def dead() -> None:
            for pid in killed:
                stat = Path(f"/proc/{pid}/stat")
                assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"

        await eventually(dead)
        assert (await decoder.decode("r", None, [update])).records[-1]["id"] == "shape:a"
    finally:
        await decoder.close()


async def test_bytes_that_do_not_decode_fail_with_the_reason_and_the_next_document_decodes() -> None:
    decoder = Decoder(timeout=30)
    try:
        with pytest.raises(InvalidBoard, match="cannot be decoded"):
            await decoder.decode("r", None, [b"\x01\x02garbage"])
        update = board_update("r", [*base_records(), geo("shape:b")])
        assert (await decoder.decode("r", None, [update])).records[-1]["id"] == "shape:b"
    finally:
        await decoder.close()
