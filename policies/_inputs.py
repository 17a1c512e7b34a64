"""What the gate gathers from the ledger for one model version and stage: the rule engine's input.

Invariants:
(1) every item is a strict, frozen model: an unknown field, a negative seq or a malformed hash is
    an error, never ignored;
(2) every timestamp is RFC 3339 with a time zone (``parse_ts`` reads it).
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
    "parse_ts",
]

#: As ``policies.kinds.EvidenceType`` (not imported: that module imports the gate, which imports this).
EvidenceType = Literal["fairness", "drift", "explainability", "performance", "data_quality"]


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
    artifact_sha256: Sha256Hex
    registered_by: str
    registered_seq: Seq
    trained_by: str | None = None
    training_data: tuple[Sha256Hex, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class EvidenceItem(_Frozen):
    """One ``evidence.recorded`` entry; ``values`` is its summary, ``config`` how it was computed."""

    seq: Seq
    ts: Timestamp
    type: EvidenceType
    model_sha256: Sha256Hex | None
    dataset_sha256: Sha256Hex
    dataset_role: Literal["train", "eval", "reference", "production"] | None
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
    role: Literal["train", "eval", "reference", "production"]
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
    artifact_sha256: Sha256Hex
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
