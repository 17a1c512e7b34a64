"""Shared pieces of the evidence evaluators: the model bases, input checks, group coding and
confusion counts.

Invariants every evaluator relies on:
(1) labels and predictions are checked together: no nulls, at most two distinct values across
    both arrays, and ``pos_label`` among them when there are two; they come back as booleans;
(2) scores are 1-D, numeric and finite;
(3) every array has the same, non-zero length;
(4) a sensitive feature becomes integer codes ``0..k-1`` over its observed (or declared)
    values, sorted; null rows get code ``-1`` ("unknown"); a declared category with no rows
    is an error.
Rates with a zero denominator are ``None``, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs installed
from pydantic import BaseModel, ConfigDict

from ledger.errors import InputError

__all__ = [
    "EvidenceResult",
    "GroupCounts",
    "Grouping",
    "JsonScalar",
    "Strict",
    "check_binary",
    "check_scores",
    "confusion_cells",
    "confusion_table",
    "div",
    "encode_features",
    "find",
    "library_versions",
    "to_scalar",
]

JsonScalar = str | int | float | bool
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
T = TypeVar("T")


class Strict(BaseModel):
    """A frozen, closed model that refuses NaN and infinity; a string literal under a field
    becomes its description."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True)


class EvidenceResult(Strict):
    """Base of every evaluator result: the evidence plus how to recompute it."""

    tool: str
    libraries: dict[str, str]
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The full evidence as JSON-ready data (finite floats; undefined values are None)."""
        return self.model_dump(mode="json")

    def summary(self) -> dict[str, Any]:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


class GroupCounts(Strict):
    """A group's key, its label and its confusion counts; the first fields of every group row."""

    key: tuple[JsonScalar, ...]
    label: str
    count: int
    tn: int
    fp: int
    fn: int
    tp: int


def find(items: Iterable[T], name: str, key: Callable[[T], str]) -> T:
    """The first of ``items`` whose ``key`` is ``name``; ``KeyError(name)`` if there is none."""
    for item in items:
        if key(item) == name:
            return item
    raise KeyError(name)


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of the distributions ``names`` (missing ones are left out)."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def div(num: float, den: float) -> float | None:
    """``num / den``, or None when the denominator is zero."""
    return float(num) / float(den) if den else None


