"""The batch scoring fast path (``backends._batch``) writes the bytes, or raises the errors, of the reference path.

- ``input_bytes(inputs)`` is None or exactly ``[encode(r) for r in _records(inputs)]``;
- ``decisions(...)`` gives, per row, the entry bytes (as ``EntryRows.entry_format`` completes them),
  the payload a check sees and the actor of
  ``Event(PredictionMade.model_validate({...}), actor=..., subject=...).prepare()``, and raises where
  that raises (nothing is handed to the ledger).

The last group covers divergences a review found (an unchecked actor, a lone surrogate label, a bytes
key id, a malformed later commitment, a column named like a slot marker, no columns), now fixed.
"""

from __future__ import annotations

import contextlib
import functools
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from backends._batch import _inputs, _records
from backends._batch_encode import append_decisions, decisions, input_bytes, lower_hex
from backends.kinds import PredictionMade
from backends.serving import recorded_score, recorded_scores
from ledger.canonical import MAX_SAFE_INT, encode, entry_bytes
from ledger.entry_rows import EntryRows
from ledger.errors import InputError
from ledger.events import Event
from tests.conftest import make_ledger

# -- input_bytes --------------------------------------------------------------------------------------

_MARK_CHAR = "\ue000"  # row_format's slot marker character (see test_column_named_like_a_slot_marker)
column_names = st.one_of(
    st.sampled_from(["age", "income", 'quo"te', "back\\slash", "tab\tnl\n", "100%", "%s", "%d%%", "é", "Ünïcødé",
                     "\U0001f600", "\x00", "\x7f", "\u2028", "", " ", "a b"]),
    st.text(st.characters(codec="utf-8", exclude_characters=_MARK_CHAR), max_size=8),
)
strings = st.one_of(
    st.sampled_from(["", "%", "%s", "%d%%", '"', "\\", 'a"b\\c', "\x00", "\x01\x1f\x7f", "\n\r\t", "é", "ß",
                     "\U0001f600", "\u2028\u2029", "\uffff", "nan", "1.5", "null", "true"]),
    st.text(st.characters(codec="utf-8"), max_size=12),
)
_F32 = np.finfo(np.float32)
DTYPES: dict[str, st.SearchStrategy[Any]] = {
    "float64": st.one_of(st.sampled_from([0.0, -0.0, 5e-324, 1e22, 1e-7, 3.0, 1e16, 0.1, 123456789.125]),
                         st.floats(allow_nan=False, allow_infinity=False)),
    "float32": st.one_of(st.sampled_from([0.0, -0.0, 0.1, 3.0, float(_F32.max), float(_F32.tiny), 1e-45]),
                         st.floats(width=32, allow_nan=False, allow_infinity=False)),
    "int64": st.one_of(st.sampled_from([0, -1, MAX_SAFE_INT, -MAX_SAFE_INT]), st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "uint8": st.integers(0, 255),
    "str": strings,
}


@st.composite
def frames(draw: st.DrawFn) -> tuple[Any, dict[str, str]]:
    """A chunk as read (one column per dtype drawn) and the model's input columns (name -> kind)."""
    cols = draw(st.lists(st.tuples(column_names, st.sampled_from(sorted(DTYPES))), min_size=1, max_size=6,
                         unique_by=lambda c: c[0]))
    n = draw(st.integers(1, 6))
    data = {name: pd.Series(draw(st.lists(DTYPES[dt], min_size=n, max_size=n)), dtype=dt) for name, dt in cols}
    kinds = {name: "string" if dt == "str" else "number" for name, dt in cols}
    return pd.DataFrame(data), kinds


@settings(max_examples=150, deadline=None)
@given(frames())
def test_input_bytes_are_the_canonical_encoding_of_each_record(case: tuple[Any, dict[str, str]]) -> None:
    frame, columns = case
    inputs = _inputs(frame, columns)
    want = [encode(r) for r in _records(inputs)]
    got = input_bytes(inputs)
    assert got is not None, f"float, integer and text columns take the fast path: {inputs.dtypes.to_dict()}"
    assert got == want


@settings(max_examples=60, deadline=None)
@given(st.lists(strings, min_size=1, max_size=6), column_names)
def test_object_dtype_text_column_is_encoded_as_encode_does(values: list[str], name: str) -> None:
    inputs = pd.DataFrame({name: pd.Series(values, dtype=object), "n": np.arange(len(values), dtype=np.int64)})
    assert input_bytes(inputs) == [encode(r) for r in _records(inputs)]


def test_input_bytes_of_the_dtypes_named_by_the_brief() -> None:
    inputs = pd.DataFrame({
        "f64": np.array([1.5, -0.0, 3.0], dtype=np.float64),
        "f32": np.array([0.1, 2.5, -7.0], dtype=np.float32),
        "i64": np.array([MAX_SAFE_INT, -MAX_SAFE_INT, 0], dtype=np.int64),
        "u8": np.array([0, 255, 7], dtype=np.uint8),
        "i32": np.array([-(2**31), 2**31 - 1, 0], dtype=np.int32),
        's"\\%é': pd.Series(['q"', "b\\", "c\x01%"], dtype=object),
    })
    got = input_bytes(inputs)
    assert got == [encode(r) for r in _records(inputs)]
    assert got is not None and got[0].startswith(b'{"f32":0.10000000149011612,"f64":1.5,')


@pytest.mark.parametrize("values", [[2**53, 1], [1, -(2**53)], [2**62, 0]])
def test_int64_beyond_the_safe_range_falls_back(values: list[int]) -> None:
    inputs = pd.DataFrame({"x": np.array(values, dtype=np.int64), "y": [1.0, 2.0]})
    assert input_bytes(inputs) is None
    with pytest.raises(InputError, match="outside"):
        [encode(r) for r in _records(inputs)]


def test_uint64_beyond_the_safe_range_falls_back() -> None:
    assert input_bytes(pd.DataFrame({"x": np.array([2**63, 1], dtype=np.uint64)})) is None


@pytest.mark.parametrize("values", [[1, 2.5], [1, "a"], ["a", 2.5], [True, 1], ["a", None]])
def test_object_column_of_mixed_values_falls_back(values: list[Any]) -> None:
    inputs = pd.DataFrame({"m": pd.Series(values, dtype=object), "s": pd.Series(["x"] * len(values), dtype=object)})
    assert input_bytes(inputs) is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_float_falls_back_and_encode_refuses_it(bad: float) -> None:
    inputs = pd.DataFrame({"x": [1.0, bad]})
    assert input_bytes(inputs) is None
    with pytest.raises(InputError, match="finite"):
        [encode(r) for r in _records(inputs)]


def test_bool_column_falls_back_and_encodes_as_true_false() -> None:
    inputs = pd.DataFrame({"b": np.array([True, False])})
    assert input_bytes(inputs) is None
    assert [encode(r) for r in _records(inputs)] == [b'{"b":true}', b'{"b":false}']


def test_lone_surrogate_falls_back_and_encode_names_it() -> None:
    inputs = pd.DataFrame({"s": pd.Series(["ok", "bad\ud800"], dtype=object)})
    assert input_bytes(inputs) is None
    with pytest.raises(InputError, match="cannot be encoded"):
        [encode(r) for r in _records(inputs)]


def test_no_rows_gives_no_bytes() -> None:
    inputs = pd.DataFrame({"a": pd.Series([], dtype="float64"), "s": pd.Series([], dtype=object)})
    assert input_bytes(inputs) == [] == [encode(r) for r in _records(inputs)]


def test_column_named_like_a_slot_marker() -> None:
    inputs = pd.DataFrame({"\ue0001\ue000": [1], "b": [2]})
    got = input_bytes(inputs)
    assert got is None or got == [encode(r) for r in _records(inputs)]


def test_no_columns_gives_one_empty_object_per_row() -> None:
    inputs = pd.DataFrame(index=range(3))
    got = input_bytes(inputs)
    assert got is None or got == [encode(r) for r in _records(inputs)]


# -- decisions -------------------------------------------------------------------------------------------

ACTOR, SUBJECT = "svc:batch@example.com", "model:credit@1"
COMMON: dict[str, Any] = {"model": "credit@1", "artifact_sha256": "ab" * 32, "stage": "production",
                          "deployed_seq": 7, "latency_ms": 0.125, "automated_decision": True, "sealed": False}
hex32 = st.text("0123456789abcdef", min_size=32, max_size=32)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
label_strings = st.one_of(st.sampled_from(["approved", "déclin\"é", "a\nb", "50%", "%s", "\\", "", "\U0001f600",
                                           "1", "true"]),
                          st.text(st.characters(codec="utf-8"), max_size=10))
safe_ints = st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
LABELS: dict[str, st.SearchStrategy[Any]] = {
    "int": st.one_of(st.sampled_from([0, 1, -1, MAX_SAFE_INT, -MAX_SAFE_INT]), safe_ints),
    "bool": st.booleans(),
    "bool+int": st.one_of(st.booleans(), st.sampled_from([0, 1]), safe_ints),
    "str": label_strings,
    "mixed": st.one_of(st.booleans(), safe_ints, label_strings),
}
score_floats = st.one_of(st.sampled_from([0.0, -0.0, 0.005, 0.015, 0.125, 0.995, 0.5, 1.0, 1e-300, -1e-300, 123.456,
                                          2.675, 1e16]),
                         st.floats(allow_nan=False, allow_infinity=False))
SCORES: dict[str, st.SearchStrategy[Any]] = {
    "float": score_floats,
    "none": st.none(),
    "mixed": st.one_of(st.none(), score_floats),
}


def reference(actor: str, subject: str, common: dict[str, Any], part: dict[str, Any], labels: list[Any],
              scores: list[Any]) -> list[Any]:
    """The per-row path the fast path replaces (one validated model and ``Event.prepare`` per row)."""
    return [Event(PredictionMade.model_validate({**common, "input_commitment": c, "key_id": k, "label": lab,
                                                 "score": recorded_score(sc)}), actor=actor, subject=subject).prepare()
            for c, k, lab, sc in zip(part["input_commitment"], part["key_id"], labels, scores, strict=True)]


def strictly_equal(a: Any, b: Any) -> bool:
    """Equal values of equal types (True is not 1; -0.0 is not 0.0), recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strictly_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


SEQ, PREV, TS = 12345, bytes(range(32)), "2026-11-29T10:00:00.000001Z"


def entries(result: EntryRows | list[Any]) -> list[SimpleNamespace]:
    """Per row, what the ledger would store at seq ``SEQ + i`` after ``PREV`` at ``TS`` (the whole entry
    bytes), and the kind, subject, actor and payload its check would see; of ``decisions``' rows or
    events, or of the reference's prefixes."""
    if isinstance(result, EntryRows):
        fmt = result.entry_format(TS)
        return [SimpleNamespace(data=fmt % (*row, PREV.hex().encode(), SEQ + i), kind=result.kind,
                                subject=result.subject, actor=result.actor, payload=result.payload(i))
                for i, row in enumerate(result.rows)]
    prefixes = [e.prepare() if isinstance(e, Event) else e for e in result]
    return [SimpleNamespace(data=entry_bytes(p, SEQ + i, PREV.hex(), TS), kind=p.kind, subject=p.subject,
                            actor=p.actor, payload=p.payload) for i, p in enumerate(prefixes)]


def assert_same_entries(got: EntryRows | list[Any], want: list[Any]) -> None:
    g_all, w_all = entries(got), entries(want)
    assert len(g_all) == len(w_all)
    for i, (g, w) in enumerate(zip(g_all, w_all, strict=True)):
        assert g.data == w.data, f"row {i}"
        assert g.kind == w.kind == "prediction.made"
        assert g.subject == w.subject
        assert g.actor == w.actor
        assert w.payload is not None and strictly_equal(g.payload, w.payload), f"row {i}: {g.payload} != {w.payload}"


@st.composite
def chunks(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], list[Any], list[Any]]:
    n = draw(st.integers(1, 8))
    labels = draw(st.lists(LABELS[draw(st.sampled_from(sorted(LABELS)))], min_size=n, max_size=n))
    scores = draw(st.lists(SCORES[draw(st.sampled_from(sorted(SCORES)))], min_size=n, max_size=n))
    if draw(st.booleans()):  # a deployment key for the whole chunk
        keys = ["dk-" + draw(hex32)] * n
    else:  # subject keys, some repeated
        pool = draw(st.lists(hex32.map(lambda h: "sk-" + h), min_size=1, max_size=3))
        keys = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    part = {"input_commitment": draw(st.lists(hex64, min_size=n, max_size=n)), "key_id": keys}
    common = {**COMMON, "latency_ms": draw(st.sampled_from([0.0, 0.001, 1.5, 12.345, 1e-7])),
              "automated_decision": draw(st.booleans()), "sealed": draw(st.booleans()),
              "deployed_seq": draw(st.integers(0, MAX_SAFE_INT))}
    return common, part, labels, scores


