"""Worker answer frames taken apart in memory, for tests (the server reads them from the pipe as they
arrive: ``collab_server.crdt.process``; the layout is ``collab_server.crdt.codec``'s)."""

from __future__ import annotations

import struct

from collab_server.crdt.codec import HEADER, CodecError


def split_answer(frame: bytes) -> tuple[bytes, list[bytes]]:
    """An answer frame as its body and its strings sent out of line."""
    body_end = HEADER + int.from_bytes(frame[:HEADER], "little")
    count = int.from_bytes(frame[body_end : body_end + HEADER], "little")
    at = body_end + HEADER + count * HEADER
    strings = []
    for length in struct.unpack(f"<{count}I", frame[body_end + HEADER : at]):
        strings.append(frame[at : at + length])
        at += length
    if at != len(frame):
        raise CodecError("an answer frame of the wrong length")
    return frame[HEADER:body_end], strings
