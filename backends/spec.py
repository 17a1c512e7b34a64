"""The training spec: a YAML file validated into strict pydantic models.

Invariants:
(1) the file is one YAML mapping with no duplicate keys, and every error names ``file:line``
    and the key (``policies._yaml``);
(2) the estimator is chosen by name from ``ESTIMATORS``, an allow-list; a spec never names a
    module to import;
(3) every estimator parameter is one the estimator accepts (``get_params()``), checked before
    anything is trained;
(4) the model's inputs are ``features`` minus ``sensitive`` unless ``include_sensitive: true``;
    the target is never an input;
(5) an optional fairlearn ``mitigation`` needs ``sensitive`` columns (its groups); ``eps`` belongs
    to exponentiated_gradient, ``objective`` to threshold_optimizer, and exponentiated_gradient
    needs an estimator whose ``fit`` takes ``sample_weight``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, ValidationError

from ledger.errors import InputError
from policies._yaml import compose_mapping, did_you_mean, first_error, locate, type_mismatch

__all__ = ["ESTIMATORS", "DatasetRefs", "EstimatorSpec", "LoadedSpec", "MitigationSpec", "TrainingSpec",
           "load_spec", "parse_spec"]

#: Estimator name -> (module, class). The only estimators a spec may name.
ESTIMATORS: Final[dict[str, tuple[str, str]]] = {
    "LogisticRegression": ("sklearn.linear_model", "LogisticRegression"),
    "RandomForestClassifier": ("sklearn.ensemble", "RandomForestClassifier"),
    "GradientBoostingClassifier": ("sklearn.ensemble", "GradientBoostingClassifier"),
    "HistGradientBoostingClassifier": ("sklearn.ensemble", "HistGradientBoostingClassifier"),
    "DecisionTreeClassifier": ("sklearn.tree", "DecisionTreeClassifier"),
}

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,254}$")]
Column = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DatasetRefs(_Strict):
    """Ledger dataset references (a registered name or a SHA-256 prefix)."""

    train: Ref
    eval: Ref | None = None


class EstimatorSpec(_Strict):
    name: str
    params: dict[str, JsonValue] = Field(default_factory=dict)


class MitigationSpec(_Strict):
    """A fairlearn mitigation over the spec's ``sensitive`` columns (step (5))."""

    method: Literal["exponentiated_gradient", "threshold_optimizer"]
    constraint: Literal["demographic_parity", "equalized_odds", "true_positive_rate_parity",
                        "false_positive_rate_parity"]
    eps: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    objective: Literal["accuracy_score", "balanced_accuracy_score"] | None = None


class TrainingSpec(_Strict):
    name: Identifier
    datasets: DatasetRefs
    features: Annotated[list[Column], Field(min_length=1)]
    target: Column
    sensitive: list[Column] = Field(default_factory=list)
    include_sensitive: bool = False
    estimator: EstimatorSpec
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    mitigation: MitigationSpec | None = None

    @property
    def inputs(self) -> list[str]:
        """Step (4): the columns the model reads."""
        drop = set() if self.include_sensitive else set(self.sensitive)
        return [c for c in self.features if c not in drop and c != self.target]


@dataclass(frozen=True)
class LoadedSpec:
    spec: TrainingSpec
    raw_bytes: bytes
    sha256: str
    path: Path | None


def estimator_class(name: str) -> Any:
    import importlib

    module, cls = ESTIMATORS[name]
    return getattr(importlib.import_module(module), cls)


def load_spec(path: Path) -> LoadedSpec:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the training spec ({exc.strerror})") from None
    return parse_spec(raw, str(path), path=path)