@settings(max_examples=200, deadline=None)
@given(chunks())
def test_decisions_equal_the_reference_path(case: tuple[dict[str, Any], dict[str, Any], list[Any], list[Any]]) -> None:
    common, part, labels, scores = case
    assert_same_entries(decisions(ACTOR, SUBJECT, common, part, labels, scores),
                        reference(ACTOR, SUBJECT, common, part, labels, scores))


def _part(n: int, key: str = "dk-" + "0" * 32) -> dict[str, Any]:
    return {"input_commitment": [f"{i:064x}" for i in range(n)], "key_id": [key] * n}


@pytest.mark.parametrize(("labels", "scores"), [
    ([True, 1, False, 0], [0.5, 0.5, 0.5, 0.5]),  # True vs 1: true vs 1
    ([1, True], [None, None]),
    ([True, False], [0.123, None]),
    ([0, 1, 2], [-0.0, 0.004, 0.996]),  # -0.0 and values that round to 0.0 and 1.0
    (["yes", 'n"o', "é%"], [2.675, 1.005, 0.125]),  # values that round (half-even on binary floats)
    (["a", 1, True], [1e-300, 1e16, -1.5]),
    ([MAX_SAFE_INT, -MAX_SAFE_INT], [0.1, 0.2]),
    ([5], [1]),  # an int score: recorded as the model dumps it
    ([5], [np.float64(0.123)]),  # a numpy float score
    ([5, 6], [True, 0.5]),  # a bool score rounds to the int 1: recorded as 1.0
])
def test_decisions_examples(labels: list[Any], scores: list[Any]) -> None:
    part = _part(len(labels))
    got = decisions(ACTOR, SUBJECT, COMMON, part, labels, scores)
    assert_same_entries(got, reference(ACTOR, SUBJECT, COMMON, part, labels, scores))


