"""Policy rules: the strict, frozen models of each rule kind (DESIGN.md section 6).

Invariants:
(1) a rule is one of ``RULE_KINDS``, told apart by its ``kind``; an unknown key, a wrong type or
    an inconsistent bound is a ``ValueError`` (which the policy loader maps to ``file:line``);
(2) a duration is a positive whole number and one unit (s, m, h, d, w);
(3) a CEL expression compiles, and reads only ``CEL_VARIABLES``; it is never Python ``eval``.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Final, Literal, Self

import celpy
from celpy.celparser import CELParseError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from ledger.kinds import Role

__all__ = [
    "CEL_VARIABLES",
    "RATIO_METRICS",
    "RULE_CLASSES",
    "RULE_KINDS",
    "ApprovalRule",
    "Ceilings",
    "CustomRule",
    "DataValidationRule",
    "DriftRule",
    "ExplainabilityRule",
    "FairnessRule",
    "Floors",
    "FreshnessRule",
    "LineageRule",
    "NoRegression",
    "PerformanceRule",
    "Rule",
    "RuleModel",
    "StrictModel",
    "Text",
    "compile_cel",
    "duration_seconds",
]

EvidenceKind = Literal["fairness", "drift", "explainability", "performance"]
DatasetRole = Literal["train", "eval", "reference", "production", "outputs", "any"]
FairnessMetric = Literal[
    "demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
    "equalized_odds_ratio", "equal_opportunity_difference", "disparate_impact",
    "statistical_parity_difference", "average_odds_difference", "min_impact_ratio",
    "min_scoring_impact_ratio",
]
#: Fairness metrics that are ratios (1 is parity); the four-fifths rule reads them with ``min: 0.8``.
RATIO_METRICS: Final = frozenset({"demographic_parity_ratio", "equalized_odds_ratio", "disparate_impact",
                                  "min_impact_ratio", "min_scoring_impact_ratio"})
DriftStatistic = Literal["psi", "js", "ks_p", "chi2_p", "drifted_share", "n_drifted", "dataset_drift",
                         "prediction_psi"]
PerformanceMetric = Literal["accuracy", "precision", "recall", "f1", "roc_auc", "brier_score"]
#: The names a custom CEL expression may read.
CEL_VARIABLES: Final = frozenset({"fairness", "drift", "performance", "explainability", "model"})
_CEL_TYPE_NAMES: Final = frozenset({"bool", "bytes", "double", "duration", "int", "list", "map", "null_type",
                                    "string", "timestamp", "type", "uint", "google"})
_CEL_MACROS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})
_DURATION: Final = re.compile(r"^([1-9][0-9]{0,5})([smhdw])$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

RuleId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Unit = Annotated[float, Field(ge=0, le=1)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def duration_seconds(text: str) -> int:
    """Seconds in a duration such as "30d" or "12h" (units s, m, h, d, w)."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"expected a duration such as '30d' or '12h' (a positive whole number and one "
                         f"of the units s, m, h, d, w), got {text!r}")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def _feature_name(value: str) -> str:
    """"*", a feature, or an intersection "a & b" (spacing normalised)."""
    if value.strip() == "*":
        return "*"
    parts = [p.strip() for p in value.split("&")]
    if not all(parts):
        raise ValueError(f"expected a sensitive feature, an intersection such as 'sex & race', or '*'; "
                         f"got {value!r}")
    return " & ".join(parts)