def parse_spec(raw: bytes, source: str, *, path: Path | None = None) -> LoadedSpec:
    """Steps (1)-(3) over the spec's bytes; ``source`` names them in errors."""
    node, data = compose_mapping(raw, source, "a training spec is a mapping with name, datasets, features, "
                                              "target and estimator")
    try:
        spec = TrainingSpec.model_validate(data)
    except ValidationError as exc:
        err = first_error(exc.errors(include_url=False))
        line, where, _found = locate(node, tuple(err["loc"]))
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(where[:-1])
            hint = did_you_mean(str(err["loc"][-1]), allowed)
            msg = f"unknown key; allowed: {', '.join(allowed)}" + (f" (did you mean {hint!r}?)" if hint else "")
        elif err["type"] == "missing":
            msg = "required"
        else:
            msg = type_mismatch(err) or err["msg"]
        raise InputError(f"{source}:{line}: {key}: {msg}") from None
    _check_estimator(spec, node, source)
    _check_columns(spec, node, source)
    _check_mitigation(spec, node, source)
    return LoadedSpec(spec, raw, hashlib.sha256(raw).hexdigest(), path)


def _allowed_keys(path: list[int | str]) -> list[str]:
    model: type[BaseModel] = TrainingSpec
    for part in path:
        field = model.model_fields.get(str(part))
        subs: dict[str, type[BaseModel]] = {"datasets": DatasetRefs, "estimator": EstimatorSpec,
                                            "mitigation": MitigationSpec}
        sub = subs.get(str(part))
        if field is None or sub is None:
            break
        model = sub
    return list(model.model_fields)


def _line(node: Any, *keys: str) -> int:
    line = node.start_mark.line + 1
    for key in keys:
        match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return int(line)


def _check_estimator(spec: TrainingSpec, node: Any, source: str) -> None:
    """Steps (2) and (3)."""
    est = spec.estimator
    if est.name not in ESTIMATORS:
        raise InputError(f"{source}:{_line(node, 'estimator', 'name')}: estimator.name: unknown estimator "
                         f"{est.name!r}; allowed: {', '.join(ESTIMATORS)}")
    accepted = estimator_class(est.name)().get_params()
    for param in est.params:
        if param not in accepted:
            hint = did_you_mean(param, accepted)
            raise InputError(
                f"{source}:{_line(node, 'estimator', 'params', param)}: estimator.params.{param}: "
                f"{est.name} has no parameter {param!r}" + (f" (did you mean {hint!r}?)" if hint else ""))


def _check_columns(spec: TrainingSpec, node: Any, source: str) -> None:
    if spec.target in spec.features:
        raise InputError(f"{source}:{_line(node, 'features')}: features: the target {spec.target!r} "
                         "cannot be an input feature")
    if not spec.inputs:
        raise InputError(f"{source}:{_line(node, 'features')}: features: no input is left once the "
                         "sensitive features are excluded (set include_sensitive: true to use them)")


def takes_sample_weight(estimator: Any) -> bool:
    """Whether ``estimator.fit`` accepts ``sample_weight`` (ExponentiatedGradient reweights through it)."""
    from sklearn.utils.validation import has_fit_parameter  # type: ignore[import-untyped]

    return bool(has_fit_parameter(estimator, "sample_weight"))


def _check_mitigation(spec: TrainingSpec, node: Any, source: str) -> None:
    """Step (5)."""
    mit = spec.mitigation
    if mit is None:
        return
    if not spec.sensitive:
        raise InputError(f"{source}:{_line(node, 'mitigation')}: mitigation: needs the sensitive features "
                         "it equalises across; list them under 'sensitive'")
    if mit.method == "threshold_optimizer" and mit.eps is not None:
        raise InputError(f"{source}:{_line(node, 'mitigation', 'eps')}: mitigation.eps: only "
                         "exponentiated_gradient takes eps (threshold_optimizer takes objective)")
    if mit.method == "exponentiated_gradient" and mit.objective is not None:
        raise InputError(f"{source}:{_line(node, 'mitigation', 'objective')}: mitigation.objective: only "
                         "threshold_optimizer takes objective (exponentiated_gradient takes eps)")
    if mit.method == "exponentiated_gradient" and not takes_sample_weight(estimator_class(spec.estimator.name)()):
        raise InputError(f"{source}:{_line(node, 'mitigation', 'method')}: mitigation.method: "
                         f"exponentiated_gradient reweights the estimator, but {spec.estimator.name}.fit takes "
                         "no sample_weight; use threshold_optimizer or another estimator")
