"""fairlearn mitigation in the local backend: fairer selection rates, strict spec, reproducible artifacts."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backends._protocol import ArtifactRef, TrainingData
from backends.local import LocalBackend, MitigatedClassifier, group_keys
from backends.spec import ESTIMATORS, parse_spec
from ledger.artifacts import ArtifactStore
from ledger.errors import InputError
from policies.evidence import fairness_report
from tests.integration.test_evidence_cli import applicants

BASE = """name: credit
datasets: {train: train}
features: [income, age, debt, sex]
target: approved
sensitive: [sex]
estimator: {name: LogisticRegression}
seed: 7
"""
TO = "mitigation: {method: threshold_optimizer, constraint: demographic_parity}\n"
EG = "mitigation: {method: exponentiated_gradient, constraint: demographic_parity, eps: 0.02}\n"
METHODS = {"threshold_optimizer": TO, "exponentiated_gradient": EG}


def train(text: str, frame: pd.DataFrame | None = None) -> bytes:
    spec = parse_spec(text.encode(), "spec.yaml").spec
    return LocalBackend().train(spec, TrainingData(applicants(3000, 1) if frame is None else frame)).artifact


def load(artifact: bytes, tmp_path: Path) -> object:
    store = ArtifactStore(tmp_path)
    return LocalBackend().load(ArtifactRef(store, store.put(artifact)))


def impact_ratio(artifact: bytes, tmp_path: Path) -> float:
    ev = applicants(2000, 2)  # income depends on sex: a known bias the unmitigated model inherits
    labels = LocalBackend().predict(load(artifact, tmp_path), ev).labels
    ratio = fairness_report(ev["approved"], labels, sensitive_features=ev[["sex"]]).summary()["sex"]
    return float(ratio["demographic_parity_ratio"])


@pytest.mark.parametrize("method", list(METHODS))
def test_mitigation_brings_the_selection_rate_ratio_closer_to_1(method: str, tmp_path: Path) -> None:
    plain = impact_ratio(train(BASE), tmp_path / "plain")
    mitigated = impact_ratio(train(BASE + METHODS[method]), tmp_path / "mitigated")
    assert plain < 0.85
    assert abs(1 - mitigated) < abs(1 - plain)


@pytest.mark.parametrize("method", list(METHODS))
def test_same_spec_data_and_seed_give_the_same_artifact_hash(method: str) -> None:
    first, second = train(BASE + METHODS[method]), train(BASE + METHODS[method])
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


def test_a_different_seed_changes_the_randomised_predictions(tmp_path: Path) -> None:
    ev = applicants(2000, 2)
    one = LocalBackend().predict(load(train(BASE + TO), tmp_path / "a"), ev).labels
    two = LocalBackend().predict(load(train(BASE.replace("seed: 7", "seed: 8") + TO), tmp_path / "b"), ev).labels
    again = LocalBackend().predict(load(train(BASE + TO), tmp_path / "c"), ev).labels
    assert (one == again).all() and (one != two).any()


@pytest.mark.parametrize("method", list(METHODS))
def test_the_export_predicts_what_fairlearn_predicts(method: str) -> None:
    """Cross-check: the same labels as the fitted fairlearn object with random_state = seed."""
    from fairlearn.postprocessing import ThresholdOptimizer
    from fairlearn.reductions import DemographicParity, ExponentiatedGradient

    from backends.local import build_pipeline

    spec = parse_spec((BASE + METHODS[method]).encode(), "spec.yaml").spec
    frame, ev = applicants(3000, 1), applicants(2000, 2)
    exported = _fit(spec, frame)
    keys, ev_keys = pd.Series(group_keys(frame, ["sex"])), group_keys(ev, ["sex"])
    pipeline = build_pipeline(spec, frame)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="fairlearn")
        if method == "threshold_optimizer":
            ref = ThresholdOptimizer(estimator=pipeline, constraints="demographic_parity", prefit=False,
                                     predict_method="predict_proba").fit(frame, frame["approved"],
                                                                         sensitive_features=keys)
            expected = ref.predict(ev, sensitive_features=ev_keys, random_state=7)
        else:
            prep = pipeline.named_steps["preprocess"]
            ref = ExponentiatedGradient(pipeline.named_steps["estimator"], DemographicParity(), eps=0.02)
            ref.fit(prep.fit_transform(frame), frame["approved"], sensitive_features=keys)
            expected = ref.predict(prep.transform(ev), random_state=7)
    assert (exported.predict(ev) == np.asarray(expected)).mean() > 0.999


def _fit(spec: object, frame: pd.DataFrame) -> MitigatedClassifier:
    from backends.local import _fit_mitigated

    return _fit_mitigated(spec, frame)  # type: ignore[arg-type]


def test_serving_without_the_sensitive_columns_is_refused(tmp_path: Path) -> None:
    model = load(train(BASE + TO), tmp_path)
    with pytest.raises(InputError, match="lacks the sensitive column\\(s\\) sex this threshold_optimizer"):
        LocalBackend().predict(model, applicants(100, 2).drop(columns=["sex"]))


def test_a_group_unseen_in_training_is_refused(tmp_path: Path) -> None:
    model = load(train(BASE + TO), tmp_path)
    with pytest.raises(InputError, match="sensitive group 'other' \\(sex\\) was not in the training data"):
        LocalBackend().predict(model, applicants(100, 2).assign(sex="other"))


@pytest.mark.parametrize(("text", "message"), [
    (BASE.replace("sensitive: [sex]\n", "") + TO,
     "spec.yaml:7: mitigation: needs the sensitive features it equalises across; list them under 'sensitive'"),
    (BASE + TO.replace("threshold_optimizer", "reweighing"),
     "spec.yaml:8: mitigation.method: expected 'exponentiated_gradient' or 'threshold_optimizer', "
     "got str 'reweighing'"),
    (BASE + TO.replace("demographic_parity", "calibration"),
     "spec.yaml:8: mitigation.constraint: expected 'demographic_parity', 'equalized_odds', "
     "'true_positive_rate_parity' or 'false_positive_rate_parity', got str 'calibration'"),
    (BASE + "mitigation:\n  method: threshold_optimizer\n  constraint: equalized_odds\n  eps: 0.1\n",
     "spec.yaml:11: mitigation.eps: only exponentiated_gradient takes eps"),
    (BASE + "mitigation:\n  method: exponentiated_gradient\n  constraint: equalized_odds\n"
            "  objective: accuracy_score\n",
     "spec.yaml:11: mitigation.objective: only threshold_optimizer takes objective"),
    (BASE + "mitigation:\n  method: exponentiated_gradient\n  constraint: equalized_odds\n  epsilon: 0.1\n",
     "spec.yaml:11: mitigation.epsilon: unknown key; allowed: method, constraint, eps, objective "
     "(did you mean 'eps'?)"),
    (BASE + "mitigation: {method: exponentiated_gradient, constraint: equalized_odds, eps: 0}\n",
     "spec.yaml:8: mitigation.eps:"),
], ids=["no-sensitive", "unknown-method", "unknown-constraint", "eps-on-threshold-optimizer",
        "objective-on-exponentiated-gradient", "unknown-key", "eps-zero"])
def test_mitigation_errors_name_the_line_and_key(text: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        parse_spec(text.encode(), "spec.yaml")
    assert message in str(err.value)


def test_exponentiated_gradient_refuses_an_estimator_without_sample_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ESTIMATORS, "KNeighborsClassifier", ("sklearn.neighbors", "KNeighborsClassifier"))
    text = BASE.replace("LogisticRegression", "KNeighborsClassifier") + EG
    with pytest.raises(InputError, match="spec.yaml:8: mitigation.method: exponentiated_gradient reweights the "
                                         "estimator, but KNeighborsClassifier.fit takes no sample_weight"):
        parse_spec(text.encode(), "spec.yaml")
    parse_spec((BASE.replace("LogisticRegression", "KNeighborsClassifier") + TO).encode(), "spec.yaml")


@pytest.mark.parametrize("estimator", ["LogisticRegression", "RandomForestClassifier", "GradientBoostingClassifier",
                                       "HistGradientBoostingClassifier", "DecisionTreeClassifier"])
def test_one_pass_train_metrics_equal_predict(estimator: str) -> None:
    """The metrics shortcut (labels from predict_proba) gives exactly what predict gives."""
    import numpy as np

    from backends.local import build_pipeline
    from backends.spec import parse_spec
    from tests.integration.test_evidence_cli import applicants

    frame = applicants(1500, 4)
    spec = parse_spec((
        "name: m\ndatasets: {train: t}\nfeatures: [income, age, debt, sex, race]\ntarget: approved\n"
        f"sensitive: [sex, race]\nestimator: {{name: {estimator}}}\nseed: 3\n").encode(), "s.yaml").spec
    model = build_pipeline(spec, frame).fit(frame, frame["approved"])
    labels = model.classes_[np.argmax(model.predict_proba(frame), axis=1)]
    assert (labels == model.predict(frame)).all()
    from backends.local import LocalBackend  # serving takes the same shortcut

    served = LocalBackend().predict(model, frame)
    assert (served.labels == model.predict(frame)).all() and (served.scores == model.predict_proba(frame)[:, 1]).all()
