"""Training and deployment through the CLI on real CSVs and a real ledger.

init -> data register -> train (model.trained) -> evidence on the trained model ->
policy, gate, approval, promotion -> deploy (model.deployed and the serving pointer).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import backends.kinds  # noqa: F401  (until the mlledger.kinds entry point names it)
from backends._cli import backends as backends_group
from backends._cli import deploy, train
from ledger.api import Ledger
from ledger.cli import root
from tests.integration.serving_world import SPEC as SERVING_SPEC
from tests.integration.test_evidence_cli import applicants

SPEC = SERVING_SPEC % 1

STAGING = """name: credit-staging
stage: staging
description: staging gate
rules:
  - id: approval.model-risk
    kind: approval
    quorum: 1
    role: model-risk
    meaning: approval
    exclude_trainer: true
    source: SR 11-7 independent validation
"""


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(root, list(args))
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return result.stdout + result.stderr


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("MLLEDGER_URL", "MLLEDGER_HOME", "MLLEDGER_KEY_PASSPHRASE", "CI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLLEDGER_ACTOR", "dev@example.com")
    for name, cmd in (("train", train), ("backends", backends_group), ("deploy", deploy)):
        monkeypatch.setitem(root.commands, name, cmd)
    applicants(3000, 1).to_csv("train.csv", index=False)
    applicants(2000, 2).to_csv("eval.csv", index=False)
    Path("spec.yaml").write_text(SPEC)
    run("init", "--origin", "example.com/train")
    for role in ("train", "eval"):
        run("data", "register", f"{role}.csv", "--role", role, "--name", role, "--sensitive", "sex,race",
            "--target", "approved")
    return tmp_path


def entries(kind: str) -> list[dict[str, object]]:
    with Ledger.open(".mlledger") as led:
        return [{"seq": e.seq, "subject": e.subject, "actor": e.actor, **e.payload} for e in led.iter(kind=kind)]


def test_train_records_model_trained_with_lineage(world: Path) -> None:
    out = json.loads(run("train", "spec.yaml", "--format", "json"))
    assert out["model"] == "credit@1" and out["metrics"]["eval_accuracy"] > 0.6
    (entry,) = entries("model.trained")
    assert entry["subject"] == "model:credit@1" and entry["backend"] == "local"
    assert entry["features"] == ["income", "age", "debt"]  # sensitive features are not inputs
    assert len(entry["training_data"]) == 2  # type: ignore[arg-type]
    assert str(entry["code_version"]).startswith("spec:")  # tmp_path is not a git work tree
    assert (world / ".mlledger" / "artifacts" / "sha256" / out["artifact_sha256"][:2] / out["artifact_sha256"]).exists()


def test_retraining_is_a_new_version_with_the_same_artifact(world: Path) -> None:
    first = json.loads(run("train", "spec.yaml", "--format", "json"))
    second = json.loads(run("train", "spec.yaml", "--format", "json"))
    assert (first["model"], second["model"]) == ("credit@1", "credit@2")
    assert first["artifact_sha256"] == second["artifact_sha256"]


def test_a_changed_dataset_is_refused(world: Path) -> None:
    with Path("train.csv").open("a") as fh:
        fh.write("1,2,3,female,a,0\n")
    out = run("train", "spec.yaml", code=1)
    assert "changed since it was registered" in out and not entries("model.trained")


def test_an_unregistered_dataset_is_refused(world: Path) -> None:
    Path("spec.yaml").write_text(SPEC.replace("eval: eval", "eval: holdout"))
    assert "dataset 'holdout' is not registered" in run("train", "spec.yaml", code=2)


def test_a_missing_target_column_is_refused(world: Path) -> None:
    Path("spec.yaml").write_text(SPEC.replace("target: approved", "target: defaulted"))
    assert "has no column(s) defaulted" in run("train", "spec.yaml", code=2)


def test_a_spec_error_names_the_file_and_line(world: Path) -> None:
    Path("spec.yaml").write_text(SPEC.replace("max_iter", "max_iters"))
    assert "spec.yaml:8: estimator.params.max_iters: LogisticRegression has no parameter" in \
        run("train", "spec.yaml", code=2)


def test_backends_list_shows_local(world: Path) -> None:
    assert "local" in run("backends", "list") and "ok" in run("backends", "list")


def test_evidence_performance_works_on_a_trained_model(world: Path) -> None:
    run("train", "spec.yaml")
    out = json.loads(run("evidence", "performance", "--model", "credit", "--data", "eval", "--format", "json"))
    assert out["values"]["accuracy"] > 0.6


def test_gate_approve_promote_deploy(world: Path) -> None:
    run("train", "spec.yaml")
    Path("staging.yaml").write_text(STAGING)
    run("identity", "keygen", "risk", "-o", "keys")
    run("identity", "register", "risk@example.com", "--role", "model-risk", "--public-key", "keys/risk.pub")
    run("policy", "publish", "staging.yaml", "--stage", "staging")
    assert "not hold stage 'staging'" in run("deploy", "credit@1", "--stage", "staging", code=2)
    gate = CliRunner().invoke(root, ["gate", "--model", "credit@1", "--stage", "staging", "--format", "json"])
    assert gate.exit_code == 3, gate.output
    with Ledger.open(".mlledger") as led:
        decision = led.head().size - 1
    run("approve", "--decision", str(decision), "--key", "keys/risk.pem", "--as", "risk@example.com")
    run("promote", "credit@1", "--to", "staging", "--no-deploy")
    out = json.loads(run("deploy", "credit@1", "--stage", "staging", "--format", "json"))
    (deployed,) = entries("model.deployed")
    (trained,) = entries("model.trained")
    (promoted,) = entries("model.promoted")
    assert deployed["artifact_sha256"] == trained["artifact_sha256"] == out["artifact_sha256"]
    assert deployed["promotion_seq"] == promoted["seq"]
    pointer = json.loads((world / ".mlledger" / "serving" / "staging.json").read_text())
    assert pointer["model"] == "credit@1" and pointer["deployed_seq"] == deployed["seq"]
    assert "0 violation(s)" in run("audit")


def test_deploy_refuses_a_tampered_artifact(world: Path) -> None:
    run("train", "spec.yaml")
    (trained,) = entries("model.trained")
    digest = str(trained["artifact_sha256"])
    Path("staging.yaml").write_text(STAGING)
    run("identity", "keygen", "risk", "-o", "keys")
    run("identity", "register", "risk@example.com", "--role", "model-risk", "--public-key", "keys/risk.pub")
    run("policy", "publish", "staging.yaml", "--stage", "staging")
    CliRunner().invoke(root, ["gate", "--model", "credit@1", "--stage", "staging"])
    with Ledger.open(".mlledger") as led:
        decision = led.head().size - 1
    run("approve", "--decision", str(decision), "--key", "keys/risk.pem", "--as", "risk@example.com")
    run("promote", "credit@1", "--to", "staging", "--no-deploy")
    path = world / ".mlledger" / "artifacts" / "sha256" / digest[:2] / digest
    path.write_bytes(path.read_bytes() + b"x")
    assert "was modified" in run("deploy", "credit@1", "--stage", "staging", code=1)
    assert not entries("model.deployed") and not (world / ".mlledger" / "serving" / "staging.json").exists()


def test_a_threshold_optimised_model_improves_the_recorded_impact_ratio(world: Path) -> None:
    """The spec's fairlearn mitigation answers a failed four-fifths gate, end to end through evidence."""
    run("train", "spec.yaml")
    Path("fair.yaml").write_text(SPEC.replace("name: credit\n", "name: credit-fair\n") + (
        "mitigation: {method: threshold_optimizer, constraint: demographic_parity}\n"))
    run("train", "fair.yaml")
    plain = json.loads(run("evidence", "fairness", "--model", "credit", "--data", "eval", "--format", "json"))
    fair = json.loads(run("evidence", "fairness", "--model", "credit-fair", "--data", "eval", "--format", "json"))
    assert fair["values"]["sex"]["demographic_parity_ratio"] > plain["values"]["sex"]["demographic_parity_ratio"]