def compile_cel(expression: str) -> tuple[Any, frozenset[str]]:
    """Compile ``expression``; return the CEL syntax tree and the evidence kinds it reads.

    Raises ``ValueError`` naming the column of a syntax error, or a variable that is not one
    of ``CEL_VARIABLES`` (a typo would otherwise only show as a runtime error).
    """
    try:
        tree = celpy.Environment().compile(expression)
    except CELParseError as exc:
        where = f" at line {exc.line}, column {exc.column}" if exc.line and exc.column else ""
        shown = str(exc.args[0]).splitlines()[0] if exc.args else expression
        raise ValueError(f"CEL expression does not compile{where}: {shown!r}") from None
    except RecursionError:
        raise ValueError("CEL expression is nested too deeply to compile") from None
    names, bound = set(), set()
    for sub in tree.iter_subtrees():
        if sub.data == "ident" and sub.children:
            names.add(str(sub.children[0]))
        elif sub.data == "member_dot_arg" and len(sub.children) == 3 and str(sub.children[1]) in _CEL_MACROS:
            args = sub.children[2]
            if args.children:  # the macro's bound variable is its first argument, a bare name
                bound |= {str(t.children[0]) for t in args.children[0].iter_subtrees() if t.data == "ident"}
    unknown = sorted(names - CEL_VARIABLES - _CEL_TYPE_NAMES - bound)
    if unknown:
        hint = difflib.get_close_matches(unknown[0], sorted(CEL_VARIABLES), n=1)
        raise ValueError(f"CEL expression reads unknown variable {unknown[0]!r}"
                         + (f" (did you mean {hint[0]!r}?)" if hint else "")
                         + f"; the variables are {', '.join(sorted(CEL_VARIABLES))}")
    return tree, frozenset(names & (CEL_VARIABLES - {"model"}))


# -- rules -----------------------------------------------------------------------------------


class RuleModel(StrictModel):
    id: RuleId
    source: Text | None = None


