"""The gate's outcome: one result per rule and the decision (the interface between the
rule engine, the output formats, the ledger entry and the reports).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

__all__ = ["Decision", "GateResult", "RuleOutcome", "RuleResult"]

Decision = Literal["allow", "deny", "needs_approval"]
RuleOutcome = Literal["pass", "fail", "missing_evidence", "needs_approval"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RuleResult(_Frozen):
    """One rule's verdict, with what was measured against what, and why."""

    rule_id: str  # stable id within the policy, e.g. "fairness.sex.demographic_parity_ratio"
    kind: str  # the rule kind: fairness, drift, explainability, performance, data_validation,
    # lineage, freshness, approval, custom
    outcome: RuleOutcome
    measured: JsonValue = None  # the value(s) the rule looked at; None when evidence is missing
    threshold: JsonValue = None  # the limit it was compared with
    reason: str  # one sentence a human reads: "selection-rate ratio 0.71 < 0.8 for sex=female"
    source: str  # the citation of the threshold, e.g. "29 CFR 1607.4(D) (four-fifths rule)"
    evidence: list[int] = Field(default_factory=list)  # seqs of the ledger entries used


class GateResult(_Frozen):
    """The decision for one model version and stage under one published policy."""

    model: str  # NAME@VERSION
    artifact_sha256: str | None  # None: an external model without an artifact
    stage: str
    policy_name: str
    policy_sha256: str
    policy_seq: int | None  # the policy.published entry, when it came from the ledger
    decision: Decision
    rules: list[RuleResult]
    evaluated_at: str  # RFC 3339 UTC

    @property
    def exit_code(self) -> int:
        """DESIGN.md section 9: 0 allow, 1 deny, 3 needs approval."""
        return {"allow": 0, "deny": 1, "needs_approval": 3}[self.decision]

    @staticmethod
    def decide(rules: list[RuleResult]) -> Decision:
        """Fail closed: any fail or missing evidence denies; else any approval pending needs approval."""
        if not rules:
            return "deny"
        if any(r.outcome in ("fail", "missing_evidence") for r in rules):
            return "deny"
        if any(r.outcome == "needs_approval" for r in rules):
            return "needs_approval"
        return "allow"