def test_true_and_one_stay_distinct_in_the_bytes() -> None:
    got = entries(decisions(ACTOR, SUBJECT, COMMON, _part(2), [True, 1], [0.5, 0.5]))
    assert b'"label":true,' in got[0].data and b'"label":1,' in got[1].data
    assert got[0].payload is not None and got[0].payload["label"] is True
    assert got[1].payload is not None and type(got[1].payload["label"]) is int


def test_subject_keys_and_a_deployment_key_in_one_chunk() -> None:
    part = {"input_commitment": ["0" * 64, "1" * 64, "f" * 64],
            "key_id": ["sk-" + "a" * 32, "dk-" + "b" * 32, "sk-" + "a" * 32]}
    got = decisions(ACTOR, SUBJECT, COMMON, part, [1, 0, 1], [0.5, None, 0.25])
    assert_same_entries(got, reference(ACTOR, SUBJECT, COMMON, part, [1, 0, 1], [0.5, None, 0.25]))


_BAD_KEY = "sk-" + "A" * 32
ERROR_CASES = {
    "nan score": ([1, 0], [0.5, math.nan], None),
    "inf score": ([1], [math.inf], None),
    "-inf score in a later row": ([1, 1, 1], [0.5, None, -math.inf], None),
    "int label beyond 2**53": ([1, 2**53], [0.5, 0.5], None),
    "int label below -(2**53)": ([-(2**53)], [None], None),
    "np.int64 labels": ([np.int64(1), np.int64(0)], [0.5, 0.5], None),
    "np.bool_ label": ([np.bool_(True)], [0.5], None),
    "float label": ([1.0], [0.5], None),
    "uppercase key id": ([1, 0], [0.5, 0.5], ["dk-" + "0" * 32, _BAD_KEY]),
    "short key id": ([1], [0.5], ["dk-00"]),
    "unknown key prefix": ([1], [0.5], ["xk-" + "0" * 32]),
    "malformed key id in the first row": ([1, 0], [0.5, 0.5], ["sk-XYZ", "dk-" + "0" * 32]),
}


