"""Every count and size a client controls in a frame has a bound; awareness JSON is what clients can parse."""

from __future__ import annotations

import json
import random
import sys

import pytest
from pycrdt import write_var_uint

from collab_server.errors import ProtocolError
from collab_server.jsoncheck import json_depth
from collab_server.protocol import (
    AwarenessEntry,
    FrameLimits,
    decode_awareness,
    decode_frame,
    encode_awareness,
    encode_query_awareness,
    encode_sync_step1,
)


def _state_vector(entries: int) -> bytes:
    return write_var_uint(entries) + b"".join(write_var_uint(client) + b"\x01" for client in range(1, entries + 1))


def _awareness(*states: str, first_id: int = 1) -> bytes:
    return encode_awareness([AwarenessEntry(first_id + i, 1, state) for i, state in enumerate(states)])


def test_a_frame_may_hold_up_to_the_message_limit() -> None:
    limits = FrameLimits(messages=100)
    assert len(decode_frame(encode_query_awareness() * 100, limits)) == 100
    with pytest.raises(ProtocolError, match="more than 100 messages"):
        decode_frame(encode_query_awareness() * 101, limits)


def test_32_mib_of_query_awareness_is_refused_after_the_limit_not_decoded_whole() -> None:
    # The 32 MiB frame of 0x03; decoding stops at message 513 whatever the frame's size.
    frame = encode_query_awareness() * (32 * 1024 * 1024)
    with pytest.raises(ProtocolError, match="more than 512 messages"):
        decode_frame(frame)


def test_state_vectors_are_checked_before_the_crdt_library_sees_them() -> None:
    limits = FrameLimits(state_vector_clients=10)
    assert decode_frame(encode_sync_step1(_state_vector(10)), limits)
    with pytest.raises(ProtocolError, match="11 entries, more than 10"):
        decode_frame(encode_sync_step1(_state_vector(11)), limits)
    with pytest.raises(ProtocolError, match="trailing bytes"):
        decode_frame(encode_sync_step1(_state_vector(2) + b"\x05"), limits)
    with pytest.raises(ProtocolError, match="truncated varint in state vector clock"):
        decode_frame(encode_sync_step1(b"\x02\x01\x01\x02"), limits)


def test_awareness_entries_per_message_are_bounded_before_decoding_them() -> None:
    # The 1.5 M new ids in one message: the count alone refuses it.
    update = write_var_uint(1_500_000) + b"\x01\x01\x02{}"
    with pytest.raises(ProtocolError, match="1500000 client states, more than 5000"):
        decode_awareness(update)


def test_an_awareness_state_is_bounded_in_bytes() -> None:
    limits = FrameLimits(awareness_state_bytes=100)
    decode_awareness(_awareness(json.dumps({"x": "a" * 80})), limits)
    with pytest.raises(ProtocolError, match="more than 100"):
        decode_awareness(_awareness(json.dumps({"x": "a" * 100})), limits)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(constant: str) -> None:
    with pytest.raises(ProtocolError, match=f"holds {constant}, which JSON does not allow"):
        decode_awareness(_awareness('{"cursor": {"x": ' + constant + '}}'))


def test_strings_that_spell_nan_are_fine() -> None:
    assert decode_awareness(_awareness('{"name": "NaN", "x": 1e10}'))[0].state == '{"name": "NaN", "x": 1e10}'


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_deep_json_is_refused_without_recursion(depth: int) -> None:
    state = "[" * depth + "]" * depth
    with pytest.raises(ProtocolError, match="nested deeper than 64 levels"):
        decode_awareness(_awareness(state), FrameLimits(awareness_state_bytes=1 << 20))


def test_unbalanced_deep_json_is_refused_too() -> None:
    # json.loads would recurse on every "[" before finding the text truncated.
    with pytest.raises(ProtocolError, match="nested deeper"):
        decode_awareness(_awareness('{"a":' * 50_000), FrameLimits(awareness_state_bytes=1 << 20))


def test_json_at_the_depth_limit_is_accepted() -> None:
    state = '{"a":' * 32 + "[" * 32 + "]" * 32 + "}" * 32
    assert decode_awareness(_awareness(state))[0].state == state


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "[[[[", "b": [1, {"c": "}}}"}]}',
        r'["\\", [["\"[", {"x": "\\\"]]"}]]]',
        r'{"k\"[": [[[]]], "v": "\u005b"}',
        "[]",
        '"just a string with [ and {"',
        "42",
    ],
)
def test_json_depth_matches_the_parsed_depth(text: str) -> None:
    assert json_depth(text.encode()) == _parsed_depth(json.loads(text))


def test_json_depth_matches_on_random_documents() -> None:
    rng = random.Random(8)
    for _ in range(200):
        value = _random_json(rng, rng.randint(0, 12))
        text = json.dumps(value)
        assert json_depth(text.encode()) == _parsed_depth(value), text


def test_no_recursion_limit_is_needed() -> None:
    # The depth check runs in C loops: a recursion limit far below the nesting changes nothing.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100)
    try:
        with pytest.raises(ProtocolError, match="nested deeper"):
            decode_awareness(_awareness("[" * 10_000), FrameLimits(awareness_state_bytes=1 << 20))
    finally:
        sys.setrecursionlimit(limit)


def _parsed_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_parsed_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_parsed_depth(item) for item in value.values()), default=0)
    return 0


def _random_json(rng: random.Random, depth: int) -> object:
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([1, 2.5, None, True, '"quoted" [x]', "back\\slash{", "}]", ""])
    if rng.random() < 0.5:
        return [_random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}[": _random_json(rng, depth - 1) for i in range(rng.randint(0, 3))}
