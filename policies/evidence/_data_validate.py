"""Dataset validation: every check a schema implies, in one streamed pass.

Part of the dataset evidence described in ``policies.evidence._data``: results carry row
indices, never values (promise 1), and only a ``unique`` check keeps per-row state
(promise 2), refusing more than ``UNIQUE_MAX_VALUES`` values.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Self

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from pydantic import Field, JsonValue, model_validator

from ledger.errors import InputError

from ._data_read import (
    PANDAS_DTYPE,
    Format,
    Frozen,
    coerce,
    csv_chunks,
    csv_header,
    iter_closing,
    open_parquet,
    parquet_chunks,
)
from ._data_schema import RULE_DTYPES, DatasetSchema

if TYPE_CHECKING:
    import pandera.pandas as pandera

__all__ = ["UNIQUE_MAX_VALUES", "CheckResult", "ValidationResult", "validate_dataset"]

CheckName = Literal[
    "column_present", "no_extra_column", "dtype", "not_null", "in_range", "min", "max",
    "allowed", "unique", "label_domain",
]

UNIQUE_MAX_VALUES: Final = 50_000_000
EXAMPLES: Final = 5


class CheckResult(Frozen):
    """One check; ``examples`` are failing row indices (never values)."""

    check: CheckName
    column: str | None
    passed: bool
    failure_count: int = Field(ge=0)
    examples: tuple[int, ...] = Field(default=(), max_length=EXAMPLES)


class ValidationResult(Frozen):
    """Every check a schema implies, each with its failure count; passed iff all passed."""

    format: Format
    rows: int = Field(ge=1)
    passed: bool
    checks: tuple[CheckResult, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _passed_is_all(self) -> Self:
        if self.passed != all(c.passed for c in self.checks):
            raise ValueError("passed must be true exactly when every check passed")
        return self

    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def summary(self) -> dict[str, JsonValue]:
        """The small part carried in a ledger entry."""
        return {"passed": self.passed, "rows": self.rows, "checks": len(self.checks),
                "failed": [f"{c.check}:{c.column}" for c in self.failed()]}


class _Tally:
    """Failures of one check: a row check counts rows; a column check counts 1."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[int] = []

    def rows(self, rows: np.ndarray) -> None:
        self.count += len(rows)
        if len(self.examples) < EXAMPLES:
            self.examples += sorted(int(r) for r in rows[: EXAMPLES - len(self.examples)])

    def result(self, check: CheckName, column: str | None) -> CheckResult:
        return CheckResult(check=check, column=column, passed=self.count == 0,
                           failure_count=self.count, examples=tuple(self.examples[:EXAMPLES]))


def _pandera_schema(schema: DatasetSchema,
                    columns: Sequence[str]) -> tuple[pandera.DataFrameSchema, dict[str, list[CheckName]]]:
    """The per-chunk pandera schema (dtype, nullable, bounds, allowed) and each column's check names.

    ``unique``, ``strict``, column presence and the label are checked across chunks instead.
    """
    import pandera.pandas as pandera

    cols: dict[str, pandera.Column] = {}
    names: dict[str, list[CheckName]] = {}
    for c in columns:
        rule = schema.columns[c]
        checks: list[pandera.Check] = []
        kinds: list[CheckName] = []
        if rule.min is not None and rule.max is not None:
            checks.append(pandera.Check.in_range(rule.min, rule.max))
            kinds.append("in_range")
        elif rule.min is not None:
            checks.append(pandera.Check.ge(rule.min))
            kinds.append("min")
        elif rule.max is not None:
            checks.append(pandera.Check.le(rule.max))
            kinds.append("max")
        if rule.allowed is not None:
            checks.append(pandera.Check.isin(rule.allowed))
            kinds.append("allowed")
        cols[c] = pandera.Column(PANDAS_DTYPE[RULE_DTYPES[rule.type]], checks=checks, nullable=rule.nullable)
        names[c] = kinds
    return pandera.DataFrameSchema(cols), names


def _pandera_failures(schema: pandera.DataFrameSchema, frame: pd.DataFrame,
                      names: dict[str, list[CheckName]]) -> dict[tuple[CheckName, str], list[int]]:
    import pandera.pandas as pandera

    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return {}
    out: dict[tuple[CheckName, str], list[int]] = {}
    for column, check, number, row in zip(cases["column"], cases["check"], cases["check_number"],
                                          cases["index"], strict=True):
        name: CheckName
        if check == "not_nullable":
            name = "not_null"
        elif str(check).startswith("dtype("):
            name = "dtype"
        elif number is not None and not pd.isna(number):
            name = names[column][int(number)]
        else:  # fail closed: a failure we cannot attribute is a bug, not a pass
            raise RuntimeError(f"unexpected pandera failure {check!r} on column {column!r}")
        if row is None or pd.isna(row):
            raise RuntimeError(f"pandera reported {check!r} on column {column!r} without a row")
        out.setdefault((name, column), []).append(int(row))
    return out


