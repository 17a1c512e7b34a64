"""Dataset evidence: content digest, streamed profile, schema files and validation.

The data stays where it is (DESIGN.md section 5). What this module promises:

1. No raw row and no free-text value leaves it. A profile carries counts and summary
   statistics. Category values appear only for low-cardinality columns (at most
   ``MAX_DISTINCT`` distinct values), only when seen at least ``MIN_REPORTED_COUNT``
   times and only up to ``MAX_VALUE_CHARS`` characters. Validation results carry row
   indices, never values. Error messages name columns and rows, never values.
2. Memory is bounded by ``chunk_rows``, not by the file. CSV is read with
   ``pandas.read_csv(chunksize=...)``; Parquet with ``ParquetFile.iter_batches``, which
   decodes one row group at a time. Per column the state is a few moments, a reservoir of
   at most ``reservoir`` values, ``KMV_SIZE`` hashes and, until it passes ``MAX_DISTINCT``,
   a table of value counts. One exception: a ``unique`` check keeps 8 bytes per row and
   column (16 while sorting at the end) and refuses more than ``UNIQUE_MAX_VALUES``.
3. A result does not depend on ``chunk_rows``. The one exception is the floating-point
   summation order of ``mean`` and ``std``.
4. Every number is a finite float or an int within +-(2**53 - 1). The results are
   therefore canonical JSON (``ledger.canonical``).
5. Types are stable across chunks. CSV types are inferred from the first chunk (a column
   with no value there is text), and a later value that does not fit is an ``InputError``
   that names the column and the row.

Rows are numbered from 0 among the data rows, as in a pandas index; the header is not a row.

Numeric columns. ``count`` is the number of non-null values and ``nulls`` the number of
missing ones (NaN is missing, as in pandas). ``infinite`` counts +-inf. ``min``, ``max``,
``mean``, ``std`` (ddof=1) and the quantiles are over the finite values; a statistic that
overflows float64 is null.

Quantiles come from bottom-k sampling. Each value gets a key from a generator seeded by
the column name, and the ``reservoir`` values with the smallest keys are kept: a uniform
sample without replacement. Up to ``reservoir`` values the quantiles are exact (linear
interpolation, as ``pandas.Series.quantile``). Beyond that, the rank of the reported
p-quantile errs by about sqrt(p(1-p)/reservoir) (one standard deviation). With the default
100,000 that is 0.0016 at the median and 0.0003 at p01/p99, and the error stays under four
times that with probability above 0.9999.

Distinct counts are exact up to ``MAX_DISTINCT`` values. Above that they come from the
``KMV_SIZE`` smallest 64-bit value hashes (k minimum values). The count stays exact while
fewer than ``KMV_SIZE`` hashes have been seen; after that its relative standard error is
about 1/sqrt(KMV_SIZE - 2), or 1.6%.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import difflib
import hashlib
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Self

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from ledger.errors import InputError
from ledger.kinds import ColumnSummary

if TYPE_CHECKING:
    import pandera.pandas as pandera

__all__ = [
    "MAX_DISTINCT",
    "MIN_REPORTED_COUNT",
    "RESERVOIR_SIZE",
    "UNIQUE_MAX_VALUES",
    "CheckResult",
    "ColumnProfile",
    "ColumnRule",
    "DType",
    "DatasetProfile",
    "DatasetSchema",
    "Format",
    "LabelRule",
    "ValidationResult",
    "detect_format",
    "file_digest",
    "load_schema",
    "profile_dataset",
    "validate_dataset",
]

Format = Literal["csv", "parquet"]
DType = Literal["int64", "float64", "bool", "string", "category", "datetime"]
CheckName = Literal[
    "column_present", "no_extra_column", "dtype", "not_null", "in_range", "min", "max",
    "allowed", "unique", "label_domain",
]

BLOCK: Final = 1 << 20
RESERVOIR_SIZE: Final = 100_000
MAX_DISTINCT: Final = 1_000
KMV_SIZE: Final = 4_096
TOP_K: Final = 20
MIN_REPORTED_COUNT: Final = 5
MAX_VALUE_CHARS: Final = 100
UNIQUE_MAX_VALUES: Final = 50_000_000
EXAMPLES: Final = 5
MAX_SAFE_INT: Final = (1 << 53) - 1
_INT64_MAX: Final = (1 << 63) - 1
_QUANTILES: Final = (("p01", 0.01), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p99", 0.99))
_CSV_SUFFIXES: Final = frozenset({".csv", ".txt"})
_PARQUET_SUFFIXES: Final = frozenset({".parquet", ".pq", ".parq"})
_CSV_OPTIONS: Final[dict[str, Any]] = {"encoding": "utf-8", "engine": "c", "low_memory": False}
_ISO_DATE: Final = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?"
_PANDAS_DTYPE: Final[dict[DType, Any]] = {
    "int64": "Int64", "float64": "float64", "bool": "boolean", "string": "str", "category": "str",
    "datetime": pd.DatetimeTZDtype("us", "UTC"),
}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# -- files -----------------------------------------------------------------------------------


def file_digest(path: str | os.PathLike[str]) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of the file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    size = 0
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    try:
        with open(path, "rb") as f:
            while n := f.readinto(buf):
                h.update(view[:n])
                size += n
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return h.hexdigest(), size


def detect_format(path: str | os.PathLike[str]) -> Format:
    """``parquet`` when the file starts and ends with ``PAR1``; else ``csv`` for UTF-8 text.

    Anything else is an ``InputError``: an empty file, a ``.parquet`` name without the
    magic, a name that is neither CSV nor Parquet, or binary content.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(1 << 16)
            size = os.fstat(f.fileno()).st_size
            f.seek(max(size - 4, 0))
            tail = f.read(4)
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise InputError(f"{p}: the file is empty")
    suffix = p.suffix.lower()
    if head[:4] == b"PAR1":
        if size < 12 or tail != b"PAR1":
            raise InputError(f"{p}: starts like Parquet but has no PAR1 footer (truncated?)")
        return "parquet"
    if suffix in _PARQUET_SUFFIXES:
        raise InputError(f"{p}: named {suffix} but is not a Parquet file (no PAR1 magic bytes)")
    if suffix not in _CSV_SUFFIXES:
        raise InputError(f"{p}: unsupported file type {suffix or '(no extension)'!r}; "
                         "expected CSV (.csv, .txt) or Parquet (.parquet)")
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=len(head) == size)
    except UnicodeDecodeError:
        raise InputError(f"{p}: not UTF-8 text; compressed or binary files are not supported") from None
    if b"\x00" in head:
        raise InputError(f"{p}: binary content (NUL bytes); compressed files are not supported")
    return "csv"


