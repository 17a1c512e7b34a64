"""The ``local`` backend: scikit-learn in-process, artifacts in skops format.

Invariants:
(1) the model is a ``Pipeline``: one-hot encoding of categorical inputs (unknown categories
    ignored), standard scaling of numeric inputs, then the allow-listed estimator;
(2) training is deterministic: the spec's ``seed`` is the estimator's ``random_state`` when it
    takes one, and the artifact bytes are canonical (``backends._skops``), so the same spec,
    data and seed give the same artifact SHA-256;
(3) loading re-hashes the artifact against its content address (``ArtifactStore.get``) and
    refuses any type skops does not trust by default, except the tree types the allow-listed
    estimators need (``TREE_TYPES``).
"""

from __future__ import annotations

import platform
import time
from typing import Any

from backends._protocol import ArtifactRef, Predictions, TrainedModel, TrainingData
from backends._skops import TREE_TYPES, canonical_dumps, safe_loads
from backends.spec import TrainingSpec, estimator_class
from ledger.errors import InputError

__all__ = ["LocalBackend", "build_pipeline"]

_SCALARS = (str, int, float, bool, type(None))


def build_pipeline(spec: TrainingSpec, frame: Any) -> Any:
    """Step (1) and the seed of step (2)."""
    from sklearn.compose import ColumnTransformer  # type: ignore[import-untyped]
    from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]
    from sklearn.preprocessing import OneHotEncoder, StandardScaler  # type: ignore[import-untyped]

    inputs = spec.inputs
    numeric = [c for c in inputs if frame[c].dtype.kind in "iuf"]
    categorical = [c for c in inputs if c not in numeric]
    prep = ColumnTransformer(
        [("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
         ("numeric", StandardScaler(), numeric)], remainder="drop")
    est = estimator_class(spec.estimator.name)()
    params = dict(spec.estimator.params)
    if "random_state" in est.get_params() and "random_state" not in params:
        params["random_state"] = spec.seed
    try:
        est.set_params(**params)
    except (TypeError, ValueError) as exc:
        raise InputError(f"estimator {spec.estimator.name}: {exc}") from None
    return Pipeline([("preprocess", prep), ("estimator", est)])


def _check_frame(frame: Any, spec: TrainingSpec, role: str) -> None:
    missing = [c for c in [*spec.inputs, spec.target] if c not in frame.columns]
    if missing:
        raise InputError(f"the {role} dataset has no column(s) {', '.join(missing)} named in the spec")


def _metrics(model: Any, frame: Any, spec: TrainingSpec, prefix: str) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import accuracy_score, roc_auc_score  # type: ignore[import-untyped]

    y = frame[spec.target].to_numpy()
    out = {f"{prefix}_accuracy": float(accuracy_score(y, model.predict(frame)))}
    if len(np.unique(y)) == 2 and hasattr(model, "predict_proba"):
        out[f"{prefix}_roc_auc"] = float(roc_auc_score(y, model.predict_proba(frame)[:, 1]))
    out[f"{prefix}_rows"] = float(len(frame))
    return out


class LocalBackend:
    """scikit-learn in-process; the embedded default."""

    name = "local"

    def train(self, spec: TrainingSpec, datasets: TrainingData) -> TrainedModel:
        _check_frame(datasets.train, spec, "train")
        if datasets.eval is not None:
            _check_frame(datasets.eval, spec, "eval")
        start = time.perf_counter()
        model = build_pipeline(spec, datasets.train)
        try:
            model.fit(datasets.train, datasets.train[spec.target])
        except (TypeError, ValueError) as exc:  # bad parameter values, labels, etc.
            raise InputError(f"training {spec.name} with {spec.estimator.name} failed: {exc}") from None
        wall = time.perf_counter() - start
        metrics = _metrics(model, datasets.train, spec, "train")
        if datasets.eval is not None:
            metrics |= _metrics(model, datasets.eval, spec, "eval")
        params = {k: v for k, v in model.named_steps["estimator"].get_params(deep=False).items()
                  if isinstance(v, _SCALARS) and not (isinstance(v, float) and v != v)}
        return TrainedModel(artifact=canonical_dumps(model), params=params, metrics=metrics, wall_time_s=wall)

    def load(self, artifact_ref: ArtifactRef) -> Any:
        """Step (3)."""
        data = artifact_ref.store.get(artifact_ref.sha256)
        return safe_loads(data, f"artifact {artifact_ref.sha256}", trusted=TREE_TYPES)

    def predict(self, model: Any, batch: Any) -> Predictions:
        import numpy as np

        labels = np.asarray(model.predict(batch))
        scores = None
        if hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(batch))
            if proba.ndim == 2 and proba.shape[1] == 2:
                scores = proba[:, 1]
        return Predictions(labels=labels, scores=scores)

    def describe(self) -> dict[str, Any]:
        from backends._env import environment

        return {"name": self.name, "runs": "in-process", "format": "skops",
                "python": platform.python_version(), "libraries": environment()}
