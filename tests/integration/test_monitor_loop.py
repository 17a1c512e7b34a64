"""Monitoring and the closed retraining loop, through the real CLI on a deployed world.

Drift injected into the prediction stream alerts within one window; late labels update the window's
accuracy; the loop retrains, gates, promotes and deploys, and a real server then serves the new
version; a denied retrain leaves the incumbent serving and opens an incident; a kill -9 at any step
and a re-run complete the loop exactly once on a ledger that verifies. The ``world`` fixture is in
``tests/integration/conftest.py``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from click.testing import CliRunner

from ledger.api import Ledger
from ledger.cli import root
from tests.integration.serving_world import ENV_CLEAR, cli_command, head_size, run, server
from tests.integration.test_evidence_cli import applicants

pytestmark = pytest.mark.slow

MONITORED = """name: credit-production-monitored
stage: production
description: production gate with monitoring and retraining
rules:
%s
monitor:
  window: 200
  prediction_psi: 0.2
  accuracy_min: 0.6
  min_labels: 30
retrain:
  id: drift-retrain
  trigger: [prediction-drift, input-drift, accuracy]
  data: reference+labelled
"""
AUTO = """  - id: performance.floor
    kind: performance
    min: {accuracy: 0.6}"""
UNREACHABLE = """  - id: performance.floor
    kind: performance
    min: {accuracy: 0.99}"""
APPROVAL = """  - id: approval.model-risk
    kind: approval
    quorum: 1
    role: model-risk
    meaning: approval
    exclude_trainer: true"""


def publish(rules: str) -> None:
    Path("monitored.yaml").write_text(MONITORED % rules)
    run("policy", "publish", "monitored.yaml", "--stage", "production")


def score(name: str, seed: int, shift: float, n: int = 200) -> pd.DataFrame:
    """Score n applicants through 'mlledger predict' (inputs stored); the truth, groups and seqs."""
    frame = applicants(n, seed, shift=shift)
    frame.insert(0, "subject", [f"{name}-{i}" for i in range(n)])
    frame.drop(columns=["approved"]).to_csv(f"{name}.csv", index=False)
    run("predict", "--model", "credit@production", "--input", f"{name}.csv", "--output", f"{name}-out.csv",
        "--store-inputs", "--subject-column", "subject")
    out = pd.read_csv(f"{name}-out.csv")
    return pd.DataFrame({"seq": out["seq"], "label": frame["approved"], "sex": frame["sex"],
                         "predicted": out["label"]})


def kinds() -> list[tuple[int, str, dict[str, object]]]:
    with Ledger.open(".mlledger") as led:
        return [(e.seq, e.kind, e.payload) for e in led.iter()]


def of_kind(kind: str) -> list[dict[str, object]]:
    return [p for _s, k, p in kinds() if k == kind]


def deployed_model() -> str:
    return str(of_kind("model.deployed")[-1]["model"])


def drifted_world(rules: str) -> None:
    """A normal window, then a drifted one, labelled; monitored (alerts recorded)."""
    publish(rules)
    score("normal", 11, 0.0)
    truth = score("drift", 12, 2.0)
    truth[["seq", "label", "sex"]].to_csv("labels.csv", index=False)
    run("labels", "ingest", "labels.csv", "--group", "sex")
    run("monitor", "--model", "credit", code=1)


def test_injected_drift_alerts_within_one_window(world: Path) -> None:
    publish(AUTO)
    score("normal", 11, 0.0)
    out = run("monitor", "--model", "credit")
    assert "window" in out and "ALERT" not in out
    first_drifted = head_size()
    score("drift", 12, 2.0)
    out = run("monitor", "--model", "credit", code=1)
    alerts = of_kind("monitor.alert")
    assert {a["kind"] for a in alerts} == {"prediction-drift", "input-drift"}
    windows = of_kind("monitor.window")
    assert [w["first_seq"] for w in windows] == [11, first_drifted]  # the drift's first window alerts
    assert all(a["window_last_seq"] == windows[1]["last_seq"] for a in alerts)
    assert windows[1]["input_drift"]["computed"] is True and "income" in windows[1]["input_drift"]["drifted"]
    run("monitor", "--model", "credit")  # idempotent: no new full window, nothing recorded
    assert len(of_kind("monitor.window")) == 2


def test_input_drift_not_computed_without_stored_inputs_says_why(world: Path) -> None:
    publish(AUTO)
    applicants(200, 11).drop(columns=["approved"]).to_csv("plain.csv", index=False)
    run("predict", "--model", "credit@production", "--input", "plain.csv", "--output", "plain-out.csv")
    run("monitor", "--model", "credit")
    drift = of_kind("monitor.window")[0]["input_drift"]
    assert drift["computed"] is False and "--store-inputs" in str(drift["reason"])


def test_late_labels_update_the_accuracy_window(world: Path) -> None:
    publish(AUTO)
    truth = score("normal", 11, 0.0)
    run("monitor", "--model", "credit")
    assert of_kind("monitor.window")[0]["labels"]["count"] == 0
    wrong = truth.assign(label=1 - truth["predicted"])  # ground truth contradicting every decision
    wrong[["seq", "label", "sex"]].to_csv("late.csv", index=False)
    run("labels", "ingest", "late.csv", "--group", "sex")
    out = run("monitor", "--model", "credit", code=1)
    assert "revision of window" in out
    windows = of_kind("monitor.window")
    assert windows[1]["revises"] is not None and windows[1]["labels"]["count"] == 200
    assert windows[1]["labels"]["accuracy"] == 0.0
    assert [a["kind"] for a in of_kind("monitor.alert")] == ["accuracy"]
    run("monitor", "--model", "credit")  # nothing new
    assert len(of_kind("monitor.window")) == 2


def test_labels_naming_unknown_decisions_write_nothing(world: Path) -> None:
    publish(AUTO)
    truth = score("normal", 11, 0.0, n=20)
    size = head_size()
    bad = truth[["seq", "label"]].copy()
    bad.loc[3, "seq"] = 5  # model.trained, not a decision
    bad.to_csv("bad.csv", index=False)
    out = run("labels", "ingest", "bad.csv", code=2)
    assert "bad.csv:5: seq '5' is not a recorded prediction.made" in out
    truth[["seq"]].to_csv("nolabel.csv", index=False)
    assert "no column 'label'" in run("labels", "ingest", "nolabel.csv", code=2)
    truth[["label"]].to_csv("nokey.csv", index=False)
    assert "needs a 'seq' (receipt seq) or 'request_id'" in run("labels", "ingest", "nokey.csv", code=2)
    assert head_size() == size


def test_loop_retrains_and_the_new_version_serves(world: Path) -> None:
    drifted_world(AUTO)
    with server() as (url, _proc):
        assert httpx.get(url + "/healthz").json()["model"] == "credit@1"
        out = run("loop", "run", "--model", "credit")
        assert "credit@2 promoted" in out
        deadline = time.monotonic() + 20
        while httpx.get(url + "/healthz").json()["model"] != "credit@2":
            assert time.monotonic() < deadline, "the server did not switch to credit@2"
            time.sleep(0.2)
        body = httpx.post(url + "/v1/predict", json={"record": {"income": 50.0, "age": 40, "debt": 9.0}}).json()
        assert body["model"] == "credit@2"
    (trig,) = [s for s, k, _p in kinds() if k == "retrain.triggered"]
    ds = [p for p in of_kind("dataset.registered") if p["name"] == f"credit-retrain-{trig}"]
    assert len(ds) == 1 and int(str(ds[0]["rows"])) == 3000 + 200  # reference plus the labelled window
    assert "completed" in run("loop", "status")
    assert "ok:" in run("verify")


def test_loop_stops_at_needs_approval_then_finishes(world: Path) -> None:
    drifted_world(APPROVAL)
    out = run("loop", "run", "--model", "credit", code=3)
    assert "needs approval" in out and deployed_model() == "credit@1"
    gate = [s for s, k, p in kinds() if k == "gate.evaluated" and p["model"] == "credit@2"][-1]
    run("approve", "--decision", str(gate), "--key", "keys/risk.pem", "--as", "risk@example.com")
    assert "credit@2 promoted" in run("loop", "run", "--model", "credit")
    assert deployed_model() == "credit@2"


def test_denied_retrain_keeps_the_incumbent_and_opens_an_incident(world: Path) -> None:
    publish(UNREACHABLE)
    score("normal", 11, 0.0)
    score("drift", 12, 2.0)
    out = run("monitor", "--model", "credit", "--retrain", code=1)  # the monitor runs the loop on its alerts
    assert "denied by the gate" in out and "credit@1 keeps serving" in out
    assert deployed_model() == "credit@1" and not [p for p in of_kind("model.promoted") if p["model"] == "credit@2"]
    (inc,) = of_kind("incident.opened")
    assert inc["model"] == "credit@2" and inc["trigger_seq"] is not None and inc["report_due"] is None
    assert "failed-gate" in run("loop", "status")
    run("loop", "run", "--model", "credit")  # nothing more: the loop is finished
    assert len(of_kind("incident.opened")) == 1 and len(of_kind("retrain.triggered")) == 1
    # drift goes on: no retrain storm from the same incumbent (one failed loop, then people decide)
    score("drift-more", 13, 2.0)
    CliRunner().invoke(root, ["monitor", "--model", "credit"])
    out = run("loop", "run", "--model", "credit")
    assert "no new loop from credit@1" in out and "resolve the incident" in out
    assert len(of_kind("retrain.triggered")) == 1 and len(of_kind("incident.opened")) == 1


CRASH_CHAINS = {
    "after": ["after:trigger", "after:data", "after:train", "after:evidence", "after:gate", "after:promote",
              "after:deploy"],
    "before": ["before:trigger", "before:data", "before:train", "before:evidence", "before:gate", "before:promote",
               "before:deploy"],
}


@pytest.mark.parametrize("chain", sorted(CRASH_CHAINS))
def test_kill_9_at_each_step_then_rerun_completes_exactly_once(world: Path, chain: str) -> None:
    drifted_world(AUTO)
    env = {k: v for k, v in os.environ.items() if k not in ENV_CLEAR}
    for point in CRASH_CHAINS[chain]:
        done = subprocess.run(cli_command("loop", "run", "--model", "credit"), capture_output=True, timeout=120,
                              env={**env, "MLLEDGER_LOOP_CRASH": point}, check=False)
        assert done.returncode == -9, (point, done.stdout, done.stderr)
    done = subprocess.run(cli_command("loop", "run", "--model", "credit"), env=env, capture_output=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    def loop_entry(kind: str, p: dict[str, object]) -> bool:
        if kind == "dataset.registered":
            return str(p["name"]).startswith("credit-retrain-")
        if kind == "model.trained":
            return p["version"] == 2
        if kind in ("gate.evaluated", "model.promoted", "model.deployed"):
            return p["model"] == "credit@2"
        return kind in ("retrain.triggered", "evidence.recorded")

    counts: dict[str, int] = {}
    for _s, k, p in kinds():
        if loop_entry(k, p):
            counts[k] = counts.get(k, 0) + 1
    assert counts == {"retrain.triggered": 1, "dataset.registered": 1, "model.trained": 1, "evidence.recorded": 1,
                      "gate.evaluated": 1, "model.promoted": 1, "model.deployed": 1}
    assert deployed_model() == "credit@2"
    assert '"model": "credit@2"' in Path(".mlledger/serving/production.json").read_text()
    assert "ok:" in run("verify")
    assert "0 violation(s)" in run("audit")


def test_server_monitors_in_the_background_and_alerts_on_drift(world: Path) -> None:
    Path("bg.yaml").write_text((MONITORED % AUTO).replace("  window: 200\n", "  window: 200\n  interval_s: 0.2\n"))
    run("policy", "publish", "bg.yaml", "--stage", "production")
    cols = ["income", "age", "debt"]
    with server("--store-inputs") as (url, _proc):
        for seed, shift in ((20, 0.0), (22, 2.0)):
            records = applicants(200, seed, shift=shift)[cols].to_dict("records")
            subjects = [f"applicant-{seed}-{i}" for i in range(len(records))]
            r = httpx.post(url + "/v1/predict", json={"records": records, "subject_ids": subjects})
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        while not of_kind("monitor.alert"):
            assert time.monotonic() < deadline, "no alert from the server's monitor"
            time.sleep(0.2)
    windows = of_kind("monitor.window")
    assert len(windows) == 2 and windows[1]["input_drift"]["computed"] is True
    assert {a["kind"] for a in of_kind("monitor.alert")} >= {"prediction-drift"}
    assert all(a["window_last_seq"] == windows[1]["last_seq"] for a in of_kind("monitor.alert"))


def test_latency_and_fairness_thresholds_alert(world: Path) -> None:
    Path("strict.yaml").write_text((MONITORED % AUTO).replace("  min_labels: 30\n", "  min_labels: 30\n"
                                   "  latency_p99_ms: 0.000001\n  selection_ratio_min: 0.999\n"))
    run("policy", "publish", "strict.yaml", "--stage", "production")
    truth = score("normal", 11, 0.0)
    truth[["seq", "label", "sex"]].to_csv("labels.csv", index=False)
    run("labels", "ingest", "labels.csv", "--group", "sex")
    run("monitor", "--model", "credit", code=1)
    alerts = {str(a["kind"]): a for a in of_kind("monitor.alert")}
    assert set(alerts) == {"latency", "fairness"}
    assert alerts["latency"]["statistic"] == "latency_p99_ms"
    window = of_kind("monitor.window")[0]
    assert alerts["fairness"]["value"] == window["labels"]["min_selection_ratio"]["sex"] < 0.999


def test_monitor_posts_signed_alerts_and_reports_a_failing_webhook(world: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    from tests.unit.backends.test_monitor_notify import SECRET, Receiver

    publish(AUTO)
    score("normal", 11, 0.0)
    score("drift", 12, 2.0)
    size = head_size()
    assert "needs the signing secret" in run("monitor", "--model", "credit", "--webhook", "http://127.0.0.1:9/",
                                             code=2)
    assert head_size() == size  # a bad notification setting is refused before anything is recorded
    monkeypatch.setenv("MLLEDGER_WEBHOOK_SECRET", SECRET)
    receiver = Receiver([500] * 10)
    receiver.thread.start()
    try:
        out = run("monitor", "--model", "credit", "--webhook", receiver.url, "--webhook-attempts", "2", code=2)
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    assert "alert notification(s) failed (the alerts are recorded)" in out and "failed after 2 attempts" in out
    assert len(of_kind("monitor.alert")) == 2 and len(receiver.requests) == 4


def test_labels_match_decisions_by_request_id(world: Path) -> None:
    from backends.serving import Scorer, resolve
    from ledger.privacy import SubjectKeys
    from policies._workspace import Workspace

    with Ledger.open(".mlledger") as led:
        ws = Workspace(led, Path(".mlledger"))
        scorer = Scorer(ws, SubjectKeys(led, Path(".mlledger")), resolve(ws, "credit", "production"),
                        actor="service:test")
        (d,) = scorer.score([{"income": 50.0, "age": 40, "debt": 9.0}], request_id="req-7")
    assert d.receipt is not None
    Path("by-id.csv").write_text(f"request_id,label\nreq-7,{1 - int(d.label)}\n")
    run("labels", "ingest", "by-id.csv")
    (lab,) = of_kind("label.received")
    assert lab["prediction_seq"] == d.receipt.seq and lab["label"] == 1 - int(d.label)
    Path("unknown-id.csv").write_text("request_id,label\nreq-8,1\n")
    assert "no recorded decision has request_id 'req-8'" in run("labels", "ingest", "unknown-id.csv", code=2)
    Path("contradicts.csv").write_text(f"request_id,label\nreq-7,{d.label}\n")
    assert "already has label" in run("labels", "ingest", "contradicts.csv", code=2)


def test_labels_find_a_subjects_decision_by_request_id_and_subject_id_until_it_is_erased(world: Path) -> None:
    """The ledger keeps a request id only as an HMAC under the decision's key: a subject's decision is
    found with its subject_id, and no longer at all once the subject is erased."""
    from backends.serving import Scorer, resolve
    from ledger.privacy import SubjectKeys
    from policies._workspace import Workspace

    with Ledger.open(".mlledger") as led:
        ws = Workspace(led, Path(".mlledger"))
        scorer = Scorer(ws, SubjectKeys(led, Path(".mlledger")), resolve(ws, "credit", "production"),
                        actor="service:test")
        (d,) = scorer.score([{"income": 50.0, "age": 40, "debt": 9.0}], subjects=["cust-9"], request_id="req-9")
        assert d.receipt is not None and b"req-9" not in led.get(d.receipt.seq).raw
    Path("no-subject.csv").write_text("request_id,label\nreq-9,1\n")
    assert "'subject_id' column too" in run("labels", "ingest", "no-subject.csv", code=2)
    Path("other-subject.csv").write_text("request_id,subject_id,label\nreq-9,cust-8,1\n")
    assert "no recorded decision has request_id 'req-9'" in run("labels", "ingest", "other-subject.csv", code=2)
    Path("with-subject.csv").write_text(f"request_id,subject_id,label\nreq-9,cust-9,{d.label}\n")
    run("labels", "ingest", "with-subject.csv")
    (lab,) = of_kind("label.received")
    assert lab["prediction_seq"] == d.receipt.seq
    run("erase", "--subject", "cust-9", "--reason", "data subject request")
    Path("after.csv").write_text("request_id,subject_id,label\nreq-9,cust-9,1\n")
    assert "no recorded decision has request_id 'req-9'" in run("labels", "ingest", "after.csv", code=2)


def test_erasure_removes_the_subjects_input_from_retraining_data(world: Path) -> None:
    drifted_world(AUTO)
    assert "credit@2 promoted" in run("loop", "run", "--model", "credit")
    (trig,) = [s for s, k, _p in kinds() if k == "retrain.triggered"]
    loop_csv = Path(".mlledger") / "loop" / str(trig) / "train.csv"
    victim = pd.read_csv("drift.csv").iloc[3]
    needle = repr(float(victim["income"])).encode()
    assert needle in loop_csv.read_bytes()  # the decrypted input of a labelled decision
    out = run("erase", "--subject", "drift-3", "--reason", "request")
    assert "removed 1 retraining file(s)" in out and not loop_csv.exists()
    # a later loop rebuilds its data from the root reference and the live store: the erased input is gone,
    # and the labelled rows are not counted twice
    score("drift2", 13, 2.5)
    from click.testing import CliRunner

    from ledger.cli import root

    CliRunner().invoke(root, ["monitor", "--model", "credit"])  # alerts (exit 1) on the new drift
    assert "credit@3" in run("loop", "run", "--model", "credit")
    with Ledger.open(".mlledger") as led:
        rows = [e.payload["rows"] for e in led.iter(kind="dataset.registered") if "-retrain-" in e.payload["name"]]
    assert rows == [3000 + 200, 3000 + 199]
    for path in Path(".mlledger").rglob("*.csv"):
        assert needle not in path.read_bytes(), path


def test_a_missing_reference_is_an_alert_not_silence(world: Path) -> None:
    publish(AUTO)
    score("blind", 11, 5.0)
    with Ledger.open(".mlledger") as led:  # the served version's training data (registered by path) goes away
        source = next(e.payload["source"] for e in led.iter(kind="dataset.registered") if e.payload["role"] == "train")
    path = Path(source.removeprefix("file://"))
    path.rename(path.with_suffix(".moved"))
    try:
        out = run("monitor", "--model", "credit", code=1)
    finally:
        path.with_suffix(".moved").rename(path)
    assert "ALERT monitor-blind" in out and "drift is not measured" in out
    assert [a["kind"] for a in of_kind("monitor.alert")] == ["monitor-blind"]


def test_group_membership_never_enters_a_label_entry(world: Path) -> None:
    publish(AUTO)
    truth = score("grp", 11, 0.0)
    truth[["seq", "label", "sex"]].to_csv("labels.csv", index=False)
    run("labels", "ingest", "labels.csv", "--group", "sex")
    labels = of_kind("label.received")
    assert labels and all(p["groups"] == {} and len(str(p["groups_commitment"])) == 64 for p in labels)
    with Ledger.open(".mlledger") as led:
        raw = b"".join(e.raw for e in led.iter(kind="label.received"))
    assert b"female" not in raw and b'"male"' not in raw
    out = run("monitor", "--model", "credit")  # the window's per-group rates still come from the sealed store
    windows = of_kind("monitor.window")
    assert set(windows[-1]["labels"]["groups"]["sex"]) == {"female", "male"}, out
    # a decision without a subject key: its group membership could never be erased, so it is refused
    frame = applicants(5, 21).drop(columns=["approved"])
    frame.to_csv("anon.csv", index=False)
    run("predict", "--model", "credit@production", "--input", "anon.csv", "--output", "anon-out.csv")
    anon = pd.read_csv("anon-out.csv")
    pd.DataFrame({"seq": anon["seq"], "label": 1, "sex": "female"}).to_csv("anon-labels.csv", index=False)
    before = head_size()
    assert "no live data-subject key" in run("labels", "ingest", "anon-labels.csv", "--group", "sex", code=2)
    assert head_size() == before


def test_on_an_access_controlled_ledger_the_loop_runs_as_an_identity_holding_its_steps_roles(world: Path) -> None:
    """Labels, monitoring and the loop each act as a registered identity (--as): without one they are refused,
    writing nothing; a service identity may monitor but not run the loop, which is refused before its first
    step, naming the roles it lacks; an identity holding them all runs the loop, signing every step."""
    admin = ".mlledger/keys/log.pem"  # the genesis admin
    publish(AUTO)
    for name, roles in (("mon", ["service"]), ("steward", ["data-steward"]),
                        ("bot", ["service", "data-steward", "model-developer", "deployer"])):
        run("identity", "keygen", name, "-o", "ids")
        run("--as", admin, "identity", "register", name, *[x for r in roles for x in ("--role", r)],
            "--public-key", f"ids/{name}.pub")
    run("--as", admin, "access", "enable", "--reason", "go live")
    score("normal", 11, 0.0)
    truth = score("drift", 12, 2.0)
    truth[["seq", "label", "sex"]].to_csv("labels.csv", index=False)

    size = head_size()
    out = run("labels", "ingest", "labels.csv", "--group", "sex", code=2)
    assert "label.received refused: label.received by" in out and "is not signed by its actor" in out
    out = run("monitor", "--model", "credit", "--retrain", code=2)
    assert "monitor.window refused: monitor.window by system:monitor is not signed by its actor" in out
    assert head_size() == size  # nothing written
    run("--as", "ids/steward.pem", "labels", "ingest", "labels.csv", "--group", "sex")
    out = run("--as", "ids/mon.pem", "monitor", "--model", "credit", "--retrain", code=2)
    assert ("the closed loop refused: mon holds service; it also needs the role data-steward (dataset.registered, "
            "dataset.validated); model-developer (model.trained, evidence.recorded)") in out
    assert of_kind("monitor.alert") and not of_kind("retrain.triggered")  # monitored; the loop did not start

    out = run("--as", "ids/bot.pem", "loop", "run", "--model", "credit")
    assert "credit@2 promoted" in out and deployed_model() == "credit@2"
    with Ledger.open(".mlledger") as led:
        written = {e.kind: e for e in led.iter() if e.kind in (
            "label.received", "monitor.window", "monitor.alert", "retrain.triggered", "dataset.registered",
            "model.trained", "evidence.recorded", "gate.evaluated", "model.promoted", "model.deployed")}
    actors = {k: e.data["actor"] for k, e in written.items()}
    assert actors == {"label.received": "steward", "monitor.window": "mon", "monitor.alert": "mon",
                      **{k: "bot" for k in written if k not in ("label.received", "monitor.window", "monitor.alert")}}
    assert len(actors) == 10 and all("actor_signature" in e.payload for e in written.values())
    assert "audit: 0 violation(s)" in run("audit")


def test_a_reused_request_id_is_refused_as_ambiguous_and_batch_records_have_their_own(world: Path) -> None:
    from backends.serving import Scorer, resolve
    from ledger.privacy import SubjectKeys
    from policies._workspace import Workspace

    rec = {"income": 50.0, "age": 40, "debt": 9.0}
    with Ledger.open(".mlledger") as led:
        ws = Workspace(led, Path(".mlledger"))
        scorer = Scorer(ws, SubjectKeys(led, Path(".mlledger")), resolve(ws, "credit", "production"),
                        actor="service:test")
        first, second = scorer.score([rec, {**rec, "age": 41}], request_id="b")  # records b/0 and b/1
        (one,) = scorer.score([rec], request_id="b:1")  # cannot be confused with b/1
        scorer.score([rec], request_id="twice")
        scorer.score([rec], request_id="twice")
    assert first.receipt and second.receipt and one.receipt
    Path("batch.csv").write_text(f"request_id,label\nb/1,{second.label}\nb:1,{one.label}\n")
    run("labels", "ingest", "batch.csv")
    assert {lab["prediction_seq"] for lab in of_kind("label.received")} == {second.receipt.seq, one.receipt.seq}
    Path("twice.csv").write_text("request_id,label\ntwice,1\n")
    out = run("labels", "ingest", "twice.csv", code=2)
    assert "request_id 'twice' names 2 decisions" in out and "label these by 'seq'" in out
