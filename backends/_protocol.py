"""The backend protocol: train from a spec, load an artifact, predict a batch, describe itself.

A backend never writes to the ledger: the caller (``backends._workflow``) stores the
artifact it returns and records ``model.trained``, so every backend is recorded the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from backends.spec import TrainingSpec
    from ledger.artifacts import ArtifactStore

__all__ = ["ArtifactRef", "Backend", "Predictions", "TrainedModel", "TrainingData"]


@dataclass(frozen=True)
class TrainingData:
    """The resolved datasets as pandas DataFrames (``eval`` is optional)."""

    train: Any
    eval: Any | None = None


@dataclass(frozen=True)
class TrainedModel:
    """What training produced: the artifact bytes (deterministic for a deterministic backend)."""

    artifact: bytes
    params: dict[str, Any]
    metrics: dict[str, float]
    wall_time_s: float
    format: Literal["skops"] = "skops"


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact by SHA-256 in a content-addressed store (reads re-hash it)."""

    store: ArtifactStore
    sha256: str


@dataclass(frozen=True)
class Predictions:
    labels: Any
    scores: Any | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    name: str

    def train(self, spec: TrainingSpec, datasets: TrainingData) -> TrainedModel: ...

    def load(self, artifact_ref: ArtifactRef) -> Any: ...

    def predict(self, model: Any, batch: Any) -> Predictions: ...

    def describe(self) -> dict[str, Any]: ...
