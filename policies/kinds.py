"""Payload models of the data, model, evidence and governance kinds (DESIGN.md section 3).

``dataset.validated``, ``model.registered``, ``doc.attached``, ``evidence.recorded`` and the
decision kinds. They are registered through the ``mlledger.kinds`` entry point, so a ledger
reader that meets them loads this module on demand.

Fields added after a kind was first written (the external-model fields of
``model.registered``, ``model`` of ``evidence.recorded``) are left out of the payload when
they hold their defaults, so entries written before them keep their bytes and still validate.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
    model_validator,
)

from ledger.actions import SignedAction
from ledger.events import Payload, Sha256Hex, register

__all__ = [
    "EVIDENCE_TYPES",
    "DatasetValidated",
    "DocAttached",
    "EvidenceRecorded",
    "ModelRegistered",
    "ValidationCheck",
]

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,254}$")]
Column = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
ModelRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,254}@[1-9][0-9]*$")]
"""``NAME@VERSION``."""
AnnexIVItem = Annotated[str, StringConstraints(pattern=r"^[1-9](\([a-z]\))?$")]
"""A point of EU AI Act Annex IV, e.g. ``1`` or ``2(b)``."""

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
class DatasetValidated(SignedAction):
    """A registered dataset checked against a declared schema (stored as an artifact)."""

    dataset_sha256: Sha256Hex
    schema_sha256: Sha256Hex
    passed: bool
    checks: Annotated[list[ValidationCheck], Field(min_length=1)]
    tool: Short
    libraries: dict[str, Short]


@register("model.registered")
class ModelRegistered(SignedAction):
    """A model version by artifact hash; the artifact is in the content-addressed store.

    An external model (``external: true``: a vendor's model mlledger did not train and does
    not run) names its vendor; its artifact, when one is supplied (a vendor package), is
    stored and hashed but never loaded (``format: "vendor"``), else ``artifact_sha256`` is
    null. Its evidence comes from its recorded outputs and is bound to ``NAME@VERSION``.
    """

    name: Identifier
    version: Annotated[int, Field(ge=1)]
    artifact_sha256: Sha256Hex | None
    format: Literal["skops", "vendor"]
    task: Literal["binary_classification"]
    features: list[Column]
    target: Column | None = None
    training_data: list[Sha256Hex] = Field(default_factory=list)
    source: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    libraries: dict[str, Short] = Field(default_factory=dict)
    external: bool = False
    vendor: Text | None = None
    description: Text | None = None

    @model_validator(mode="after")
    def _external_or_ours(self) -> Self:
        if self.external:
            if self.vendor is None:
                raise ValueError("an external model names its vendor")
            if self.format != "vendor":
                raise ValueError('an external model\'s format is "vendor": mlledger does not load it')
        else:
            if self.artifact_sha256 is None:
                raise ValueError("artifact_sha256 is null, which only an external model may have")
            if self.format != "skops":
                raise ValueError('format "vendor" is for external models only')
            if not self.features:
                raise ValueError("features: a model mlledger runs lists at least one input column")
            if self.vendor is not None or self.description is not None:
                raise ValueError("vendor and description are for external models only")
        return self

    @model_serializer(mode="wrap")
    def _omit_external_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not self.external:  # models we train keep their pre-external bytes
            for key in ("external", "vendor", "description"):
                data.pop(key, None)
        if self.actor_signature is None:  # and unsigned ones their pre-issue-12 bytes
            data.pop("actor_signature", None)
        return data


@register("doc.attached")
class DocAttached(SignedAction):
    """A document (e.g. a model card), stored content-addressed, optionally about a model version."""

    sha256: Sha256Hex
    title: Text
    size_bytes: Annotated[int, Field(ge=0)]
    media_type: Short | None = None
    annex_iv: AnnexIVItem | None = None
    model: ModelRef | None = None
    source: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


@register("evidence.recorded")
class EvidenceRecorded(SignedAction):
    """One evaluator's result, bound to a model artifact and a dataset by hash.

    ``values`` are the headline numbers a gate reads; the full result (every
    table) is the artifact ``artifact_sha256``. Evidence on an external model also
    names the version (``model``, NAME@VERSION): it binds to that version only,
    whether or not the model has an artifact.
    """

    #: Evidence bound by artifact hash alone keeps its earlier bytes (and unsigned evidence its own).
    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"model", "actor_signature"})

    type: EvidenceType
    model_sha256: Sha256Hex | None = None
    model: ModelRef | None = None
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
B64Signature = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{85}[AQgw]==$")]  # canonical base64 only
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
class GateEvaluated(SignedAction):
    """A policy gate's decision for one model version and stage (DESIGN.md section 6)."""

    model: Identifier  # NAME@VERSION
    artifact_sha256: Sha256Hex | None  # null: an external model without an artifact
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

    GOVERNED: ClassVar[bool] = True  # authenticated by its approvers' signatures

    decision_seq: Annotated[int, Field(ge=0)]
    decision_leaf_hash: Sha256Hex
    signer: Identifier
    meaning: Literal["approval", "review"]
    signed_at: Ts
    signature: B64Signature


@register("waiver.granted")
class WaiverGranted(Payload):
    """Break-glass: promotion despite a denying gate, with a justification and two approvers."""

    GOVERNED: ClassVar[bool] = True  # authenticated by its approvers' signatures

    decision_seq: Annotated[int, Field(ge=0)]
    decision_leaf_hash: Sha256Hex
    justification: Annotated[str, StringConstraints(min_length=20, max_length=4096)]
    approvals: Annotated[list[ApprovalSignature], Field(min_length=2)]


@register("model.promoted")
class ModelPromoted(SignedAction):
    """A model version enters a stage, justified by an allowing gate (or a waiver)."""

    model: Identifier  # NAME@VERSION
    artifact_sha256: Sha256Hex | None  # null: an external model without an artifact
    stage: Stage
    gate_seq: Annotated[int, Field(ge=0)]
    approvals: list[int] = Field(default_factory=list)
    waiver_seq: int | None = None


# The checks for the governance kinds register with the kinds themselves.
import policies._access  # noqa: E402  (the access guard, issue 12)
import policies._access_kinds  # noqa: E402
import policies._gate  # noqa: E402
import policies._governance  # noqa: E402, F401
