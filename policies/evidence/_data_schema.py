"""Dataset schema files: typed column rules, an optional label and strictness, loaded from
YAML with every error pointing at ``file:line``.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Final, Literal, Self

import yaml  # type: ignore[import-untyped]
from pydantic import Field, ValidationError, model_validator

from ledger.errors import InputError

from ._data_read import DType, Frozen

__all__ = ["RULE_DTYPES", "ColumnRule", "DatasetSchema", "LabelRule", "load_schema"]

Scalar = int | str | bool
RULE_DTYPES: Final[dict[str, DType]] = {
    "int": "int64", "float": "float64", "bool": "bool", "string": "string", "category": "category",
    "datetime": "datetime",
}


class ColumnRule(Frozen):
    """What one column must hold."""

    type: Literal["int", "float", "bool", "string", "category", "datetime"]
    nullable: bool = True
    min: int | float | None = None
    max: int | float | None = None
    allowed: list[Scalar] | None = Field(default=None, min_length=1)
    unique: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for bound in (self.min, self.max):
            if bound is not None and (isinstance(bound, bool) or not math.isfinite(bound)):
                raise ValueError("min and max must be finite numbers")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"min and max apply to int and float columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if self.allowed is not None:
            want: type = {"int": int, "string": str, "category": str}.get(self.type, type(None))
            if want is type(None):
                raise ValueError(f"allowed applies to int, string and category columns, not {self.type}")
            if not all(type(v) is want for v in self.allowed):
                raise ValueError(f"allowed values of a {self.type} column must all be {want.__name__}s "
                                 "(quote yes/no/on/off, which YAML reads as booleans)")
        return self


class LabelRule(Frozen):
    """The label column and the values it may take."""

    column: str = Field(min_length=1)
    domain: list[Scalar] = Field(min_length=1)

    @model_validator(mode="after")
    def _homogeneous(self) -> Self:
        if len({type(v) for v in self.domain}) != 1:
            raise ValueError("domain values must all be of one type (all ints, all strings or all booleans)")
        if len(set(self.domain)) != len(self.domain):
            raise ValueError("domain values must not repeat")
        return self

    def dtype(self) -> DType:
        return {bool: "bool", int: "int64", str: "string"}[type(self.domain[0])]  # type: ignore[return-value]


class DatasetSchema(Frozen):
    """A dataset schema file: typed columns, an optional label and strictness."""

    columns: dict[str, ColumnRule] = Field(min_length=1)
    label: LabelRule | None = None
    strict: bool = False

    @model_validator(mode="after")
    def _label_fits(self) -> Self:
        if self.label is not None and self.label.column in self.columns:
            declared = RULE_DTYPES[self.columns[self.label.column].type]
            fits = {"int64": ("int64",), "float64": ("int64",), "bool": ("bool",),
                    "string": ("string",), "category": ("string",), "datetime": ()}[declared]
            if self.label.dtype() not in fits:
                raise ValueError(f"label domain does not fit column {self.label.column!r} "
                                 f"of type {self.columns[self.label.column].type}")
        return self

    def types(self) -> dict[str, DType]:
        """Each declared column's type, then the label column's (from its domain) if undeclared."""
        out = {c: RULE_DTYPES[r.type] for c, r in self.columns.items()}
        if self.label is not None and self.label.column not in out:
            out[self.label.column] = self.label.dtype()
        return out


_SCHEMA_KEYS: Final = sorted({*DatasetSchema.model_fields, *ColumnRule.model_fields, *LabelRule.model_fields})


def load_schema(path: str | os.PathLike[str]) -> DatasetSchema:
    """Load a YAML schema file; any problem is an ``InputError`` with ``file:line``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read the schema: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise InputError(f"{p}:{line}: not valid YAML: {exc.problem or exc}") from None
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        raise InputError(f"{p}:1: a schema is a mapping with a 'columns' key")
    _no_duplicate_keys(p, node)
    try:
        return DatasetSchema.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err["loc"]]
        line, depth = _line(node, loc)
        if err["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(loc[-1], _SCHEMA_KEYS, n=1)
            msg = f"unknown key {loc[-1]!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
        else:  # past ``depth`` a location names union members, not keys
            loc = loc if err["type"] == "missing" else loc[:depth]
            msg = err["msg"].removeprefix("Value error, ")
        raise InputError(f"{p}:{line}: {'.'.join(loc) or '(top level)'}: {msg}") from None


def _no_duplicate_keys(path: Path, node: yaml.Node) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            if key.value in seen:
                raise InputError(f"{path}:{key.start_mark.line + 1}: duplicate key {key.value!r}")
            seen.add(key.value)
            _no_duplicate_keys(path, value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _no_duplicate_keys(path, item)


def _line(node: yaml.Node, loc: list[str]) -> tuple[int, int]:
    """The 1-based line of the key or item a pydantic error location points at, and how
    many parts of the location were found in the document."""
    line = node.start_mark.line + 1
    for depth, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                return line, depth
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            return line, depth
    return line, len(loc)


