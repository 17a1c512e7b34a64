"""The closed loop: monitor alert -> retrain -> evidence -> gate -> (approval) -> promote -> deploy.

The loop's state lives only in the ledger. A loop is a ``retrain.triggered`` entry (seq T); each step
finds its own completion on the ledger before acting, so running the loop again after a crash (even a
``kill -9``) at any point finishes it without repeating or skipping a step:

(1) trigger: new ``monitor.alert`` entries (source ``monitor``) of a kind the stage policy's
    ``retrain.trigger`` names, about windows served after the current deployment, and named by no
    earlier trigger (the ledger refuses a second trigger over the same alert) -> ``retrain.triggered``;
(2) data: the incumbent's training data, plus (``reference+labelled``) the stored inputs of labelled
    decisions with their received labels, all as of seq T, written deterministically to
    ``<home>/loop/T/train.csv`` and registered as dataset ``NAME-retrain-T``: done when registered;
(3) train: the incumbent's recorded spec on that dataset: done when a ``model.trained`` names it;
(4) evidence: each type the stage policy's rules read, on the spec's eval data: done per type when an
    ``evidence.recorded`` is bound to the new artifact;
(5) gate: ``gate.evaluated`` under the published policy: done when one exists for the version after T;
(6) decision: deny -> ``incident.opened`` (trigger_seq T) and stop, the incumbent keeps serving;
    needs approval -> stop until a person approves (``mlledger approve``), then run again; allow ->
(7) promote: ``model.promoted`` (whose check re-evaluates the policy) -> (8) deploy: ``model.deployed``.

``MLLEDGER_LOOP_CRASH`` (tests and bench only) SIGKILLs the process at ``before:STEP`` or
``after:STEP``, to prove the resumption.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import yaml  # type: ignore[import-untyped]

from backends._loop_state import LoopState, describe, loop_states, state_of
from backends.kinds_loop import RetrainTriggered
from ledger.api import Entry
from ledger.errors import InputError
from ledger.events import Event
from policies._workspace import Workspace

__all__ = ["CRASH_ENV", "STEPS", "LoopState", "loop_states", "root_reference", "run_loop", "run_loops", "trigger"]

CRASH_ENV = "MLLEDGER_LOOP_CRASH"
STEPS = ("trigger", "data", "train", "evidence", "gate", "decision", "promote", "deploy")
ACTOR = "system:loop"
#: What a loop may write, in step order: in an access-controlled ledger the identity it runs as (--as)
#: must hold a role for each before the loop starts (``policies._access.require_roles_for``).
LOOP_KINDS = ("retrain.triggered", "dataset.registered", "dataset.validated", "model.trained", "evidence.recorded",
              "gate.evaluated", "incident.opened", "model.promoted", "model.deployed", "model.undeployed")


def _crash(when: str, step: str) -> None:
    if os.environ.get(CRASH_ENV) == f"{when}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


# -- (1) trigger ---------------------------------------------------------------------------------


def trigger(ws: Workspace, name: str, stage: str, *, actor: str = ACTOR) -> int | None:
    """Record ``retrain.triggered`` for the new alerts the stage policy's ``retrain`` rule names, if any."""
    from backends.kinds import current_deployment
    from backends.serving import holder
    from policies._gate import published_policy

    with ws.ledger.view() as view:
        entry, loaded = published_policy(view, stage)
        rule = loaded.policy.retrain
        if rule is None:
            return None
        dep = current_deployment(view, name, stage)
        taken = {a for e in view.of_kind("retrain.triggered") for a in e.payload["alerts"]}
        alerts = [e.seq for e in view.of_kind("monitor.alert")
                  if e.payload["source"] == "monitor" and e.payload["model"] == name
                  and e.payload.get("stage") == stage and e.payload["kind"] in rule.trigger and e.seq not in taken
                  and (dep is None or e.payload.get("window_last_seq", -1) > dep.seq)]
    if not alerts:
        return None
    held = holder(ws, name, stage)
    if held is None:
        raise InputError(f"no version of {name} holds {stage}: nothing to retrain")
    _crash("before", "trigger")
    payload = RetrainTriggered(model=name, stage=stage, rule=rule.id, alerts=alerts, incumbent=held[0],
                               policy_seq=entry.seq, data=rule.data)
    r = ws.ledger.append(Event(payload, actor=actor, subject=f"model:{name}"))
    _crash("after", "trigger")
    return r.seq


# -- the steps -------------------------------------------------------------------------------------


def _training(ws: Workspace, ref: str) -> Entry:
    e = next(iter(ws.ledger.iter(kind="model.trained", subject=f"model:{ref}")), None)
    if e is None:
        raise InputError(f"{ref} was not trained by a backend on this ledger: the loop cannot retrain it")
    return e


