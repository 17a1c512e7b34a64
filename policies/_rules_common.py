"""What every rule check shares: the gate's view of its inputs, and the result it builds.

Invariants (numbered as in ``policies._rules``):
(1) ``Gate.mine`` holds only the evidence bound to the model's exact artifact hash (and, for
    evidence that names a version, to that version: ``policies._inputs.binds``);
(2) ``Gate.newest`` reads the newest item (highest seq) of a type on a dataset role; for an
    external model, its recorded outputs (role ``outputs``) stand where an eval dataset is asked.
"""

from __future__ import annotations

import itertools
from typing import Final

from pydantic import JsonValue

from policies._decision import RuleOutcome, RuleResult
from policies._inputs import EvidenceItem, GateInputs, ValidationItem, parse_ts
from policies._rule_models import Rule

__all__ = ["DEFAULT_ROLE", "EVIDENCE_KINDS", "Gate", "rule_result"]

DEFAULT_ROLE: Final = {"fairness": "eval", "performance": "eval", "explainability": "eval", "drift": "any"}
EVIDENCE_KINDS: Final = ("fairness", "drift", "explainability", "performance")


class Gate:
    """The inputs as the rules read them: this artifact's evidence, newest first by kind and role."""

    def __init__(self, inputs: GateInputs) -> None:
        self.inputs = inputs
        self.model = inputs.model
        self.now = parse_ts(inputs.now)
        # (1) only evidence bound to this exact artifact (and version)
        self.mine = [e for e in inputs.evidence if inputs.model.binds(e)]

    def _on(self, item: EvidenceItem, role: str) -> bool:
        if role in ("any", item.dataset_role):
            return True
        return role == "eval" and item.dataset_role == "outputs" and self.model.external

    def newest(self, kind: str, role: str) -> EvidenceItem | None:
        """(2) the newest item of ``kind`` on ``role`` ("any": every role)."""
        items = [e for e in self.mine if e.type == kind and self._on(e, role)]
        return max(items, key=lambda e: e.seq, default=None)

    def missing(self, kind: str, role: str) -> str:
        where = "any dataset" if role == "any" else f"{'an' if role == 'eval' else 'a'} {role} dataset"
        text = f"missing evidence: no {kind} evidence for model {self.model.ref} on {where}"
        others = sum(1 for e in self.inputs.evidence if e.type == kind and not self.model.binds(e))
        if others:
            entries = f"{kind} entry bound to another artifact does" if others == 1 else \
                f"{kind} entries bound to other artifacts do"
            text += f" ({others} {entries} not count)"
        elsewhere = [e for e in self.mine if e.type == kind]
        if elsewhere:
            e = max(elsewhere, key=lambda e: e.seq)
            role = e.dataset_role or "unregistered"
            text += f"; seq {e.seq} is on {'an' if role[0] in 'aeiou' else 'a'} {role} dataset"
        return text

    def validation(self, sha: str) -> ValidationItem | None:
        return max(self.inputs.validations.get(sha, ()), key=lambda v: v.seq, default=None)

    def coverage(self, item: EvidenceItem, have: set[frozenset[str]], *, intersections: bool) -> str | None:
        """Why ``item`` fails to cover the sensitive features its dataset declares, or None."""
        ds = self.inputs.datasets.get(item.dataset_sha256)
        if ds is None:
            return (f"the dataset {item.dataset_sha256[:12]} of {item.type} evidence seq {item.seq} is not a "
                    "registered dataset, so its declared sensitive features are unknown")
        want = [frozenset([f]) for f in ds.sensitive_features]
        if intersections:
            want += [frozenset(p) for p in itertools.combinations(ds.sensitive_features, 2)]
        gap = [" & ".join(sorted(w)) for w in want if w not in have]
        if gap:
            return (f"{item.type} evidence seq {item.seq} does not cover {', '.join(gap)}, declared sensitive "
                    f"by dataset {ds.name!r}")
        return None


def rule_result(rule: Rule, outcome: RuleOutcome, reason: str, *, measured: JsonValue = None,
                threshold: JsonValue = None, evidence: list[int] | None = None) -> RuleResult:
    """The result of ``rule``; its ``source`` defaults to "rule ID"."""
    return RuleResult(rule_id=rule.id, kind=rule.kind, outcome=outcome, measured=measured,
                      threshold=threshold, reason=reason, source=rule.source or f"rule {rule.id}",
                      evidence=sorted(set(evidence or [])))
