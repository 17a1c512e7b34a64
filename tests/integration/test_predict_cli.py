"""Batch scoring, single-row proofs of batch commitments, stored inputs and erasure, through the CLI.

Also the privacy scan: no raw input value and no subject id appears in the entries table or
in an exported bundle, before or after erasure.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import backends.kinds  # noqa: F401
from ledger.api import Ledger
from ledger.canonical import encode
from tests.integration.serving_world import head_size, run
from tests.integration.test_evidence_cli import applicants

pytestmark = pytest.mark.slow


def scoring_file(n: int, path: str = "score.csv") -> pd.DataFrame:
    frame = applicants(n, 7).drop(columns=["approved", "sex", "race"])
    # distinctive values, so that a scan for them cannot hit a score or a hash by chance
    frame["income"] = [123000.0 + i + 0.4375 for i in range(n)]
    frame["subject"] = [f"subject-zq{i:05d}" for i in range(n)]
    if path.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return frame


def test_per_row_scoring_records_one_entry_per_row(world: Path) -> None:
    scoring_file(500)
    before = head_size()
    out = json.loads(run("predict", "--model", "credit@production", "--input", "score.csv", "--output", "out.csv",
                         "--chunk-rows", "128", "--format", "json"))
    assert out["rows"] == out["entries"] == 500 and head_size() == before + 500
    result = pd.read_csv("out.csv")
    assert list(result["row"]) == list(range(500))
    with Ledger.open(".mlledger") as led:
        for i in (0, 127, 128, 499):
            e = led.get(int(result["seq"][i]))
            assert e.kind == "prediction.made" and e.payload["label"] == result["label"][i]
            assert e.payload["input_commitment"] == result["input_commitment"][i]
            assert e.payload["model"] == "credit@1" and e.payload["key_id"].startswith("dk-")


def test_subject_keys_store_inputs_and_erasure(world: Path) -> None:
    frame = scoring_file(40, "score.parquet")
    run("predict", "--model", "credit@production", "--input", "score.parquet", "--output", "out.parquet",
        "--subject-column", "subject", "--store-inputs")
    result = pd.read_parquet("out.parquet")
    assert result["key_id"].nunique() == 40
    seq = int(result["seq"][3])
    shown = json.loads(run("inputs", str(seq)))
    assert shown == {"age": int(frame["age"][3]), "debt": float(frame["debt"][3]), "income": 123003.4375}
    out = json.loads(run("erase", "--subject", "subject-zq00003", "--reason", "data subject request",
                         "--request", "DSR-7", "--actor", "dpo@example.com", "--format", "json"))
    assert out["key_id"] == result["key_id"][3]
    assert "is erased" in run("inputs", str(seq), code=2)
    assert json.loads(run("inputs", str(int(result["seq"][4]))))["income"] == 123004.4375
    assert "no live key" in run("erase", "--subject", "subject-zq00003", "--reason", "again", code=2)
    assert "no live key" in run("erase", "--subject", "never-seen", "--reason", "x", code=2)
    assert "entries verify" in run("verify")
    run("export", "-o", "bundle.zip")
    assert "ok" in run("verify-bundle", "bundle.zip", "--trust", ".mlledger/keys/log.vkey")
    with sqlite3.connect(".mlledger/ledger.db") as db:
        row = db.execute("SELECT subject, secret, erased_seq FROM subject_keys WHERE key_id = ?",
                         (out["key_id"],)).fetchone()
    assert row == (None, None, out["seq"])
    audit = run("audit")
    assert f"seq {out['seq']}: subject key {out['key_id']} erased (DSR-7" in audit
    assert "1 recorded decision(s) under it are now unlinkable" in audit and "0 violation(s)" in audit


def test_audit_flags_a_decision_that_no_deployment_served(world: Path) -> None:
    from ledger.events import Event

    scoring_file(3)
    run("predict", "--model", "credit@production", "--input", "score.csv", "--output", "out.csv")
    with Ledger.open(".mlledger") as led:
        real = led.get(int(pd.read_csv("out.csv")["seq"][0])).payload
        forged = {**real, "deployed_seq": 2}  # seq 2 is a dataset registration, not a deployment
        seq = led.append(Event.from_json({"kind": "prediction.made", "actor": "x", "payload": forged})).seq
        other = {**real, "model": "credit@9"}
        seq2 = led.append(Event.from_json({"kind": "prediction.made", "actor": "x", "payload": other})).seq
    out = run("audit", code=1)
    assert f"seq {seq}: prediction.made of credit@1 at production refers to seq 2, which is not an earlier " \
           "model.deployed entry" in out
    assert f"seq {seq2}: prediction.made of credit@9 at production" in out and "2 violation(s)" in out


def test_no_raw_input_or_subject_id_reaches_the_entries_or_a_bundle(world: Path) -> None:
    frame = scoring_file(60)
    run("predict", "--model", "credit@production", "--input", "score.csv", "--output", "out.csv",
        "--subject-column", "subject", "--store-inputs")
    run("predict", "--model", "credit@production", "--input", "score.csv", "--output", "out2.csv",
        "--subject-column", "subject", "--batch-commitment")
    run("erase", "--subject", "subject-zq00001", "--reason", "request")
    run("export", "-o", "bundle.zip")
    with sqlite3.connect(".mlledger/ledger.db") as db:
        stored = b"\n".join(bytes(r[0]) for r in db.execute("SELECT entry FROM entries"))
    with zipfile.ZipFile("bundle.zip") as z:
        bundle = b"\n".join(z.read(n) for n in z.namelist())
    records = Path("out2.csv.records.jsonl").read_bytes()
    for blob, where in ((stored, "entries"), (bundle, "bundle"), (records, "batch records")):
        for i in range(60):
            income = repr(float(frame["income"][i])).encode()
            assert income not in blob, (where, income)
            assert f"subject-zq{i:05d}".encode() not in blob, where


def test_batch_commitment_proves_single_rows(world: Path) -> None:
    scoring_file(1000)
    before = head_size()
    out = json.loads(run("predict", "--model", "credit@production", "--input", "score.csv", "--output",
                         "out.csv", "--batch-commitment", "--chunk-rows", "300", "--format", "json"))
    assert out["entries"] == 1 and head_size() == before + 1
    with Ledger.open(".mlledger") as led:
        batch = led.get(out["batch_seq"])
    assert batch.kind == "prediction.batch" and batch.payload["count"] == 1000 and batch.payload["root"] == out["root"]
    records = Path("out.csv.records.jsonl").read_bytes()
    assert batch.payload["records_sha256"] == hashlib.sha256(records).hexdigest() and records.count(b"\n") == 1000
    run("prove", str(out["batch_seq"]), "--entry-out", "batch.entry", "-o", "batch.tlog-proof")
    trust = ("--entry-proof", "batch.tlog-proof", "--trust", ".mlledger/keys/log.vkey")
    for row in (0, 1, 299, 300, 999):
        Path(f"row{row}.json").write_text(run("batch-proof", "out.csv.records.jsonl", "--row", str(row)))
        assert f"ok: row {row} is in the batch at seq {out['batch_seq']}" in run(
            "batch-proof", f"row{row}.json", "--row", str(row), "--verify", "batch.entry", *trust)
    assert "needs --entry-proof" in run("batch-proof", "row0.json", "--row", "0", "--verify", "batch.entry", code=2)
    # a batch entry that is not in the log (its bytes changed) fails, even with a matching root
    Path("forged.entry").write_bytes(batch.raw.replace(b'"automated_decision":true', b'"automated_decision":false'))
    run("batch-proof", "row0.json", "--row", "0", "--verify", "forged.entry", *trust, code=1)
    proof = json.loads(Path("row299.json").read_text())
    record = json.loads(proof["record"])
    record["label"] = 1 - record["label"]  # the decision altered after the fact
    Path("forged.json").write_text(json.dumps({**proof, "record": encode(record).decode()}))
    assert "does not reproduce the root" in run("batch-proof", "forged.json", "--row", "299", "--verify",
                                                "batch.entry", *trust, code=1)
    assert "out of range" in run("batch-proof", "out.csv.records.jsonl", "--row", "1000", code=2)
    result = pd.read_csv("out.csv")
    assert (result["batch_seq"] == out["batch_seq"]).all() and len(result) == 1000


@pytest.mark.parametrize(("edit", "says"), [
    (lambda f: f.drop(columns=["debt"]), "no column 'debt'"),
    (lambda f: f.assign(age=f["age"].astype(str).where(f.index != 17, "forty")), "score.csv:19: column 'age': 'forty'"),
    (lambda f: f.assign(debt=f["debt"].where(f.index != 5)), "score.csv:7: column 'debt' is empty"),
])
def test_a_bad_file_is_one_error_and_writes_nothing(world: Path, edit: object, says: str) -> None:
    frame = scoring_file(30)
    edit(frame).to_csv("score.csv", index=False)  # type: ignore[operator]
    before = head_size()
    assert says in run("predict", "--model", "credit@production", "--input", "score.csv", "--output", "out.csv",
                       code=2)
    assert head_size() == before and not Path("out.csv").exists()


def test_usage_errors(world: Path) -> None:
    scoring_file(5)
    assert "NAME@STAGE" in run("predict", "--model", "credit", "--input", "score.csv", "--output", "o.csv", code=2)
    assert "no deployment at stage 'canary'" in run("predict", "--model", "credit@canary", "--input", "score.csv",
                                                    "--output", "o.csv", code=2)
    assert ".csv or .parquet" in run("predict", "--model", "credit@production", "--input", "score.csv",
                                     "--output", "o.txt", code=2)
    assert "column 'who'" in run("predict", "--model", "credit@production", "--input", "score.csv", "--output",
                                 "o.csv", "--subject-column", "who", code=2)


def test_subject_ids_and_string_values_are_read_as_text(world: Path) -> None:
    frame = scoring_file(3)
    frame["subject"] = ["007", "1e3", "00123"]
    frame.to_csv("score.csv", index=False)
    run("predict", "--model", "credit@production", "--input", "score.csv", "--output", "out.csv",
        "--subject-column", "subject", "--store-inputs")
    for subject in ("007", "1e3", "00123"):  # each erasable by the id exactly as given
        assert "subject.erased" in run("erase", "--subject", subject, "--reason", "request")
    assert "no live key" in run("erase", "--subject", "7", "--reason", "request", code=2)


def test_stored_inputs_need_a_subject_column(world: Path) -> None:
    scoring_file(3)
    before = head_size()
    assert "--store-inputs needs --subject-column" in run(
        "predict", "--model", "credit@production", "--input", "score.csv", "--output", "out.csv", "--store-inputs",
        code=2)
    assert head_size() == before


def test_the_ledger_refuses_a_decision_under_an_erased_key_and_a_stray_undeployment(world: Path) -> None:
    from ledger.errors import InputError
    from ledger.events import Event
    from ledger.privacy import KeyErased

    scoring_file(2)
    run("predict", "--model", "credit@production", "--input", "score.csv", "--output", "out.csv",
        "--subject-column", "subject")
    seq = int(pd.read_csv("out.csv")["seq"][0])
    run("erase", "--subject", "subject-zq00000", "--reason", "request")
    with Ledger.open(".mlledger") as led:
        payload = led.get(seq).payload
        with pytest.raises(KeyErased, match="was erased"):
            led.append(Event.from_json({"kind": "prediction.made", "actor": "x", "payload": payload}))
        deployed = next(iter(led.iter(kind="model.deployed")))
        with pytest.raises(InputError, match="undeployment refused"):
            led.append(Event.from_json({"kind": "model.undeployed", "actor": "x", "payload": {
                "model": "credit@1", "artifact_sha256": deployed.payload["artifact_sha256"], "stage": "staging",
                "deployed_seq": deployed.seq, "reason": "stray"}}))


def test_audit_flags_a_decision_by_a_version_no_longer_deployed(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ledger.events import Event
    from tests.integration.serving_world import train_and_promote

    scoring_file(2)
    run("predict", "--model", "credit@production", "--input", "score.csv", "--output", "out.csv")
    seq = int(pd.read_csv("out.csv")["seq"][0])
    train_and_promote(2)  # deploys credit@2 and ends credit@1's deployment
    with Ledger.open(".mlledger") as led:
        late = led.append(Event.from_json({"kind": "prediction.made", "actor": "x",
                                           "payload": led.get(seq).payload})).seq
    assert f"seq {late}: prediction.made of credit@1 at production was recorded" in run("audit")  # a notice
    monkeypatch.setattr("policies._audit_ops.SWITCH_GRACE_S", -1.0)
    out = run("audit", code=1)
    assert f"seq {late}: prediction.made of credit@1 at production was recorded" in out
    assert "a version that was no longer deployed decided" in out


def test_audit_flags_an_incident_not_reported_by_its_art_73_deadline(world: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from backends.incidents import open_incident, report_incident
    from ledger.errors import InputError

    with Ledger.open(".mlledger") as led:
        late = open_incident(led, model="credit@1", severity="serious", summary="wrongful denials", actor="risk",
                             aware=datetime.now(UTC) - timedelta(days=16)).seq
        pending = open_incident(led, model="credit@1", severity="death", summary="harm", actor="risk").seq
        done = open_incident(led, model="credit@1", severity="widespread", summary="outage", actor="risk",
                             aware=datetime.now(UTC) - timedelta(days=1)).seq
        report_incident(led, done, authority="market surveillance", reference="MSA-1", actor="risk")
        tardy = open_incident(led, model="credit@1", severity="widespread", summary="leak", actor="risk",
                              aware=datetime.now(UTC) - timedelta(days=5)).seq
        report_incident(led, tardy, authority="market surveillance", reference="MSA-2", actor="risk")
        with pytest.raises(InputError, match="already reported"):
            report_incident(led, tardy, authority="market surveillance", reference="MSA-3", actor="risk")
    out = run("audit", code=1)
    assert f"seq {late}: serious incident on credit@1 (wrongful denials): its report to the authority was due" in out
    assert f"seq {pending}: death incident on credit@1 (harm): to be reported to the authority by" in out
    assert f"seq {tardy}: widespread incident on credit@1 (leak): reported 3.0 days after its Art. 73 deadline" in out
    assert f"seq {done}:" not in out and "2 violation(s)" in out