def _error_of(fn: Any) -> BaseException:
    """What ``fn`` raises; for ``decisions``, called through ``entries``, which prepares events as the
    append does (an event's payload that cannot be encoded is refused there, before anything of its
    chunk is written)."""
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def _check_same_error(labels: list[Any], scores: list[Any], keys: list[str] | None, *, actor: str = ACTOR,
                      commitments: list[str] | None = None) -> None:
    part = _part(len(labels))
    if keys is not None:
        part["key_id"] = keys
    if commitments is not None:
        part["input_commitment"] = commitments
    want = _error_of(functools.partial(reference, actor, SUBJECT, COMMON, part, labels, scores))
    assert isinstance(want, InputError | ValidationError)
    got = _error_of(lambda: entries(decisions(actor, SUBJECT, COMMON, part, labels, scores)))
    assert isinstance(got, type(want)), f"reference raised {want!r}; decisions raised {got!r}"


@pytest.mark.parametrize(("labels", "scores", "keys"), list(ERROR_CASES.values()), ids=list(ERROR_CASES))
def test_decisions_raise_where_the_reference_path_raises(labels: list[Any], scores: list[Any],
                                                         keys: list[str] | None) -> None:
    _check_same_error(labels, scores, keys)


def test_invalid_constants_raise_as_the_reference_does() -> None:
    for bad in ({"stage": "Prod!"}, {"latency_ms": -1.0}, {"latency_ms": math.inf}, {"deployed_seq": 2**53}):
        common = {**COMMON, **bad}
        part = _part(2)
        want = _error_of(functools.partial(reference, ACTOR, SUBJECT, common, part, [1, 0], [0.5, 0.5]))
        got = _error_of(lambda c=common, p=part: entries(decisions(ACTOR, SUBJECT, c, p, [1, 0], [0.5, 0.5])))
        assert isinstance(want, InputError | ValidationError), bad
        assert isinstance(got, type(want)), f"{bad}: reference raised {want!r}; decisions raised {got!r}"


