"""``row_format`` (the batch fast path) gives the bytes ``encode`` gives.

``fmt % row == encode({**const, **dict(zip(order, row))})`` for row values of each slot kind
(``EntryRows``, which completes such payloads into entries, is tested in test_entry_rows.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import MAX_SAFE_INT, encode, row_format
from ledger.errors import InputError

#: row_format's placeholder for slot i is "\ue000{i}\ue000" (a private-use character): keep it out of
#: the random text so that only the dedicated tests below meet it.
_MARK_CHAR = "\ue000"
_SPECIAL_TEXT = ["", "%", "%s", "%d%%", "100%", '"', "\\", "a\"b\\c", "\x00", "\x1f\x7f", "é", "Z", "z",
                 "\u2028\u2029", "\U0001f600", "\uffff", "\ud7ff", "ß%r", "</script>", "\\u0041"]
text = st.one_of(
    st.sampled_from(_SPECIAL_TEXT),
    st.text(st.characters(codec="utf-8", exclude_characters=_MARK_CHAR), max_size=8),
)
#: Keys chosen so that ASCII, Latin-1, BMP and astral keys interleave (code-point order differs from
#: UTF-16 order for the astral ones against U+E000..U+FFFF).
keys = st.one_of(
    st.sampled_from(["a", "b", "Z", "%", "%s", "é", "ÿ", "\U0001f600", "\uffff", "\uff21", "a%d", '"', "\\",
                     "\x7f", "", "score", "label"]),
    st.text(st.characters(codec="utf-8", exclude_characters=_MARK_CHAR), max_size=5),
)
special_floats = st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1e22, 1e-7, 3.0, -3.0, 1e16, 1e15, 0.1,
                                  123456789.125, 2.5e-05, 1.7976931348623157e308, 9007199254740993.0])
floats = st.one_of(special_floats, st.floats(allow_nan=False, allow_infinity=False))
ints = st.one_of(st.sampled_from([0, -1, 1, MAX_SAFE_INT, -MAX_SAFE_INT, MAX_SAFE_INT - 1]),
                 st.integers(-MAX_SAFE_INT, MAX_SAFE_INT))
json_scalars = st.one_of(st.none(), st.booleans(), ints, floats, text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
ascii_text = st.one_of(
    st.text("0123456789abcdef", min_size=0, max_size=64),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'), max_size=12),
)
KINDS = ("float", "int", "json", "ascii")


def slot_value(kind: str) -> st.SearchStrategy[tuple[Any, Any]]:
    """(the value the object holds, the value the format's row takes) for a slot of ``kind``."""
    if kind == "float":
        return floats.map(lambda v: (v, v))
    if kind == "int":
        return ints.map(lambda v: (v, v))
    if kind == "json":
        return json_values.map(lambda v: (v, encode(v)))
    return ascii_text.map(lambda v: (v, v.encode()))


@st.composite
def formats(draw: st.DrawFn, max_rows: int = 4) -> tuple[dict[str, Any], list[tuple[str, str]], list[list[Any]],
                                                           list[tuple[Any, ...]]]:
    """A constant dict, slots disjoint from it, and rows: (objects' slot values, format row values)."""
    const = draw(st.dictionaries(keys, json_values, max_size=6))
    slots = draw(st.lists(st.tuples(keys.filter(lambda k: k not in const), st.sampled_from(KINDS)),
                          max_size=7, unique_by=lambda s: s[0]))
    n = draw(st.integers(1, max_rows))
    rows = [[draw(slot_value(kind)) for _name, kind in slots] for _ in range(n)]
    return const, slots, [[v for v, _ in row] for row in rows], [tuple(f for _, f in row) for row in rows]


def by_order(slots: list[tuple[str, str]], order: list[str], values: list[Any]) -> tuple[Any, ...]:
    """A row of values given in ``slots`` order, put in the format's ``order``."""
    named = dict(zip([name for name, _ in slots], values, strict=True))
    return tuple(named[name] for name in order)


@settings(max_examples=150, deadline=None)
@given(formats())
def test_format_of_a_row_is_the_canonical_encoding_of_the_object(
        case: tuple[dict[str, Any], list[tuple[str, str]], list[list[Any]], list[tuple[Any, ...]]]) -> None:
    const, slots, objects, rows = case
    fmt, order = row_format(const, slots)
    names = [name for name, _ in slots]
    assert order == sorted(names)  # code-point order: the order canonical JSON writes the keys in
    assert sorted(order) == sorted(names) and len(order) == len(set(order))
    for values, row in zip(objects, rows, strict=True):
        obj = {**const, **dict(zip(names, values, strict=True))}
        assert fmt % by_order(slots, order, list(row)) == encode(obj)


def test_order_is_code_point_order_not_utf16_or_insertion_order() -> None:
    # U+1F600 (astral) sorts after U+FF21 by code point, before it in UTF-16
    slots = [("\U0001f600", "int"), ("\uff21", "int"), ("é", "int"), ("Z", "int"), ("a", "int")]
    fmt, order = row_format({"b": 0}, slots)
    assert order == ["Z", "a", "é", "\uff21", "\U0001f600"]
    assert fmt % (1, 2, 3, 4, 5) == encode({"b": 0, "Z": 1, "a": 2, "é": 3, "\uff21": 4, "\U0001f600": 5})


@pytest.mark.parametrize("value", [-0.0, 5e-324, 1e22, 1e-7, 3.0, 1e16, 1e15, 0.1, -1.5e-300])
def test_float_slot_takes_the_canonical_float_form(value: float) -> None:
    fmt, order = row_format({"k": "v"}, [("x", "float")])
    assert order == ["x"]
    assert fmt % (value,) == encode({"k": "v", "x": value})


@pytest.mark.parametrize("value", [MAX_SAFE_INT, -MAX_SAFE_INT, 0, -1])
def test_int_slot_at_the_safe_range_bounds(value: int) -> None:
    fmt, _ = row_format({}, [("n", "int")])
    assert fmt % (value,) == encode({"n": value})


def test_percent_signs_in_constants_keys_and_values_survive_formatting() -> None:
    const = {"a%": "100%", "%s": "%d%%", "%(x)s": ["%", {"%r": "%%"}]}
    fmt, order = row_format(const, [("s", "json"), ("t", "ascii"), ("n", "int"), ("f", "float")])
    assert order == ["f", "n", "s", "t"]
    got = fmt % (0.5, 7, encode("50% off %s"), b"%d%%")
    assert got == encode({**const, "s": "50% off %s", "t": "%d%%", "n": 7, "f": 0.5})


def test_slot_that_is_also_a_constant_is_refused() -> None:
    with pytest.raises(ValueError, match="not be a constant field"):
        row_format({"a": 1, "b": 2}, [("x", "int"), ("b", "int")])


def test_slot_named_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="named once"):
        row_format({}, [("x", "int"), ("x", "float")])