def root_reference(ws: Workspace, digest: str) -> Any:
    """The first training dataset of the lineage that no loop wrote: each loop starts from it plus the
    labelled decisions read live from the erasable store, so an erased subject's input is never carried
    forward from an earlier loop's file, and no labelled row is counted twice."""
    import re

    ds = ws.dataset(digest, check_file=False)
    seen: set[str] = set()
    while (m := re.search(r"-retrain-(\d+)$", ds.name)) and ds.sha256 not in seen:
        seen.add(ds.sha256)
        t = ws.ledger.get(int(m.group(1)))
        if t.kind != "retrain.triggered":
            break
        ds = ws.dataset(_training(ws, t.payload["incumbent"]).payload["training_data"][0], check_file=False)
    return ws.dataset(ds.sha256)


def _data(ws: Workspace, st: LoopState, home: Path, actor: str) -> None:
    """(2) Write the retraining data deterministically and register it."""
    import pandas as pd  # type: ignore[import-untyped]

    from ledger._fsutil import atomic_write
    from ledger.kinds import DatasetRegistered
    from ledger.privacy import SubjectKeys
    from policies.evidence._data import detect_format, file_digest, profile_dataset

    trained = _training(ws, st.incumbent).payload
    ref = root_reference(ws, trained["training_data"][0])
    frame = ws.load_frame(ref)
    target = trained["target"]
    if st.data == "reference+labelled":
        keys = SubjectKeys(ws.ledger, ws.home)
        labels = {e.payload["prediction_seq"]: e.payload["label"]
                  for e in ws.ledger.iter(kind="label.received") if e.seq < st.trigger_seq}
        rows = []
        for seq in sorted(labels):
            p = ws.ledger.get(seq).payload
            if p["stage"] != st.stage or p["model"].partition("@")[0] != st.model or not p.get("sealed"):
                continue
            try:
                rec = orjson.loads(keys.read_sealed(p["key_id"], bytes.fromhex(p["input_commitment"])))
            except InputError:
                continue  # erased: the subject's input is gone
            rows.append({**rec, target: labels[seq]})
        if rows:
            extra = pd.DataFrame.from_records(rows)
            frame = pd.concat([frame, extra[[c for c in frame.columns if c in extra.columns]]], ignore_index=True)
    out = home / "loop" / str(st.trigger_seq) / "train.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, frame.to_csv(index=False).encode())
    digest, size = file_digest(out)
    kind = detect_format(out)
    prof = profile_dataset(out, fmt=kind, sensitive=list(ref.sensitive), target=target)
    payload = DatasetRegistered(name=f"{st.model}-retrain-{st.trigger_seq}", sha256=digest, format=kind,
                                size_bytes=size, rows=prof.rows, role="train", columns=prof.column_summaries(),
                                sensitive_features=list(ref.sensitive), target=target, source=out.resolve().as_uri())
    events = [Event(payload, actor=actor, subject=f"dataset:sha256:{digest}")]
    schemas = [e.payload["schema_sha256"] for e in ws.ledger.iter(kind="dataset.validated")
               if e.payload["dataset_sha256"] == ref.sha256]
    if schemas:  # validated against the schema the reference was last validated with, in the same append
        from policies._cli import _validation_event

        schema_path = out.with_name("schema.yaml")
        atomic_write(schema_path, ws.artifacts.get(schemas[-1]))
        events.append(_validation_event(out, kind, digest, schema_path, actor, None)[0])
    _crash("before", "data")
    ws.ledger.append_many(events)


def _train(ws: Workspace, st: LoopState, home: Path, actor: str) -> None:
    """(3) The incumbent's spec, on the loop's dataset."""
    from backends._workflow import train
    from backends.spec import parse_spec
    from policies._gate import published_policy

    assert st.dataset is not None
    trained = _training(ws, st.incumbent).payload
    spec = dict(trained["spec"])
    spec["datasets"] = {**spec["datasets"], "train": st.dataset[1]}
    with ws.ledger.view() as view:
        rule = published_policy(view, st.stage)[1].policy.retrain
    if rule is not None and rule.seed is not None:
        spec["seed"] = rule.seed
    raw = yaml.safe_dump(spec, sort_keys=True).encode()
    path = home / "loop" / str(st.trigger_seq) / "spec.yaml"
    from ledger._fsutil import atomic_write

    atomic_write(path, raw)
    loaded = parse_spec(raw, str(path), path=path)
    _crash("before", "train")
    train(ws, loaded, backend=trained["backend"], actor=actor)


