"""A real ledger for report tests, built through the real CLI: data -> model -> evidence ->
policy -> gate -> approval -> promotion. No mocks; every entry is what the commands write."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from ledger.api import Ledger
from ledger.cli import root
from tests.integration.test_evidence_cli import FEATURES, applicants
from tests.integration.test_governance_cli import STAGING

DEV = "dev@example.com"
AUDITOR = "auditor@example.com"


def run(home: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(root, ["--ledger", str(home), *args])
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return result.stdout + result.stderr


def build(base: Path, *, evidence: bool = True, fairness_by: str = DEV, rows: int = 800) -> Path:
    """Write the data and model files under ``base`` and build the ledger at ``base/.mlledger``."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    home = base / ".mlledger"
    train, ev = applicants(rows, 1), applicants(rows, 2)
    train.to_csv(base / "train.csv", index=False)
    ev.to_csv(base / "eval.csv", index=False)
    sio.dump(LogisticRegression(max_iter=500).fit(train[FEATURES], train["approved"]), base / "m.skops")
    (base / "staging.yaml").write_text(STAGING)
    run(home, "init", "--origin", "example.com/reports")
    for role in ("train", "eval"):
        run(home, "data", "register", str(base / f"{role}.csv"), "--role", role, "--name", role,
            "--sensitive", "sex,race", "--target", "approved", "--actor", DEV)
    run(home, "model", "register", str(base / "m.skops"), "--name", "credit", "--features", ",".join(FEATURES),
        "--target", "approved", "--training-data", "train", "--actor", DEV)
    if not evidence:
        return home
    run(home, "evidence", "performance", "--model", "credit@1", "--data", "eval", "--actor", DEV)
    run(home, "evidence", "fairness", "--model", "credit@1", "--data", "eval", "--actor", fairness_by)
    run(home, "identity", "keygen", "risk", "-o", str(base / "keys"))
    run(home, "identity", "register", "risk@example.com", "--role", "model-risk", "--public-key",
        str(base / "keys" / "risk.pub"), "--display-name", "Rita Risk")
    run(home, "policy", "publish", str(base / "staging.yaml"), "--stage", "staging", "--actor", DEV)
    run(home, "gate", "--model", "credit@1", "--stage", "staging", "--actor", DEV, code=3)
    run(home, "approve", "--decision", str(last_seq(home)), "--key", str(base / "keys" / "risk.pem"),
        "--as", "risk@example.com")
    run(home, "promote", "credit@1", "--to", "staging", "--no-deploy", "--actor", DEV)
    return home


def last_seq(home: Path) -> int:
    with Ledger.open(str(home)) as led:
        return led.head_size() - 1