def _unique_failures(parts: list[np.ndarray]) -> _Tally:
    """Rows whose (non-null) value occurs more than once, from per-row 64-bit hashes (0 = null)."""
    tally = _Tally()
    hashes = np.concatenate(parts) if parts else np.empty(0, np.uint64)
    ordered = hashes[hashes != 0]
    ordered.sort()
    dup = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    if len(dup):
        step = 1 << 20
        for at in range(0, len(hashes), step):
            tally.rows(np.flatnonzero(np.isin(hashes[at : at + step], dup)) + at)
    return tally


def validate_dataset(path: str | os.PathLike[str], schema: DatasetSchema, *, fmt: Format,
                     chunk_rows: int = 200_000) -> ValidationResult:
    """Check the file against ``schema`` in one streamed pass; every failed check is a result.

    Checks per declared column: ``column_present``, ``dtype`` (values that are not of the
    type), ``not_null`` (unless nullable), ``in_range``/``min``/``max``, ``allowed`` and
    ``unique``. Nulls are never duplicates, and a value of the wrong type is not a null.
    Then ``label_domain`` (missing labels fail it too) and, under ``strict``,
    ``no_extra_column`` for each undeclared column. ``InputError`` only for a file that
    cannot be read, an empty one, or a ``unique`` check beyond ``UNIQUE_MAX_VALUES``.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be positive")
    p = Path(path)
    types = schema.types()
    if fmt == "csv":
        names = csv_header(p)
    elif fmt == "parquet":
        pf, names = open_parquet(p)
    else:
        raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
    present = [c for c in types if c in names]
    declared = [c for c in present if c in schema.columns]
    read = present or names[:1]
    if fmt == "csv":
        text = [c for c in present if types[c] in ("string", "category", "datetime")]
        chunks = csv_chunks(p, chunk_rows, text, usecols=read)
    else:
        chunks = parquet_chunks(p, pf, chunk_rows, read)

    tallies: dict[tuple[CheckName, str | None], _Tally] = {}

    def tally(check: CheckName, column: str | None) -> _Tally:
        return tallies.setdefault((check, column), _Tally())

    # (1) presence and strictness come from the header; the results keep this order:
    # per declared column, then the label, then strictness.
    check_schema, check_names = _pandera_schema(schema, declared)
    for c, rule in schema.columns.items():
        if c not in names:
            tally("column_present", c).count = 1
            continue
        tally("column_present", c)
        tally("dtype", c)
        if not rule.nullable:
            tally("not_null", c)
        for kind in check_names[c]:
            tally(kind, c)
        if rule.unique:
            tally("unique", c)
    label = schema.label
    if label is not None:
        if label.column not in names:
            tally("column_present", label.column).count = 1
        else:
            tally("column_present", label.column)
            tally("label_domain", label.column)
    extra = [c for c in names if c not in types] if schema.strict else []
    for c in extra:
        tally("no_extra_column", c).count = 1
    if schema.strict and not extra:
        tally("no_extra_column", None)

    unique_cols = [c for c in declared if schema.columns[c].unique]
    hashes: dict[str, list[np.ndarray]] = {c: [] for c in unique_cols}
    rows = 0
    for chunk in iter_closing(chunks):
        rows += len(chunk)
        if rows * len(unique_cols) > UNIQUE_MAX_VALUES:
            raise InputError(
                f"{p}: the unique check on {', '.join(unique_cols)} stops at {UNIQUE_MAX_VALUES:,} "
                "values (rows x unique columns), as it keeps 8 bytes per value in memory; check "
                "uniqueness where the data is stored, or drop 'unique' from the schema")
        typed: dict[str, pd.Series] = {}
        wrong: dict[str, np.ndarray] = {}
        for c in present:
            typed[c], bad = coerce(chunk[c], types[c])
            if c in schema.columns:
                tally("dtype", c).rows(chunk.index[bad].to_numpy())
            wrong[c] = chunk.index[bad].to_numpy()
        # (2) pandera: nullable, bounds and allowed values, on the typed chunk.
        if declared:
            frame = pd.DataFrame({c: typed[c] for c in declared}, index=chunk.index)
            for (check, c), failed in _pandera_failures(check_schema, frame, check_names).items():
                found = np.asarray(failed, np.int64)
                if check == "not_null":  # a value of the wrong type is not missing
                    found = found[~np.isin(found, wrong[c])]
                tally(check, c).rows(np.sort(found))
        # (3) uniqueness across chunks, by 64-bit value hashes.
        for c in unique_cols:
            h = pd.util.hash_pandas_object(typed[c], index=False).to_numpy(np.uint64, copy=True)
            h[h == 0] = 1
            h[typed[c].isna().to_numpy(bool)] = 0
            hashes[c].append(h)
        # (4) the label domain: a missing or wrong-typed label fails it too.
        if label is not None and label.column in typed:
            inside = typed[label.column].isin(label.domain).to_numpy(bool, na_value=False)
            tally("label_domain", label.column).rows(chunk.index[~inside].to_numpy())
    if rows == 0:
        raise InputError(f"{p}: the file is empty (no rows)")
    for c in unique_cols:
        tallies[("unique", c)] = _unique_failures(hashes.pop(c))

    checks = tuple(t.result(check, column) for (check, column), t in tallies.items())
    return ValidationResult(format=fmt, rows=rows, passed=all(c.passed for c in checks), checks=checks)