def _evidence(ws: Workspace, st: LoopState, actor: str) -> None:
    """(4) The evidence the policy's rules read, bound to the new artifact."""
    import numpy as np

    assert st.trained is not None and st.dataset is not None
    m = ws.model(st.trained[1])
    spec = _training(ws, st.trained[1]).payload["spec"]
    ds = ws.dataset(spec["datasets"].get("eval") or st.dataset[1])
    frame = ws.load_frame(ds)
    est = ws.load_model(m)
    needed = [c for c in getattr(est, "sensitive", None) or [] if c not in m.features]
    X = frame[[*m.features, *needed]]
    y_pred = np.asarray(est.predict(X))
    proba = np.asarray(est.predict_proba(X)) if hasattr(est, "predict_proba") else None
    y_score = proba[:, 1] if proba is not None and proba.ndim == 2 and proba.shape[1] == 2 else None
    y_true = frame[ds.target].to_numpy() if ds.target else None
    groups = frame[list(ds.sensitive)] if ds.sensitive else None
    for t in st.needed:
        if t in st.evidence:
            continue
        ref_sha: str | None = None
        seed: int | None = None
        if t == "performance":
            from policies.evidence._performance import performance_report

            result: Any = performance_report(y_true, y_pred, y_score=y_score, sensitive_features=groups)
        elif t == "fairness":
            from policies.evidence._fairness import fairness_report

            result = fairness_report(y_true, y_pred, sensitive_features=groups, y_score=y_score)
        elif t == "drift":
            from policies.evidence._drift import drift_report

            ref_ds = ws.dataset(st.dataset[1])
            ref_frame = ws.load_frame(ref_ds)
            ref_score = np.asarray(est.predict_proba(ref_frame[[*m.features, *needed]]))[:, 1] \
                if y_score is not None else None
            result = drift_report(ref_frame, frame, features=list(m.features), reference_predictions=ref_score,
                                  current_predictions=y_score)
            ref_sha = ref_ds.sha256
        else:
            from policies.evidence._explain import explain_report

            seed = 0
            result = explain_report(est, frame[list(m.features)], y_true, sensitive_features=list(ds.sensitive),
                                    top_k=5, n_repeats=10, seed=seed, data_with_sensitive=frame)
        _crash("before", "evidence")
        ws.record_evidence(result, type_=t, model=m, dataset_sha256=ds.sha256, reference_sha256=ref_sha,
                           actor=actor, seed=seed)
        st.evidence[t] = -1
        _crash("after", "evidence:" + t)


def _gate(ws: Workspace, st: LoopState, actor: str) -> None:
    """(5) The published policy, recorded as the CLI's gate records it."""
    from policies._gate import run_gate
    from policies.kinds import GateEvaluated, RuleRecord

    assert st.trained is not None
    with ws.ledger.view() as view:
        result = run_gate(view, st.trained[1], st.stage)
    rules = [RuleRecord(**r.model_dump(mode="json")) for r in result.rules]
    payload = GateEvaluated(model=result.model, artifact_sha256=result.artifact_sha256, stage=st.stage,
                            policy_name=result.policy_name, policy_sha256=result.policy_sha256,
                            policy_seq=result.policy_seq, decision=result.decision, rules=rules,
                            evidence=sorted({s for r in result.rules for s in r.evidence}))
    _crash("before", "gate")
    ws.ledger.append(Event(payload, actor=actor, subject=f"model:{result.model}"))


def _decide(ws: Workspace, st: LoopState, actor: str) -> str:
    """(6) and (7): an incident for a denial; promotion when the policy allows it now."""
    from backends.incidents import open_incident
    from policies._gate import run_gate
    from policies._governance import approvals_for
    from policies.kinds import ModelPromoted

    assert st.trained is not None and st.gate is not None
    gate_seq, decision = st.gate
    ref = st.trained[1]
    if decision == "deny":
        if st.incident is None:
            with ws.ledger.view() as view:
                failing = [f"{r['rule_id']}: {r['reason']}" for r in view.get(gate_seq).payload["rules"]  # type: ignore[union-attr]
                           if r["outcome"] != "pass"]
            _crash("before", "decision")
            open_incident(ws.ledger, model=ref, stage=st.stage, severity="low", trigger_seq=st.trigger_seq,
                          actor=actor, summary=(f"retrained {ref} (loop {st.trigger_seq}) was denied by the gate at "
                                                f"seq {gate_seq}; {st.incumbent} keeps serving. "
                                                + "; ".join(failing))[:4096])
        return "failed-gate"
    with ws.ledger.view() as view:
        now = run_gate(view, ref, st.stage, decision_seq=gate_seq)
        approvals = [e.seq for e in approvals_for(view, gate_seq)]
    if now.decision != "allow":
        return "needs-approval"
    payload = ModelPromoted(model=ref, artifact_sha256=st.trained[2], stage=st.stage, gate_seq=gate_seq,
                            approvals=approvals, waiver_seq=None)
    _crash("before", "promote")
    ws.ledger.append(Event(payload, actor=actor, subject=f"model:{ref}"))
    _crash("after", "promote")
    return "promoted"