def to_scalar(value: object) -> JsonScalar:
    """A group value or label as a plain JSON scalar (non-finite floats and others become str)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)


def _as_1d(values: object, name: str) -> np.ndarray[Any, Any]:
    arr = values.to_numpy() if isinstance(values, pd.Series | pd.Index) else np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional; got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty")
    return arr


def _check_length(arr: np.ndarray[Any, Any], name: str, n: int | None) -> None:
    if n is not None and len(arr) != n:
        raise InputError(f"{name} has {len(arr)} rows but y_true has {n}")


def _nulls(arr: np.ndarray[Any, Any], name: str) -> None:
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
    elif arr.dtype.kind == "O":
        bad = np.asarray(pd.isna(arr), dtype=bool)
    else:
        return
    if bad.any():
        raise InputError(f"{name} has {int(bad.sum())} null, NaN or infinite values "
                         f"(first at index {int(np.argmax(bad))})")


def _shown(values: np.ndarray[Any, Any]) -> str:
    try:
        vals = sorted(values.tolist())
    except TypeError:
        vals = values.tolist()
    return repr(vals[:10]) + (" ..." if len(vals) > 10 else "")


def check_binary(y_true: object, y_pred: object, *, pos_label: object) -> tuple[BoolArray, BoolArray]:
    """Steps (1) and (3) for labels and predictions: both as booleans ``== pos_label``."""
    t = _as_1d(y_true, "y_true")
    p = _as_1d(y_pred, "y_pred")
    _check_length(p, "y_pred", len(t))
    _nulls(t, "y_true")
    _nulls(p, "y_pred")
    found = {name: pd.unique(a) for name, a in (("y_true", t), ("y_pred", p))}
    for name, vals in found.items():
        if len(vals) > 2:
            raise InputError(f"{name} must be binary; found {len(vals)} distinct values: {_shown(vals)}")
    both = pd.unique(np.concatenate([found["y_true"], found["y_pred"]]))
    if len(both) > 2:
        raise InputError(f"y_true and y_pred together must hold two labels; y_true has "
                         f"{_shown(found['y_true'])}, y_pred has {_shown(found['y_pred'])}")
    if len(both) == 2 and not any(v == pos_label for v in both.tolist()):
        raise InputError(f"pos_label {pos_label!r} is not among the label values found: {_shown(both)}")
    return np.asarray(t == pos_label, dtype=bool), np.asarray(p == pos_label, dtype=bool)


def check_scores(y_score: object, *, n: int, unit_interval: bool = False) -> FloatArray:
    """Steps (2) and (3) for scores; ``unit_interval`` also demands values in [0, 1]."""
    s = _as_1d(y_score, "y_score")
    _check_length(s, "y_score", n)
    if s.dtype.kind not in "biuf":
        raise InputError(f"y_score must be numeric; got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    _nulls(s, "y_score")
    if unit_interval:
        out = (s < 0.0) | (s > 1.0)
        if out.any():
            i = int(np.argmax(out))
            raise InputError(f"y_score must be probabilities in [0, 1]; {int(out.sum())} of {n} values "
                             f"lie outside (first at index {i}: {float(s[i])!r})")
    return s


@dataclass(frozen=True)
class Grouping:
    """Rows coded by group: ``codes[i]`` indexes ``keys``, or is -1 for "unknown" (a null value)."""

    name: str
    features: tuple[str, ...]
    codes: IntArray
    keys: tuple[tuple[JsonScalar, ...], ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(" & ".join(str(v) for v in key) for key in self.keys)


def _encode(col: pd.Series, name: str) -> Grouping:
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy().astype(np.int64)
        uniques: list[object] = list(col.cat.categories)
        counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
        if (counts == 0).any():
            empty = [uniques[i] for i in np.flatnonzero(counts == 0)]
            raise InputError(f"sensitive feature {name!r}: declared categories {empty!r} have no rows "
                             "(remove unused categories, e.g. with .cat.remove_unused_categories())")
    else:
        raw, idx = pd.factorize(col, sort=True, use_na_sentinel=True)
        codes, uniques = np.asarray(raw, dtype=np.int64), list(idx)
    if not uniques:
        raise InputError(f"sensitive feature {name!r} has no known values: all {len(col)} rows are null")
    keys = tuple((to_scalar(u),) for u in uniques)
    if len(set(keys)) != len(keys):
        shown = _shown(np.array(uniques, dtype=object))
        raise InputError(f"sensitive feature {name!r} has values that coincide as JSON: {shown}")
    return Grouping(name, (name,), codes, keys)


def encode_features(sensitive_features: pd.DataFrame | pd.Series, *, n: int) -> list[Grouping]:
    """Step (4) for each column of ``sensitive_features`` (rows are matched by position)."""
    if isinstance(sensitive_features, pd.Series):
        name = sensitive_features.name
        frame = sensitive_features.to_frame(name="sensitive_feature_0" if name is None else str(name))
    elif isinstance(sensitive_features, pd.DataFrame):
        frame = sensitive_features
    else:
        kind = type(sensitive_features).__name__
        raise TypeError(f"sensitive_features must be a pandas DataFrame or Series, not {kind}")
    names = [str(c) for c in frame.columns]
    if not names:
        raise InputError("sensitive_features has no columns; name at least one sensitive feature")
    if len(set(names)) != len(names):
        raise InputError(f"sensitive_features has duplicate column names: {names}")
    if len(frame) != n:
        raise InputError(f"sensitive_features has {len(frame)} rows but y_true has {n}")
    return [_encode(frame.iloc[:, i], names[i]) for i in range(len(names))]


def confusion_cells(y_true: BoolArray, y_pred: BoolArray) -> IntArray:
    """Each row's confusion cell: 0 TN, 1 FP, 2 FN, 3 TP."""
    return (y_true.astype(np.int64) << 1) | y_pred


def confusion_table(g: Grouping, cell: IntArray) -> IntArray:
    """TN, FP, FN, TP counts per group, in one ``np.bincount``: row 0 is "unknown" (code -1),
    row ``i + 1`` is group ``i``."""
    k = len(g.keys) + 1
    return np.bincount(((g.codes + 1) << 2) | cell, minlength=k * 4).reshape(k, 4)