def _available(names: Sequence[str]) -> str:
    shown = ", ".join(names[:50])
    return shown + (f" and {len(names) - 50} more" if len(names) > 50 else "")


def _csv_header(path: Path) -> list[str]:
    """The column names, parsed as pandas does; unique and non-empty."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            header = next((row for row in csv.reader(f) if row), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the CSV header: {exc}") from None
    if header is None:
        raise InputError(f"{path}: the file is empty")
    for i, name in enumerate(header):
        if not name.strip():
            raise InputError(f"{path}: header field {i + 1} has no column name")
    dups = sorted(n for n, k in Counter(header).items() if k > 1)
    if dups:
        raise InputError(f"{path}: duplicate column names in the header: {', '.join(dups)}")
    return header


def _parquet(path: Path) -> tuple[pq.ParquetFile, list[str]]:
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from None
    names = list(pf.schema_arrow.names)
    dups = sorted(n for n, k in Counter(names).items() if k > 1)
    if dups:
        raise InputError(f"{path}: duplicate column names: {', '.join(dups)}")
    return pf, names


def _closing(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Iterate, closing the reader (and its file) even when the consumer raises."""
    with contextlib.closing(chunks):  # type: ignore[type-var]
        yield from chunks


def _guarded(path: Path, chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Re-raise the readers' parse errors as ``InputError`` naming the file."""
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError,
                pa.ArrowException) as exc:
            raise InputError(f"{path}: cannot parse: {exc}") from None
        yield chunk