def _deploy(ws: Workspace, st: LoopState, home: Path, actor: str) -> None:
    """(8) Deploy the promoted version (a server following the stage may have done it first)."""
    from backends._workflow import deploy

    assert st.trained is not None
    trained = _training(ws, st.trained[1]).payload
    _crash("before", "deploy")
    try:
        deploy(ws, home, st.trained[1], stage=st.stage, backend=trained["backend"], actor=actor)
    except InputError:
        with ws.ledger.view() as view:
            if state_of(view, view.get(st.trigger_seq)).deployed is None:
                raise
    _crash("after", "deploy")


def _pointer(ws: Workspace, st: LoopState, home: Path) -> None:
    """The serving pointer names the loop's deployment while it is current (a kill -9 between the
    ``model.deployed`` append and the pointer write left the old one)."""
    from backends._workflow import serving_pointer
    from backends.kinds import current_deployment
    from ledger._fsutil import atomic_write

    with ws.ledger.view() as view:
        dep = current_deployment(view, st.model, st.stage)
    if dep is None or dep.seq != st.deployed:
        return
    path = serving_pointer(home, st.stage)
    want = orjson.dumps({"model": dep.payload["model"], "artifact_sha256": dep.payload["artifact_sha256"],
                         "stage": st.stage, "backend": dep.payload["backend"], "deployed_seq": dep.seq},
                        option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    if not path.exists() or path.read_bytes() != want:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, want)


def run_loop(ws: Workspace, trigger_seq: int, *, home: Path, actor: str = ACTOR) -> LoopState:
    """Run loop ``trigger_seq`` as far as it can go now; each step first checks the ledger for itself.

    ``home`` is the ledger's home directory (artifacts, ``loop/`` data and the serving pointer).
    """
    for _ in range(len(STEPS) + 8):
        with ws.ledger.view() as view:
            t = view.get(trigger_seq)
            if t is None or t.kind != "retrain.triggered":
                raise InputError(f"seq {trigger_seq} is not a retrain.triggered entry")
            st = state_of(view, t)
        if st.status == "completed":
            _pointer(ws, st, home)
            return st
        if st.status == "failed-gate":
            return st
        step = st.step
        if step == "data":
            _data(ws, st, home, actor)
        elif step == "train":
            _train(ws, st, home, actor)
        elif step == "evidence":
            _evidence(ws, st, actor)
        elif step == "gate":
            _gate(ws, st, actor)
        elif step == "decision":
            if _decide(ws, st, actor) == "needs-approval":
                return st
        else:
            _deploy(ws, st, home, actor)
        _crash("after", step)
    raise RuntimeError(f"loop {trigger_seq} did not settle")  # a bug: every step records its completion


@contextmanager
def _exclusive(home: Path, name: str, stage: str) -> Iterator[None]:
    """One loop runner per (model, stage) on this home: a second one waits (fcntl lock), so no step
    runs twice beside another runner; the ledger's own checks back this up across machines."""
    import fcntl

    path = home / "loop" / f".{name}@{stage}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_loops(ws: Workspace, name: str, stage: str, *, home: Path, actor: str = ACTOR) -> list[str]:
    """Resume every unfinished loop of ``name`` at ``stage``, then start one for new alerts. Lines to print."""
    from policies._access import require_roles_for

    require_roles_for(ws.ledger, LOOP_KINDS, "the closed loop")
    with _exclusive(home, name, stage):
        return _run_loops(ws, name, stage, home=home, actor=actor)


def _run_loops(ws: Workspace, name: str, stage: str, *, home: Path, actor: str) -> list[str]:
    from backends.serving import holder

    lines = []
    open_loops = [s for s in loop_states(ws, name, stage) if s.status in ("in-progress", "needs-approval")]
    for s in open_loops:
        lines.append(describe(run_loop(ws, s.trigger_seq, home=home, actor=actor)))
    states = loop_states(ws, name, stage)
    held = holder(ws, name, stage)
    tried = [s for s in states if held is not None and s.incumbent == held[0] and s.status == "failed-gate"]
    if tried:  # no retrain storm: one failed loop per incumbent, then people decide (its incident is open)
        lines.append(f"no new loop from {tried[-1].incumbent}: loop {tried[-1].trigger_seq} already retrained it and "
                     f"its gate denied (incident at seq {tried[-1].incident}); resolve the incident, or promote a "
                     "version by hand")
    elif all(s.status == "completed" or s.status == "failed-gate" for s in states):
        seq = trigger(ws, name, stage, actor=actor)
        if seq is not None:
            lines.append(f"retrain.triggered at seq {seq}")
            lines.append(describe(run_loop(ws, seq, home=home, actor=actor)))
    if not lines:
        lines.append(f"no loop to run for {name} at {stage}")
    return lines
