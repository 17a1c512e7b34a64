"""A vendor's model through the CLI on a real ledger: register-external -> recorded outputs ->
fairness, performance and drift evidence -> gate under a published policy -> approval -> promote
-> audit. Bad outputs and an unregistered vendor model are refused with nothing written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ledger.api import Ledger
from ledger.artifacts import ArtifactStore
from ledger.cli import root
from tests.integration.test_governance_cli import run
from tests.integration.test_train_cli import entries

PRODUCTION = """name: vendor-production
stage: production
description: a vendor hiring tool, audited from its recorded decisions
extends: [four-fifths]
rules:
  - id: perf
    kind: performance
    min: {accuracy: 0.8}
    source: team floor
  - id: drift.outputs
    kind: drift
    statistic: prediction_psi
    limit: 0.2
    source: PSI 0.2 blocks
  - id: approval.model-risk
    kind: approval
    quorum: 1
    role: model-risk
    meaning: approval
    exclude_trainer: true
    source: SR 11-7 independent validation
"""
OUTPUTS = ["--model", "hirescore@1", "--outputs", "outputs.csv", "--decision-column", "hired",
           "--label-column", "qualified", "--sensitive", "sex,race"]


def recorded_decisions(seed: int = 5) -> pd.DataFrame:
    """100 applicants per (sex, race): 45 hired per female cell, 50 per male cell (impact ratio
    0.9); outcomes agree with decisions on 9 rows in 10; decision times spread over half a year."""
    rng = np.random.default_rng(seed)
    cells = []
    for sex, hired in (("female", 45), ("male", 50)):
        for race in ("a", "b", "c"):
            i = np.arange(100)
            decision = (i < hired).astype(int)
            cells.append(pd.DataFrame({"sex": sex, "race": race, "hired": decision,
                                       "qualified": np.where(i % 10 == 0, 1 - decision, decision),
                                       "score": np.round(rng.normal(600, 40, 100) + 30 * decision, 1)}))
    out = pd.concat(cells, ignore_index=True)
    days = rng.permutation(np.arange(len(out)) % 180)
    out["decided_at"] = (pd.Timestamp("2026-01-01") + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d")
    return out


def size() -> int:
    with Ledger.open(".mlledger") as led:
        return led.head().size


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("MLLEDGER_URL", "MLLEDGER_HOME", "MLLEDGER_KEY_PASSPHRASE", "CI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLLEDGER_ACTOR", "owner@example.com")
    recorded_decisions().to_csv("outputs.csv", index=False)
    Path("card.md").write_text("# HireScore 4.2\nA resume screening score by Acme HR.\n")
    Path("production.yaml").write_text(PRODUCTION)
    run("init", "--origin", "example.com/vendor")
    return tmp_path


def register() -> None:
    run("model", "register-external", "hirescore", "--version", "1", "--vendor", "Acme HR Inc.",
        "--description", "HireScore 4.2 resume screen", "--card", "card.md", "--annex-iv", "1")


def test_a_vendor_model_is_gated_promoted_and_audited_end_to_end(world: Path) -> None:
    register()
    [model] = entries("model.registered")
    assert model["external"] is True and model["vendor"] == "Acme HR Inc." and model["artifact_sha256"] is None
    [card] = entries("doc.attached")
    assert card["model"] == "hirescore@1" and card["annex_iv"] == "1"
    assert ArtifactStore(world / ".mlledger" / "artifacts").get(str(card["sha256"])) == Path("card.md").read_bytes()

    fair = json.loads(run("evidence", "fairness", *OUTPUTS, "--format", "json"))
    assert fair["values"]["sex"]["min_impact_ratio"] == pytest.approx(0.9)
    run("evidence", "performance", *OUTPUTS)
    run("evidence", "drift", *OUTPUTS, "--time-column", "decided_at", "--reference-until", "2026-04-01")
    [outputs] = entries("dataset.registered")  # registered once, then reused by its hash
    digest = hashlib.sha256(Path("outputs.csv").read_bytes()).hexdigest()
    assert (outputs["role"], outputs["sha256"], outputs["name"]) == ("outputs", digest, "hirescore@1.outputs")
    evidence = entries("evidence.recorded")
    assert [e["type"] for e in evidence] == ["fairness", "performance", "drift"]
    assert all(e["model"] == "hirescore@1" and e["model_sha256"] is None and e["dataset_sha256"] == digest
               for e in evidence)

    for who in ("risk", "owner"):
        run("identity", "keygen", who, "-o", "keys")
        run("identity", "register", f"{who}@example.com", "--role", "model-risk", "--public-key",
            f"keys/{who}.pub")
    run("policy", "publish", "production.yaml", "--stage", "production")
    out = CliRunner().invoke(root, ["gate", "--model", "hirescore@1", "--stage", "production", "--format", "json"])
    assert out.exit_code == 3, (out.stdout, out.stderr)
    result = json.loads(out.stdout)
    assert result["artifact_sha256"] is None
    assert {r["rule_id"]: r["outcome"] for r in result["rules"]} == {
        "fairness.four-fifths": "pass", "perf": "pass", "drift.outputs": "pass",
        "approval.model-risk": "needs_approval"}
    decision = size() - 1
    refused = run("approve", "--decision", str(decision), "--key", "keys/owner.pem", "--as", "owner@example.com",
                  code=2)
    assert "registered this model" in refused  # separation of duties holds without an artifact
    run("approve", "--decision", str(decision), "--key", "keys/risk.pem", "--as", "risk@example.com")
    assert "promoted hirescore@1 to production" in run("promote", "hirescore@1", "--to", "production")
    assert "stages: production" in run("models")
    assert "0 violation(s)" in run("audit")
    assert "ok" in run("verify", "--deep")


def test_an_external_model_cannot_be_deployed_by_promotion(world: Path) -> None:
    register()
    out = run("promote", "hirescore@1", "--to", "production", "--deploy", code=2)
    assert "external model" in out and "--no-deploy" in out


def test_a_supplied_vendor_package_is_stored_and_hashed(world: Path) -> None:
    Path("hirescore-4.2.zip").write_bytes(b"PK\x03\x04 vendor package")
    out = json.loads(run("model", "register-external", "hirescore", "--version", "1", "--vendor", "Acme HR Inc.",
                         "--artifact", "hirescore-4.2.zip", "--format", "json"))
    digest = hashlib.sha256(b"PK\x03\x04 vendor package").hexdigest()
    assert out["artifact_sha256"] == digest and out["external"] is True
    assert digest in ArtifactStore(world / ".mlledger" / "artifacts")
    assert "already on the ledger" in run("model", "register-external", "hirescore", "--version", "1",
                                          "--vendor", "Acme HR Inc.", code=2)


def test_an_external_model_is_not_run_on_a_dataset(world: Path) -> None:
    register()
    run("data", "register", "outputs.csv", "--role", "eval", "--name", "ev", "--sensitive", "sex")
    out = run("evidence", "fairness", "--model", "hirescore@1", "--data", "ev", code=2)
    assert "external model" in out and "--outputs" in out


def _bad(column: str, value: object) -> pd.DataFrame:
    frame = recorded_decisions()
    frame[column] = frame[column].astype(object)
    frame.loc[7, column] = value
    return frame


BAD = {
    "outputs lacking the named column": (recorded_decisions().drop(columns=["hired"]), [],
                                         "bad.csv: the outputs table has no column(s) 'hired'"),
    "scores that are not numeric": (_bad("score", "excellent"), ["--score-column", "score"],
                                    "bad.csv: score column 'score' is not numeric: row 7 holds 'excellent'"),
    "a decision column that is not binary": (_bad("hired", 3), [],
                                             "bad.csv: decision column 'hired' is not binary"),
    "a sensitive column with one group": (recorded_decisions().assign(sex="female"), [],
                                          "bad.csv: sensitive column 'sex' has only one group ('female')"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_outputs_get_a_clear_error_and_nothing_is_written(world: Path, case: str) -> None:
    register()
    frame, extra, message = BAD[case]
    frame.to_csv("bad.csv", index=False)
    before = size()
    out = run("evidence", "fairness", "--model", "hirescore@1", "--outputs", "bad.csv", "--decision-column", "hired",
              "--sensitive", "sex,race", *extra, code=2)
    assert message in out
    assert size() == before


def test_a_vendor_model_referenced_before_registration_is_refused(world: Path) -> None:
    before = size()
    out = run("evidence", "fairness", *OUTPUTS, code=2)
    assert "model 'hirescore@1' is not on the ledger" in out and "register-external" in out
    assert size() == before
