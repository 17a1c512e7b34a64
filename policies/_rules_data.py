"""The rules over datasets and people: data validation, lineage, freshness and approval.

Invariants (numbered as in ``policies._rules``):
(3) no validation, an unregistered training dataset or no evidence gives ``missing_evidence``
    or ``fail``, never ``pass``; too few approvals give ``needs_approval``;
(4) every result fills ``measured``, ``threshold``, ``reason`` and ``source``, and lists the
    seqs of the ledger entries it read.
"""

from __future__ import annotations

from pydantic import JsonValue

from policies._decision import RuleOutcome, RuleResult
from policies._inputs import parse_ts
from policies._rule_models import (
    ApprovalRule,
    DataValidationRule,
    FreshnessRule,
    LineageRule,
    Rule,
    duration_seconds,
)
from policies._rules_common import DEFAULT_ROLE, EVIDENCE_KINDS, Gate, rule_result

__all__ = ["approval", "data_validation", "freshness", "lineage"]


def _datasets_checked(gate: Gate, shas: list[str], failures: list[str], missing: list[str],
                      seqs: list[int], what: str) -> dict[str, JsonValue]:
    out: dict[str, JsonValue] = {}
    for sha in shas:
        ds = gate.inputs.datasets.get(sha)
        name = f"{what} dataset {ds.name if ds else sha[:12]}"
        v = gate.validation(sha)
        out[sha] = None if v is None else v.passed
        if v is None:
            missing.append(f"{name} has no dataset.validated entry")
        else:
            seqs.append(v.seq)
            if not v.passed:
                failures.append(f"{name} failed validation (seq {v.seq})")
    return out


def data_validation(rule: DataValidationRule, gate: Gate) -> RuleResult:
    threshold: dict[str, JsonValue] = {"roles": list(rule.roles), "newest_validation": "passed"}
    failures: list[str] = []
    missing: list[str] = []
    seqs: list[int] = []
    measured: dict[str, JsonValue] = {}
    if "train" in rule.roles:
        if not gate.model.training_data:
            missing.append(f"model {gate.model.ref} declares no training data")
        measured["train"] = _datasets_checked(gate, list(gate.model.training_data), failures, missing, seqs,
                                              "training")
    if "eval" in rule.roles:
        used = [gate.newest(k, "eval") for k in EVIDENCE_KINDS]
        shas = sorted({e.dataset_sha256 for e in used if e is not None})
        if not shas:
            missing.append(f"no evidence for model {gate.model.ref} names an eval dataset")
        measured["eval"] = _datasets_checked(gate, shas, failures, missing, seqs, "evaluation")
    return _datasets_outcome(rule, failures, missing, measured, threshold, seqs,
                             "the newest validation of every training and evaluation dataset passed")


def _datasets_outcome(rule: Rule, failures: list[str], missing: list[str], measured: dict[str, JsonValue],
                      threshold: dict[str, JsonValue], seqs: list[int], ok: str) -> RuleResult:
    if failures:
        return rule_result(rule, "fail", "; ".join(failures + missing), measured=measured, threshold=threshold,
                           evidence=seqs)
    if missing:
        return rule_result(rule, "missing_evidence", "missing evidence: " + "; ".join(missing), measured=measured,
                           threshold=threshold, evidence=seqs)
    return rule_result(rule, "pass", ok, measured=measured, threshold=threshold, evidence=seqs)


