"""External (vendor) models: their payloads, old payloads' bytes, and how the gate binds their evidence."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ledger.canonical import encode
from policies._inputs import GateInputs
from policies._rules import evaluate
from policies.kinds import DocAttached, EvidenceRecorded, ModelRegistered
from tests.unit.policies.test_rules import EVAL, FAIRNESS, base_inputs, item, policy

SHA = "a" * 64
OURS = {"name": "credit", "version": 1, "artifact_sha256": SHA, "format": "skops", "task": "binary_classification",
        "features": ["income"], "target": None, "training_data": [], "source": "file:///m.skops", "libraries": {}}
VENDOR = {"name": "hirescore", "version": 1, "artifact_sha256": None, "format": "vendor",
          "task": "binary_classification", "features": [], "source": "vendor:Acme", "external": True,
          "vendor": "Acme HR Inc."}


def test_a_model_we_trained_keeps_its_pre_external_bytes() -> None:
    """Entries written before the external fields existed validate and re-encode to the same bytes."""
    payload = ModelRegistered.model_validate(OURS)
    assert encode(payload.model_dump(mode="json"), where="payload") == encode(OURS, where="payload")


def test_an_external_model_records_its_vendor_and_an_explicit_null_artifact() -> None:
    dumped = ModelRegistered.model_validate(VENDOR).model_dump(mode="json")
    assert dumped["external"] is True and dumped["vendor"] == "Acme HR Inc."
    assert "artifact_sha256" in dumped and dumped["artifact_sha256"] is None


BAD_MODELS = {
    "our model without an artifact": ({**OURS, "artifact_sha256": None}, "only an external model may have"),
    "our model without features": ({**OURS, "features": []}, "at least one input column"),
    "our model with a vendor": ({**OURS, "vendor": "Acme"}, "for external models only"),
    "external without a vendor": ({**VENDOR, "vendor": None}, "names its vendor"),
    "external in skops format": ({**VENDOR, "format": "skops"}, 'format is "vendor"'),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_inconsistent_model_registrations_are_refused(case: str) -> None:
    body, message = BAD_MODELS[case]
    with pytest.raises(ValidationError, match=message):
        ModelRegistered.model_validate(body)


def test_evidence_names_the_version_only_when_it_is_on_an_external_model() -> None:
    base: dict[str, Any] = {"type": "fairness", "dataset_sha256": SHA, "values": {}, "artifact_sha256": SHA,
                            "tool": "t", "libraries": {}, "config": {}}
    assert "model" not in EvidenceRecorded.model_validate(base).model_dump(mode="json")
    named = EvidenceRecorded.model_validate({**base, "model": "hirescore@1"}).model_dump(mode="json")
    assert named["model"] == "hirescore@1"
    with pytest.raises(ValidationError, match="model"):
        EvidenceRecorded.model_validate({**base, "model": "hirescore"})


def test_a_document_names_an_annex_iv_point_or_none() -> None:
    doc = {"sha256": SHA, "title": "Model card", "size_bytes": 10, "model": "hirescore@1", "source": "file:///c.md"}
    assert DocAttached.model_validate({**doc, "annex_iv": "2(b)"}).annex_iv == "2(b)"
    assert DocAttached.model_validate(doc).annex_iv is None
    with pytest.raises(ValidationError, match="annex_iv"):
        DocAttached.model_validate({**doc, "annex_iv": "Annex IV"})


FOUR_FIFTHS = {"id": "ff", "kind": "fairness", "feature": "*", "metric": "min_impact_ratio", "min": 0.8,
               "source": "29 CFR 1607.4(D)"}


def vendor_inputs(*evidence: dict[str, Any]) -> GateInputs:
    d = base_inputs()
    d["model"] = {"name": "hirescore", "version": 1, "artifact_sha256": None, "registered_by": "dev@example.com",
                  "registered_seq": 10, "external": True}
    d["datasets"][EVAL] = {"seq": 3, "name": "outputs", "role": "outputs", "sensitive_features": ["sex", "race"]}
    d["evidence"] = list(evidence)
    return GateInputs.model_validate(d)


def test_an_external_models_outputs_stand_for_its_eval_data() -> None:
    bound = {**item(20, "fairness", FAIRNESS, model=None, role="outputs"), "model": "hirescore@1"}
    [result] = evaluate(policy(FOUR_FIFTHS), vendor_inputs(bound))
    assert result.outcome == "pass" and result.evidence == [20]


@pytest.mark.parametrize("other", ["unbound", "another version"])
def test_evidence_not_bound_to_the_external_version_does_not_count(other: str) -> None:
    """Evidence with no model (or another version) never counts for a model without an artifact."""
    ev = item(20, "fairness", FAIRNESS, model=None, role="outputs")
    if other == "another version":
        ev["model"] = "hirescore@2"
    [result] = evaluate(policy(FOUR_FIFTHS), vendor_inputs(ev))
    assert result.outcome == "missing_evidence"
    assert "1 fairness entry bound to another artifact does not count" in result.reason


def test_outputs_do_not_stand_for_eval_data_of_a_model_we_trained() -> None:
    d = base_inputs()
    d["datasets"][EVAL] = {"seq": 3, "name": "outputs", "role": "outputs", "sensitive_features": ["sex", "race"]}
    d["evidence"] = [item(20, "fairness", FAIRNESS, role="outputs")]
    [result] = evaluate(policy(FOUR_FIFTHS), GateInputs.model_validate(d))
    assert result.outcome == "missing_evidence" and "seq 20 is on an outputs dataset" in result.reason
