"""Canonical entry bytes: the normative encoding of DESIGN.md section 2."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.canonical import (
    MAX_NAME_BYTES,
    MAX_PAYLOAD_BYTES,
    decode,
    encode,
    entry_bytes,
    format_ts,
    parse_ts,
    prefix,
)
from ledger.errors import InputError

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


def test_keys_sorted_by_code_point_without_whitespace() -> None:
    assert encode({"b": 1, "a": {"z": 1, "é": 2, "Z": 3}}) == b'{"a":{"Z":3,"z":1,"\xc3\xa9":2},"b":1}'


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.0, b"1.0"), (0.1, b"0.1"), (1e16, b"1e+16"), (1e15, b"1000000000000000.0"),
     (1e-7, b"1e-07"), (2.5e-05, b"2.5e-05"), (-0.0, b"-0.0"), (5e-324, b"5e-324")],
)
def test_floats_in_shortest_round_trip_form(value: float, expected: bytes) -> None:
    assert encode(value) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_float_is_refused_not_coerced(bad: float) -> None:
    with pytest.raises(InputError, match=r"payload\.x\[1\]: .* not a finite number"):
        encode({"x": [0, bad]}, where="payload")


def test_integer_beyond_two_to_53_is_refused() -> None:
    with pytest.raises(InputError, match="outside"):
        encode({"n": 2**53})


def test_control_characters_are_escaped() -> None:
    assert encode("a\x01\n") == b'"a\\u0001\\n"'


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(InputError, match="cannot be encoded"):
        encode("\ud800")


@pytest.mark.parametrize("text", [b"NaN", b"Infinity", b"1e400", b'"\\ud800"', b"{", b"\xff"])
def test_decode_refuses_what_canonical_json_cannot_hold(text: bytes) -> None:
    with pytest.raises(InputError, match="malformed JSON"):
        decode(text)


@given(
    payload=st.dictionaries(st.text(), json_values, max_size=5),
    actor=st.text(min_size=1, max_size=50),
    subject=st.none() | st.text(max_size=50),
    seq=st.integers(0, 2**53 - 1),
    ts_us=st.integers(0, 253402300799999999),
)
def test_spliced_entry_equals_encoding_the_whole_envelope(
    payload: dict[str, object], actor: str, subject: str | None, seq: int, ts_us: int
) -> None:
    try:
        body = encode(payload)
        pre = prefix("dataset.registered", actor, subject, body)
    except InputError:
        return  # e.g. lone surrogates: refused, which other tests cover
    ts = format_ts(ts_us)
    prev = "ab" * 32
    whole = {"v": 1, "seq": seq, "prev": prev, "ts": ts, "kind": "dataset.registered",
             "actor": actor, "subject": subject, "payload": payload}
    assert entry_bytes(pre, seq, prev, ts) == encode(whole)
    assert orjson.loads(entry_bytes(pre, seq, prev, ts)) == whole


@given(st.integers(0, 253402300799999999))
def test_timestamp_format_round_trips(us: int) -> None:
    text = format_ts(us)
    assert len(text) == 27 and text.endswith("Z")
    assert parse_ts(text) == us


@pytest.mark.parametrize(
    "bad",
    ["2026-11-29T01:00:00Z", "2026-11-29T01:00:00.000000+00:00", "2026-02-30T00:00:00.000000Z",
     "2026-11-29 01:00:00.000000Z", "2026-11-29T24:00:00.000000Z"],
)
def test_non_canonical_timestamp_is_refused(bad: str) -> None:
    with pytest.raises(InputError, match="timestamp"):
        parse_ts(bad)


def test_oversize_payload_is_refused_with_the_limit() -> None:
    body = encode({"blob": "x" * MAX_PAYLOAD_BYTES})
    with pytest.raises(InputError, match=r"over the 1048576-byte limit"):
        prefix("dataset.registered", "a", None, body)


def test_oversize_actor_is_refused() -> None:
    with pytest.raises(InputError, match=f"actor: longer than {MAX_NAME_BYTES} bytes"):
        prefix("dataset.registered", "é" * MAX_NAME_BYTES, None, b"{}")
