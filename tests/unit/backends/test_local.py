"""The local backend: deterministic artifacts for every allow-listed estimator, safe loading."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import skops.io as sio

from backends._protocol import ArtifactRef, TrainingData
from backends._skops import canonical_dumps
from backends.local import LocalBackend
from backends.spec import ESTIMATORS, parse_spec
from backends.testing import tiny_data
from ledger.artifacts import ArtifactStore
from ledger.errors import InputError


def spec(estimator: str, seed: int = 0) -> bytes:
    return (f"name: m\ndatasets: {{train: t}}\nfeatures: [income, debt, region]\ntarget: approved\n"
            f"estimator: {{name: {estimator}}}\nseed: {seed}\n").encode()


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_same_spec_data_and_seed_give_the_same_artifact_hash(estimator: str, tmp_path: Path) -> None:
    backend, data = LocalBackend(), TrainingData(tiny_data(200, 0))
    s = parse_spec(spec(estimator), "s.yaml").spec
    first, second = backend.train(s, data), backend.train(s, TrainingData(tiny_data(200, 0)))
    assert hashlib.sha256(first.artifact).digest() == hashlib.sha256(second.artifact).digest()
    store = ArtifactStore(tmp_path)
    model = backend.load(ArtifactRef(store, store.put(first.artifact)))  # tree types load too
    assert len(backend.predict(model, data.train).labels) == 200


def test_a_different_seed_gives_a_different_forest() -> None:
    backend, data = LocalBackend(), TrainingData(tiny_data(200, 0))
    one = backend.train(parse_spec(spec("RandomForestClassifier", 1), "s").spec, data)
    two = backend.train(parse_spec(spec("RandomForestClassifier", 2), "s").spec, data)
    assert one.artifact != two.artifact


def test_canonical_bytes_do_not_depend_on_object_ids_or_time() -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = tiny_data(50, 0)[["income", "debt"]], tiny_data(50, 0)["approved"]
    a = canonical_dumps(LogisticRegression().fit(X, y))
    b = canonical_dumps(LogisticRegression().fit(X, y))
    assert a == b
    names = [i.filename for i in zipfile.ZipFile(io.BytesIO(a)).infolist()]
    assert names == sorted(names) and "schema.json" in names


def test_untrusted_types_in_an_artifact_are_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    digest = store.put(sio.dumps({"f": zipfile.ZipInfo}))
    with pytest.raises(InputError, match="types skops does not trust by default"):
        LocalBackend().load(ArtifactRef(store, digest))


def test_a_missing_column_is_an_input_error() -> None:
    s = parse_spec(spec("LogisticRegression"), "s").spec
    with pytest.raises(InputError, match="no column\\(s\\) region"):
        LocalBackend().train(s, TrainingData(tiny_data(50, 0).drop(columns=["region"])))


def test_a_bad_parameter_value_is_an_input_error() -> None:
    s = parse_spec(spec("LogisticRegression").replace(b"LogisticRegression}",
                                                      b"LogisticRegression, params: {C: -1.0}}"), "s").spec
    with pytest.raises(InputError, match="training m with LogisticRegression failed"):
        LocalBackend().train(s, TrainingData(tiny_data(50, 0)))
