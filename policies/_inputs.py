"""What the gate gathers from the ledger for one model version and stage: the rule engine's input.

Invariants:
(1) every item is a strict, frozen model: an unknown field, a negative seq or a malformed hash is
    an error, never ignored;
(2) every timestamp is RFC 3339 with a time zone (``parse_ts`` reads it);
(3) evidence binds to a model version as ``binds`` says: by its exact artifact hash, and, when
    the evidence names a version (evidence on an external model does), to that version only.
    A model without an artifact (an external model) is bound only by name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

from ledger.events import Sha256Hex

__all__ = [
    "ApprovalItem",
    "DatasetItem",
    "EvidenceItem",
    "EvidenceType",
    "GateInputs",
    "IncumbentItem",
    "ModelItem",
    "ValidationItem",
    "binds",
    "parse_ts",
]

#: As ``policies.kinds.EvidenceType`` (not imported: that module imports the gate, which imports this).
EvidenceType = Literal["fairness", "drift", "explainability", "performance", "data_quality"]
#: As ``ledger.kinds.DatasetRegistered.role``.
DatasetRole = Literal["train", "eval", "reference", "production", "outputs"]


def binds(model_sha256: str | None, model: str | None, *, artifact_sha256: str | None, ref: str) -> bool:
    """(3) whether evidence bound to ``model_sha256`` (and version ``model``) is about version ``ref``."""
    if model is not None:
        return model == ref and model_sha256 == artifact_sha256
    return artifact_sha256 is not None and model_sha256 == artifact_sha256


def parse_ts(text: str) -> datetime:
    """An RFC 3339 timestamp with a time zone; ``ValueError`` otherwise."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp") from None
    if ts.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return ts


def _ts(text: str) -> str:
    parse_ts(text)
    return text


Timestamp = Annotated[str, AfterValidator(_ts)]
Seq = Annotated[int, Field(ge=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelItem(_Frozen):
    """The version at the gate; ``registered_by`` and ``trained_by`` may not approve it."""

    name: str
    version: Annotated[int, Field(ge=1)]
    artifact_sha256: Sha256Hex | None
    registered_by: str
    registered_seq: Seq
    trained_by: str | None = None
    training_data: tuple[Sha256Hex, ...] = ()
    #: A vendor's model: its evidence comes from its recorded outputs (datasets of role "outputs").
    external: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def binds(self, item: EvidenceItem) -> bool:
        return binds(item.model_sha256, item.model, artifact_sha256=self.artifact_sha256, ref=self.ref)


class EvidenceItem(_Frozen):
    """One ``evidence.recorded`` entry; ``values`` is its summary, ``config`` how it was computed."""

    seq: Seq
    ts: Timestamp
    type: EvidenceType
    model_sha256: Sha256Hex | None
    model: str | None = None  # NAME@VERSION, when the evidence names the version
    dataset_sha256: Sha256Hex
    dataset_role: DatasetRole | None
    reference_sha256: Sha256Hex | None = None
    values: dict[str, JsonValue]
    config: dict[str, JsonValue] = Field(default_factory=dict)


class ValidationItem(_Frozen):
    seq: Seq
    ts: Timestamp
    passed: bool


class DatasetItem(_Frozen):
    seq: Seq
    name: str
    role: DatasetRole
    sensitive_features: tuple[str, ...] = ()


class ApprovalItem(_Frozen):
    """A verified signature over this decision, with the roles the signer held when signing."""

    seq: Seq
    ts: Timestamp
    signer: str
    roles: tuple[str, ...]
    meaning: str


class IncumbentItem(_Frozen):
    """The version currently in the stage and its performance evidence entries."""

    name: str
    version: Annotated[int, Field(ge=1)]
    artifact_sha256: Sha256Hex | None
    performance: tuple[EvidenceItem, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class GateInputs(_Frozen):
    """What the gate gathered from the ledger for one model version and stage."""

    model: ModelItem
    stage: str
    now: Timestamp
    policy_seq: Seq | None = None
    evidence: tuple[EvidenceItem, ...] = ()
    validations: dict[Sha256Hex, tuple[ValidationItem, ...]] = Field(default_factory=dict)
    datasets: dict[Sha256Hex, DatasetItem] = Field(default_factory=dict)
    approvals: tuple[ApprovalItem, ...] = ()
    incumbent: IncumbentItem | None = None
