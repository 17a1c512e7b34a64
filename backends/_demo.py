"""``mlledger demo``: the whole product on the embedded default, as one credit-scoring story.

The data is synthetic, from a fixed seed, with a documented bias: applicants have a recorded
``sex``; women's incomes are drawn 9 units lower (a pay gap the model learns through
``income``, a proxy) and their historical approvals carry an extra penalty of 0.6 in the
log-odds. A model trained on it without mitigation fails the four-fifths rule on ``sex``.

Each step runs the real command (in this process, through the same click commands a user
types; the HTTP server is a real ``mlledger serve`` subprocess) and is narrated with its
timing. Everything is left in DIR.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

__all__ = ["applicants", "run_demo"]

SEED = 20261129
ORIGIN = "demo.mlledger.example/credit-scoring"

SCHEMA = """columns:
  income: {type: float, nullable: false}
  age: {type: int, nullable: false, min: 18, max: 100}
  debt: {type: float, nullable: false, min: 0}
  years_employed: {type: int, nullable: false, min: 0}
  sex: {type: category, allowed: [female, male], nullable: false}
  race: {type: category, allowed: [a, b, c], nullable: false}
label: {column: approved, domain: [0, 1]}
"""

SPEC = """name: credit
datasets: {{train: applicants-train, eval: applicants-eval}}
features: [income, age, debt, years_employed, sex, race]
target: approved
sensitive: [sex, race]
estimator:
  name: LogisticRegression
  params: {{max_iter: 1000}}
seed: 7
{mitigation}"""

POLICY = """name: credit-production
stage: production
description: >-
  Consumer credit scoring (EU AI Act Annex III 5(b), high-risk): the baseline pack (four-fifths,
  drift, performance floors, validated data, lineage, fresh evidence) and one independent
  model-risk approval.
extends: [four-fifths, baseline]
rules:
  - id: approval.model-risk
    kind: approval
    quorum: 1
    role: model-risk
    meaning: approval
    exclude_trainer: true
    source: SR 11-7 (Federal Reserve, 2011) effective challenge by independent validation
  - id: drift.share
    kind: drift
    statistic: drifted_share
    limit: 0.75
    source: >-
      credit-production override of the baseline pack: with four numeric features and more than
      10,000 rows, the KS test flags shifts too small to matter (Evidently moves to the Wasserstein
      distance above 1,000 rows); the PSI rule (drift.psi, 0.2) governs
monitor:
  window: {window}
  prediction_psi: 0.2
retrain:
  id: drift-retrain
  trigger: [prediction-drift, input-drift]
  data: reference+labelled
