"""Per-chunk encoding for batch scoring (``backends._batch``): each row's canonical input bytes, the
chunk's ``prediction.made`` entries as ``EntryRows``, and the batch-commitment records, spliced from
one format per chunk (``ledger.canonical.row_format``) wherever every value of a column fits it, and
otherwise built by ``encode`` or the payload model: the same bytes, or the same error
(tests/unit/backends/test_batch_fast_path.py holds the two equal).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson
from pydantic import TypeAdapter, ValidationError

from backends.kinds import PredictionMade
from backends.serving import recorded_score, recorded_scores
from ledger.api import Ledger, Receipt
from ledger.canonical import MAX_SAFE_INT, encode, row_format
from ledger.entry_rows import EntryRows
from ledger.errors import InputError
from ledger.events import Event
from ledger.kinds import KeyId

__all__ = ["append_decisions", "decisions", "input_bytes", "lower_hex", "record_lines"]

_PREDICTIONS: TypeAdapter[list[PredictionMade]] = TypeAdapter(list[PredictionMade])
_KEY_ID: TypeAdapter[str] = TypeAdapter(KeyId)
_HEX_DIGITS = b"0123456789abcdef"
_VARYING = ("input_commitment", "key_id", "label", "score")  # a chunk's decisions differ only in these


def input_bytes(inputs: Any) -> list[bytes] | None:
    """``encode(record)`` of each row of ``inputs`` (``_records``), spliced from one per-chunk format
    (``ledger.canonical.row_format``); None when a column is outside that fast path (a dtype other
    than float, integer or text, or an integer beyond +-(2**53 - 1)), for ``encode`` to handle.

    ``to_dict`` gives a float column's values as Python floats and an integer column's as ints, so the
    slots are ``%r`` and ``%d``; pass 1 has refused empty and non-finite values.
    """
    import numpy as np

    slots: list[tuple[str, str]] = []
    cols: list[list[Any]] = []
    for name in inputs.columns:
        s = inputs[name]
        kind = s.dtype.kind
        if kind == "f":
            arr = s.to_numpy(dtype=np.float64)
            if not np.isfinite(arr).all():
                return None
            slots.append((name, "float"))
        elif kind in "iu" and s.dtype != bool:
            arr = s.to_numpy()
            if arr.dtype.kind not in "iu" or (len(arr) and (arr.min() < -MAX_SAFE_INT or arr.max() > MAX_SAFE_INT)):
                return None
            slots.append((name, "int"))
        elif kind == "O" and all(type(v) is str for v in s):
            try:
                cols.append([orjson.dumps(v) for v in s])
            except orjson.JSONEncodeError:  # e.g. a lone surrogate: ``encode`` names it
                return None
            slots.append((name, "json"))
            continue
        else:
            return None
        cols.append(arr.tolist())
    if not slots:
        return None
    try:
        fmt, order = row_format({}, slots, where="input record")
    except InputError:  # a column named like a slot's marker: encode each record
        return None
    by_name = dict(zip([name for name, _ in slots], cols, strict=True))
    return [fmt % row for row in zip(*[by_name[name] for name in order], strict=True)]


def decisions(actor: str, subject: str, common: dict[str, Any], part: dict[str, Any], labels: list[Any],
               scores: list[float | None]) -> EntryRows | list[Event]:
    """The ``prediction.made`` entries of one chunk: as ``EntryRows`` (one payload format and each row's
    slot values) when every label is a bool, safe integer or string and every recorded score a finite
    float or None; otherwise as events, each payload validated by its model (the same bytes, or the
    same error)."""
    recorded = recorded_scores(scores)
    fast = _fast_slots(part["input_commitment"], part["key_id"], labels, recorded)
    if fast is None:
        payloads = _PREDICTIONS.validate_python([
            {**common, "input_commitment": c, "key_id": k, "label": lab, "score": sc}
            for c, k, lab, sc in zip(part["input_commitment"], part["key_id"], labels, recorded, strict=True)])
        return [Event(p, actor=actor, subject=subject) for p in payloads]
    key_json, label_slot, score_slot = fast
    first = PredictionMade.model_validate({**common, "input_commitment": part["input_commitment"][0],
                                           "key_id": part["key_id"][0], "label": labels[0], "score": recorded[0]})
    Event(first, actor=actor, subject=subject)  # refuses a bad actor or subject, as the model path does
    const = first.model_dump(mode="json")  # validated constants, as the model dumps them
    for name in _VARYING:
        del const[name]
    const = {k: v for k, v in const.items() if not (v is None and k in PredictionMade.OMIT_WHEN_NONE)}
    commitments, key_ids = part["input_commitment"], part["key_id"]
    fmt, order = row_format(const, [("input_commitment", "ascii"), ("key_id", "json"), ("label", label_slot[0]),
                                    ("score", score_slot[0])], where="prediction.made payload")
    one_key = key_json[key_ids[0]] if len(key_json) == 1 else None
    by_name = {"input_commitment": [c.encode() for c in commitments],
               "key_id": [one_key] * len(key_ids) if one_key else [key_json[k] for k in key_ids],
               "label": label_slot[1], "score": score_slot[1]}
    return EntryRows("prediction.made", actor, subject, fmt, order,
                     list(zip(*[by_name[name] for name in order], strict=True)))


def append_decisions(led: Ledger, chunk: EntryRows | list[Event]) -> Sequence[Receipt]:
    """Append what ``decisions`` gave for a chunk."""
    return led.append_rows(chunk) if isinstance(chunk, EntryRows) else led.append_many(chunk)


def _fast_slots(commitments: list[str], key_ids: list[str], labels: list[Any], scores: list[float | None]
                ) -> tuple[dict[str, bytes], tuple[str, list[Any]], tuple[str, list[Any]]] | None:
    """The canonical JSON of each distinct key id, and the slot kind and values of the labels and of
    the scores, when the chunk fits the spliced path: every commitment 64 lowercase hex digits, key id
    valid, label a bool, safe integer or encodable string, score None or a finite float. None otherwise
    (the model path then gives the error). Each condition is checked per column, not per row."""
    if not (set(map(type, commitments)) == {str} and set(map(len, commitments)) == {64}
            and lower_hex("".join(commitments))):
        return None
    keys: dict[str, bytes] = {}
    for k in set(key_ids):
        try:
            _KEY_ID.validate_python(k, strict=True)
        except ValidationError:
            return None
        keys[k] = orjson.dumps(k)
    label_slot = _label_slot(labels)
    score_slot = _score_slot(scores)
    if label_slot is None or score_slot is None:
        return None
    return keys, label_slot, score_slot


def lower_hex(text: str) -> bool:
    """Whether ``text`` is lowercase hex digits only (a regular expression took 10 times as long)."""
    return text.isascii() and not text.encode().translate(None, _HEX_DIGITS)


def _label_slot(labels: list[Any]) -> tuple[str, list[Any]] | None:
    """``("int", labels)`` when every label is a safe int, else ``("json", their canonical JSON)``; None
    when one is not a bool, a safe int or an encodable string."""
    types = set(map(type, labels))
    if types == {int} and min(labels) >= -MAX_SAFE_INT and max(labels) <= MAX_SAFE_INT:
        return "int", labels
    codes = _label_codes(labels)
    return None if None in codes else ("json", codes)


def _score_slot(scores: list[float | None]) -> tuple[str, list[Any]] | None:
    """``("float", scores)`` when every score is a finite float, else ``("json", their canonical JSON)``;
    None when one is neither None nor a finite float."""
    import numpy as np

    types = set(map(type, scores))
    if types == {float}:
        return ("float", scores) if np.isfinite(np.fromiter(scores, np.float64, len(scores))).all() else None
    if types <= {float, type(None)}:
        codes = [_score_code(sc) for sc in scores]
        return None if None in codes else ("json", codes)
    return None


def _label_codes(labels: list[Any]) -> list[bytes | None]:
    """Each label's canonical JSON if it is a bool, a safe integer or an encodable string; None for
    anything else (an engine plugin's float, a lone surrogate), which ``encode`` or the model handles."""
    cache: dict[tuple[type, Any], bytes | None] = {}
    out: list[bytes | None] = []
    for v in labels:
        t = type(v)
        if t is not bool and t is not int and t is not str:
            out.append(None)
            continue
        code = cache.get((t, v), b"")
        if code == b"":
            code = cache[(t, v)] = _label_json(v)
        out.append(code)
    return out


def _score_code(score: float | None) -> bytes | None:
    """A recorded score's canonical JSON if it is None or a finite float; None otherwise."""
    if score is None:
        return b"null"
    if type(score) is float and score - score == 0.0:
        return repr(score).encode()
    return None


def record_lines(part: dict[str, Any]) -> list[bytes]:
    """The canonical record of each row of ``part`` (FORMAT.md 3.15): the bytes ``encode`` gives, spliced
    from one format (``row_format``); a row outside it (a label that is not a bool, safe integer or
    string, a non-finite score) is encoded by ``encode`` itself."""
    keys: dict[str, bytes] = {k: orjson.dumps(k) for k in set(part["key_id"])}
    fmt = _RECORD_FORMAT  # takes input_commitment, key_id, label, row, score (canonical key order)
    scores = [recorded_score(s) for s in part["score"]]
    out: list[bytes] = []
    for commitment, key_id, label, lb, row, score in zip(part["input_commitment"], part["key_id"], part["label"],
                                                         _label_codes(part["label"]), part["row"], scores, strict=True):
        sb = _score_code(score)
        if lb is not None and sb is not None:
            out.append(fmt % (commitment.encode(), keys[key_id], lb, row, sb))
        else:
            out.append(encode({"input_commitment": commitment, "key_id": key_id, "label": label, "row": row,
                               "score": score}))
    return out


def _label_json(label: Any) -> bytes | None:
    """A label's canonical JSON if it is a bool, a safe integer or a string JSON can hold; None otherwise."""
    if label is True or label is False:
        return b"true" if label else b"false"
    if type(label) is int and -MAX_SAFE_INT <= label <= MAX_SAFE_INT:
        return str(label).encode()
    if type(label) is str:
        try:
            return orjson.dumps(label)
        except orjson.JSONEncodeError:  # e.g. a lone surrogate
            return None
    return None


_RECORD_FORMAT: Final = row_format({}, [("input_commitment", "ascii"), ("key_id", "json"), ("label", "json"),
                                        ("row", "int"), ("score", "json")], where="batch record")[0]