def _csv_chunks(path: Path, chunk_rows: int, text: Sequence[str],
                usecols: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
    """Chunks with a running index; ``text`` columns stay text, the rest are inferred per chunk."""
    try:
        reader = pd.read_csv(path, chunksize=chunk_rows, dtype=dict.fromkeys(text, "str"),
                             usecols=usecols, **_CSV_OPTIONS)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: cannot parse: {exc}") from None
    with reader:
        yield from _guarded(path, iter(reader))


def _arrow_dtype(name: str, t: pa.DataType) -> DType:
    if pa.types.is_dictionary(t):
        return "category" if _is_text(t.value_type) else _arrow_dtype(name, t.value_type)
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float64"
    if pa.types.is_boolean(t):
        return "bool"
    if _is_text(t) or pa.types.is_null(t):
        return "string"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    raise InputError(f"column {name!r} has Parquet type {t}, which is not supported; supported: "
                     "integers, floats, decimals, booleans, strings, dictionaries, timestamps, dates")


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _pandas_type(t: pa.DataType) -> Any:
    if pa.types.is_integer(t):
        return pd.UInt64Dtype() if t == pa.uint64() else pd.Int64Dtype()
    if pa.types.is_boolean(t):
        return pd.BooleanDtype()
    return None


def _parquet_chunks(path: Path, pf: pq.ParquetFile, chunk_rows: int,
                    columns: Sequence[str]) -> Iterator[pd.DataFrame]:
    def frames() -> Iterator[pd.DataFrame]:
        start = 0
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=list(columns)):
            arrays = []
            for arr in batch.columns:
                if pa.types.is_dictionary(arr.type) and not _is_text(arr.type.value_type):
                    arr = arr.dictionary_decode()
                if pa.types.is_decimal(arr.type):
                    arr = arr.cast(pa.float64())
                arrays.append(arr)
            frame = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names).to_pandas(
                types_mapper=_pandas_type, date_as_object=False)
            frame.index = pd.RangeIndex(start, start + batch.num_rows)
            start += batch.num_rows
            yield frame

    yield from _guarded(path, frames())


# -- values ----------------------------------------------------------------------------------


def _textual(s: pd.Series) -> bool:
    return bool(pd.api.types.is_string_dtype(s.dtype) or s.dtype == object)


def _missing(s: pd.Series, dtype: DType) -> pd.Series:
    return pd.Series(index=s.index, dtype=_PANDAS_DTYPE[dtype])


def _float_to_int(v: np.ndarray, index: pd.Index) -> pd.Series:
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) <= MAX_SAFE_INT)
    out = np.where(ok, v, 0).astype(np.int64)
    return pd.Series(pd.arrays.IntegerArray(out, ~ok), index=index)


