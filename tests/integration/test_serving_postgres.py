"""Serving, batch scoring and erasure on the real PostgreSQL server (MLLEDGER_TEST_PG_URL)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest

import backends.kinds  # noqa: F401
from ledger.api import Ledger
from tests.integration.serving_world import ENV_CLEAR, build, head_size, run, server
from tests.integration.test_evidence_cli import applicants

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def pg_world(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for var in ENV_CLEAR:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLLEDGER_URL", pg_url)
    monkeypatch.setenv("MLLEDGER_HOME", str(tmp_path / ".mlledger"))
    monkeypatch.setenv("MLLEDGER_ACTOR", "dev@example.com")
    build(tmp_path)
    monkeypatch.chdir(tmp_path)
    return pg_url


def test_http_batch_erasure_and_audit_on_postgres(pg_world: str, tmp_path: Path) -> None:
    record = {"income": 61.5, "age": 33, "debt": 4.0}
    with server(env={"MLLEDGER_URL": pg_world, "MLLEDGER_HOME": str(tmp_path / ".mlledger")}) as (url, _):
        r = httpx.post(f"{url}/v1/predict", json={"records": [record, record], "subject_id": "pg-subject-1"})
        assert r.status_code == 200, r.text
        seq = r.json()["predictions"][0]["receipt"]["seq"]
        assert httpx.get(f"{url}/v1/receipts/{seq}/proof").status_code == 200
        before = head_size()
        bad = httpx.post(f"{url}/v1/predict", json={"record": {**record, "age": "old"}})
        assert bad.status_code == 422 and head_size() == before
    frame = applicants(300, 9).drop(columns=["approved", "sex", "race"])
    frame["who"] = [f"pg-subject-{i}" for i in range(300)]
    frame.to_csv("score.csv", index=False)
    out = json.loads(run("predict", "--model", "credit@production", "--input", "score.csv", "--output", "out.csv",
                         "--subject-column", "who", "--store-inputs", "--chunk-rows", "100", "--format", "json"))
    assert out["entries"] == 300
    scored = pd.read_csv("out.csv")
    assert scored["key_id"][1] == r.json()["predictions"][0]["key_id"]  # pg-subject-1: the same subject key
    assert json.loads(run("inputs", str(int(scored["seq"][5]))))["income"] == pytest.approx(frame["income"][5])
    erased = json.loads(run("erase", "--subject", "pg-subject-1", "--reason", "request", "--format", "json"))
    assert "is erased" in run("inputs", str(int(scored["seq"][1])), code=2)
    audit = run("audit")
    assert "3 recorded decision(s) under it are now unlinkable" in audit and "0 violation(s)" in audit
    with Ledger.open(pg_world) as led:
        assert led.verify().ok and led.get(erased["seq"]).kind == "subject.erased"
