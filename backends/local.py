"""The ``local`` backend: scikit-learn in-process, artifacts in skops format.

Invariants:
(1) the model is a ``Pipeline``: one-hot encoding of categorical inputs (unknown categories
    ignored), standard scaling of numeric inputs, then the allow-listed estimator;
(2) training is deterministic: the spec's ``seed`` is the estimator's ``random_state`` when it
    takes one, and the artifact bytes are canonical (``backends._skops``), so the same spec,
    data and seed give the same artifact SHA-256;
(3) loading re-hashes the artifact against its content address (``ArtifactStore.get``) and
    refuses any type skops does not trust by default, except the tree types the allow-listed
    estimators need and ``MitigatedClassifier`` (``TREE_TYPES``);
(4) a spec ``mitigation`` is fitted with fairlearn (ExponentiatedGradient around the pipeline's
    estimator, or ThresholdOptimizer around the whole pipeline with ``prefit=False`` and
    ``predict_method="predict_proba"``), then exported to a ``MitigatedClassifier``: fitted
    fairlearn objects hold closures (``ExponentiatedGradient._hs``), the training data
    (``constraints_``) and pandas frames, none of which skops can or should store. The export
    keeps only fitted scikit-learn estimators and arrays and reproduces fairlearn's randomised
    ``predict`` with ``random_state`` = the spec's seed, so its labels are reproducible.

Serving a mitigated model: ``predict(model, batch)`` recognises one by its type
(``isinstance(model, MitigatedClassifier)``), checks the batch carries the model's
``sensitive`` columns, and the model reads its groups from them; other models get the batch as is.
"""

from __future__ import annotations

import platform
import time
from typing import Any

from backends._protocol import ArtifactRef, Predictions, TrainedModel, TrainingData
from backends._skops import TREE_TYPES, canonical_dumps, safe_loads
from backends.spec import TrainingSpec, estimator_class, takes_sample_weight
from ledger.errors import InputError

__all__ = ["LocalBackend", "MitigatedClassifier", "build_pipeline"]

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


def group_keys(frame: Any, sensitive: list[str]) -> Any:
    """One group label per row: the sensitive values joined with ``|`` (fit and predict agree)."""
    import numpy as np

    return np.array(["|".join(map(str, row)) for row in frame[sensitive].itertuples(index=False)], dtype=object)


