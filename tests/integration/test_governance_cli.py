"""Policy gates end to end through the CLI, on a real ledger with real evidence.

deny on evidence -> needs approval -> a signed approval -> allow -> promotion;
separation of duties, forged and replayed approvals, every promotion path, the audit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.api import Ledger
from ledger.cli import root
from ledger.errors import InputError
from ledger.events import Event
from tests.integration.test_evidence_cli import applicants

STAGING = """name: credit-staging
stage: staging
description: staging gate
rules:
  - id: perf
    kind: performance
    min: {accuracy: 0.6}
    source: team floor
  - id: approval.model-risk
    kind: approval
    quorum: 1
    role: model-risk
    meaning: approval
    exclude_trainer: true
    source: SR 11-7 independent validation
"""

PRODUCTION = """name: credit-production
stage: production
description: four-fifths on top of the team floor
extends: [four-fifths]
rules:
  - id: perf
    kind: performance
    min: {accuracy: 0.6}
    source: team floor
"""


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(root, list(args))
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return result.stdout + result.stderr


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    from tests.integration.test_evidence_cli import FEATURES

    monkeypatch.chdir(tmp_path)
    for var in ("MLLEDGER_URL", "MLLEDGER_HOME", "MLLEDGER_KEY_PASSPHRASE", "CI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLLEDGER_ACTOR", "dev@example.com")
    train, ev = applicants(3000, 1), applicants(2000, 2)
    train.to_csv("train.csv", index=False)
    ev.to_csv("eval.csv", index=False)
    sio.dump(LogisticRegression(max_iter=500).fit(train[FEATURES], train["approved"]), "m.skops")
    Path("staging.yaml").write_text(STAGING)
    Path("production.yaml").write_text(PRODUCTION)
    run("init", "--origin", "example.com/gov")
    run("data", "register", "train.csv", "--role", "train", "--name", "train", "--sensitive", "sex,race",
        "--target", "approved")
    run("data", "register", "eval.csv", "--role", "eval", "--name", "eval", "--sensitive", "sex,race",
        "--target", "approved")
    run("model", "register", "m.skops", "--name", "credit", "--features", "income,age,debt",
        "--target", "approved", "--training-data", "train")
    run("evidence", "performance", "--model", "credit", "--data", "eval")
    run("evidence", "fairness", "--model", "credit", "--data", "eval")
    for who in ("risk", "dev", "auditor"):
        run("identity", "keygen", who, "-o", "keys")
    run("identity", "register", "risk@example.com", "--role", "model-risk", "--public-key", "keys/risk.pub")
    run("identity", "register", "dev@example.com", "--role", "model-risk", "--public-key", "keys/dev.pub")
    run("identity", "register", "auditor@example.com", "--role", "auditor", "--public-key", "keys/auditor.pub")
    run("policy", "publish", "staging.yaml", "--stage", "staging")
    run("policy", "publish", "production.yaml", "--stage", "production")
    return tmp_path


def gate(stage: str, code: int, fmt: str = "json") -> dict[str, object]:
    out = CliRunner().invoke(root, ["gate", "--model", "credit@1", "--stage", stage, "--format", fmt])
    assert out.exit_code == code, (out.stdout, out.stderr)
    return json.loads(out.stdout) if fmt == "json" else {"text": out.stdout}


def last_seq() -> int:
    with Ledger.open(".mlledger") as led:
        return led.head().size - 1


def test_deny_on_the_four_fifths_rule_exits_1_and_blocks_promotion(world: Path) -> None:
    result = gate("production", 1)
    assert result["decision"] == "deny"
    rule = next(r for r in result["rules"] if r["kind"] == "fairness")  # type: ignore[union-attr]
    assert rule["outcome"] == "fail" and "29 CFR 1607.4(D)" in rule["source"]
    out = run("promote", "credit@1", "--to", "production", code=2)
    assert "promotion refused" in out and "deny" in out


def test_needs_approval_then_a_valid_approval_allows_promotion(world: Path) -> None:
    assert gate("staging", 3)["decision"] == "needs_approval"
    decision = last_seq()
    run("promote", "credit@1", "--to", "staging", code=2)  # not yet approved
    run("approve", "--decision", str(decision), "--key", "keys/risk.pem", "--as", "risk@example.com")
    run("promote", "credit@1", "--to", "staging")
    assert "staging" in run("models")
    assert "promoted credit@1 to staging" in run("models", "history", "credit")
    audit = run("audit")
    assert "0 violation(s)" in audit


@pytest.mark.parametrize(
    ("who", "key", "message"),
    [("dev@example.com", "keys/dev.pem", "separation of duties"),
     ("auditor@example.com", "keys/auditor.pem", "none of the roles that may approve"),
     ("risk@example.com", "keys/dev.pem", "does not verify"),
     ("stranger@example.com", "keys/dev.pem", "not a registered identity")],
    ids=["self-approval-by-trainer", "signer-without-role", "wrong-key-forgery", "unregistered"],
)
def test_bad_approvals_are_refused_and_nothing_is_written(world: Path, who: str, key: str, message: str) -> None:
    gate("staging", 3)
    decision, before = last_seq(), last_seq()
    out = run("approve", "--decision", str(decision), "--key", key, "--as", who, code=2)
    assert message in out
    assert last_seq() == before


def test_a_replayed_approval_is_refused(world: Path) -> None:
    gate("staging", 3)
    first = last_seq()
    run("approve", "--decision", str(first), "--key", "keys/risk.pem", "--as", "risk@example.com")
    with Ledger.open(".mlledger") as led:
        original = led.get(last_seq()).payload
        # the same signature again on the same decision, and moved onto a newer decision
        with pytest.raises(InputError, match="already signed"):
            led.append(Event.from_json({"kind": "approval.signed", "actor": "mallory", "payload": original}))
    gate("staging", 3)
    second = last_seq()
    with Ledger.open(".mlledger") as led:
        moved = {**original, "decision_seq": second, "decision_leaf_hash": led.get(second).leaf_hash.hex()}
        with pytest.raises(InputError, match="does not verify|before the decision"):
            led.append(Event.from_json({"kind": "approval.signed", "actor": "mallory", "payload": moved}))


def test_no_path_promotes_without_an_allowing_policy(world: Path) -> None:
    """CLI, Python API and a direct append of model.promoted with a forged allowing decision."""
    gate("production", 1)
    with Ledger.open(".mlledger") as led:
        model = next(led.iter(kind="model.registered")).payload
        genuine = next(led.iter(kind="gate.evaluated")).payload
        forged = {**genuine, "decision": "allow",
                  "rules": [{**r, "outcome": "pass"} for r in genuine["rules"]]}
        forged_seq = led.append(Event.from_json({"kind": "gate.evaluated", "actor": "mallory",
                                                 "payload": forged})).seq
        promotion = {"model": "credit@1", "artifact_sha256": model["artifact_sha256"], "stage": "production",
                     "gate_seq": forged_seq}
        with pytest.raises(InputError, match="promotion refused"):
            led.append(Event.from_json({"kind": "model.promoted", "actor": "mallory", "payload": promotion}))
    out = run("append", json.dumps({"kind": "model.promoted", "actor": "mallory", "payload": promotion}), code=2)
    assert "promotion refused" in out
    run("promote", "credit@1", "--to", "production", "--decision", str(forged_seq), code=2)
    assert "production" not in run("models")
    # the forged decision itself is flagged by the audit
    assert "does not match the policy's verdict" in run("audit", code=1)


def test_a_newer_policy_invalidates_an_earlier_decision(world: Path) -> None:
    gate("staging", 3)
    decision = last_seq()
    run("approve", "--decision", str(decision), "--key", "keys/risk.pem", "--as", "risk@example.com")
    Path("staging2.yaml").write_text(STAGING.replace("accuracy: 0.6", "accuracy: 0.65"))
    run("policy", "publish", "staging2.yaml", "--stage", "staging")
    out = run("promote", "credit@1", "--to", "staging", "--decision", str(decision), code=2)
    assert "run the gate again" in out


def test_a_waiver_needs_two_approvers_and_is_reported_by_the_audit(world: Path) -> None:
    gate("production", 1)
    decision = last_seq()
    run("identity", "keygen", "risk2", "-o", "keys")
    run("identity", "register", "risk2@example.com", "--role", "validator", "--public-key", "keys/risk2.pub")
    justification = "regulator-approved emergency fix; remediation ticket RISK-42"
    run("waiver", "--decision", str(decision), "--justification", justification,
        "--approver", "risk@example.com", "keys/risk.pem", code=2)
    run("waiver", "--decision", str(decision), "--justification", justification,
        "--approver", "risk@example.com", "keys/risk.pem", "--approver", "risk2@example.com", "keys/risk2.pem")
    waiver = last_seq()
    run("promote", "credit@1", "--to", "production", "--decision", str(decision), "--waiver", str(waiver))
    audit = run("audit")
    assert "NOTICE" in audit and "RISK-42" in audit


@pytest.mark.parametrize("fmt", ["junit", "sarif", "markdown", "text"])
def test_every_output_format_keeps_the_exit_code(world: Path, fmt: str) -> None:
    out = gate("production", 1, fmt=fmt)["text"]
    assert "fairness" in str(out)


def test_models_at_answers_what_was_in_a_stage_at_a_time(world: Path) -> None:
    gate("staging", 3)
    decision = last_seq()
    run("approve", "--decision", str(decision), "--key", "keys/risk.pem", "--as", "risk@example.com")
    run("promote", "credit@1", "--to", "staging")
    with Ledger.open(".mlledger") as led:
        ts = led.get(last_seq()).ts
    out = json.loads(run("models", "at", "--time", ts, "--stage", "staging", "--format", "json"))
    assert out["model"] == "credit@1" and out["gate_seq"] == decision and out["approvals"]
    run("models", "at", "--time", "2000-01-01T00:00:00Z", "--stage", "staging", code=2)


def test_the_audit_runs_offline_over_a_bundle_and_finds_the_same_violation(world: Path) -> None:
    gate("production", 1)
    with Ledger.open(".mlledger") as led:
        genuine = next(led.iter(kind="gate.evaluated")).payload
        forged = {**genuine, "decision": "allow", "rules": [{**r, "outcome": "pass"} for r in genuine["rules"]]}
        led.append(Event.from_json({"kind": "gate.evaluated", "actor": "mallory", "payload": forged}))
    run("export", "-o", "bundle.zip")
    local = run("audit", code=1)
    offline = run("audit", "--bundle", "bundle.zip", "--trust", ".mlledger/keys/log.vkey", code=1)
    assert "does not match the policy's verdict" in offline
    assert [ln for ln in local.splitlines() if ln.startswith("VIOLATION")] == \
        [ln for ln in offline.splitlines() if ln.startswith("VIOLATION")]
    run("audit", "--bundle", "bundle.zip", code=2)  # no --trust: refused


def test_an_identity_without_an_admin_signature_has_no_power(world: Path) -> None:
    """A raw identity.registered (no admin signature) is recorded, flagged, and never trusted."""
    from policies._cli_gov import _public_b64

    raw_key = _public_b64(Path("keys/auditor.pub"))
    run("append", json.dumps({"kind": "identity.registered", "actor": "mallory", "payload": {
        "name": "mallory@example.com", "roles": ["model-risk"], "public_key": raw_key}}))
    gate("staging", 3)
    out = run("approve", "--decision", str(last_seq()), "--key", "keys/auditor.pem", "--as",
              "mallory@example.com", code=2)
    assert "admin-signed registration" in out
    assert "identity mallory@example.com is not trusted" in run("audit", code=1)


def test_only_a_trusted_admin_can_vouch_for_an_identity(world: Path) -> None:
    run("identity", "keygen", "boss", "-o", "keys")
    run("identity", "keygen", "new", "-o", "keys")
    run("identity", "register", "boss@example.com", "--role", "admin", "--public-key", "keys/boss.pub")
    run("identity", "register", "new@example.com", "--role", "validator", "--public-key", "keys/new.pub",
        "--as", "boss@example.com", "--key", "keys/boss.pem")
    # risk@ is not an admin: what it vouches for is not trusted
    run("identity", "register", "rogue@example.com", "--role", "model-risk", "--public-key", "keys/new.pub",
        "--as", "risk@example.com", "--key", "keys/risk.pem")
    listed = run("identity", "list")
    assert "new@example.com" in listed and "rogue@example.com" not in listed
    assert "risk@example.com is not a trusted admin" in run("audit", code=1)


def test_a_promotion_must_name_the_versions_own_artifact(world: Path) -> None:
    """A forged allowing decision for another artifact cannot carry that artifact into a stage."""
    with Ledger.open(".mlledger") as led:
        pub = list(led.iter(kind="policy.published"))[-1]
        forged = {"model": "credit@1", "artifact_sha256": "e" * 64, "stage": "production",
                  "policy_name": "credit-production", "policy_sha256": pub.payload["policy_hash"],
                  "policy_seq": pub.seq, "decision": "allow",
                  "rules": [{"rule_id": "x", "kind": "custom", "outcome": "pass", "reason": "r", "source": "s"}]}
        gate_seq = led.append(Event.from_json({"kind": "gate.evaluated", "actor": "m", "payload": forged})).seq
        promo = {"model": "credit@1", "artifact_sha256": "e" * 64, "stage": "production", "gate_seq": gate_seq}
        with pytest.raises(InputError, match="is not the artifact registered or trained as credit@1"):
            led.append(Event.from_json({"kind": "model.promoted", "actor": "m", "payload": promo}))


def test_a_stricter_policy_in_the_same_batch_is_seen_by_the_promotion_check(world: Path) -> None:
    gate("staging", 3)
    decision = last_seq()
    run("approve", "--decision", str(decision), "--key", "keys/risk.pem", "--as", "risk@example.com")
    import hashlib

    from ledger.kinds import PolicyPublished

    stricter = STAGING.replace("accuracy: 0.6", "accuracy: 0.999")
    with Ledger.open(".mlledger") as led:
        model = next(led.iter(kind="model.registered")).payload
        publish = Event(PolicyPublished(policy_hash=hashlib.sha256(stricter.encode()).hexdigest(), stage="staging",
                                        name="credit-staging", body=stricter), actor="m")
        promo = Event.from_json({"kind": "model.promoted", "actor": "m", "payload": {
            "model": "credit@1", "artifact_sha256": model["artifact_sha256"], "stage": "staging",
            "gate_seq": decision}})
        before = led.head().size
        with pytest.raises(InputError, match="promotion refused"):
            led.append_many([publish, promo])
        assert led.head().size == before  # atomic: the publication is not written either


def test_a_review_signature_is_not_an_approval(world: Path) -> None:
    gate("staging", 3)
    run("approve", "--decision", str(last_seq()), "--meaning", "review", "--key", "keys/risk.pem",
        "--as", "risk@example.com")
    assert "promotion refused" in run("promote", "credit@1", "--to", "staging", code=2)


def test_a_waiver_covers_one_promotion_only(world: Path) -> None:
    gate("production", 1)
    decision = last_seq()
    run("identity", "keygen", "risk2", "-o", "keys")
    run("identity", "register", "risk2@example.com", "--role", "validator", "--public-key", "keys/risk2.pub")
    run("waiver", "--decision", str(decision), "--justification", "regulator-approved emergency fix RISK-42",
        "--approver", "risk@example.com", "keys/risk.pem", "--approver", "risk2@example.com", "keys/risk2.pem")
    waiver = last_seq()
    run("promote", "credit@1", "--to", "production", "--decision", str(decision), "--waiver", str(waiver))
    out = run("promote", "credit@1", "--to", "production", "--decision", str(decision), "--waiver", str(waiver),
              code=2)
    assert "already used" in out