def _to_int(s: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype):
        return _missing(s, "int64")
    if pd.api.types.is_integer_dtype(s.dtype):
        if s.dtype in (np.uint64, pd.UInt64Dtype()):
            s = s.astype("UInt64")
            s = s.where(s <= _INT64_MAX)
        return s.astype("Int64")
    if pd.api.types.is_float_dtype(s.dtype):
        return _float_to_int(s.to_numpy(np.float64, na_value=np.nan), s.index)
    if not _textual(s):
        return _missing(s, "int64")
    text = s.astype("str").str.strip()
    exact = text.str.fullmatch(r"[+-]?\d{1,18}").to_numpy(bool, na_value=False)
    out = np.zeros(len(s), np.int64)
    ok = exact.copy()
    if exact.any():
        out[exact] = text[exact].astype(np.int64).to_numpy()
    rest = np.flatnonzero(s.notna().to_numpy() & ~exact)
    if len(rest):
        number = pd.to_numeric(text.iloc[rest], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        whole = _float_to_int(number, text.index[rest])
        out[rest] = whole.fillna(0).to_numpy(np.int64)
        ok[rest] = whole.notna().to_numpy()
        for i in rest[~ok[rest]]:  # beyond 2**53: exact big integers only
            t = text.iat[i]
            if re.fullmatch(r"[+-]?\d+", t) and -_INT64_MAX - 1 <= int(t) <= _INT64_MAX:
                out[i], ok[i] = int(t), True
    return pd.Series(pd.arrays.IntegerArray(out, ~ok), index=s.index)


def _to_float(s: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype) or not (pd.api.types.is_numeric_dtype(s.dtype) or _textual(s)):
        return _missing(s, "float64")
    if _textual(s):
        s = pd.to_numeric(s.astype("str"), errors="coerce")
    return pd.Series(s.to_numpy(np.float64, na_value=np.nan), index=s.index)


def _to_bool(s: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("boolean")
    if not _textual(s):
        return _missing(s, "bool")
    words = s.astype("str").str.strip().str.lower()
    return words.map({"true": True, "false": False}).astype("boolean")


def _to_datetime(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        s = s.dt.tz_convert("UTC") if getattr(s.dtype, "tz", None) else s.dt.tz_localize("UTC")
        return s.dt.as_unit("us")
    if not _textual(s):
        return _missing(s, "datetime")
    return pd.to_datetime(s.astype("str"), format="ISO8601", errors="coerce", utc=True).dt.as_unit("us")


def _to_text(s: pd.Series) -> pd.Series:
    return s.astype("str") if _textual(s) else _missing(s, "string")


_CONVERT: Final[dict[DType, Callable[[pd.Series], pd.Series]]] = {
    "int64": _to_int, "float64": _to_float, "bool": _to_bool, "string": _to_text,
    "category": _to_text, "datetime": _to_datetime,
}


def _coerce(s: pd.Series, dtype: DType) -> tuple[pd.Series, np.ndarray]:
    """``s`` as ``dtype`` and the mask of values present in ``s`` that do not convert exactly.

    Text converts to any type it spells; typed values convert when nothing is lost (an
    integral float is an int). Only text is a ``string`` or ``category``.
    """
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype("str") if pd.api.types.is_string_dtype(s.dtype.categories.dtype) else s.astype(object)
    out = _CONVERT[dtype](s)
    bad = s.notna().to_numpy(bool) & out.isna().to_numpy(bool)
    return out, bad


def _infer(s: pd.Series) -> DType:
    """The type of a first CSV chunk's column: pandas' inference, plus bool-with-nulls and dates."""
    present = s.dropna()
    if present.empty:
        return "string"
    if pd.api.types.is_bool_dtype(s.dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(s.dtype):
        return "int64"
    if pd.api.types.is_float_dtype(s.dtype):
        return "float64"
    if s.dtype == object and not _coerce(present, "bool")[1].any():  # bools with nulls
        return "bool"
    if (present.astype("str").str.fullmatch(_ISO_DATE).all()
            and not _coerce(present, "datetime")[1].any()):
        return "datetime"
    return "string"


# -- profile ---------------------------------------------------------------------------------


def _number(x: float | int) -> JsonValue:
    """A JSON-safe number: exact ints within +-(2**53 - 1), finite floats, else None."""
    if isinstance(x, int | np.integer) and -MAX_SAFE_INT <= int(x) <= MAX_SAFE_INT:
        return int(x)
    f = float(x)
    return f if math.isfinite(f) else None


class _Numeric:
    def __init__(self, integer: bool, reservoir: int, seed: int) -> None:
        self.integer = integer
        self.count = self.nulls = self.infinite = 0
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.lo: float | int | None = None
        self.hi: float | int | None = None
        self.size = reservoir
        self.rng = np.random.default_rng(seed)
        self.keys = np.empty(0)
        self.sample = np.empty(0)

    def add(self, s: pd.Series) -> None:
        if self.integer:
            ints = s.dropna().to_numpy(np.int64)
            values = ints.astype(np.float64)
            self.nulls += len(s) - len(ints)
            self.count += len(ints)
            if len(ints):
                lo, hi = int(ints.min()), int(ints.max())
                self.lo = lo if self.lo is None else min(self.lo, lo)
                self.hi = hi if self.hi is None else max(self.hi, hi)
        else:
            v = s.to_numpy(np.float64)
            nan, inf = np.isnan(v), np.isinf(v)
            values = v[~nan & ~inf]
            self.nulls += int(nan.sum())
            self.infinite += int(inf.sum())
            self.count += len(v) - int(nan.sum())
            if len(values):
                lo_f, hi_f = float(values.min()), float(values.max())
                self.lo = lo_f if self.lo is None else min(self.lo, lo_f)
                self.hi = hi_f if self.hi is None else max(self.hi, hi_f)
        if len(values):
            self._moments(values)
            self._sample(values)

    def _moments(self, x: np.ndarray) -> None:
        """Merge the chunk's count, mean and sum of squared deviations (Chan et al.)."""
        with np.errstate(over="ignore", invalid="ignore"):
            nb, mb = len(x), float(x.mean())
            m2b = float(np.square(x - mb).sum())
            n = self.n + nb
            delta = mb - self.mean
            self.mean += delta * nb / n
            self.m2 += m2b + delta * delta * self.n * nb / n
            self.n = n

    def _sample(self, x: np.ndarray) -> None:
        """Bottom-k sampling: keep the ``size`` values with the smallest random keys."""
        keys = self.rng.random(len(x))
        if len(self.keys) == self.size:
            keep = keys < self.keys.max()
            keys, x = keys[keep], x[keep]
        keys = np.concatenate((self.keys, keys))
        x = np.concatenate((self.sample, x))
        if len(keys) > self.size:
            idx = np.argpartition(keys, self.size - 1)[: self.size]
            keys, x = keys[idx], x[idx]
        self.keys, self.sample = keys, x

    def stats(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {"count": self.count, "nulls": self.nulls}
        if not self.integer:
            out["infinite"] = self.infinite
        have = self.n > 0
        out["min"] = _number(self.lo) if self.lo is not None else None
        out["max"] = _number(self.hi) if self.hi is not None else None
        out["mean"] = _number(self.mean) if have else None
        out["std"] = _number(math.sqrt(self.m2 / (self.n - 1))) if self.n > 1 else None
        qs = np.quantile(self.sample, [q for _, q in _QUANTILES]) if have else [None] * len(_QUANTILES)
        for (key, _), value in zip(_QUANTILES, qs, strict=True):
            out[key] = None if value is None else _number(float(value))
        return out


class _Bool:
    def __init__(self) -> None:
        self.count = self.nulls = self.true = 0

    def add(self, s: pd.Series) -> None:
        present = s.dropna()
        self.nulls += len(s) - len(present)
        self.count += len(present)
        self.true += int(present.sum())

    def stats(self) -> dict[str, JsonValue]:
        return {"count": self.count, "nulls": self.nulls, "true": self.true, "false": self.count - self.true}


class _Datetime:
    def __init__(self) -> None:
        self.count = self.nulls = 0
        self.lo: pd.Timestamp | None = None
        self.hi: pd.Timestamp | None = None

    def add(self, s: pd.Series) -> None:
        present = s.dropna()
        self.nulls += len(s) - len(present)
        self.count += len(present)
        if len(present):
            lo, hi = present.min(), present.max()
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)

    def stats(self) -> dict[str, JsonValue]:
        return {"count": self.count, "nulls": self.nulls,
                "min": None if self.lo is None else self.lo.isoformat(),
                "max": None if self.hi is None else self.hi.isoformat()}


class _Text:
    """Counts per value until ``MAX_DISTINCT``; after that only the KMV hashes survive."""

    def __init__(self) -> None:
        self.count = self.nulls = 0
        self.counts: Counter[str] | None = Counter()
        self.kmv = np.empty(0, np.uint64)

    def add(self, s: pd.Series) -> None:
        present = s.dropna()
        self.nulls += len(s) - len(present)
        self.count += len(present)
        if present.empty:
            return
        distinct = present
        if self.counts is not None:
            seen = present.value_counts(sort=False)
            if len(seen) > MAX_DISTINCT:
                self.counts = None
            else:
                self.counts.update(dict(zip(seen.index, seen.to_numpy().tolist(), strict=True)))
                if len(self.counts) > MAX_DISTINCT:
                    self.counts = None
                distinct = pd.Series(seen.index, dtype=present.dtype)
        hashes = pd.util.hash_pandas_object(distinct, index=False).to_numpy()
        if len(self.kmv) == KMV_SIZE:
            hashes = hashes[hashes < self.kmv[-1]]
        self.kmv = np.union1d(self.kmv, hashes)[:KMV_SIZE]

    def stats(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {"count": self.count, "nulls": self.nulls}
        if self.counts is not None:
            shown = sorted(((v, k) for v, k in self.counts.items()
                            if k >= MIN_REPORTED_COUNT and len(v) <= MAX_VALUE_CHARS),
                           key=lambda vk: (-vk[1], vk[0]))[:TOP_K]
            top: list[JsonValue] = [{"value": v, "count": k} for v, k in shown]
            out |= {"distinct": len(self.counts), "distinct_exact": True, "high_cardinality": False,
                    "top": top, "other": self.count - sum(k for _, k in shown)}
        elif len(self.kmv) < KMV_SIZE:
            out |= {"distinct": len(self.kmv), "distinct_exact": True, "high_cardinality": True}
        else:
            estimate = (KMV_SIZE - 1) * 2.0**64 / (float(self.kmv[-1]) + 1.0)
            out |= {"distinct": round(estimate), "distinct_exact": False, "high_cardinality": True}
        return out


def _finite(value: JsonValue, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value!r} is not finite")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INT:
        raise ValueError(f"{where}: {value} is outside +-(2**53 - 1)")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, f"{where}[{i}]")


class ColumnProfile(_Frozen):
    """One column: name, type, whether a null was seen, and summary statistics."""

    name: str = Field(min_length=1, max_length=1024)
    dtype: DType
    nullable: bool
    stats: dict[str, JsonValue]

    @model_validator(mode="after")
    def _canonical_numbers(self) -> Self:
        _finite(self.stats, f"{self.name}.stats")
        return self


class DatasetProfile(_Frozen):
    """What a dataset registration records about the data (never the data)."""

    format: Format
    rows: int = Field(ge=1)
    columns: tuple[ColumnProfile, ...] = Field(min_length=1)
    sensitive_features: tuple[str, ...] = ()
    target: str | None = None

    def column_summaries(self) -> list[ColumnSummary]:
        """The ``columns`` of a ``dataset.registered`` payload."""
        return [ColumnSummary.model_validate(c.model_dump(mode="json")) for c in self.columns]


def _accumulator(dtype: DType, name: str, reservoir: int) -> _Numeric | _Bool | _Datetime | _Text:
    if dtype in ("int64", "float64"):
        seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
        return _Numeric(dtype == "int64", reservoir, seed)
    if dtype == "bool":
        return _Bool()
    if dtype == "datetime":
        return _Datetime()
    return _Text()


def _check_declared(path: Path, names: list[str], sensitive: Sequence[str], target: str | None) -> None:
    for name in names:
        if len(name) > 1024:
            raise InputError(f"{path}: a column name is longer than 1024 characters: {name[:40]!r}...")
    if isinstance(sensitive, str):
        raise TypeError("sensitive must be a sequence of column names, not a string")
    if len(set(sensitive)) != len(sensitive):
        raise InputError(f"{path}: a sensitive feature is declared twice: {', '.join(sensitive)}")
    for role, col in [*(("sensitive feature", c) for c in sensitive), ("target", target)]:
        if col is not None and col not in names:
            raise InputError(f"{path}: {role} column {col!r} is not in the dataset; "
                             f"its columns are: {_available(names)}")


def profile_dataset(path: str | os.PathLike[str], *, fmt: Format, sensitive: Sequence[str] = (),
                    target: str | None = None, chunk_rows: int = 200_000,
                    reservoir: int = RESERVOIR_SIZE) -> DatasetProfile:
    """Row count, column types and summary statistics, in one streamed pass.

    CSV types come from the first ``chunk_rows`` rows. Raises ``InputError`` for an empty
    file, a missing declared column, a value that does not fit its column's type, or a
    file that does not parse.
    """
    if chunk_rows < 1 or reservoir < 1:
        raise ValueError("chunk_rows and reservoir must be positive")
    p = Path(path)
    plan: dict[str, DType]
    if fmt == "csv":
        names = _csv_header(p)
        _check_declared(p, names, sensitive, target)
        try:
            head = pd.read_csv(p, nrows=chunk_rows, **_CSV_OPTIONS)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
            raise InputError(f"{p}: cannot parse: {exc}") from None
        if head.empty:
            raise InputError(f"{p}: the file is empty (a header and no rows)")
        if list(head.columns) != names:
            raise InputError(f"{p}: the header does not parse consistently; check its quoting")
        plan = {c: _infer(head[c]) for c in names}
        inferred_from = len(head)
        del head
        chunks = _csv_chunks(p, chunk_rows, [c for c, t in plan.items() if t in ("string", "datetime")])
    elif fmt == "parquet":
        pf, names = _parquet(p)
        _check_declared(p, names, sensitive, target)
        plan = {f.name: _arrow_dtype(f.name, f.type) for f in pf.schema_arrow}
        inferred_from = 0
        chunks = _parquet_chunks(p, pf, chunk_rows, names)
    else:
        raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")

    accs = {c: _accumulator(t, c, reservoir) for c, t in plan.items()}
    rows = 0
    for chunk in _closing(chunks):
        for c, acc in accs.items():
            typed, bad = _coerce(chunk[c], plan[c])
            if bad.any():
                row = int(chunk.index[np.argmax(bad)])
                raise InputError(
                    f"{p}: column {c!r}, row {row} (0-based, header excluded): the value does not "
                    f"fit {plan[c]}, the type inferred from the first {inferred_from:,} rows; "
                    "raise chunk_rows, or store the data as Parquet, which keeps its types")
            acc.add(typed)
        rows += len(chunk)
    if rows == 0:
        raise InputError(f"{p}: the file is empty (no rows)")
    columns = tuple(ColumnProfile(name=c, dtype=plan[c], nullable=acc.nulls > 0, stats=acc.stats())
                    for c, acc in accs.items())
    return DatasetProfile(format=fmt, rows=rows, columns=columns,
                          sensitive_features=tuple(sensitive), target=target)


# -- schema files ----------------------------------------------------------------------------

Scalar = int | str | bool
_TYPES: Final[dict[str, DType]] = {
    "int": "int64", "float": "float64", "bool": "bool", "string": "string", "category": "category",
    "datetime": "datetime",
}


class ColumnRule(_Frozen):
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


class LabelRule(_Frozen):
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


class DatasetSchema(_Frozen):
    """A dataset schema file: typed columns, an optional label and strictness."""

    columns: dict[str, ColumnRule] = Field(min_length=1)
    label: LabelRule | None = None
    strict: bool = False

    @model_validator(mode="after")
    def _label_fits(self) -> Self:
        if self.label is not None and self.label.column in self.columns:
            declared = _TYPES[self.columns[self.label.column].type]
            fits = {"int64": ("int64",), "float64": ("int64",), "bool": ("bool",),
                    "string": ("string",), "category": ("string",), "datetime": ()}[declared]
            if self.label.dtype() not in fits:
                raise ValueError(f"label domain does not fit column {self.label.column!r} "
                                 f"of type {self.columns[self.label.column].type}")
        return self

    def types(self) -> dict[str, DType]:
        """Each declared column's type, then the label column's (from its domain) if undeclared."""
        out = {c: _TYPES[r.type] for c, r in self.columns.items()}
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


# -- validation ------------------------------------------------------------------------------


class CheckResult(_Frozen):
    """One check; ``examples`` are failing row indices (never values)."""

    check: CheckName
    column: str | None
    passed: bool
    failure_count: int = Field(ge=0)
    examples: tuple[int, ...] = Field(default=(), max_length=EXAMPLES)


class ValidationResult(_Frozen):
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
        cols[c] = pandera.Column(_PANDAS_DTYPE[_TYPES[rule.type]], checks=checks, nullable=rule.nullable)
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
        names = _csv_header(p)
    elif fmt == "parquet":
        pf, names = _parquet(p)
    else:
        raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
    present = [c for c in types if c in names]
    declared = [c for c in present if c in schema.columns]
    read = present or names[:1]
    if fmt == "csv":
        text = [c for c in present if types[c] in ("string", "category", "datetime")]
        chunks = _csv_chunks(p, chunk_rows, text, usecols=read)
    else:
        chunks = _parquet_chunks(p, pf, chunk_rows, read)

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
    for chunk in _closing(chunks):
        rows += len(chunk)
        if rows * len(unique_cols) > UNIQUE_MAX_VALUES:
            raise InputError(
                f"{p}: the unique check on {', '.join(unique_cols)} stops at {UNIQUE_MAX_VALUES:,} "
                "values (rows x unique columns), as it keeps 8 bytes per value in memory; check "
                "uniqueness where the data is stored, or drop 'unique' from the schema")
        typed: dict[str, pd.Series] = {}
        wrong: dict[str, np.ndarray] = {}
        for c in present:
            typed[c], bad = _coerce(chunk[c], types[c])
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
