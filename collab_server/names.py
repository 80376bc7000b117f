"""Room names: what follows ``/ws/`` in the request path, percent-decoded, as one canonical string.

The name is decoded from the raw path here, not taken from the server's ``path``: servers decode invalid
UTF-8 escapes to U+FFFD, which would make ``/ws/%FF`` and ``/ws/%FE`` one room. A name must be valid
UTF-8; it is normalised to NFC (the NFC and NFD spellings of "é" are one room); control characters (Cc)
and format characters (Cf: bidi overrides, zero-width spaces and joiners, ...) are refused, since they
make names that look alike but differ, or display reordered.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote_to_bytes

MAX_ROOM_NAME_BYTES = 512
_REFUSED_CATEGORIES = {"Cc": "control characters", "Cf": "invisible formatting characters (Cf)"}


def room_name_problem(name: str) -> str | None:
    """Why ``name`` (already decoded and normalised) cannot be a room name, or None if it can."""
    if not name:
        return "room name is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_ROOM_NAME_BYTES:
        return f"room name is longer than {MAX_ROOM_NAME_BYTES} bytes"
    for char in name:
        what = _REFUSED_CATEGORIES.get(unicodedata.category(char))
        if what is not None:
            return f"room name contains {what}"
    return None


def room_name(raw_path: bytes) -> tuple[str, str | None]:
    """The room named by ``raw_path`` (the percent-encoded rest of the path after ``/ws/``) and why it is
    refused (None when it is accepted)."""
    try:
        decoded = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        return "", "room name is not valid UTF-8 once percent-decoded"
    name = unicodedata.normalize("NFC", decoded)
    return name, room_name_problem(name)