def lineage(rule: LineageRule, gate: Gate) -> RuleResult:
    threshold: dict[str, JsonValue] = {"training_data": "registered before the model and validated"}
    failures: list[str] = []
    missing: list[str] = []
    seqs: list[int] = []
    if not gate.model.training_data:
        missing.append(f"model {gate.model.ref} declares no training data, so its lineage is incomplete")
    for sha in gate.model.training_data:
        ds = gate.inputs.datasets.get(sha)
        if ds is None:
            failures.append(f"training data {sha[:12]} is not a registered dataset")
        else:
            seqs.append(ds.seq)
            if ds.seq > gate.model.registered_seq:
                failures.append(f"training dataset {ds.name} was registered (seq {ds.seq}) after the model "
                                f"(seq {gate.model.registered_seq})")
    measured = _datasets_checked(gate, list(gate.model.training_data), failures, missing, seqs, "training")
    return _datasets_outcome(rule, failures, missing, measured, threshold, seqs,
                             f"all {len(gate.model.training_data)} training datasets are registered and validated")


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    return f"{d}d {h}h" if d else f"{h}h {m}m"


def freshness(rule: FreshnessRule, gate: Gate) -> RuleResult:
    limit = None if rule.max_age is None else duration_seconds(rule.max_age)
    threshold: dict[str, JsonValue] = {"types": list(rule.types), "max_age": rule.max_age}
    measured: dict[str, JsonValue] = {}
    missing, stale, seqs = [], [], []
    for kind in rule.types:
        role = rule.dataset_role or DEFAULT_ROLE[kind]
        item = gate.newest(kind, role)
        if item is None:
            measured[kind] = None
            missing.append(gate.missing(kind, role).removeprefix("missing evidence: "))
            continue
        age = (gate.now - parse_ts(item.ts)).total_seconds()
        measured[kind] = {"seq": item.seq, "age": _age(age)}
        seqs.append(item.seq)
        if limit is not None and age > limit:
            stale.append(f"{kind} evidence seq {item.seq} is {_age(age)} old, older than {rule.max_age}")
    if stale:
        return rule_result(rule, "fail", "; ".join(stale + missing), measured=measured, threshold=threshold,
                           evidence=seqs)
    if missing:
        return rule_result(rule, "missing_evidence", "missing evidence: " + "; ".join(missing), measured=measured,
                           threshold=threshold, evidence=seqs)
    within = f" within {rule.max_age}" if rule.max_age else ""
    return rule_result(rule, "pass", f"{', '.join(rule.types)} evidence bound to this artifact is present{within}",
                       measured=measured, threshold=threshold, evidence=seqs)


def approval(rule: ApprovalRule, gate: Gate) -> RuleResult:
    threshold: dict[str, JsonValue] = {"quorum": rule.quorum, "roles": list(rule.roles),
                                       "exclude_trainer": rule.exclude_trainer, "meaning": rule.meaning}
    trainers = {gate.model.registered_by} | ({gate.model.trained_by} if gate.model.trained_by else set())
    counted: dict[str, int] = {}
    skipped: list[str] = []
    for a in sorted(gate.inputs.approvals, key=lambda a: a.seq):
        if rule.meaning is not None and a.meaning != rule.meaning:
            skipped.append(f"{a.signer} signed {a.meaning!r}, not {rule.meaning!r}")
        elif not set(rule.roles) & set(a.roles):
            skipped.append(f"{a.signer} held none of the roles {', '.join(rule.roles)}")
        elif rule.exclude_trainer and a.signer in trainers:
            skipped.append(f"{a.signer} trained or registered the model (separation of duties)")
        elif a.signer in counted:
            skipped.append(f"{a.signer} signed more than once and counts once")
        else:
            counted[a.signer] = a.seq
    measured: dict[str, JsonValue] = {"approvals": len(counted), "signers": list(sorted(counted))}
    roles = " or ".join(rule.roles)
    text = f"{len(counted)} of {rule.quorum} approval{'s' if rule.quorum > 1 else ''} by {roles}"
    text += f" ({', '.join(sorted(counted))})" if counted else ""
    text += f"; not counted: {'; '.join(skipped)}" if skipped else ""
    outcome: RuleOutcome = "pass" if len(counted) >= rule.quorum else "needs_approval"
    return rule_result(rule, outcome, text, measured=measured, threshold=threshold, evidence=list(counted.values()))
