"""The evidence workflow through the CLI on real files, a real skops model and a real ledger.

register data -> register a model -> fairness / performance / drift / explain evidence,
each an evidence.recorded entry bound to the model artifact hash and the dataset hash,
with the full result in the content-addressed artifact store.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from ledger.api import Ledger
from ledger.cli import root

FEATURES = ["income", "age", "debt"]


def applicants(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], size=n)
    race = rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.3, 0.1])
    income = rng.normal(50 + shift * 10, 12, size=n) + np.where(sex == "male", 6.0, 0.0)
    age = rng.integers(18, 80, size=n)
    debt = rng.gamma(2.0, 5.0, size=n)
    logit = 0.08 * (income - 50) - 0.05 * (debt - 10) + 0.01 * (age - 40)
    approved = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"income": income, "age": age, "debt": debt, "sex": sex, "race": race,
                         "approved": approved})


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.chdir(tmp_path)
    for var in ("MLLEDGER_URL", "MLLEDGER_HOME", "MLLEDGER_KEY_PASSPHRASE", "CI"):
        monkeypatch.delenv(var, raising=False)
    train, ev, prod = applicants(3000, 1), applicants(2000, 2), applicants(2000, 3, shift=1.0)
    paths = {"train": tmp_path / "train.csv", "eval": tmp_path / "eval.parquet",
             "prod": tmp_path / "prod.csv", "model": tmp_path / "model.skops"}
    train.to_csv(paths["train"], index=False)
    ev.to_parquet(paths["eval"], index=False)
    prod.to_csv(paths["prod"], index=False)
    est = LogisticRegression(max_iter=500).fit(train[FEATURES], train["approved"])
    sio.dump(est, paths["model"])
    return paths


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(root, list(args))
    assert result.exit_code == code, (result.output, result.stderr if hasattr(result, "stderr") else "")
    return result.stdout


def setup(env: dict[str, Path]) -> None:
    run("init", "--origin", "example.com/credit")
    run("data", "register", str(env["train"]), "--role", "train", "--name", "train",
        "--sensitive", "sex,race", "--target", "approved")
    run("data", "register", str(env["eval"]), "--role", "eval", "--name", "eval",
        "--sensitive", "sex,race", "--target", "approved")
    run("data", "register", str(env["prod"]), "--role", "production", "--name", "prod",
        "--sensitive", "sex,race", "--target", "approved")
    run("model", "register", str(env["model"]), "--name", "credit", "--features", ",".join(FEATURES),
        "--target", "approved", "--training-data", "train")


def test_the_evidence_workflow_records_bound_entries(env: dict[str, Path]) -> None:
    setup(env)
    model_hash = hashlib.sha256(env["model"].read_bytes()).hexdigest()
    eval_hash = hashlib.sha256(env["eval"].read_bytes()).hexdigest()
    fair = json.loads(run("evidence", "fairness", "--model", "credit", "--data", "eval", "--format", "json"))
    perf = json.loads(run("evidence", "performance", "--model", "credit@1", "--data", "eval",
                          "--format", "json"))
    drift = json.loads(run("evidence", "drift", "--reference", "train", "--current", "prod",
                           "--model", "credit", "--format", "json"))
    expl = json.loads(run("evidence", "explain", "--model", "credit", "--data", "eval", "--top-k", "2",
                          "--repeats", "3", "--format", "json"))
    with Ledger.open(".mlledger") as led:
        entries = {e.seq: e for e in led.iter(kind="evidence.recorded")}
        assert led.verify().ok
    assert set(entries) == {fair["seq"], perf["seq"], drift["seq"], expl["seq"]}
    for rec in (fair, perf, expl):
        p = entries[rec["seq"]].payload
        assert p["model_sha256"] == model_hash and p["dataset_sha256"] == eval_hash
        assert entries[rec["seq"]].subject == "model:credit@1"
    assert entries[fair["seq"]].payload["libraries"]["fairlearn"]
    assert entries[fair["seq"]].payload["libraries"]["aif360"]
    d = entries[drift["seq"]].payload
    assert d["reference_sha256"] == hashlib.sha256(env["train"].read_bytes()).hexdigest()
    assert d["dataset_sha256"] == hashlib.sha256(env["prod"].read_bytes()).hexdigest()
    # the full result is the content-addressed artifact the entry names
    artifact = Path(".mlledger/artifacts/sha256") / d["artifact_sha256"][:2] / d["artifact_sha256"]
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == d["artifact_sha256"]
    assert json.loads(run("evidence", "show", str(drift["seq"]))) == json.loads(artifact.read_bytes())
    # the shifted production income is detected; the unshifted age is not
    assert d["values"]["drifted_features"] == ["income"]


def test_a_changed_data_file_is_refused_with_both_hashes(env: dict[str, Path]) -> None:
    setup(env)
    before = hashlib.sha256(env["eval"].read_bytes()).hexdigest()
    applicants(2000, 99).to_parquet(env["eval"], index=False)
    after = hashlib.sha256(env["eval"].read_bytes()).hexdigest()
    result = CliRunner().invoke(root, ["evidence", "fairness", "--model", "credit", "--data", "eval"])
    assert result.exit_code == 1
    assert before in result.stderr and after in result.stderr


def test_a_model_not_on_the_ledger_is_refused(env: dict[str, Path]) -> None:
    setup(env)
    result = CliRunner().invoke(root, ["evidence", "fairness", "--model", "other", "--data", "eval"])
    assert result.exit_code == 2 and "model 'other' is not on the ledger" in result.stderr


def test_a_pickle_is_refused_as_a_model(env: dict[str, Path], tmp_path: Path) -> None:
    import pickle

    run("init", "--origin", "example.com/credit")
    bad = tmp_path / "model.pkl"
    bad.write_bytes(pickle.dumps({"not": "a model"}))
    result = CliRunner().invoke(root, ["model", "register", str(bad), "--name", "x", "--features", "a"])
    assert result.exit_code == 2 and "pickle and joblib files are refused" in result.stderr


def test_drift_between_datasets_with_different_columns_is_refused(
    env: dict[str, Path], tmp_path: Path
) -> None:
    setup(env)
    other = tmp_path / "other.csv"
    applicants(500, 5).drop(columns=["debt"]).to_csv(other, index=False)
    run("data", "register", str(other), "--role", "production", "--name", "other")
    result = CliRunner().invoke(root, ["evidence", "drift", "--reference", "train", "--current", "other"])
    assert result.exit_code == 2 and "debt" in result.stderr


def test_an_empty_file_is_refused_and_nothing_is_written(env: dict[str, Path], tmp_path: Path) -> None:
    run("init", "--origin", "example.com/credit")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    result = CliRunner().invoke(root, ["data", "register", str(empty), "--role", "train", "--name", "e"])
    assert result.exit_code == 2 and "empty" in result.stderr
    with Ledger.open(".mlledger") as led:
        assert led.head().size == 1


def test_a_missing_sensitive_column_is_refused(env: dict[str, Path]) -> None:
    run("init", "--origin", "example.com/credit")
    result = CliRunner().invoke(root, ["data", "register", str(env["train"]), "--role", "train",
                                       "--name", "t", "--sensitive", "religion"])
    assert result.exit_code == 2 and "religion" in result.stderr


def test_validation_records_every_check_and_exits_1_on_failure(env: dict[str, Path], tmp_path: Path) -> None:
    setup(env)
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        "columns:\n"
        "  income: {type: float, min: 0}\n"
        "  age: {type: int, nullable: false, min: 18, max: 65}\n"
        "  sex: {type: category, allowed: [female, male], nullable: false}\n"
        "label: {column: approved, domain: [0, 1]}\n")
    result = CliRunner().invoke(root, ["data", "validate", "train", "--schema", str(schema),
                                       "--format", "json"])
    assert result.exit_code == 1  # ages above 65 exist
    out = json.loads(result.stdout)
    failing = [c for c in out["checks"] if not c["passed"]]
    assert failing and all(c["failure_count"] > 0 for c in failing)
    with Ledger.open(".mlledger") as led:
        validated = list(led.iter(kind="dataset.validated"))
    assert len(validated) == 1 and validated[0].payload["passed"] is False