class FairnessRule(RuleModel):
    """A fairness metric of a sensitive feature (or intersection; "*" is every one) within bounds."""

    kind: Literal["fairness"]
    feature: str
    metric: FairnessMetric
    min: float | None = None
    max: float | None = None
    #: The evidence must flag groups smaller than this (its ``config.min_group_size`` at least this);
    #: 30 is the fairness evaluator's default.
    min_group_size: Annotated[int, Field(ge=1)] = 30
    allow_small_groups: bool = False
    dataset_role: DatasetRole = "eval"

    @field_validator("feature")
    @classmethod
    def _feature(cls, v: str) -> str:
        return _feature_name(v)

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("a fairness rule needs 'min' or 'max' (or both)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class DriftRule(RuleModel):
    """A drift statistic below its limit (p-values: at or above it), per feature or over all."""

    kind: Literal["drift"]
    statistic: DriftStatistic
    limit: float | None = None
    feature: str | None = None
    dataset_role: DatasetRole = "any"

    @property
    def lower_bound(self) -> bool:
        """p-values pass at or above the limit (p < limit counts as drift); the rest pass below it."""
        return self.statistic in ("ks_p", "chi2_p")

    @model_validator(mode="after")
    def _limit(self) -> Self:
        if self.statistic == "dataset_drift":
            if self.limit is not None:
                raise ValueError("dataset_drift takes no 'limit': the rule passes when it is false")
        elif self.limit is None:
            raise ValueError(f"a drift rule on {self.statistic} needs a 'limit'")
        elif self.lower_bound and not 0 < self.limit < 1:
            raise ValueError(f"the limit of a p-value ({self.statistic}) must lie in (0, 1), not {self.limit}")
        if self.feature is not None and self.statistic not in ("psi", "js", "ks_p", "chi2_p"):
            raise ValueError(f"{self.statistic} describes the whole dataset; it takes no 'feature'")
        return self


class ExplainabilityRule(RuleModel):
    """No sensitive feature, nor a proxy of one, among the model's top-k features."""

    kind: Literal["explainability"]
    top_k: Annotated[int, Field(ge=1)] = 5
    #: The evidence must flag proxies at this association or lower (its ``proxy_threshold``).
    proxy_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    allow_unassessed: bool = False
    dataset_role: DatasetRole = "eval"


class Floors(StrictModel):
    accuracy: Unit | None = None
    precision: Unit | None = None
    recall: Unit | None = None
    f1: Unit | None = None
    roc_auc: Unit | None = None


class Ceilings(StrictModel):
    brier_score: Unit | None = None


class NoRegression(StrictModel):
    tolerance: Unit = 0.0
    #: Compared metrics; by default those the rule sets floors or ceilings for, else accuracy and roc_auc.
    metrics: Annotated[tuple[PerformanceMetric, ...], Field(min_length=1, strict=False)] | None = None


class PerformanceRule(RuleModel):
    """Floors (and a Brier ceiling), overall or on a feature's worst group; no regression."""

    kind: Literal["performance"]
    min: Floors | None = None
    max: Ceilings | None = None
    feature: str | None = None
    no_regression: NoRegression | None = None
    dataset_role: DatasetRole = "eval"

    @field_validator("feature")
    @classmethod
    def _feature(cls, v: str | None) -> str | None:
        return None if v is None else _feature_name(v)

    @property
    def limits(self) -> dict[str, tuple[Literal["min", "max"], float]]:
        out: dict[str, tuple[Literal["min", "max"], float]] = {}
        for bound, model in (("min", self.min), ("max", self.max)):
            for name, value in (model.model_dump(exclude_none=True) if model else {}).items():
                out[name] = (bound, value)  # type: ignore[assignment]
        return out

    @property
    def regression_metrics(self) -> tuple[str, ...]:
        if self.no_regression is None:
            return ()
        return self.no_regression.metrics or tuple(self.limits) or ("accuracy", "roc_auc")

    @model_validator(mode="after")
    def _something(self) -> Self:
        for bound, model in (("min", self.min), ("max", self.max)):
            if model is not None and not model.model_dump(exclude_none=True):
                raise ValueError(f"'{bound}' sets no metric")
        if not self.limits and self.no_regression is None:
            raise ValueError("a performance rule needs 'min', 'max' or 'no_regression'")
        return self


class DataValidationRule(RuleModel):
    """The training and evaluation datasets' newest ``dataset.validated`` entries passed."""

    kind: Literal["data_validation"]
    roles: Annotated[tuple[Literal["train", "eval"], ...], Field(min_length=1, strict=False)] = ("train", "eval")


class LineageRule(RuleModel):
    """Every training-data hash of the model is a dataset registered before it, and validated."""

    kind: Literal["lineage"]


class FreshnessRule(RuleModel):
    """Evidence of these types is bound to this artifact and, with ``max_age``, no older than it."""

    kind: Literal["freshness"]
    types: Annotated[tuple[EvidenceKind, ...], Field(min_length=1, strict=False)] = (
        "fairness", "drift", "explainability", "performance")
    max_age: str | None = None
    #: The dataset role of the evidence; by default each type's (eval; drift: any).
    dataset_role: DatasetRole | None = None

    @field_validator("max_age")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            duration_seconds(v)
        return v


class ApprovalRule(RuleModel):
    """A quorum of distinct signers holding one of the roles; the trainer does not count."""

    kind: Literal["approval"]
    quorum: Annotated[int, Field(ge=1)] = 1
    role: Role | Annotated[tuple[Role, ...], Field(min_length=1, strict=False)]
    exclude_trainer: bool = True
    #: Only signatures with this meaning count; a "review" never counts as an approval by default.
    meaning: Text | None = "approval"

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.role,) if isinstance(self.role, str) else self.role


class CustomRule(RuleModel):
    """A CEL expression over the evidence summaries that must be true. Never Python ``eval``."""

    kind: Literal["custom"]
    expression: Annotated[str, StringConstraints(min_length=1, max_length=4096)]

    @field_validator("expression")
    @classmethod
    def _compiles(cls, v: str) -> str:
        compile_cel(v)
        return v


Rule = Annotated[
    FairnessRule | DriftRule | ExplainabilityRule | PerformanceRule | DataValidationRule | LineageRule
    | FreshnessRule | ApprovalRule | CustomRule,
    Field(discriminator="kind"),
]
RULE_CLASSES: Final[dict[str, type[RuleModel]]] = {
    "fairness": FairnessRule, "drift": DriftRule, "explainability": ExplainabilityRule,
    "performance": PerformanceRule, "data_validation": DataValidationRule, "lineage": LineageRule,
    "freshness": FreshnessRule, "approval": ApprovalRule, "custom": CustomRule,
}
RULE_KINDS: Final = tuple(RULE_CLASSES)
