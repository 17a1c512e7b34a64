"""Dataset evidence: digest, streamed profile, schema files and validation, on real files.

Profiles and validation counts are cross-checked against pandas on the whole frame.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.canonical import encode
from ledger.errors import InputError
from ledger.kinds import DatasetRegistered
from policies.evidence._data import (
    MIN_REPORTED_COUNT,
    DatasetProfile,
    DatasetSchema,
    Format,
    ValidationResult,
    detect_format,
    file_digest,
    load_schema,
    profile_dataset,
    validate_dataset,
)

FORMATS: tuple[Format, ...] = get_args(Format)
QUANTILES = {"p01": 0.01, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p99": 0.99}


def write(df: pd.DataFrame, directory: Path, fmt: Format, name: str = "data") -> Path:
    path = directory / f"{name}.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False, row_group_size=50)
    return path


def frame(n: int = 3000, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.integers(18, 90, n),
        "income": np.where(rng.random(n) < 0.1, np.nan, rng.lognormal(10, 1, n)),
        "score": rng.normal(size=n),
        "flag": rng.random(n) < 0.3,
        "sex": rng.choice(["female", "male"], n),
        "region": pd.Series(rng.choice(["north", "south", "east", "west", "", "rare"], n,
                                       p=[0.3, 0.3, 0.2, 0.1, 0.099, 0.001])).replace("", None),
        "applicant_id": [f"A{i:06d}" for i in rng.permutation(n)],
        "signup": pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 10**7, n), unit="s"),
    })


def stats(profile: DatasetProfile) -> dict[str, dict[str, Any]]:
    return {c.name: c.stats for c in profile.columns}


def same_profile(a: DatasetProfile, b: DatasetProfile) -> None:
    """Equal, except the summation order of mean and std."""
    assert a.rows == b.rows
    assert [(c.name, c.dtype, c.nullable) for c in a.columns] == \
        [(c.name, c.dtype, c.nullable) for c in b.columns]
    for ca, cb in zip(a.columns, b.columns, strict=True):
        assert ca.stats.keys() == cb.stats.keys()
        for key, value in ca.stats.items():
            if key in ("mean", "std") and value is not None:
                assert value == pytest.approx(cb.stats[key], rel=1e-12), (ca.name, key)
            else:
                assert value == cb.stats[key], (ca.name, key)


# -- digest and format -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, (1 << 20) + 17, 3 << 20])
def test_digest_equals_hashlib_over_the_file(tmp_path: Path, size: int) -> None:
    data = np.random.default_rng(size).bytes(size)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_digest(path) == (hashlib.sha256(data).hexdigest(), size)


def test_digest_of_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        file_digest(tmp_path / "nope.csv")


def test_format_is_detected_by_magic_bytes(tmp_path: Path) -> None:
    df = frame(20)
    assert detect_format(write(df, tmp_path, "csv")) == "csv"
    assert detect_format(write(df, tmp_path, "parquet")) == "parquet"
    disguised = tmp_path / "really_parquet.csv"
    disguised.write_bytes((tmp_path / "data.parquet").read_bytes())
    assert detect_format(disguised) == "parquet"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty"),
        ("fake.parquet", b"a,b\n1,2\n", "not a Parquet file"),
        ("book.xlsx", b"a,b\n1,2\n", "unsupported file type '.xlsx'"),
        ("noext", b"a,b\n1,2\n", "unsupported file type"),
        ("zipped.csv", b"PK\x03\x04\x00\x00binary", "NUL bytes"),
        ("latin1.csv", "name\ncafé\n".encode("latin-1"), "not UTF-8"),
        ("truncated.parquet", b"PAR1" + bytes(100), "no PAR1 footer"),
    ],
)
def test_other_files_are_refused(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        detect_format(path)


# -- profile ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_profile_equals_pandas_on_the_whole_frame(tmp_path: Path, fmt: Format) -> None:
    df = frame()
    path = write(df, tmp_path, fmt)
    ref = pd.read_csv(path) if fmt == "csv" else df
    prof = profile_dataset(path, fmt=fmt, sensitive=["sex"], target="flag")
    got = stats(prof)
    assert prof.rows == len(df)
    assert prof.sensitive_features == ("sex",) and prof.target == "flag"
    dtypes = {c.name: c.dtype for c in prof.columns}
    assert dtypes == {"age": "int64", "income": "float64", "score": "float64", "flag": "bool",
                      "sex": "string", "region": "string", "applicant_id": "string", "signup": "datetime"}
    for col in ("age", "income", "score"):
        s = ref[col]
        want = {"count": s.count(), "nulls": s.isna().sum(), "min": s.min(), "max": s.max()}
        assert {k: got[col][k] for k in want} == want, col
        assert got[col]["mean"] == pytest.approx(s.mean(), rel=1e-9)
        assert got[col]["std"] == pytest.approx(s.std(), rel=1e-9)
        for key, q in QUANTILES.items():  # fewer values than the reservoir: exact
            assert got[col][key] == pytest.approx(s.quantile(q), rel=1e-9), (col, key)
    assert isinstance(got["age"]["min"], int)
    assert got["flag"] == {"count": len(df), "nulls": 0, "true": int(df.flag.sum()),
                           "false": int((~df.flag).sum())}
    counts = ref["region"].value_counts()
    assert got["region"]["nulls"] == ref["region"].isna().sum()
    assert got["region"]["distinct"] == ref["region"].nunique()
    assert got["region"]["top"] == [{"value": v, "count": int(k)} for v, k in counts.items()
                                    if k >= MIN_REPORTED_COUNT]
    assert got["region"]["other"] == counts[counts < MIN_REPORTED_COUNT].sum()
    assert got["signup"]["min"] == pd.Timestamp(ref["signup"].min()).tz_localize("UTC").isoformat()
    assert got["signup"]["max"] == pd.Timestamp(ref["signup"].max()).tz_localize("UTC").isoformat()
    assert [c.nullable for c in prof.columns] == [bool(ref[c].isna().any()) for c in ref.columns]


def test_profile_is_a_dataset_registered_payload(tmp_path: Path) -> None:
    path = write(frame(300), tmp_path, "csv")
    prof = profile_dataset(path, fmt="csv", sensitive=["sex"], target="flag")
    digest, size = file_digest(path)
    payload = DatasetRegistered(name="applicants", sha256=digest, format="csv", size_bytes=size,
                                rows=prof.rows, role="train", columns=prof.column_summaries(),
                                sensitive_features=list(prof.sensitive_features), target=prof.target,
                                source=path.as_uri())
    encode(payload.model_dump(mode="json"))


def test_quantiles_beyond_the_reservoir_stay_within_the_documented_rank_error(tmp_path: Path) -> None:
    """Rank error below 4 * sqrt(p(1-p)/k), the bound stated in the module docstring."""
    values = np.random.default_rng(3).lognormal(0, 2, 20_000)
    path = write(pd.DataFrame({"x": values}), tmp_path, "parquet")
    k = 1_000
    got = stats(profile_dataset(path, fmt="parquet", reservoir=k))["x"]
    ordered = np.sort(values)
    for key, q in QUANTILES.items():
        rank = np.searchsorted(ordered, got[key], side="right") / len(values)
        assert abs(rank - q) <= 4 * math.sqrt(q * (1 - q) / k), key
    assert got["mean"] == pytest.approx(values.mean(), rel=1e-9)  # moments stay exact


@pytest.mark.parametrize("fmt", FORMATS)
def test_chunked_profile_equals_single_chunk(tmp_path: Path, fmt: Format) -> None:
    path = write(frame(1500), tmp_path, fmt)
    whole = profile_dataset(path, fmt=fmt, chunk_rows=10**6, reservoir=500)
    same_profile(profile_dataset(path, fmt=fmt, chunk_rows=7, reservoir=500), whole)


def test_category_columns_from_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame({"grade": pd.Categorical(["a", "b", "a", None, "a", "b"] * 5)})
    path = write(df, tmp_path, "parquet")
    col = profile_dataset(path, fmt="parquet").columns[0]
    assert (col.dtype, col.nullable) == ("category", True)
    assert col.stats["top"] == [{"value": "a", "count": 15}, {"value": "b", "count": 10}]


@pytest.mark.parametrize("fmt", FORMATS)
def test_high_cardinality_columns_do_not_leak_values(tmp_path: Path, fmt: Format) -> None:
    df = frame(2500)
    df["note"] = [f"free text {i} about someone" for i in range(len(df))]
    path = write(df, tmp_path, fmt)
    prof = profile_dataset(path, fmt=fmt, chunk_rows=400)
    text = json.dumps([c.model_dump(mode="json") for c in prof.column_summaries()])
    for col in ("applicant_id", "note"):
        s = stats(prof)[col]
        assert s["high_cardinality"] is True and "top" not in s
        assert s["distinct"] == len(df)
        assert not any(v in text for v in df[col])
    assert "rare" not in text  # seen fewer than MIN_REPORTED_COUNT times


def test_distinct_count_beyond_the_sketch_is_an_estimate(tmp_path: Path) -> None:
    n = 20_000
    path = write(pd.DataFrame({"id": [f"id-{i}" for i in range(n)]}), tmp_path, "parquet")
    s = stats(profile_dataset(path, fmt="parquet"))["id"]
    assert s["distinct_exact"] is False
    assert abs(s["distinct"] - n) / n < 4 * 0.016  # four standard errors


def test_csv_type_drift_names_the_column_and_row(tmp_path: Path) -> None:
    path = tmp_path / "drift.csv"
    path.write_text("id,amount\n" + "".join(f"{i},{i * 2}\n" for i in range(10)) + "10,abc\n11,3\n")
    with pytest.raises(InputError, match=r"column 'amount', row 10 .*does not fit int64, the type "
                                         r"inferred from the first 4 rows") as exc:
        profile_dataset(path, fmt="csv", chunk_rows=4)
    assert "abc" not in str(exc.value)
    assert stats(profile_dataset(path, fmt="csv", chunk_rows=100))["amount"]["distinct"] == 12


def test_csv_ints_with_gaps_in_later_chunks_stay_ints(tmp_path: Path) -> None:
    path = tmp_path / "gaps.csv"
    path.write_text("n,m\n1,a\n2,a\n3,a\n,a\n5,a\n6.0,a\n")
    col = profile_dataset(path, fmt="csv", chunk_rows=3).columns[0]
    assert (col.dtype, col.nullable, col.stats["count"], col.stats["max"]) == ("int64", True, 5, 6)


@pytest.mark.parametrize(
    ("content", "fmt"),
    [(b"", "csv"), (b"a,b\n", "csv"), (b"\n\n", "csv"), (None, "parquet")],
)
def test_empty_files_are_refused(tmp_path: Path, content: bytes | None, fmt: Format) -> None:
    if content is None:
        path = write(pd.DataFrame({"a": pd.Series([], dtype="int64")}), tmp_path, "parquet")
    else:
        path = tmp_path / "empty.csv"
        path.write_bytes(content)
    with pytest.raises(InputError, match="empty"):
        profile_dataset(path, fmt=fmt)
    schema = DatasetSchema.model_validate({"columns": {"a": {"type": "int"}}})
    with pytest.raises(InputError, match="empty"):
        validate_dataset(path, schema, fmt=fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("kwargs", "named"), [
    ({"sensitive": ["sex", "race"]}, "sensitive feature column 'race'"),
    ({"target": "approved"}, "target column 'approved'"),
])
def test_missing_declared_columns_are_refused(tmp_path: Path, fmt: Format, kwargs: dict[str, Any],
                                              named: str) -> None:
    path = write(frame(30), tmp_path, fmt)
    with pytest.raises(InputError, match=f"{named} is not in the dataset; "
                                         "its columns are: age, income, score"):
        profile_dataset(path, fmt=fmt, **kwargs)


def test_duplicate_csv_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a\n1,2,3\n")
    with pytest.raises(InputError, match="duplicate column names in the header: a"):
        profile_dataset(path, fmt="csv")


# -- schema files ----------------------------------------------------------------------------

EXAMPLE_SCHEMA = """\
columns:
  age: {type: int, nullable: false, min: 18, max: 120}
  income: {type: float, min: 0}
  sex: {type: category, allowed: [female, male], nullable: false}
  applicant_id: {type: string, unique: true}
