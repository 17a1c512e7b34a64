"""Where a closed loop stands, read from the ledger only (``backends._loop``): the state of each
``retrain.triggered`` loop, its next step, and a one-line description for the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.view import LedgerView
from policies._workspace import Workspace

__all__ = ["LoopState", "describe", "loop_states", "state_of"]

_EVIDENCE_OF_RULE = {"fairness": "fairness", "performance": "performance", "drift": "drift",
                     "explainability": "explainability"}


@dataclass
class LoopState:
    """Where one loop stands, read from the ledger."""

    trigger_seq: int
    model: str
    stage: str
    rule: str
    incumbent: str
    data: str
    dataset: tuple[int, str] | None = None  # (seq, sha256)
    trained: tuple[int, str, str] | None = None  # (seq, NAME@VERSION, artifact)
    evidence: dict[str, int] = field(default_factory=dict)
    needed: tuple[str, ...] = ()
    gate: tuple[int, str] | None = None  # (seq, decision)
    promoted: int | None = None
    deployed: int | None = None
    incident: int | None = None

    @property
    def status(self) -> str:
        if self.deployed is not None:
            return "completed"
        if self.incident is not None:
            return "failed-gate"
        if self.gate is not None and self.gate[1] == "needs_approval" and self.promoted is None:
            return "needs-approval"
        return "in-progress"

    @property
    def step(self) -> str:
        """The next step to run (or the last one, when finished)."""
        if self.dataset is None:
            return "data"
        if self.trained is None:
            return "train"
        if any(t not in self.evidence for t in self.needed):
            return "evidence"
        if self.gate is None:
            return "gate"
        if self.promoted is None:
            return "decision"
        return "deploy"

    def to_json(self) -> dict[str, Any]:
        return {"trigger_seq": self.trigger_seq, "model": self.model, "stage": self.stage, "rule": self.rule,
                "incumbent": self.incumbent, "status": self.status, "next": self.step if self.status in (
                    "in-progress", "needs-approval") else None,
                "dataset_seq": self.dataset[0] if self.dataset else None,
                "trained_seq": self.trained[0] if self.trained else None,
                "version": self.trained[1] if self.trained else None, "evidence": self.evidence,
                "gate_seq": self.gate[0] if self.gate else None, "decision": self.gate[1] if self.gate else None,
                "promoted_seq": self.promoted, "deployed_seq": self.deployed, "incident_seq": self.incident}


def _needed_evidence(view: LedgerView, stage: str) -> tuple[str, ...]:
    from policies._gate import published_policy

    _entry, loaded = published_policy(view, stage)
    return tuple(sorted({_EVIDENCE_OF_RULE[r.kind] for r in loaded.rules if r.kind in _EVIDENCE_OF_RULE}))


def state_of(view: LedgerView, t: Any) -> LoopState:
    """The state of the loop that ``retrain.triggered`` entry ``t`` started."""
    p = t.payload
    st = LoopState(t.seq, p["model"], p["stage"], p["rule"], p["incumbent"], p["data"])
    st.needed = _needed_evidence(view, st.stage)
    name = f"{st.model}-retrain-{t.seq}"
    ds = next((e for e in view.of_kind("dataset.registered") if e.seq > t.seq and e.payload["name"] == name), None)
    if ds is None:
        return st
    st.dataset = (ds.seq, ds.payload["sha256"])
    tr = next((e for e in view.of_kind("model.trained") if e.seq > ds.seq and e.payload["name"] == st.model
               and ds.payload["sha256"] in e.payload["training_data"]), None)
    if tr is None:
        return st
    ref, art = f"{st.model}@{tr.payload['version']}", tr.payload["artifact_sha256"]
    st.trained = (tr.seq, ref, art)
    for e in view.of_kind("evidence.recorded"):
        if e.seq > tr.seq and e.payload["model_sha256"] == art:
            st.evidence.setdefault(e.payload["type"], e.seq)
    g = next((e for e in view.of_kind("gate.evaluated") if e.seq > tr.seq and e.payload["model"] == ref
              and e.payload["stage"] == st.stage), None)
    if g is not None:
        st.gate = (g.seq, g.payload["decision"])
    st.incident = next((e.seq for e in view.of_kind("incident.opened") if e.payload.get("trigger_seq") == t.seq),
                       None)
    pr = next((e for e in view.of_kind("model.promoted") if e.seq > tr.seq and e.payload["model"] == ref
               and e.payload["stage"] == st.stage), None)
    if pr is not None:
        st.promoted = pr.seq
        st.deployed = next((e.seq for e in view.of_kind("model.deployed")
                            if e.payload["promotion_seq"] == pr.seq), None)
    return st


def loop_states(ws: Workspace, name: str | None = None, stage: str | None = None) -> list[LoopState]:
    """Every loop on the ledger (of ``name`` at ``stage`` if given), in trigger order."""
    with ws.ledger.view() as view:
        return [state_of(view, t) for t in view.of_kind("retrain.triggered")
                if (name is None or t.payload["model"] == name) and (stage is None or t.payload["stage"] == stage)]


def describe(st: LoopState) -> str:
    ver = st.trained[1] if st.trained else "(not trained yet)"
    if st.status == "completed":
        return f"loop {st.trigger_seq}: {ver} promoted (seq {st.promoted}) and deployed (seq {st.deployed})"
    if st.status == "failed-gate":
        assert st.gate is not None
        return (f"loop {st.trigger_seq}: {ver} denied by the gate (seq {st.gate[0]}); {st.incumbent} keeps serving; "
                f"incident.opened at seq {st.incident}")
    if st.status == "needs-approval":
        assert st.gate is not None
        return (f"loop {st.trigger_seq}: {ver} needs approval: sign decision {st.gate[0]} with 'mlledger approve "
                f"--decision {st.gate[0]} ...', then run 'mlledger loop run' again")
    return f"loop {st.trigger_seq}: in progress, next step {st.step}"
