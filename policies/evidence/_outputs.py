"""A model's recorded outputs as evidence input: one row per person with the model's decision
or score, their group membership and, where known, the outcome.

This is how a model mlledger did not train (a vendor's credit score, a hiring tool) is
audited: from the table of what it decided. Reading the table:
(1) every named column exists; a missing one is named together with the file;
(2) scores are numeric and finite; decisions and outcomes are binary: no nulls, at most two
    values, the positive one known (``1``/``True`` by default, else ``pos_label``);
(3) every sensitive column has at least two known groups, or there is nothing to compare;
(4) scores without decisions: the decision is "scored above the sample median", the NYC
    LL144 scoring rate (6 RCNY 5-300), so selection rates and impact ratios are scoring rates;
(5) for drift, rows split at a time into a reference period (before it) and a current one.
Each error names the file, the column and the first offending row (0-based, after the header).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs installed

from ledger.errors import InputError

__all__ = ["OutputsSpec", "OutputsTable", "read_outputs", "split_periods"]

DecisionSource = Literal["decision_column", "score_above_median"]


@dataclass(frozen=True)
class OutputsSpec:
    """Which columns of the outputs table hold what."""

    score_column: str | None = None
    decision_column: str | None = None
    label_column: str | None = None
    sensitive: tuple[str, ...] = ()
    pos_label: str | None = None

    def __post_init__(self) -> None:
        if self.score_column is None and self.decision_column is None:
            raise InputError("name the model's output: give --score-column or --decision-column (or both)")

    @property
    def output_column(self) -> str:
        """The column that carries the model's output (the decision when both are given)."""
        col = self.decision_column or self.score_column
        assert col is not None
        return col

    def columns(self) -> list[str]:
        named = [self.score_column, self.decision_column, self.label_column, *self.sensitive]
        return list(dict.fromkeys(c for c in named if c is not None))


@dataclass(frozen=True)
class OutputsTable:
    """The checked arrays, ready for the evaluators."""

    y_pred: npt.NDArray[np.bool_]
    y_score: npt.NDArray[np.float64] | None
    y_true: npt.NDArray[np.bool_] | None
    sensitive: pd.DataFrame
    decision_source: DecisionSource
    median_score: float | None

    def config(self, spec: OutputsSpec) -> dict[str, Any]:
        """How the outputs were read, for the evidence's ``config``."""
        return {
            "score_column": spec.score_column,
            "decision_column": spec.decision_column,
            "label_column": spec.label_column,
            "pos_label": spec.pos_label,
            "decision_source": self.decision_source,
            "median_score": self.median_score,
        }


def _first(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.argmax(mask))


def _shown(values: list[Any]) -> str:
    with contextlib.suppress(TypeError):
        values = sorted(values)
    return repr(values[:10]) + (" ..." if len(values) > 10 else "")


def check_columns(frame: pd.DataFrame, spec: OutputsSpec, *, where: str) -> None:
    """(1) every column the spec names is in the table."""
    missing = [c for c in spec.columns() if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns))
        raise InputError(f"{where}: the outputs table has no column(s) {', '.join(map(repr, missing))} "
                         f"(it has {have})")
    if len(frame) == 0:
        raise InputError(f"{where}: the outputs table has no rows")