def test_lone_surrogate_label_raises_input_error() -> None:
    _check_same_error(["ok", "bad\ud800"], [0.5, 0.5], None)


def test_bytes_key_id_raises_validation_error() -> None:
    _check_same_error([1], [0.5], [b"dk-" + b"0" * 32])  # type: ignore[list-item]


def test_actor_with_a_control_character_is_refused() -> None:
    _check_same_error([1], [0.5], None, actor="batch\nactor")


def test_malformed_commitment_in_a_later_row_is_refused() -> None:
    _check_same_error([1, 0], [0.5, 0.5], None, commitments=["0" * 64, 'AB"C'])


def test_decisions_with_a_control_character_actor_fail_deep_verification(tmp_path: Path) -> None:
    led = make_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        size = led.head_size()
        with contextlib.suppress(InputError, ValidationError):  # refused: the expected behaviour
            append_decisions(led, decisions("batch\nactor", SUBJECT, COMMON, _part(1), [1], [0.5]))
        assert led.verify(deep=True, workers=1).ok
        assert led.head_size() == size
    finally:
        led.close()


@pytest.mark.parametrize(("text", "hex_"), [("", True), ("0123456789abcdef", True), ("0A", False), ("g", False),
                                            ("é", False), ("0x", False), (" 0", False), ("\u0660", False),
                                            ("ab\x00", False), ("f" * 640, True)])
def test_lower_hex(text: str, hex_: bool) -> None:
    assert lower_hex(text) is hex_


def test_an_uppercase_commitment_is_refused_as_the_reference_refuses_it() -> None:
    _check_same_error([1, 0], [0.5, 0.5], None, commitments=["0" * 64, "A" * 64])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(), st.floats(-2, 2), st.integers(-400, 400).map(lambda k: k / 200),
                          st.integers(-10**12, 10**12).map(lambda k: k / 1000 + 0.005)), max_size=50))
def test_recorded_scores_round_each_score_as_recorded_score(scores: list[float]) -> None:
    """The vectorised rounding gives ``round(x, SCORE_DECIMALS)`` exactly: ties (k/200), values whose
    scaled product lands near a tie, huge, tiny, negative zero, NaN and infinities."""
    got = recorded_scores(list(scores))
    assert [repr(g) for g in got] == [repr(recorded_score(s)) for s in scores]


@pytest.mark.parametrize("scores", [[None, 0.5], [1, 0.5], [np.float64(0.125)], [True, 0.333], []])
def test_recorded_scores_of_other_types_round_one_by_one(scores: list[Any]) -> None:
    assert [repr(g) for g in recorded_scores(scores)] == [repr(recorded_score(s)) for s in scores]