class MitigatedClassifier:
    """Step (4): a fitted fairlearn mitigation as scikit-learn estimators and arrays.

    ``exponentiated_gradient``: P(positive) = sum of ``weights`` times each of ``predictors``'
    labels on ``preprocess.transform(X)`` (fairlearn's ``_pmf_predict``).
    ``threshold_optimizer``: s = ``base.predict_proba(X)[:, 1]``; for the rows of group g,
    P(positive) = p0 * op0(s) + p1 * op1(s), mixed with a constant by p_ignore, from the row
    ``table[groups.index(g)]`` = (p0, thr0, op0, p1, thr1, op1, p_ignore, constant), op = +1 for
    ``s > thr``, -1 for ``s < thr``. ``predict`` draws labels as fairlearn does, with
    ``numpy.random.RandomState(random_state)`` per call.
    """

    def __init__(self, *, method: str, constraint: str, sensitive: list[str], random_state: int,
                 preprocess: Any = None, predictors: list[Any] | None = None, weights: Any = None,
                 base: Any = None, groups: list[str] | None = None, table: Any = None) -> None:
        self.method, self.constraint, self.sensitive = method, constraint, sensitive
        self.random_state = random_state
        self.preprocess, self.predictors, self.weights = preprocess, predictors or [], weights
        self.base, self.groups, self.table = base, groups or [], table

    def positive_probability(self, X: Any) -> Any:
        import numpy as np

        if self.method == "exponentiated_gradient":
            Xt = self.preprocess.transform(X)
            out = np.zeros(len(X))
            for weight, predictor in zip(self.weights, self.predictors, strict=True):
                out += weight * np.asarray(predictor.predict(Xt), dtype=float)
            return out
        scores = np.asarray(self.base.predict_proba(X))[:, 1]
        keys = group_keys(X, self.sensitive)
        out = np.zeros(len(X))
        for group in np.unique(keys):
            if group not in self.groups:
                raise InputError(f"sensitive group {group!r} ({', '.join(self.sensitive)}) was not in the "
                                 f"training data; the threshold optimizer has no threshold for it")
            p0, t0, o0, p1, t1, o1, p_ignore, constant = self.table[self.groups.index(group)]
            s = scores[keys == group]
            mixed = p0 * (o0 * (s - t0) > 0) + p1 * (o1 * (s - t1) > 0)
            out[keys == group] = p_ignore * constant + (1 - p_ignore) * mixed
        return out

    def predict_proba(self, X: Any) -> Any:
        import numpy as np

        p = self.positive_probability(X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> Any:
        import numpy as np

        p = self.positive_probability(X)
        return (p >= np.random.RandomState(self.random_state).rand(len(p))).astype(int)


_EG_CONSTRAINTS = {"demographic_parity": "DemographicParity", "equalized_odds": "EqualizedOdds",
                   "true_positive_rate_parity": "TruePositiveRateParity",
                   "false_positive_rate_parity": "FalsePositiveRateParity"}


def _fit_mitigated(spec: TrainingSpec, frame: Any) -> MitigatedClassifier:
    """Step (4): fit with fairlearn, then export (raises InputError/ValueError/TypeError on bad input)."""
    import functools
    import warnings

    import numpy as np
    import pandas as pd  # type: ignore[import-untyped]

    mit = spec.mitigation
    assert mit is not None
    pipeline = build_pipeline(spec, frame)
    y, keys = frame[spec.target], pd.Series(group_keys(frame, spec.sensitive), index=frame.index)
    export = functools.partial(MitigatedClassifier, method=mit.method, constraint=mit.constraint,
                               sensitive=list(spec.sensitive), random_state=spec.seed)
    # fairlearn 0.15 enlarges a pandas Series through .at, which pandas deprecates; not ours to fix.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=getattr(pd.errors, "Pandas4Warning", FutureWarning),
                                module="fairlearn")
        if mit.method == "exponentiated_gradient":
            from fairlearn import reductions  # type: ignore[import-untyped]

            est = pipeline.named_steps["estimator"]
            if not takes_sample_weight(est):
                raise InputError(f"mitigation exponentiated_gradient: {spec.estimator.name}.fit takes no "
                                 "sample_weight")
            constraint = getattr(reductions, _EG_CONSTRAINTS[mit.constraint])()
            eg = reductions.ExponentiatedGradient(est, constraint, eps=mit.eps if mit.eps is not None else 0.01)
            prep = pipeline.named_steps["preprocess"]
            eg.fit(prep.fit_transform(frame), y, sensitive_features=keys)
            weights = eg.weights_.reindex(range(len(eg.predictors_))).fillna(0.0).to_numpy(dtype=float)
            keep = [i for i, w in enumerate(weights) if w > 0]
            return export(preprocess=prep, predictors=[eg.predictors_[i] for i in keep],
                                       weights=weights[keep])
        from fairlearn.postprocessing import ThresholdOptimizer  # type: ignore[import-untyped]

        to = ThresholdOptimizer(estimator=pipeline, constraints=mit.constraint, prefit=False,
                                predict_method="predict_proba", objective=mit.objective or "accuracy_score")
        to.fit(frame, y, sensitive_features=keys)
    groups = sorted(to.interpolated_thresholder_.interpolation_dict)
    rows = []
    for g in groups:
        b = to.interpolated_thresholder_.interpolation_dict[g]
        rows.append([b.p0, b.operation0.threshold, 1.0 if b.operation0.operator == ">" else -1.0,
                     b.p1, b.operation1.threshold, 1.0 if b.operation1.operator == ">" else -1.0,
                     b.get("p_ignore", 0.0), b.get("prediction_constant", 0.0)])
    return export(base=to.estimator_, groups=[str(g) for g in groups],
                               table=np.asarray(rows, dtype=float))


