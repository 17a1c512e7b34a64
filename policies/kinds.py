"""Payload models of the data, model and evidence kinds (DESIGN.md section 3).

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
