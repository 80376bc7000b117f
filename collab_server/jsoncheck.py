"""Awareness states must be JSON that every client can ``JSON.parse``, and cheap to check.

``NaN`` and ``Infinity`` are refused (``json.loads`` accepts them; browsers throw), and nesting is
measured before parsing, in linear time and C loops only, so ``json.loads`` never recurses deep enough to
raise RecursionError.
"""

from __future__ import annotations

import json
import operator
import re
from itertools import accumulate, count

# Bytes that shape JSON structure: quotes, brackets. Everything else is deleted before measuring depth.
_NOT_STRUCTURAL = bytes(b for b in range(256) if b not in b'"[]{}')
_JSON_STRING = re.compile(rb'"[^"]*"')
# Steps of depth, offset by one so that they are bytes: an opening bracket 2, a closing one 0, a quote 1.
_DEPTH_STEPS = bytes.maketrans(b"[{]}\"", b"\x02\x02\x00\x00\x01")


def json_depth(raw: bytes) -> int:
    """Deepest nesting of arrays and objects in the JSON text ``raw``, measured without parsing it, in C
    loops only (linear time): escapes are removed, then strings, then depth is the largest prefix sum.

    For malformed text the figure is right up to where the text stops being JSON, which is as far as
    ``json.loads`` would recurse.
    """
    # Left to right, JSON pairs backslashes as bytes.replace does; what remains escapes a non-quote.
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = _JSON_STRING.sub(b"", unescaped.translate(None, _NOT_STRUCTURAL))
    steps = skeleton.translate(_DEPTH_STEPS)
    return max(map(operator.sub, accumulate(steps), count(1)), default=0)


def _refuse_constant(name: str) -> None:
    raise ValueError(name)


def json_problem(raw: bytes, text: str, max_bytes: int, max_depth: int) -> str | None:
    """Why JSON ``text`` (``raw`` in UTF-8) is not acceptable for other clients, or None."""
    if len(raw) > max_bytes:
        return f"is {len(raw)} bytes, more than {max_bytes}"
    # Counting brackets is cheap, and most states have a handful, far below the limit.
    if raw.count(b"[") + raw.count(b"{") > max_depth and json_depth(raw) > max_depth:
        return f"is nested deeper than {max_depth} levels"
    try:
        json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # unreachable after the depth check; kept so that it can never escape
        return f"is nested deeper than {max_depth} levels"
    except ValueError as exc:
        if str(exc) in {"NaN", "Infinity", "-Infinity"}:
            return f"holds {exc}, which JSON does not allow"
        return "is not JSON"
    return None
