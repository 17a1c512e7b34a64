"""mlledger backends: the backend protocol and registry, the local scikit-learn backend,
training specs, and the train and deploy workflows that record on the ledger."""

from backends._protocol import ArtifactRef, Backend, Predictions, TrainedModel, TrainingData
from backends._registry import available, get_backend

__all__ = ["ArtifactRef", "Backend", "Predictions", "TrainedModel", "TrainingData", "available", "get_backend"]
