"""Payload models of the data, model, evidence and governance kinds (DESIGN.md section 3).

``dataset.validated``, ``model.registered`` and ``evidence.recorded``. They are
registered through the ``mlledger.kinds`` entry point, so a ledger reader that
meets them loads this module on demand.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue, StringConstraints

from ledger.events import Payload, Sha256Hex, register

__all__ = [
    "EVIDENCE_TYPES",
    "DatasetValidated",
    "EvidenceRecorded",
    "ModelRegistered",
    "ValidationCheck",
]

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,254}$")]
Column = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=256)]

EvidenceType = Literal["fairness", "drift", "explainability", "performance", "data_quality"]
EVIDENCE_TYPES: tuple[str, ...] = EvidenceType.__args__  # type: ignore[attr-defined]


class ValidationCheck(Payload):
    """One schema check: which, on what column, its outcome, and failing row indices (never values)."""

    check: Short
    column: Column | None = None
    passed: bool
    failure_count: Annotated[int, Field(ge=0)]
    example_rows: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=5)] = Field(
        default_factory=list)


@register("dataset.validated")
class DatasetValidated(Payload):
    """A registered dataset checked against a declared schema (stored as an artifact)."""

    dataset_sha256: Sha256Hex
    schema_sha256: Sha256Hex
    passed: bool
    checks: Annotated[list[ValidationCheck], Field(min_length=1)]
    tool: Short
    libraries: dict[str, Short]


@register("model.registered")
class ModelRegistered(Payload):
    """A model version by artifact hash; the artifact is in the content-addressed store."""

    name: Identifier
    version: Annotated[int, Field(ge=1)]
    artifact_sha256: Sha256Hex
    format: Literal["skops"]
    task: Literal["binary_classification"]
    features: Annotated[list[Column], Field(min_length=1)]
    target: Column | None = None
    training_data: list[Sha256Hex] = Field(default_factory=list)
    source: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    libraries: dict[str, Short] = Field(default_factory=dict)


@register("evidence.recorded")
class EvidenceRecorded(Payload):
    """One evaluator's result, bound to a model artifact and a dataset by hash.

    ``values`` are the headline numbers a gate reads; the full result (every
    table) is the artifact ``artifact_sha256``.
    """

    type: EvidenceType
    model_sha256: Sha256Hex | None = None
    dataset_sha256: Sha256Hex
    reference_sha256: Sha256Hex | None = None
    values: dict[str, JsonValue]
    artifact_sha256: Sha256Hex
    tool: Short
    libraries: dict[str, Short]
    config: dict[str, JsonValue]
    seed: int | None = None


RuleOutcome = Literal["pass", "fail", "missing_evidence", "needs_approval"]
Decision = Literal["allow", "deny", "needs_approval"]
B64Signature = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{86}==$")]
Ts = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")]
Stage = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]


class RuleRecord(Payload):
    """One rule's result as recorded in gate.evaluated."""

    rule_id: Short
    kind: Short
    outcome: RuleOutcome
    measured: JsonValue = None
    threshold: JsonValue = None
    reason: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    source: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    evidence: list[int] = Field(default_factory=list)


@register("gate.evaluated")
class GateEvaluated(Payload):
    """A policy gate's decision for one model version and stage (DESIGN.md section 6)."""

    model: Identifier  # NAME@VERSION
    artifact_sha256: Sha256Hex
    stage: Stage
    policy_name: Identifier
    policy_sha256: Sha256Hex
    policy_seq: int | None = None
    decision: Decision
    rules: Annotated[list[RuleRecord], Field(min_length=1)]
    evidence: list[int] = Field(default_factory=list)


class ApprovalSignature(Payload):
    """A person's Ed25519 signature over an approval message (``policies._approvals``)."""

    signer: Identifier
    meaning: Literal["approval", "review"]
    signed_at: Ts
    signature: B64Signature


@register("approval.signed")
class ApprovalSigned(Payload):
    """An electronic signature on a gate decision: printed name, time, meaning (21 CFR 11.50/11.70)."""

    decision_seq: Annotated[int, Field(ge=0)]
    decision_leaf_hash: Sha256Hex
    signer: Identifier
    meaning: Literal["approval", "review"]
    signed_at: Ts
    signature: B64Signature


@register("waiver.granted")
class WaiverGranted(Payload):
    """Break-glass: promotion despite a denying gate, with a justification and two approvers."""

    decision_seq: Annotated[int, Field(ge=0)]
    decision_leaf_hash: Sha256Hex
    justification: Annotated[str, StringConstraints(min_length=20, max_length=4096)]
    approvals: Annotated[list[ApprovalSignature], Field(min_length=2)]


@register("model.promoted")
class ModelPromoted(Payload):
    """A model version enters a stage, justified by an allowing gate (or a waiver)."""

    model: Identifier  # NAME@VERSION
    artifact_sha256: Sha256Hex
    stage: Stage
    gate_seq: Annotated[int, Field(ge=0)]
    approvals: list[int] = Field(default_factory=list)
    waiver_seq: int | None = None


# The checks for the governance kinds register with the kinds themselves.
import policies._gate  # noqa: E402
import policies._governance  # noqa: E402, F401
