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

The implementation is split by job; this module only re-exports it:

- ``_data_read``: digest, format detection, chunk readers, type inference and conversion;
- ``_data_profile``: column accumulators and ``profile_dataset`` (how each statistic is
  computed and how accurate it is);
- ``_data_schema``: the schema model and ``load_schema``;
- ``_data_validate``: ``validate_dataset`` and its results.
"""

from ._data_profile import (
    MAX_DISTINCT,
    MIN_REPORTED_COUNT,
    RESERVOIR_SIZE,
    ColumnProfile,
    DatasetProfile,
    profile_dataset,
)
from ._data_read import DType, Format, detect_format, file_digest
from ._data_schema import ColumnRule, DatasetSchema, LabelRule, load_schema
from ._data_validate import UNIQUE_MAX_VALUES, CheckResult, ValidationResult, validate_dataset

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