def _scores(col: pd.Series, name: str, where: str) -> npt.NDArray[np.float64]:
    """(2) numeric, finite scores."""
    if col.dtype.kind not in "iuf":
        parsed = pd.to_numeric(col, errors="coerce")
        bad = (parsed.isna() & col.notna()).to_numpy()
        if bad.any():
            i = _first(bad)
            raise InputError(f"{where}: score column {name!r} is not numeric: row {i} holds {col.iloc[i]!r} "
                             f"({int(bad.sum())} non-numeric values)")
        if col.dtype.kind == "b":
            raise InputError(f"{where}: score column {name!r} holds booleans; give it as --decision-column")
        col = parsed
    values: npt.NDArray[np.float64] = np.asarray(col.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(f"{where}: score column {name!r} has {int(bad.sum())} empty, NaN or infinite values "
                         f"(first at row {_first(bad)})")
    return values


def _as_label(text: str, values: list[Any]) -> Any:
    """``pos_label`` as the type of the column's values."""
    for v in values:
        if isinstance(v, bool | np.bool_):
            if text.lower() in ("true", "1"):
                return True
            if text.lower() in ("false", "0"):
                return False
        elif isinstance(v, int | float | np.integer | np.floating):
            try:
                return float(text)
            except ValueError:
                return text
    return text


def _binary(col: pd.Series, name: str, what: str, where: str,
            pos_label: str | None) -> npt.NDArray[np.bool_]:
    """(2) a binary column, as ``== positive``."""
    null = col.isna().to_numpy()
    if null.any():
        raise InputError(f"{where}: {what} column {name!r} has {int(null.sum())} empty values "
                         f"(first at row {_first(null)})")
    values = pd.unique(col).tolist()
    if len(values) > 2:
        raise InputError(f"{where}: {what} column {name!r} is not binary: it holds {len(values)} distinct values "
                         f"{_shown(values)}; give one decision per row, e.g. 1 (selected) and 0")
    positive: Any = None
    if pos_label is not None:
        wanted = _as_label(pos_label, values)
        if any(v == wanted for v in values) or len(values) < 2:
            positive = wanted
    if positive is None and all(isinstance(v, bool | int | float | np.bool_ | np.integer | np.floating)
                                and v in (0, 1) for v in values):
        positive = 1
    if positive is None:
        if pos_label is not None:
            raise InputError(f"{where}: --pos-label {pos_label!r} is not among the values of {what} column "
                             f"{name!r}: {_shown(values)}")
        raise InputError(f"{where}: {what} column {name!r} holds {_shown(values)}; say which value is the "
                         "positive one with --pos-label")
    return np.asarray(col.to_numpy() == positive, dtype=bool)


def _groups(frame: pd.DataFrame, sensitive: tuple[str, ...], where: str) -> pd.DataFrame:
    """(3) at least two known groups per sensitive column."""
    for name in sensitive:
        known = pd.unique(frame[name].dropna()).tolist()
        if len(known) < 2:
            only = f"only one group ({known[0]!r})" if known else "no known group (every value is empty)"
            raise InputError(f"{where}: sensitive column {name!r} has {only}; a fairness comparison needs at "
                             "least two groups")
    return frame[list(sensitive)].reset_index(drop=True)


def read_outputs(frame: pd.DataFrame, spec: OutputsSpec, *, where: str,
                 need_labels: bool = False) -> OutputsTable:
    """Steps (1)-(4) over ``frame`` read from ``where`` (the file, named in every error)."""
    check_columns(frame, spec, where=where)
    if need_labels and spec.label_column is None:
        raise InputError(f"{where}: this evidence needs the outcomes; name their column with --label-column")
    score = None if spec.score_column is None else _scores(frame[spec.score_column], spec.score_column, where)
    median = None if score is None else float(np.median(score))
    if spec.decision_column is not None:
        y_pred = _binary(frame[spec.decision_column], spec.decision_column, "decision", where, spec.pos_label)
        source: DecisionSource = "decision_column"
    else:
        assert score is not None and median is not None
        y_pred = score > median  # (4) the LL144 scoring rate: strictly above the sample median
        source = "score_above_median"
    y_true = None if spec.label_column is None else _binary(frame[spec.label_column], spec.label_column,
                                                              "label", where, spec.pos_label)
    return OutputsTable(y_pred=y_pred, y_score=score, y_true=y_true,
                        sensitive=_groups(frame, spec.sensitive, where), decision_source=source,
                        median_score=median)


def split_periods(frame: pd.DataFrame, time_column: str, reference_until: str, *,
                  where: str) -> tuple[npt.NDArray[np.bool_], dict[str, Any]]:
    """(5) which rows fall before ``reference_until`` (the reference period; the rest are the
    current one), and both periods' bounds."""
    if time_column not in frame.columns:
        raise InputError(f"{where}: the outputs table has no column {time_column!r} (it has "
                         f"{', '.join(map(str, frame.columns))})")
    try:
        cut = pd.Timestamp(reference_until)
    except ValueError:
        raise InputError(f"--reference-until {reference_until!r} is not a date or time") from None
    cut = cut.tz_localize("UTC") if cut.tzinfo is None else cut.tz_convert("UTC")
    times = pd.to_datetime(frame[time_column], utc=True, errors="coerce", format="mixed")
    bad = times.isna().to_numpy()
    if bad.any():
        i = _first(bad)
        raise InputError(f"{where}: time column {time_column!r} holds {frame[time_column].iloc[i]!r} at row {i}, "
                         "which is not a date or time")
    before = (times < cut).to_numpy()
    for side, mask in (("reference", before), ("current", ~before)):
        if not mask.any():
            when = "before" if side == "reference" else "at or after"
            raise InputError(f"{where}: no rows {when} {cut.isoformat()} in {time_column!r}, so the {side} "
                             "period is empty")
    periods = {
        "time_column": time_column,
        "reference_until": cut.isoformat(),
        "reference_period": [times[before].min().isoformat(), times[before].max().isoformat()],
        "current_period": [times[~before].min().isoformat(), times[~before].max().isoformat()],
    }
    return before, periods
