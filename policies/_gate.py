"""The gate over the ledger: gather the bound evidence, evaluate the published policy,
and the promotion check that no code path can bypass.

``gather`` reads only the ledger (a ``LedgerView``), optionally as of a seq, so the
same function serves the gate command, the promotion check inside the sequencing
transaction, and the audit's re-evaluation of past promotions.
"""

from __future__ import annotations

from typing import Any

from ledger.errors import InputError
from ledger.events import register_check
from ledger.view import LedgerView, ViewEntry
from policies._decision import GateResult
from policies._governance import Finding, ModelVersion, identities, model_versions, now_ts
from policies._inputs import binds
from policies._policy import LoadedPolicy, parse_policy
from policies._rules import (
    ApprovalItem,
    DatasetItem,
    EvidenceItem,
    GateInputs,
    IncumbentItem,
    ModelItem,
    ValidationItem,
    gate_result,
)

__all__ = ["gather", "published_policy", "reevaluate", "run_gate"]


def published_policy(view: LedgerView, stage: str, *, before: int | None = None) -> tuple[ViewEntry, LoadedPolicy]:
    """The policy bound to ``stage`` (its latest publication), parsed."""
    pubs = [e for e in view.of_kind("policy.published")
            if e.payload["stage"] == stage and (before is None or e.seq < before)]
    if not pubs:
        raise InputError(f"no policy is published for stage {stage!r}; publish one with "
                         f"'mlledger policy publish FILE --stage {stage}'")
    entry = pubs[-1]
    return entry, parse_policy(entry.payload["body"].encode(), f"policy.published at seq {entry.seq}")


def _before(entries: list[ViewEntry], before: int | None) -> list[ViewEntry]:
    return entries if before is None else [e for e in entries if e.seq < before]


def _binds(e: ViewEntry, mv: ModelVersion) -> bool:
    return binds(e.payload["model_sha256"], e.payload.get("model"), artifact_sha256=mv.artifact_sha256, ref=mv.ref)


def _short(artifact_sha256: str | None) -> str:
    return "no artifact" if artifact_sha256 is None else artifact_sha256[:12]


def gather(view: LedgerView, model_ref: str, stage: str, *, now: str | None = None,
           decision_seq: int | None = None, policy_seq: int | None = None,
           before: int | None = None) -> GateInputs:
    """Everything the rules read, for ``model_ref`` (NAME@VERSION) and ``stage``."""
    versions = model_versions(view, until_seq=None if before is None else before - 1)
    mv = versions.get(model_ref)
    if mv is None:
        raise InputError(f"model {model_ref!r} is not on the ledger; register it first")
    trained = [e for e in _before(view.of_kind("model.trained"), before)
               if mv.artifact_sha256 is not None and e.payload["artifact_sha256"] == mv.artifact_sha256]
    model = ModelItem(name=mv.name, version=mv.version, artifact_sha256=mv.artifact_sha256,
                      registered_by=mv.registered_by, registered_seq=mv.registered_seq,
                      trained_by=trained[-1].actor if trained else None,
                      training_data=tuple(mv.training_data), external=mv.external)
    datasets = {e.payload["sha256"]: DatasetItem(seq=e.seq, name=e.payload["name"], role=e.payload["role"],
                                                 sensitive_features=tuple(e.payload["sensitive_features"]))
                for e in _before(view.of_kind("dataset.registered"), before)}
    validations: dict[str, list[ValidationItem]] = {}
    for e in _before(view.of_kind("dataset.validated"), before):
        validations.setdefault(e.payload["dataset_sha256"], []).append(
            ValidationItem(seq=e.seq, ts=e.ts, passed=e.payload["passed"]))
    evidence = _before(view.of_kind("evidence.recorded"), before)

    def item(e: ViewEntry) -> EvidenceItem:
        p = e.payload
        role = datasets[p["dataset_sha256"]].role if p["dataset_sha256"] in datasets else None
        return EvidenceItem(seq=e.seq, ts=e.ts, type=p["type"], model_sha256=p["model_sha256"],
                            model=p.get("model"), dataset_sha256=p["dataset_sha256"], dataset_role=role,
                            reference_sha256=p["reference_sha256"], values=p["values"], config=p["config"])

    approvals: list[ApprovalItem] = []
    current = identities(view, before=before)
    if decision_seq is not None:
        for e in _before(view.of_kind("approval.signed"), before):
            if e.payload["decision_seq"] != decision_seq:
                continue
            then = identities(view, before=e.seq).get(e.payload["signer"])
            held = current.get(e.payload["signer"])
            # The role must have been held when signing and still be held now, under the same key.
            roles = (then.roles & held.roles) if then and held and then.public_key == held.public_key \
                else frozenset()
            approvals.append(ApprovalItem(seq=e.seq, ts=e.ts, signer=e.payload["signer"],
                                          roles=tuple(sorted(roles)), meaning=e.payload["meaning"]))
    incumbent = None
    holder = next((v for v in versions.values() if stage in v.stages and v.ref != model_ref), None)
    if holder is not None:
        incumbent = IncumbentItem(name=holder.name, version=holder.version, artifact_sha256=holder.artifact_sha256,
                                  performance=tuple(item(e) for e in evidence
                                                    if _binds(e, holder) and e.payload["type"] == "performance"))
    return GateInputs(
        model=model, stage=stage, now=now or now_ts(), policy_seq=policy_seq,
        evidence=tuple(item(e) for e in evidence if _binds(e, mv)),
        validations={k: tuple(v) for k, v in validations.items()}, datasets=datasets,
        approvals=tuple(approvals), incumbent=incumbent)


