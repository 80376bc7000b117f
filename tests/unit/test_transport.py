"""The hand-built frame header must match what the websockets library itself would send."""

from __future__ import annotations

import pytest
from websockets.frames import OP_BINARY, Frame

from collab_server.transport import binary_frame_header


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 5 * 1024 * 1024])
def test_header_matches_websockets_framing(length: int) -> None:
    payload = bytes(length)
    expected = Frame(OP_BINARY, payload).serialize(mask=False)
    assert binary_frame_header(length) + payload == expected
