"""The conformance checks: train -> load -> predict, determinism, the artifact round trip,
and refusal of a tampered artifact. Each is one test method."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from backends._protocol import ArtifactRef, Backend, TrainingData
from backends.spec import TrainingSpec, parse_spec
from ledger.artifacts import ArtifactStore
from ledger.errors import IntegrityError

__all__ = ["BackendConformance", "tiny_data", "tiny_spec"]

SPEC = b"""name: conformance
datasets: {train: train, eval: eval}
features: [income, debt, region, sex]
target: approved
sensitive: [sex]
estimator: {name: LogisticRegression, params: {max_iter: 200}}
seed: 7
"""


def tiny_spec() -> TrainingSpec:
    return parse_spec(SPEC, "conformance.yaml").spec


def tiny_data(n: int = 300, seed: int = 0) -> Any:
    import numpy as np
    import pandas as pd  # type: ignore[import-untyped]

    rng = np.random.default_rng(seed)
    income = rng.normal(50, 10, n)
    debt = rng.gamma(2.0, 5.0, n)
    region = rng.choice(["north", "south", "west"], n)
    logit = 0.1 * (income - 50) - 0.1 * (debt - 10) + np.where(region == "north", 0.5, 0.0)
    approved = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"income": income, "debt": debt, "region": region,
                         "sex": rng.choice(["f", "m"], n), "approved": approved})


def _eval(data: TrainingData) -> Any:
    assert data.eval is not None
    return data.eval


class BackendConformance:
    """Set ``backend_factory`` to a zero-argument callable returning the backend under test."""

    backend_factory: ClassVar[Callable[[], Backend]]

    @pytest.fixture
    def backend(self) -> Backend:
        return type(self).backend_factory()

    @pytest.fixture
    def data(self) -> TrainingData:
        return TrainingData(tiny_data(300, 0), tiny_data(200, 1))

    def test_satisfies_the_protocol(self, backend: Backend) -> None:
        assert isinstance(backend, Backend)
        assert isinstance(backend.name, str) and backend.name
        assert isinstance(backend.describe(), dict)

    def test_train_load_predict(self, backend: Backend, data: TrainingData, tmp_path: Path) -> None:
        trained = backend.train(tiny_spec(), data)
        assert trained.artifact and trained.wall_time_s >= 0
        store = ArtifactStore(tmp_path / "artifacts")
        model = backend.load(ArtifactRef(store, store.put(trained.artifact)))
        preds = backend.predict(model, _eval(data))
        assert len(preds.labels) == len(_eval(data))
        assert set(preds.labels) <= {0, 1}
        if preds.scores is not None:
            assert len(preds.scores) == len(_eval(data))
            assert all(0.0 <= s <= 1.0 for s in preds.scores)

    def test_sensitive_features_are_not_inputs(self, backend: Backend, data: TrainingData,
                                               tmp_path: Path) -> None:
        """Predictions do not change when only the (excluded) sensitive column changes."""
        store = ArtifactStore(tmp_path / "artifacts")
        model = backend.load(ArtifactRef(store, store.put(backend.train(tiny_spec(), data).artifact)))
        flipped = _eval(data).assign(sex=_eval(data)["sex"].map({"f": "m", "m": "f"}))
        assert list(backend.predict(model, flipped).labels) == list(backend.predict(model, _eval(data)).labels)

    def test_training_is_deterministic(self, backend: Backend, data: TrainingData) -> None:
        first = backend.train(tiny_spec(), data)
        again = backend.train(tiny_spec(), TrainingData(data.train.copy(), _eval(data).copy()))
        assert hashlib.sha256(first.artifact).hexdigest() == hashlib.sha256(again.artifact).hexdigest()
        assert first.metrics == again.metrics

    def test_artifact_round_trip_predicts_the_same(self, backend: Backend, data: TrainingData,
                                                   tmp_path: Path) -> None:
        store = ArtifactStore(tmp_path / "artifacts")
        trained = backend.train(tiny_spec(), data)
        digest = store.put(trained.artifact)
        assert store.get(digest) == trained.artifact
        one = backend.load(ArtifactRef(store, digest))
        two = backend.load(ArtifactRef(store, digest))
        assert list(backend.predict(one, _eval(data)).labels) == list(backend.predict(two, _eval(data)).labels)

    def test_a_tampered_artifact_is_refused(self, backend: Backend, data: TrainingData, tmp_path: Path) -> None:
        store = ArtifactStore(tmp_path / "artifacts")
        digest = store.put(backend.train(tiny_spec(), data).artifact)
        path = store.path(digest)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        path.write_bytes(bytes(raw))
        with pytest.raises(IntegrityError, match="was modified"):
            backend.load(ArtifactRef(store, digest))
