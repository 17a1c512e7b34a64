"""Training specs: strict models, errors that name file:line and the key."""

from __future__ import annotations

import pytest

from backends.spec import parse_spec
from ledger.errors import InputError

GOOD = """name: credit
datasets:
  train: train
  eval: eval
features: [income, age, sex]
target: approved
sensitive: [sex]
estimator:
  name: RandomForestClassifier
  params:
    n_estimators: 20
    max_depth: 4
seed: 3
"""


def test_a_valid_spec_parses_and_excludes_sensitive_inputs() -> None:
    loaded = parse_spec(GOOD.encode(), "spec.yaml")
    assert loaded.spec.inputs == ["income", "age"]
    assert loaded.spec.estimator.params == {"n_estimators": 20, "max_depth": 4}


def test_include_sensitive_keeps_them() -> None:
    loaded = parse_spec((GOOD + "include_sensitive: true\n").encode(), "spec.yaml")
    assert loaded.spec.inputs == ["income", "age", "sex"]


@pytest.mark.parametrize(("text", "message"), [
    (GOOD.replace("seed: 3", "sede: 3"), "spec.yaml:13: sede: unknown key; allowed: name, datasets"),
    (GOOD.replace("  eval: eval", "  evl: eval"), "spec.yaml:4: datasets.evl: unknown key"),
    (GOOD.replace("RandomForestClassifier", "SVC"),
     "spec.yaml:9: estimator.name: unknown estimator 'SVC'; allowed: LogisticRegression, "
     "RandomForestClassifier, GradientBoostingClassifier, HistGradientBoostingClassifier, "
     "DecisionTreeClassifier"),
    (GOOD.replace("max_depth", "max_dept"),
     "spec.yaml:12: estimator.params.max_dept: RandomForestClassifier has no parameter 'max_dept' "
     "(did you mean 'max_depth'?)"),
    (GOOD.replace("target: approved\n", ""), "spec.yaml:1: target: required"),
    (GOOD.replace("seed: 3", "seed: three"), "spec.yaml:13: seed: expected an integer"),
    (GOOD.replace("features: [income, age, sex]", "features: [income, approved]"),
     "spec.yaml:5: features: the target 'approved' cannot be an input feature"),
    (GOOD.replace("features: [income, age, sex]", "features: [sex]"),
     "spec.yaml:5: features: no input is left"),
    (GOOD + "seed: 4\n", "spec.yaml:14: duplicate key 'seed'"),
], ids=["unknown-key", "unknown-nested-key", "unknown-estimator", "bad-param", "missing-target",
        "wrong-type", "target-as-feature", "only-sensitive", "duplicate-key"])
def test_spec_errors_name_the_line_and_key(text: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        parse_spec(text.encode(), "spec.yaml")
    assert message in str(err.value)


def test_an_import_path_is_not_an_estimator() -> None:
    """Configuration never names a module to import."""
    with pytest.raises(InputError, match="unknown estimator 'os.system'"):
        parse_spec(GOOD.replace("RandomForestClassifier", "os.system").encode(), "spec.yaml")
