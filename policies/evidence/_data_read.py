"""Reading datasets: file digest, format detection, chunked CSV and Parquet readers, and the
conversion of each chunk's columns to the declared or inferred type.

Part of the dataset evidence described in ``policies.evidence._data``; this module keeps its
promises 2 (memory bounded by ``chunk_rows``) and 5 (types stable across chunks). It also
holds the vocabulary the other ``_data_*`` modules share: ``Format``, ``DType``,
``MAX_SAFE_INT`` and the ``Frozen`` model base.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict

from ledger.errors import InputError

__all__ = [
    "CSV_OPTIONS",
    "MAX_SAFE_INT",
    "PANDAS_DTYPE",
    "DType",
    "Format",
    "Frozen",
    "arrow_dtype",
    "coerce",
    "csv_chunks",
    "csv_header",
    "detect_format",
    "file_digest",
    "infer_dtype",
    "iter_closing",
    "open_parquet",
    "parquet_chunks",
]

Format = Literal["csv", "parquet"]
DType = Literal["int64", "float64", "bool", "string", "category", "datetime"]

BLOCK: Final = 1 << 20
MAX_SAFE_INT: Final = (1 << 53) - 1
_INT64_MAX: Final = (1 << 63) - 1
_CSV_SUFFIXES: Final = frozenset({".csv", ".txt"})
_PARQUET_SUFFIXES: Final = frozenset({".parquet", ".pq", ".parq"})
CSV_OPTIONS: Final[dict[str, Any]] = {"encoding": "utf-8", "engine": "c", "low_memory": False}
_ISO_DATE: Final = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?"
PANDAS_DTYPE: Final[dict[DType, Any]] = {
    "int64": "Int64", "float64": "float64", "bool": "boolean", "string": "str", "category": "str",
    "datetime": pd.DatetimeTZDtype("us", "UTC"),
}


class Frozen(BaseModel):
    """Base of the dataset evidence models: closed, frozen and strictly typed."""

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


def csv_header(path: Path) -> list[str]:
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


def open_parquet(path: Path) -> tuple[pq.ParquetFile, list[str]]:
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from None
    names = list(pf.schema_arrow.names)
    dups = sorted(n for n, k in Counter(names).items() if k > 1)
    if dups:
        raise InputError(f"{path}: duplicate column names: {', '.join(dups)}")
    return pf, names


def iter_closing(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
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


def csv_chunks(path: Path, chunk_rows: int, text: Sequence[str],
                usecols: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
    """Chunks with a running index; ``text`` columns stay text, the rest are inferred per chunk."""
    try:
        reader = pd.read_csv(path, chunksize=chunk_rows, dtype=dict.fromkeys(text, "str"),
                             usecols=usecols, **CSV_OPTIONS)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: cannot parse: {exc}") from None
    with reader:
        yield from _guarded(path, iter(reader))


def arrow_dtype(name: str, t: pa.DataType) -> DType:
    if pa.types.is_dictionary(t):
        return "category" if _is_text(t.value_type) else arrow_dtype(name, t.value_type)
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


def parquet_chunks(path: Path, pf: pq.ParquetFile, chunk_rows: int,
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
    return pd.Series(index=s.index, dtype=PANDAS_DTYPE[dtype])


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


def coerce(s: pd.Series, dtype: DType) -> tuple[pd.Series, np.ndarray]:
    """``s`` as ``dtype`` and the mask of values present in ``s`` that do not convert exactly.

    Text converts to any type it spells; typed values convert when nothing is lost (an
    integral float is an int). Only text is a ``string`` or ``category``.
    """
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype("str") if pd.api.types.is_string_dtype(s.dtype.categories.dtype) else s.astype(object)
    out = _CONVERT[dtype](s)
    bad = s.notna().to_numpy(bool) & out.isna().to_numpy(bool)
    return out, bad


def infer_dtype(s: pd.Series) -> DType:
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
    if s.dtype == object and not coerce(present, "bool")[1].any():  # bools with nulls
        return "bool"
    if (present.astype("str").str.fullmatch(_ISO_DATE).all()
            and not coerce(present, "datetime")[1].any()):
        return "datetime"
    return "string"