"""


def applicants(n: int, seed: int, *, shift: float = 0.0) -> Any:
    """The synthetic applicant table (see the module docstring for the built-in bias)."""
    import numpy as np
    import pandas as pd  # type: ignore[import-untyped]

    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], size=n)
    race = rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.3, 0.1])
    age = rng.integers(21, 70, size=n)
    years = np.minimum(rng.integers(0, 30, size=n), age - 18)
    income = rng.normal(58 + 12 * shift, 14, size=n) - np.where(sex == "female", 9.0, 0.0)
    debt = rng.gamma(2.0, 5.0 + 4 * shift, size=n)
    merit = 0.11 * (income - 52) - 0.12 * (debt - 10) + 0.05 * (years - 10)
    logit = merit - np.where(sex == "female", 0.6, 0.0)  # the historical bias
    approved = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"income": income.round(2), "age": age, "debt": debt.round(2), "years_employed": years,
                         "sex": sex, "race": race, "approved": approved})


@dataclass
class Story:
    root: Path
    started: float = field(default_factory=time.perf_counter)
    step: int = 0
    total: int = 16
    timings: list[tuple[str, float]] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, str] = field(default_factory=dict)

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        self.step += 1
        click.secho(f"\n[{self.step:>2}/{self.total}] {title}", bold=True)
        t = time.perf_counter()
        yield
        took = time.perf_counter() - t
        self.timings.append((title, took))
        click.echo(f"        ({took:.2f} s)")

    def say(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines():
            click.echo(f"        {line}")

    def cli(self, *args: str, code: int | tuple[int, ...] = 0, show: int = 0) -> str:
        """Run one mlledger command in this process; check its exit code; echo the command."""
        from click.testing import CliRunner

        from ledger.cli import root

        click.echo(f"      $ mlledger {' '.join(shlex.quote(a) for a in args)}")
        result = CliRunner().invoke(root, list(args), catch_exceptions=False)
        out = result.stdout + result.stderr
        codes = (code,) if isinstance(code, int) else code
        if result.exit_code not in codes:
            raise click.ClickException(f"demo step failed: mlledger {' '.join(args)} exited {result.exit_code}:\n"
                                       f"{out}")
        if show:
            self.say("\n".join(out.strip().splitlines()[:show]))
        return out

    def json(self, *args: str, code: int | tuple[int, ...] = 0) -> Any:
        return json.loads(self.cli(*args, "--format", "json", code=code))

    def produced(self, path: str, what: str) -> None:
        self.files.append((path, what))


def _last_seq() -> int:
    from ledger.api import Ledger

    with Ledger.open(".mlledger") as led:
        return led.head_size() - 1


def run_demo(directory: Path, rows: int, *, port: int | None = None) -> Story:
    """Run the story in ``directory`` (created; must be empty or absent)."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise click.UsageError(f"{directory} is not empty; give a new --dir")
    os.chdir(directory)
    for var in ("MLLEDGER_URL", "MLLEDGER_HOME", "MLLEDGER_KEY_PASSPHRASE"):
        os.environ.pop(var, None)
    os.environ["MLLEDGER_ACTOR"] = "dev@bank.example"
    story = Story(directory)
    steps: list[Callable[[Story, dict[str, Any]], None]] = [
        _init, _data, _policy, _train_baseline, _evidence_baseline, _gate_denies, _retrain_mitigated,
        _gate_needs_approval, _approve, _promote_deploy, _serve, _drift_loop, _erase, _reports, _bundle,
        _audit]
    story.total = len(steps)
    state: dict[str, Any] = {"rows": rows, "port": port}
    for fn in steps:
        fn(story, state)
    return story


# -- the steps -------------------------------------------------------------------------------------


def _init(s: Story, st: dict[str, Any]) -> None:
    with s.stage("Create a ledger and its signing key"):
        s.cli("init", "--origin", ORIGIN, show=3)
        s.produced(".mlledger/", "the ledger (SQLite), keys and artifact store")