def test_promotion_runs_the_backends_deploy_step(world: Path) -> None:
    """The promotion hook: promoting a trained version deploys it with its backend."""
    run("train", "spec.yaml")
    Path("staging.yaml").write_text(STAGING)
    run("identity", "keygen", "risk", "-o", "keys")
    run("identity", "register", "risk@example.com", "--role", "model-risk", "--public-key", "keys/risk.pub")
    run("policy", "publish", "staging.yaml", "--stage", "staging")
    CliRunner().invoke(root, ["gate", "--model", "credit@1", "--stage", "staging"])
    with Ledger.open(".mlledger") as led:
        decision = led.head().size - 1
    run("approve", "--decision", str(decision), "--key", "keys/risk.pem", "--as", "risk@example.com")
    run("promote", "credit@1", "--to", "staging")
    (deployed,) = entries("model.deployed")
    (promoted,) = entries("model.promoted")
    assert deployed["promotion_seq"] == promoted["seq"] and deployed["backend"] == "local"
    assert (world / ".mlledger" / "serving" / "staging.json").exists()


def test_a_deployment_without_its_promotion_is_refused(world: Path) -> None:
    run("train", "spec.yaml")
    (trained,) = entries("model.trained")
    with Ledger.open(".mlledger") as led:
        from ledger.errors import InputError
        from ledger.events import Event

        with pytest.raises(InputError, match="deployment refused"):
            led.append(Event.from_json({"kind": "model.deployed", "actor": "m", "payload": {
                "model": "credit@1", "artifact_sha256": trained["artifact_sha256"], "stage": "canary",
                "backend": "local", "promotion_seq": 0}}))