label: {column: approved, domain: [0, 1]}
strict: true     # columns not listed are an error
"""


def schema_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schema.yaml"
    path.write_text(text)
    return path


def test_the_example_schema_loads(tmp_path: Path) -> None:
    schema = load_schema(schema_file(tmp_path, EXAMPLE_SCHEMA))
    assert schema.strict and schema.columns["age"].min == 18
    assert schema.columns["sex"].allowed == ["female", "male"]
    assert schema.types() == {"age": "int64", "income": "float64", "sex": "category",
                              "applicant_id": "string", "approved": "int64"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("nullable: false, min: 18", "nulable: false, min: 18"),
         ":2: columns.age.nulable: unknown key 'nulable'; did you mean 'nullable'?"),
        (("strict: true", "stritc: true"), ":7: stritc: unknown key 'stritc'; did you mean 'strict'?"),
        (("{type: float, min: 0}", "{type: float, min: zero}"), ":3: columns.income.min: Input should be"),
        (("type: int,", "type: integer,"), ":2: columns.age.type: Input should be 'int', 'float'"),
        (("min: 18, max: 120", "min: 180, max: 120"), ":2: columns.age: min 180 is greater than max 120"),
        (("[female, male]", "[yes, no]"),
         ":4: columns.sex: allowed values of a category column must all be strs"),
        (("domain: [0, 1]", "domain: [0, '1']"), ":6: label: domain values must all be of one type"),
        (("  income:", "  age:"), ":3: duplicate key 'age'"),
        (("strict: true", "strict: [true"), ": not valid YAML"),
    ],
)
def test_schema_errors_name_the_file_line_and_key(tmp_path: Path, edit: tuple[str, str],
                                                  message: str) -> None:
    path = schema_file(tmp_path, EXAMPLE_SCHEMA.replace(*edit))
    with pytest.raises(InputError) as exc:
        load_schema(path)
    assert str(exc.value).startswith(f"{path}:")
    assert message in str(exc.value)


def test_a_schema_without_columns_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r":1: columns: Field required"):
        load_schema(schema_file(tmp_path, "strict: true\n"))


# -- validation ------------------------------------------------------------------------------


def applicants(n: int = 400, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.integers(18, 100, n),
        "income": rng.uniform(0, 1e5, n).round(2),
        "sex": rng.choice(["female", "male"], n),
        "applicant_id": [f"A{i:05d}" for i in range(n)],
        "approved": rng.integers(0, 2, n),
    })


def by_check(result: ValidationResult) -> dict[tuple[str, str | None], tuple[bool, int, tuple[int, ...]]]:
    return {(c.check, c.column): (c.passed, c.failure_count, c.examples) for c in result.checks}


def failing(mask: pd.Series) -> tuple[bool, int, tuple[int, ...]]:
    rows = tuple(int(i) for i in np.flatnonzero(mask.to_numpy()))
    return (not rows, len(rows), rows[:5])


@pytest.mark.parametrize("fmt", FORMATS)
def test_clean_data_passes_every_check(tmp_path: Path, fmt: Format) -> None:
    path = write(applicants(), tmp_path, fmt)
    schema = load_schema(schema_file(tmp_path, EXAMPLE_SCHEMA))
    result = validate_dataset(path, schema, fmt=fmt, chunk_rows=64)
    assert result.passed and result.rows == 400
    assert list(by_check(result)) == [
        ("column_present", "age"), ("dtype", "age"), ("not_null", "age"), ("in_range", "age"),
        ("column_present", "income"), ("dtype", "income"), ("min", "income"),
        ("column_present", "sex"), ("dtype", "sex"), ("not_null", "sex"), ("allowed", "sex"),
        ("column_present", "applicant_id"), ("dtype", "applicant_id"), ("unique", "applicant_id"),
        ("column_present", "approved"), ("label_domain", "approved"), ("no_extra_column", None),
    ]
    encode(result.model_dump(mode="json"))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("chunk_rows", [7, 10_000])
def test_failing_checks_count_what_pandas_counts(tmp_path: Path, fmt: Format, chunk_rows: int) -> None:
    df = applicants()
    rng = np.random.default_rng(11)

    def pick(k: int) -> Any:
        return rng.choice(len(df), k, replace=False)

    df["age"] = df["age"].astype("Int64")
    df.loc[pick(9), "age"] = pd.NA
    df.loc[pick(6), "age"] = 130
    df.loc[pick(4), "age"] = 3
    df.loc[pick(5), "income"] = -1.5
    df["sex"] = df["sex"].astype(object)
    df.loc[pick(7), "sex"] = "unknown"
    df.loc[pick(3), "sex"] = None
    df.loc[[0, 399], "applicant_id"] = "A00200"  # duplicates far apart: across chunks
    df.loc[pick(8), "approved"] = 2
    path = write(df, tmp_path, fmt)
    result = validate_dataset(path, load_schema(schema_file(tmp_path, EXAMPLE_SCHEMA)), fmt=fmt,
                              chunk_rows=chunk_rows)
    got = by_check(result)
    assert not result.passed
    assert got[("not_null", "age")] == failing(df.age.isna())
    assert got[("in_range", "age")] == failing(((df.age < 18) | (df.age > 120)).fillna(False))
    assert got[("min", "income")] == failing(df.income < 0)
    assert got[("allowed", "sex")] == failing(df.sex.notna() & ~df.sex.isin(["female", "male"]))
    assert got[("not_null", "sex")] == failing(df.sex.isna())
    assert got[("unique", "applicant_id")] == failing(df.applicant_id.duplicated(keep=False))
    assert got[("label_domain", "approved")] == failing(~df.approved.isin([0, 1]))
    assert got[("dtype", "age")] == (True, 0, ())


def test_wrong_types_fail_the_dtype_check_and_are_not_nulls(tmp_path: Path) -> None:
    df = applicants(50).astype({"age": object, "income": object})
    df.loc[[3, 40], "age"] = "old"
    df.loc[[5], "age"] = "41.5"
    df.loc[[7], "age"] = "42.0"  # an integral number is an int
    df.loc[[9], "income"] = "lots"
    df.loc[[11], "age"] = None
    path = write(df, tmp_path, "csv")
    got = by_check(validate_dataset(path, load_schema(schema_file(tmp_path, EXAMPLE_SCHEMA)), fmt="csv",
                                    chunk_rows=8))
    assert got[("dtype", "age")] == (False, 3, (3, 5, 40))
    assert got[("dtype", "income")] == (False, 1, (9,))
    assert got[("not_null", "age")] == (False, 1, (11,))
    assert got[("in_range", "age")] == (True, 0, ())


def test_a_label_of_the_wrong_type_or_missing_is_outside_the_domain(tmp_path: Path) -> None:
    df = applicants(20).astype({"approved": object})
    df.loc[2, "approved"] = "yes"
    df.loc[4, "approved"] = None
    df.loc[6, "approved"] = 7
    path = write(df, tmp_path, "csv")
    got = by_check(validate_dataset(path, load_schema(schema_file(tmp_path, EXAMPLE_SCHEMA)), fmt="csv"))
    assert got[("label_domain", "approved")] == (False, 3, (2, 4, 6))


@pytest.mark.parametrize("fmt", FORMATS)
def test_strict_refuses_extra_columns_and_lax_does_not(tmp_path: Path, fmt: Format) -> None:
    df = applicants(30).assign(postcode="AB1", notes="x")
    path = write(df, tmp_path, fmt)
    strict = validate_dataset(path, load_schema(schema_file(tmp_path, EXAMPLE_SCHEMA)), fmt=fmt)
    assert not strict.passed
    assert [(c.check, c.column, c.failure_count) for c in strict.failed()] == [
        ("no_extra_column", "postcode", 1), ("no_extra_column", "notes", 1)]
    lax = load_schema(schema_file(tmp_path, EXAMPLE_SCHEMA.replace("strict: true", "strict: false")))
    assert validate_dataset(path, lax, fmt=fmt).passed


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_columns_fail_without_crashing(tmp_path: Path, fmt: Format) -> None:
    path = write(applicants(30).drop(columns=["income", "approved"]), tmp_path, fmt)
    result = validate_dataset(path, load_schema(schema_file(tmp_path, EXAMPLE_SCHEMA)), fmt=fmt)
    assert [(c.check, c.column) for c in result.failed()] == [("column_present", "income"),
                                                              ("column_present", "approved")]
    assert ("min", "income") not in by_check(result)


def test_parquet_storage_types_are_checked(tmp_path: Path) -> None:
    df = applicants(20).assign(sex=1, income=np.arange(20) + 0.5)
    df.loc[3, "income"] = 7.0
    path = write(df, tmp_path, "parquet")
    schema = DatasetSchema.model_validate({"columns": {"sex": {"type": "category"},
                                                       "income": {"type": "int"}}})
    got = by_check(validate_dataset(path, schema, fmt="parquet"))
    assert got[("dtype", "sex")] == (False, 20, (0, 1, 2, 3, 4))  # numbers are not text
    assert got[("dtype", "income")] == (False, 19, (0, 1, 2, 4, 5))  # 7.0 is an int


def test_validation_results_carry_no_values(tmp_path: Path) -> None:
    df = applicants(40)
    df.loc[:, "sex"] = [f"secret-{i}" for i in range(40)]
    path = write(df, tmp_path, "csv")
    result = validate_dataset(path, load_schema(schema_file(tmp_path, EXAMPLE_SCHEMA)), fmt="csv")
    assert by_check(result)[("allowed", "sex")][1] == 40
    assert "secret" not in json.dumps(result.model_dump(mode="json"))


# -- properties ------------------------------------------------------------------------------

cells = st.one_of(st.none(), st.integers(-5, 5))
texts = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "x,y", 'q"uote', "line\nbreak", " "]))


@st.composite
def small_frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 25))
    return pd.DataFrame({
        "i": pd.array(draw(st.lists(cells, min_size=n, max_size=n)), dtype="Int64"),
        "f": draw(st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6), st.sampled_from([math.inf, 1.7e308])),
                           min_size=n, max_size=n)),
        "t": draw(st.lists(texts, min_size=n, max_size=n)),
        "b": pd.array(draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n, max_size=n)),
                      dtype="boolean"),
    }).astype({"f": "float64"})


PROPERTY_SCHEMA = DatasetSchema.model_validate({
    "columns": {"i": {"type": "int", "min": -2, "max": 2, "unique": True, "nullable": False},
                "f": {"type": "float", "min": 0},
                "t": {"type": "category", "allowed": ["a", "b"], "nullable": False}},
    "label": {"column": "b", "domain": [True]},
    "strict": True,
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(df=small_frames(), fmt=st.sampled_from(FORMATS), chunk_rows=st.integers(1, 30))
def test_profile_and_validate_never_crash_and_counts_add_up(df: pd.DataFrame, fmt: Format,
                                                            chunk_rows: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = write(df, Path(d), fmt)
        try:
            prof = profile_dataset(path, fmt=fmt, chunk_rows=chunk_rows)
        except InputError as exc:  # a CSV column whose first chunk is all null reads as text
            assert fmt == "csv" and "does not fit" in str(exc)
        else:
            assert prof.rows == len(df)
            for col in prof.columns:
                count, nulls = col.stats["count"], col.stats["nulls"]
                assert isinstance(count, int) and isinstance(nulls, int)
                assert count + nulls == len(df)
                assert col.nullable == (nulls > 0)
            encode([c.model_dump(mode="json") for c in prof.column_summaries()])
        result = validate_dataset(path, PROPERTY_SCHEMA, fmt=fmt, chunk_rows=chunk_rows)
    assert result.rows == len(df)
    assert result.passed == all(c.passed for c in result.checks)
    for check in result.checks:
        assert check.failure_count <= len(df)
        assert list(check.examples) == sorted(set(check.examples))
        assert all(0 <= r < len(df) for r in check.examples)
        assert len(check.examples) == min(check.failure_count, 5) or check.column is None or \
            check.check in ("column_present", "no_extra_column")
    got = by_check(result)
    assert got[("unique", "i")][1] == df.i.dropna().duplicated(keep=False).sum()
    assert got[("label_domain", "b")][1] == (df.b != True).fillna(True).sum()  # noqa: E712


# -- memory ----------------------------------------------------------------------------------

_PEAK = textwrap.dedent(r"""
    import re, sys
    from pathlib import Path
    from policies.evidence._data import profile_dataset

    def kib(key):
        return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text())[1])

    def peak_growth(path):
        # Reset the peak RSS (VmHWM) to the current RSS, profile, read the new peak.
        Path("/proc/self/clear_refs").write_text("5")
        before = kib("VmRSS")
        profile_dataset(path, fmt="csv", chunk_rows=10_000, reservoir=10_000)
        return (kib("VmHWM") - before) * 1024

    peak_growth(sys.argv[1])  # warm up: page in library code, fill allocator pools
    print(peak_growth(sys.argv[1]), peak_growth(sys.argv[2]))
""")


def test_memory_stays_bounded_by_the_chunk_not_the_file(tmp_path: Path) -> None:
    """A ~50 MB CSV: peak RSS grows well under the file size, and no more than for a tenth of it."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    n = 750_000
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"id": np.arange(n), "x": rng.normal(size=n), "y": rng.lognormal(size=n),
                       "k": rng.integers(0, 10**9, n), "cat": rng.choice(["a", "b", "c"], n),
                       "name": [f"name-{i}" for i in range(n)], "z": rng.random(n)})
    big, small = tmp_path / "big.csv", tmp_path / "small.csv"
    df.to_csv(big, index=False, float_format="%.9f")
    df.head(n // 10).to_csv(small, index=False, float_format="%.9f")
    del df
    size = big.stat().st_size
    assert size > 45e6
    out = subprocess.run([sys.executable, "-c", _PEAK, str(small), str(big)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[3], timeout=300)
    small_growth, big_growth = (int(v) for v in out.stdout.split())
    assert big_growth < size / 3, f"peak RSS grew {big_growth / 1e6:.0f} MB for a {size / 1e6:.0f} MB file"
    assert big_growth - small_growth < size / 8, (small_growth, big_growth)