def run_gate(view: LedgerView, model_ref: str, stage: str, *, policy: LoadedPolicy | None = None,
             decision_seq: int | None = None, before: int | None = None, now: str | None = None) -> GateResult:
    """Evaluate ``policy`` (default: the one published for ``stage``) for ``model_ref``."""
    policy_seq = None
    if policy is None:
        entry, policy = published_policy(view, stage, before=before)
        policy_seq = entry.seq
    inputs = gather(view, model_ref, stage, now=now, decision_seq=decision_seq, policy_seq=policy_seq,
                    before=before)
    return gate_result(policy, inputs)


@register_check("model.promoted")
def _check_promotion(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
    """No model version reaches a stage unless its policy allows it now.

    1. ``gate_seq`` is a gate.evaluated for this exact artifact and stage;
    2. it was made under the policy bound to the stage now (no newer publication);
    3. the policy, re-evaluated now over the ledger (fresh evidence, counted
       approvals of that decision), allows — or a valid waiver covers the decision.
    """
    ref, stage = payload["model"], payload["stage"]
    gate = view.get(payload["gate_seq"])
    if gate is None or gate.kind != "gate.evaluated":
        raise InputError(f"promotion refused: seq {payload['gate_seq']} is not a gate decision; "
                         f"run 'mlledger gate --model {ref} --stage {stage}'")
    g = gate.payload
    if (g["model"], g["artifact_sha256"], g["stage"]) != (ref, payload["artifact_sha256"], stage):
        raise InputError(f"promotion refused: decision {gate.seq} is for {g['model']} "
                         f"({_short(g['artifact_sha256'])}) in {g['stage']}, not {ref} in {stage}")
    mv = model_versions(view).get(ref)
    if mv is None or mv.artifact_sha256 != payload["artifact_sha256"]:
        raise InputError(f"promotion refused: {_short(payload['artifact_sha256'])} is not the artifact registered "
                         f"or trained as {ref}")
    entry, policy = published_policy(view, stage)
    if g.get("policy_seq") != entry.seq:
        raise InputError(f"promotion refused: decision {gate.seq} does not name the publication of the policy "
                         f"bound to {stage} (seq {entry.seq}); run the gate again")
    if entry.payload["policy_hash"] != g["policy_sha256"]:
        raise InputError(f"promotion refused: decision {gate.seq} was made under policy "
                         f"{g['policy_sha256'][:12]}, but {stage} is now bound to {policy.name} "
                         f"({entry.payload['policy_hash'][:12]}, seq {entry.seq}); run the gate again")
    if payload.get("waiver_seq") is not None:
        waiver = view.get(payload["waiver_seq"])
        if waiver is None or waiver.kind != "waiver.granted" or waiver.payload["decision_seq"] != gate.seq:
            raise InputError(f"promotion refused: seq {payload['waiver_seq']} is not a waiver of decision "
                             f"{gate.seq}")
        used = [e.seq for e in view.of_kind("model.promoted") if e.payload.get("waiver_seq") == waiver.seq]
        if used:
            raise InputError(f"promotion refused: waiver {waiver.seq} was already used by the promotion at seq "
                             f"{used[0]}; a waiver covers one promotion")
        return
    result = run_gate(view, ref, stage, policy=policy, decision_seq=gate.seq)
    if result.decision != "allow":
        failing = [f"{r.rule_id}: {r.reason}" for r in result.rules if r.outcome != "pass"]
        raise InputError(f"promotion refused: the policy for {stage} decides {result.decision} now: "
                         + "; ".join(failing))


def reevaluate(view: LedgerView) -> list[Finding]:
    """Re-run every recorded gate decision and promotion as of its own seq and time.

    A ``gate.evaluated`` whose decision differs from the policy's verdict on the ledger
    as it stood then, or a ``model.promoted`` the policy did not allow then (without a
    waiver), is a violation: it was forged, or written around the checks.
    """
    findings: list[Finding] = []
    for e in view.of_kind("gate.evaluated", "model.promoted"):
        p = e.payload
        try:
            if e.kind == "gate.evaluated":
                if p.get("policy_seq") is None:
                    continue  # evaluated against an unpublished policy: informative only
                pub = view.get(p["policy_seq"])
                if pub is None or pub.kind != "policy.published" or pub.payload["policy_hash"] != p["policy_sha256"]:
                    findings.append(Finding(e.seq, "violation", f"gate decision names policy seq {p['policy_seq']}, "
                                                               "which is not that policy's publication"))
                    continue
                policy = parse_policy(pub.payload["body"].encode(), f"policy.published at seq {pub.seq}")
                result = run_gate(view, p["model"], p["stage"], policy=policy, before=e.seq, now=e.ts)
                if result.decision != p["decision"]:
                    findings.append(Finding(e.seq, "violation", f"gate decision {p['decision']} for {p['model']} "
                                                               f"does not match the policy's verdict "
                                                               f"{result.decision} on the ledger at that point"))
            elif p.get("waiver_seq") is None:
                _, policy = published_policy(view, p["stage"], before=e.seq)
                result = run_gate(view, p["model"], p["stage"], policy=policy, decision_seq=p["gate_seq"],
                                  before=e.seq, now=e.ts)
                if result.decision != "allow":
                    findings.append(Finding(e.seq, "violation", f"promotion of {p['model']} to {p['stage']}: the "
                                                               f"policy decided {result.decision} at that point"))
        except InputError as exc:
            findings.append(Finding(e.seq, "violation", f"{e.kind} cannot be re-evaluated: {exc}"))
    return findings