@pytest.mark.parametrize("const", [
    {"c": "\ue0000\ue000"},  # a value that is slot 0's marker
    {"c": {"\ue0000\ue000": 1}},  # a nested key that is slot 0's marker
    {"c": ["x", "\ue0001\ue000"]},  # slot 1's marker, in a list
    {"\ue0001\ue000": True},  # a top-level key that is slot 1's marker
])
def test_constant_holding_a_slot_marker_is_refused(const: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="reserved text"):
        row_format(const, [("s", "int"), ("t", "json")], where="payload")


@pytest.mark.parametrize("text_value", ["x\ue0000\ue000", "\ue0000\ue000y", '"\ue0000\ue000"', "\ue00010\ue000",
                                        "\ue0000", "\ue000"])
def test_marker_text_inside_a_longer_string_is_harmless(text_value: str) -> None:
    """Only a whole JSON string equal to the marker collides; anything else stays a constant."""
    const = {"c": text_value, "d": {text_value: [text_value]}}
    fmt, order = row_format(const, [("s", "int"), ("t", "json")])
    assert order == ["s", "t"]
    assert fmt % (3, b'"v"') == encode({**const, "s": 3, "t": "v"})


def test_many_slots_markers_with_multi_digit_indices_do_not_collide() -> None:
    slots = [(f"k{i:02d}", "int") for i in range(25)]
    fmt, order = row_format({"z": "\ue0001\ue000x"}, slots)
    assert order == [f"k{i:02d}" for i in range(25)]
    assert fmt % tuple(range(25)) == encode({"z": "\ue0001\ue000x", **{f"k{i:02d}": i for i in range(25)}})