def _check_frame(frame: Any, spec: TrainingSpec, role: str) -> None:
    needed = [*spec.inputs, spec.target, *(spec.sensitive if spec.mitigation else [])]
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise InputError(f"the {role} dataset has no column(s) {', '.join(missing)} named in the spec")


def _metrics(model: Any, frame: Any, spec: TrainingSpec, prefix: str) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import accuracy_score, roc_auc_score  # type: ignore[import-untyped]

    y = frame[spec.target].to_numpy()
    if hasattr(model, "predict_proba") and hasattr(model, "classes_") and not isinstance(model, MitigatedClassifier):
        # One pass: for the allow-listed scikit-learn classifiers ``predict`` is exactly
        # ``classes_[argmax(predict_proba)]`` (ties resolve to the first class either way).
        proba = np.asarray(model.predict_proba(frame))
        out = {f"{prefix}_accuracy": float(accuracy_score(y, model.classes_[np.argmax(proba, axis=1)]))}
        if len(np.unique(y)) == 2:
            out[f"{prefix}_roc_auc"] = float(roc_auc_score(y, proba[:, 1]))
    else:
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
        model: Any = build_pipeline(spec, datasets.train)
        try:
            if spec.mitigation is None:
                model.fit(datasets.train, datasets.train[spec.target])
            else:
                model = _fit_mitigated(spec, datasets.train)
        except (TypeError, ValueError) as exc:  # bad parameter values, labels, etc.
            raise InputError(f"training {spec.name} with {spec.estimator.name} failed: {exc}") from None
        wall = time.perf_counter() - start
        metrics = _metrics(model, datasets.train, spec, "train")
        if datasets.eval is not None:
            metrics |= _metrics(model, datasets.eval, spec, "eval")
        est = build_pipeline(spec, datasets.train).named_steps["estimator"]  # the parameters as set
        params = {k: v for k, v in est.get_params(deep=False).items()
                  if isinstance(v, _SCALARS) and not (isinstance(v, float) and v != v)}
        return TrainedModel(artifact=canonical_dumps(model), params=params, metrics=metrics, wall_time_s=wall)

    def load(self, artifact_ref: ArtifactRef) -> Any:
        """Step (3)."""
        data = artifact_ref.store.get(artifact_ref.sha256)
        return safe_loads(data, f"artifact {artifact_ref.sha256}", trusted=TREE_TYPES)

    def predict(self, model: Any, batch: Any) -> Predictions:
        import numpy as np

        if isinstance(model, MitigatedClassifier):  # it reads its groups from the batch
            missing = [c for c in model.sensitive if c not in batch.columns]
            if missing:
                raise InputError(f"the batch lacks the sensitive column(s) {', '.join(missing)} this "
                                 f"{model.method} model needs to predict")
        scores = None
        proba: Any = None
        one_pass = hasattr(model, "predict_proba") and hasattr(model, "classes_")
        if one_pass and not isinstance(model, MitigatedClassifier):
            # one pass, as in training: predict is classes_[argmax(predict_proba)] for the allow-listed classifiers
            proba = np.asarray(model.predict_proba(batch))
            labels = np.asarray(model.classes_)[np.argmax(proba, axis=1)]
        else:
            labels = np.asarray(model.predict(batch))
            proba = np.asarray(model.predict_proba(batch)) if hasattr(model, "predict_proba") else None
        if proba is not None and proba.ndim == 2 and proba.shape[1] == 2:
            scores = proba[:, 1]
        return Predictions(labels=labels, scores=scores)

    def describe(self) -> dict[str, Any]:
        from backends._env import environment

        return {"name": self.name, "runs": "in-process", "format": "skops",
                "python": platform.python_version(), "libraries": environment()}