def _data(s: Story, st: dict[str, Any]) -> None:
    rows = st["rows"]
    with s.stage(f"Register and validate the data ({rows:,} training applicants, seed {SEED})"):
        applicants(rows, SEED).to_csv("applicants-train.csv", index=False)
        applicants(max(rows // 2, 500), SEED + 1).to_csv("applicants-eval.csv", index=False)
        Path("schema.yaml").write_text(SCHEMA)
        s.say("The data has a built-in bias against women (a pay gap proxy and a historical approval penalty).")
        for role in ("train", "eval"):
            s.cli("data", "register", f"applicants-{role}.csv", "--role", role, "--name", f"applicants-{role}",
                  "--sensitive", "sex,race", "--target", "approved", "--schema", "schema.yaml", show=2)
        s.produced("applicants-train.csv, applicants-eval.csv", "the synthetic data (never copied into the ledger)")


def _policy(s: Story, st: dict[str, Any]) -> None:
    with s.stage("Publish the production policy (four-fifths + baseline packs, one model-risk approval)"):
        Path("policy.yaml").write_text(POLICY.replace("{window}", str(_window(st["rows"]))))
        s.cli("policy", "publish", "policy.yaml", "--stage", "production", show=1)
        s.produced("policy.yaml", "the production policy")


def _train(s: Story, mitigation: str) -> str:
    Path("spec.yaml").write_text(SPEC.format(mitigation=mitigation))
    out = s.cli("train", "spec.yaml", show=1)
    return out.split()[1]


def _evidence(s: Story, ref: str) -> dict[str, Any]:
    fair = s.json("evidence", "fairness", "--model", ref, "--data", "applicants-eval")
    s.json("evidence", "performance", "--model", ref, "--data", "applicants-eval")
    s.json("evidence", "drift", "--reference", "applicants-train", "--current", "applicants-eval", "--model", ref)
    ratio = fair["values"]["sex"]["min_impact_ratio"] if "sex" in fair["values"] else None
    s.say(f"impact ratio on sex (lowest group's selection rate / highest): {ratio:.3f}  (four-fifths line: 0.8)")
    return dict(fair)


def _train_baseline(s: Story, st: dict[str, Any]) -> None:
    with s.stage("Train a baseline model (LogisticRegression, no mitigation)"):
        s.metrics["baseline"] = _train(s, "")


def _evidence_baseline(s: Story, st: dict[str, Any]) -> None:
    with s.stage("Compute evidence: fairness (fairlearn), performance, drift"):
        _evidence(s, s.metrics["baseline"])


def _gate_denies(s: Story, st: dict[str, Any]) -> None:
    with s.stage("The gate DENIES the baseline on the impact ratio"):
        gate = s.json("gate", "--model", s.metrics["baseline"], "--stage", "production", code=1)
        s.say(f"decision: {gate['decision'].upper()}")
        for rule in gate["rules"]:
            s.say(f"  {rule['outcome'].upper():<14} {rule['rule_id']:<22} {rule['reason'] or ''}"[:150])
        s.say("exit code 1: a CI pipeline stops here")


def _retrain_mitigated(s: Story, st: dict[str, Any]) -> None:
    with s.stage("Retrain with a fairlearn mitigation in the spec (threshold optimizer, demographic parity)"):
        s.metrics["fair"] = _train(s, "mitigation: {method: threshold_optimizer, constraint: demographic_parity}\n")
        _evidence(s, s.metrics["fair"])


def _gate_needs_approval(s: Story, st: dict[str, Any]) -> None:
    with s.stage("The gate now NEEDS APPROVAL (every automated rule passes)"):
        gate = s.json("gate", "--model", s.metrics["fair"], "--stage", "production", code=3)
        for rule in gate["rules"]:
            s.say(f"  {rule['outcome'].upper():<14} {rule['rule_id']:<22} {rule['reason'] or ''}"[:150])
        s.metrics["decision"] = str(_last_seq())
        s.say(f"exit code 3; decision recorded at seq {s.metrics['decision']}")


def _approve(s: Story, st: dict[str, Any]) -> None:
    with s.stage("A registered model-risk officer signs the approval (Ed25519, domain-separated)"):
        s.cli("identity", "keygen", "risk", "-o", "keys")
        s.cli("identity", "register", "risk@bank.example", "--role", "model-risk", "--public-key", "keys/risk.pub",
              show=1)
        s.cli("approve", "--decision", s.metrics["decision"], "--key", "keys/risk.pem", "--as", "risk@bank.example",
              show=1)
        s.produced("keys/", "the model-risk officer's key pair")


def _promote_deploy(s: Story, st: dict[str, Any]) -> None:
    with s.stage("Promote and deploy"):
        t = time.perf_counter()
        s.cli("promote", s.metrics["fair"], "--to", "production", show=2)
        s.metrics["deploy_s"] = f"{time.perf_counter() - t:.2f} s"


def _serve(s: Story, st: dict[str, Any]) -> None:
    from backends._http import wait_ready

    with s.stage("Serve predictions over HTTP, and score a batch, with receipts"):
        port = st["port"] or _free_port()
        with Path("serve.log").open("wb") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen([sys.executable, "-c", "from ledger.cli import main; main()", "serve", "--model",
                                     "credit", "--stage", "production", "--port", str(port), "--store-inputs"],
                                    stdout=log, stderr=log)
        st["server"], st["url"] = proc, f"http://127.0.0.1:{port}"
        import httpx

        wait_ready(st["url"], timeout=120)
        s.say(f"$ mlledger serve --model credit --stage production --port {port} --store-inputs   (pid {proc.pid})")
        people = applicants(50, SEED + 2).drop(columns=["approved"])
        t = time.perf_counter()
        first = None
        for i, rec in enumerate(people.to_dict("records")):
            r = httpx.post(f"{st['url']}/v1/predict", json={"record": rec, "subject_id": f"applicant-{i:04d}"})
            r.raise_for_status()
            first = first or r.json()
        rate = len(people) / (time.perf_counter() - t)
        p = first["predictions"][0] if first else {}
        s.say(f"50 decisions over HTTP ({rate:,.0f}/s, one at a time); the first: label {p['label']}, "
              f"score {p['score']:.3f}, receipt seq {p['receipt']['seq']}")
        proof = httpx.get(f"{st['url']}/v1/receipts/{p['receipt']['seq']}/proof")
        Path("receipt.tlog-proof").write_bytes(proof.content)
        Path("receipt.entry").write_bytes(httpx.get(f"{st['url']}/v1/receipts/{p['receipt']['seq']}").content)
        s.cli("verify-proof", "receipt.tlog-proof", "--entry", "receipt.entry", "--trust", ".mlledger/keys/log.vkey",
              show=1)
        applicants(max(st["rows"], 1000), SEED + 3).drop(columns=["approved"]).to_csv("batch.csv", index=False)
        s.cli("predict", "--model", "credit@production", "--input", "batch.csv", "--output", "scored.csv",
              "--batch-commitment", show=1)
        s.produced("receipt.tlog-proof, receipt.entry", "a decision's receipt, proven offline")
        s.produced("scored.csv, scored.csv.records.jsonl", "batch scores; per-row records of the batch commitment")


def _drift_loop(s: Story, st: dict[str, Any]) -> None:
    with s.stage("Drift in the stream: monitor, alert, retrain, re-gate, promote"):
        try:
            _monitor_story(s, st)
        finally:
            proc = st.get("server")
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


def _window(rows: int) -> int:
    return max(500, min(1000, rows // 10))


def _monitor_story(s: Story, st: dict[str, Any]) -> None:
    """Normal traffic, then drifted traffic; monitor -> alert -> loop -> approval -> promotion -> serving."""
    import httpx

    url, w = st["url"], _window(st["rows"])
    normal = applicants(w, SEED + 4)
    drifted = applicants(w, SEED + 5, shift=1.5)  # incomes and debts move: a new applicant population
    seqs: list[int] = []

    def send(frame: Any, tag: str) -> None:
        records = frame.drop(columns=["approved"]).to_dict("records")
        for i in range(0, len(records), 50):
            chunk = records[i : i + 50]
            r = httpx.post(f"{url}/v1/predict", json={"records": chunk, "subject_ids": [
                f"{tag}-{i + j:05d}" for j in range(len(chunk))]}, timeout=60)
            r.raise_for_status()
            seqs.extend(p["receipt"]["seq"] for p in r.json()["predictions"])

    send(normal, "n")
    s.cli("monitor", "--model", "credit", code=(0, 1), show=1)
    onset = time.perf_counter()
    s.say(f"{w} decisions from a drifted population (incomes +18, debts up) from seq {len(seqs) and seqs[-1] + 1}")
    send(drifted, "d")
    s.cli("monitor", "--model", "credit", code=(0, 1))  # the server's background monitor may record it first
    s.metrics["detect"] = f"{time.perf_counter() - onset:.1f} s, {w} predictions (one window)"
    s.say("\n".join(_alerts_after(seqs[-w])) or "no alert")
    labels = drifted.assign(seq=seqs[-w:])[["seq", "approved", "sex"]].rename(columns={"approved": "label"})
    labels.to_csv("labels.csv", index=False)
    s.cli("labels", "ingest", "labels.csv", "--group", "sex", show=1)
    start = time.perf_counter()
    out = s.cli("loop", "run", "--model", "credit", code=(0, 3), show=3)
    if "needs approval" in out:
        decision = _last_gate()
        s.cli("approve", "--decision", str(decision), "--key", "keys/risk.pem", "--as", "risk@bank.example", show=1)
        s.cli("loop", "run", "--model", "credit", show=2)
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/healthz").json().get("model") == s.metrics["fair"] and time.monotonic() < deadline:
        time.sleep(0.2)
    serving = httpx.get(f"{url}/healthz").json().get("model")
    s.metrics["retrain_s"] = f"{time.perf_counter() - start:.1f} s (incl. the approval)"
    s.say(f"the server now serves {serving}")
    s.produced("labels.csv", "ground truth for the drifted window")


def _alerts_after(seq: int) -> list[str]:
    from ledger.api import Ledger

    with Ledger.open(".mlledger") as led:
        return [f"ALERT {e.payload['kind']} at seq {e.seq}: {e.payload['detail']}"
                for e in led.iter(kind="monitor.alert") if e.seq > seq]


def _last_gate() -> int:
    from ledger.api import Ledger

    with Ledger.open(".mlledger") as led:
        return max(e.seq for e in led.iter(kind="gate.evaluated"))


def _erase(s: Story, st: dict[str, Any]) -> None:
    with s.stage("Erase one data subject (GDPR Art. 17: crypto-shredding)"):
        s.cli("erase", "--subject", "applicant-0007", "--request", "DSR-2026-0042",
              "--reason", "data subject request", "--actor", "dpo@bank.example", show=1)
        s.cli("verify", show=1)


def _reports(s: Story, st: dict[str, Any]) -> None:
    with s.stage("Generate the audit dossier and the LL144 bias-audit PDFs"):
        ref = s.metrics["fair"]
        s.cli("report", "model", ref, "-o", "dossier.pdf", show=1)
        s.cli("report", "bias-audit", ref, "-o", "bias-audit.pdf", show=1)
        s.produced("dossier.pdf", "the audit dossier (PDF/A-3b, evidence and source bundle embedded)")
        s.produced("bias-audit.pdf", "the NYC LL144 bias-audit summary")


def _bundle(s: Story, st: dict[str, Any]) -> None:
    with s.stage("Export a bundle and verify it offline, with only the public key"):
        s.cli("export", "-o", "bundle.zip", show=1)
        s.cli("verify-bundle", "bundle.zip", "--trust", ".mlledger/keys/log.vkey", show=1)
        s.produced("bundle.zip", "the audit bundle for regulators")


def _audit(s: Story, st: dict[str, Any]) -> None:
    with s.stage("Audit the governance invariants"):
        out = s.cli("audit")
        s.say(out.strip().splitlines()[-1])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def summary(s: Story) -> None:
    total = time.perf_counter() - s.started
    click.secho(f"\nDone in {total:.1f} s. Everything is in {s.root}", bold=True)
    click.echo("\nLifecycle")
    for k, label in (("deploy_s", "promotion and deployment"), ("retrain_s", "trigger to new version serving"),
                     ("detect", "drift onset to alert")):
        if k in s.metrics:
            click.echo(f"  {label:<34} {s.metrics[k]}")
    click.echo("\nFiles")
    for path, what in s.files:
        click.echo(f"  {path:<42} {what}")
    click.echo("\nInspect")
    for cmd in (f"cd {s.root}", "mlledger log | tail", "mlledger models", "mlledger audit",
                "mlledger verify-bundle bundle.zip --trust .mlledger/keys/log.vkey"):
        click.echo(f"  {cmd}")
