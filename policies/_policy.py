"""Policy files: YAML loaded into strict, frozen models (DESIGN.md section 6).

Invariants:
(1) the bytes are kept: ``LoadedPolicy.sha256`` is SHA-256 of exactly the bytes read, which is
    what ``policy.published`` carries (as UTF-8 text);
(2) nothing is skipped: an unknown key, a duplicate key, a wrong type, an unknown rule kind, a
    duplicate rule id, a bad duration or a CEL expression that does not compile is an
    ``InputError`` naming ``file:line`` and the key;
(3) an empty rule set is an error; a policy may leave out ``rules`` only when it ``extends`` a
    built-in pack;
(4) ``extends`` merges the packs' rules after the policy's own, de-duplicated by id: a policy
    rule overrides a pack rule of the same id; two packs may share an id only for the same
    rule (their citations are joined);
(5) every resolved rule cites a source: packs must; a policy rule defaults to "policy NAME".
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self, TypeVar

import celpy
import yaml  # type: ignore[import-untyped]
from celpy.celparser import CELParseError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from ledger.errors import InputError
from ledger.kinds import Role

__all__ = [
    "CEL_VARIABLES",
    "PACK_NAMES",
    "RATIO_METRICS",
    "ApprovalRule",
    "CustomRule",
    "DataValidationRule",
    "DriftRule",
    "ExplainabilityRule",
    "FairnessRule",
    "FreshnessRule",
    "LineageRule",
    "LoadedPolicy",
    "Pack",
    "PerformanceRule",
    "Policy",
    "Rule",
    "compile_cel",
    "duration_seconds",
    "load_policy",
    "parse_pack",
    "parse_policy",
    "policy_lint",
]

PackName = Literal["baseline", "eu-ai-act-high-risk", "four-fifths", "model-risk-sr-11-7"]
PACK_NAMES: Final[tuple[str, ...]] = PackName.__args__  # type: ignore[attr-defined]
EvidenceKind = Literal["fairness", "drift", "explainability", "performance"]
DatasetRole = Literal["train", "eval", "reference", "production", "any"]
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

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,254}$")]
RuleId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Unit = Annotated[float, Field(ge=0, le=1)]


class _Model(BaseModel):
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


class _Rule(_Model):
    id: RuleId
    source: Text | None = None


class FairnessRule(_Rule):
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


class DriftRule(_Rule):
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


class ExplainabilityRule(_Rule):
    """No sensitive feature, nor a proxy of one, among the model's top-k features."""

    kind: Literal["explainability"]
    top_k: Annotated[int, Field(ge=1)] = 5
    #: The evidence must flag proxies at this association or lower (its ``proxy_threshold``).
    proxy_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    allow_unassessed: bool = False
    dataset_role: DatasetRole = "eval"


class Floors(_Model):
    accuracy: Unit | None = None
    precision: Unit | None = None
    recall: Unit | None = None
    f1: Unit | None = None
    roc_auc: Unit | None = None


class Ceilings(_Model):
    brier_score: Unit | None = None


class NoRegression(_Model):
    tolerance: Unit = 0.0
    #: Compared metrics; by default those the rule sets floors or ceilings for, else accuracy and roc_auc.
    metrics: Annotated[tuple[PerformanceMetric, ...], Field(min_length=1, strict=False)] | None = None


class PerformanceRule(_Rule):
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


class DataValidationRule(_Rule):
    """The training and evaluation datasets' newest ``dataset.validated`` entries passed."""

    kind: Literal["data_validation"]
    roles: Annotated[tuple[Literal["train", "eval"], ...], Field(min_length=1, strict=False)] = ("train", "eval")


class LineageRule(_Rule):
    """Every training-data hash of the model is a dataset registered before it, and validated."""

    kind: Literal["lineage"]


class FreshnessRule(_Rule):
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


class ApprovalRule(_Rule):
    """A quorum of distinct signers holding one of the roles; the trainer does not count."""

    kind: Literal["approval"]
    quorum: Annotated[int, Field(ge=1)] = 1
    role: Role | Annotated[tuple[Role, ...], Field(min_length=1, strict=False)]
    exclude_trainer: bool = True
    #: Only signatures with this meaning count (any meaning when unset).
    meaning: Text | None = None

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.role,) if isinstance(self.role, str) else self.role


class CustomRule(_Rule):
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
_RULE_CLASSES: Final[dict[str, type[_Rule]]] = {
    "fairness": FairnessRule, "drift": DriftRule, "explainability": ExplainabilityRule,
    "performance": PerformanceRule, "data_validation": DataValidationRule, "lineage": LineageRule,
    "freshness": FreshnessRule, "approval": ApprovalRule, "custom": CustomRule,
}
RULE_KINDS: Final = tuple(_RULE_CLASSES)


def _unique_ids(rules: tuple[Any, ...]) -> None:
    seen: set[str] = set()
    for r in rules:
        if r.id in seen:
            raise ValueError(f"duplicate rule id {r.id!r}")
        seen.add(r.id)


class Policy(_Model):
    """A policy file: bound to one stage, published by the hash of its bytes."""

    name: Identifier
    stage: Identifier
    description: Text
    extends: Annotated[tuple[PackName, ...], Field(strict=False)] = ()
    rules: Annotated[tuple[Rule, ...], Field(min_length=1, strict=False)] | None = None

    @model_validator(mode="after")
    def _rule_set(self) -> Self:
        if self.rules is None and not self.extends:
            raise ValueError("a policy needs 'rules' (or 'extends'); an empty rule set is an error")
        if len(set(self.extends)) != len(self.extends):
            raise ValueError("extends names a pack twice")
        _unique_ids(self.rules or ())
        return self


class Pack(_Model):
    """A built-in rule pack: rules that each cite their source."""

    pack: PackName
    description: Text
    rules: Annotated[tuple[Rule, ...], Field(min_length=1, strict=False)]

    @model_validator(mode="after")
    def _cited(self) -> Self:
        for r in self.rules:
            if r.source is None:
                raise ValueError(f"rule {r.id!r}: a built-in pack rule must cite its source")
        _unique_ids(self.rules)
        return self


# -- loading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy with its exact bytes, their SHA-256, and its resolved rules."""

    policy: Policy
    raw_bytes: bytes
    sha256: str
    #: The policy's own rules, then the packs' (de-duplicated by id); every ``source`` filled in.
    rules: tuple[Rule, ...]
    #: SHA-256 of each extended pack file, by name (the policy hash does not cover them).
    packs: Mapping[str, str]

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def stage(self) -> str:
        return self.policy.stage


_M = TypeVar("_M", bound=BaseModel)
_PARTS: Final[dict[str, type[BaseModel]]] = {"min": Floors, "max": Ceilings, "no_regression": NoRegression}
_MODELS: Final[tuple[type[BaseModel], ...]] = (Policy, Pack, *_PARTS.values(), *_RULE_CLASSES.values())
_KEYS: Final = sorted({f for m in _MODELS for f in m.model_fields})
_KIND_OF_TYPE: Final = {"float_type": "a number", "int_type": "an integer", "string_type": "a string",
                        "bool_type": "true or false", "tuple_type": "a list", "list_type": "a list",
                        "model_type": "a mapping", "dict_type": "a mapping"}


def load_policy(path: str | Path) -> LoadedPolicy:
    """Read and parse the policy file ``path`` (see ``parse_policy``)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p}: cannot read the policy: {exc.strerror or exc}") from None
    return parse_policy(raw, str(p))


def parse_policy(text: bytes, source: str) -> LoadedPolicy:
    """Parse policy bytes; ``source`` names them in errors (a path, or "policy.published seq 12")."""
    from policies.packs import load_pack, pack_sha256

    policy = _parse(text, source, Policy, "a policy is a mapping with name, stage, description and rules")
    packs = {name: load_pack(name) for name in policy.extends}
    return LoadedPolicy(policy=policy, raw_bytes=text, sha256=hashlib.sha256(text).hexdigest(),
                        rules=_resolve(policy, packs, source),
                        packs={name: pack_sha256(name) for name in policy.extends})


def parse_pack(text: bytes, source: str) -> Pack:
    """Parse a built-in pack file."""
    return _parse(text, source, Pack, "a pack is a mapping with pack, description and rules")


def _resolve(policy: Policy, packs: Mapping[Any, Pack], source: str) -> tuple[Rule, ...]:
    """Step (4) and (5): own rules first, then each pack's rules not already present."""
    out: dict[str, Any] = {r.id: r if r.source else r.model_copy(update={"source": f"policy {policy.name}"})
                           for r in policy.rules or ()}
    origin: dict[str, str] = {}
    for name in policy.extends:
        for r in packs[name].rules:
            prev = out.get(r.id)
            if prev is None:
                out[r.id], origin[r.id] = r, name
            elif r.id in origin:  # both from packs: the same rule, or a conflict
                if prev.model_dump(exclude={"source"}) != r.model_dump(exclude={"source"}):
                    raise InputError(f"{source}: packs {origin[r.id]!r} and {name!r} define rule {r.id!r} "
                                     "differently; define it in the policy's own rules to choose")
                if r.source not in prev.source:
                    out[r.id] = prev.model_copy(update={"source": f"{prev.source}; {r.source}"})
    return tuple(out.values())


def _parse(text: bytes, source: str, model: type[_M], shape: str) -> _M:
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        node = yaml.compose(decoded, Loader=yaml.SafeLoader)
        data = yaml.safe_load(decoded)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise InputError(f"{source}:{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        raise InputError(f"{source}:1: {shape}")
    _no_duplicate_keys(source, node)
    _no_duplicate_ids(source, node)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(_describe(source, node, data, _first(exc.errors()), model)) from None


def _first(errors: list[Any]) -> Any:
    """The first error, preferring an unknown key (a typo also shows as a missing key); for a
    union field given a list, the error from the list member."""
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    if isinstance(first["input"], list):
        field = first["loc"][:-1]
        for err in errors[1:]:
            if err["loc"][:len(field)] == field and len(err["loc"]) > len(first["loc"]):
                return err
    return first


def _value(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    return next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def _no_duplicate_keys(source: str, node: yaml.Node) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise InputError(f"{source}:{key.start_mark.line + 1}: duplicate key {key.value!r}")
                seen.add(key.value)
            _no_duplicate_keys(source, value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _no_duplicate_keys(source, item)


def _no_duplicate_ids(source: str, node: yaml.MappingNode) -> None:
    rules = _value(node, "rules")
    if not isinstance(rules, yaml.SequenceNode):
        return
    first: dict[str, int] = {}
    for i, item in enumerate(rules.value):
        rid = _value(item, "id") if isinstance(item, yaml.MappingNode) else None
        if isinstance(rid, yaml.ScalarNode):
            line = rid.start_mark.line + 1
            if rid.value in first:
                raise InputError(f"{source}:{line}: rules[{i}].id: duplicate rule id {rid.value!r} "
                                 f"(first at line {first[rid.value]}); rule ids must be unique")
            first[rid.value] = line


def _locate(node: yaml.Node, loc: tuple[int | str, ...]) -> tuple[int, list[int | str], bool]:
    """The 1-based line a pydantic location points at, the location without union tags, and
    whether every part was found in the document."""
    line = node.start_mark.line + 1
    path: list[int | str] = []
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part),
                         None)
            if match is None:
                kind = _value(node, "kind")
                if isinstance(kind, yaml.ScalarNode) and kind.value == part:
                    continue  # the discriminated union's tag, not a key
                return line, [*path, part], False
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, str):
            continue  # the union member a list was validated against, e.g. "tuple[...]"
        else:
            return line, path, False
        path.append(part)
    return line, path, True


def _where(path: list[int | str], data: Any) -> str:
    out = ""
    for i, part in enumerate(path):
        if isinstance(part, int):
            out += f"[{part}]"
            if i == 1 and path[0] == "rules" and isinstance(data, dict):
                rules = data.get("rules")
                item = rules[part] if isinstance(rules, list) and part < len(rules) else None
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    out += f" (id {item['id']!r})"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _keys_at(path: list[int | str], data: Any, model: type[BaseModel]) -> list[str]:
    """The keys allowed in the mapping at ``path``: the policy's, a rule's, or a rule part's."""
    if not path:
        return list(model.model_fields)
    rules = data.get("rules") if isinstance(data, dict) else None
    if path[0] == "rules" and len(path) in (2, 3) and isinstance(rules, list) and isinstance(path[1], int):
        item = rules[path[1]] if path[1] < len(rules) else None
        kind = item.get("kind") if isinstance(item, dict) else None
        cls = _RULE_CLASSES.get(kind) if isinstance(kind, str) else None
        if cls is not None and len(path) == 2:
            return list(cls.model_fields)
        if len(path) == 3:
            sub = _PARTS.get(str(path[2]))
            if sub is not None:
                return list(sub.model_fields)
    return _KEYS


def _describe(source: str, node: yaml.Node, data: Any, err: Any, model: type[BaseModel]) -> str:
    line, path, found = _locate(node, tuple(err["loc"]))
    etype, msg = err["type"], err["msg"]
    if etype == "extra_forbidden":
        hint = difflib.get_close_matches(str(path[-1]), _keys_at(path[:-1], data, model), n=1)
        msg = f"unknown key {path[-1]!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
        path = path[:-1]
    elif etype == "missing":
        msg = f"missing required key {path[-1]!r}"
        path = path[:-1]
    elif etype == "union_tag_invalid":
        tag = str(err["ctx"]["tag"])
        hint = difflib.get_close_matches(tag, RULE_KINDS, n=1)
        kind = _value(_node_at(node, path), "kind")
        line = kind.start_mark.line + 1 if kind is not None else line
        msg = (f"unknown rule kind {tag!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
               + f"; the kinds are {', '.join(RULE_KINDS)}")
        path = [*path, "kind"]
    elif etype == "union_tag_not_found":
        msg = f"a rule needs a 'kind': one of {', '.join(RULE_KINDS)}"
    elif etype == "string_pattern_mismatch":
        msg = (f"expected an identifier (letters, digits and . _ @ : / + -, starting with a letter or "
               f"digit), got {_shown(err['input'])}")
    elif etype == "too_short" and path == ["rules"]:
        msg = "a policy needs at least one rule; an empty rule set is an error"
    elif etype in _KIND_OF_TYPE or msg.startswith("Input should be"):
        want = _KIND_OF_TYPE.get(etype) or msg.removeprefix("Input should be ")
        msg = f"expected {want}, got {_shown(err['input'])}"
        if isinstance(err["input"], str) and re.fullmatch(r"[0-9.]+[eE][-+]?[0-9]+", err["input"]):
            msg += " (YAML reads 1e-2 as text: write 0.01 or 1.0e-2)"
    else:
        msg = msg.removeprefix("Value error, ")
    if not found and etype not in ("extra_forbidden", "missing"):
        path = [p for p in path if isinstance(p, int) or not p.startswith(("literal[", "tuple["))]
    return f"{source}:{line}: {_where(path, data)}: {msg}"


def _node_at(node: yaml.Node, path: list[int | str]) -> yaml.MappingNode:
    """The mapping at ``path`` (a rule), which ``_locate`` found."""
    for part in path:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            node = _value(node, part) or node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part]
    if not isinstance(node, yaml.MappingNode):  # pragma: no cover - a tag error is raised on mappings
        raise TypeError(f"no mapping at {path}")
    return node


# -- lint ------------------------------------------------------------------------------------


def policy_lint(path: str | Path) -> list[str]:
    """Load ``path`` (errors raise ``InputError``) and return warnings, each ``file:line: ...``.

    Warns of thresholds looser than the defaults DESIGN.md section 6 cites, of switched-off
    safeguards, of own rules that override a pack rule, and of a policy without an approval.
    """
    loaded = load_policy(path)
    node = yaml.compose(loaded.raw_bytes.decode("utf-8"), Loader=yaml.SafeLoader)
    rules_node = _value(node, "rules")
    lines = {}
    if isinstance(rules_node, yaml.SequenceNode):
        for item, rule in zip(rules_node.value, loaded.policy.rules or (), strict=False):
            lines[rule.id] = item.start_mark.line + 1
    out: list[str] = []

    def warn(rule: Any, text: str) -> None:
        out.append(f"{path}:{lines.get(rule.id, 1)}: rule {rule.id!r}: {text}")

    pack_ids = {r.id: name for name in loaded.policy.extends for r in _pack_rules(name)}
    for r in loaded.policy.rules or ():
        if r.id in pack_ids:
            warn(r, f"overrides the rule of the same id in pack {pack_ids[r.id]!r}")
        if isinstance(r, FairnessRule):
            if r.metric in RATIO_METRICS and r.min is not None and r.min < 0.8:
                warn(r, f"min {r.min} is looser than the four-fifths rule (0.8, 29 CFR 1607.4(D))")
            if r.metric in RATIO_METRICS and r.min is None:
                warn(r, f"{r.metric} is a ratio (1 is parity) but the rule sets no 'min'")
            if r.allow_small_groups:
                warn(r, "allow_small_groups: disparities over small groups are unreliable")
            if r.min_group_size < 30:
                warn(r, f"min_group_size {r.min_group_size} accepts evidence that flags only groups under "
                        f"{r.min_group_size} rows (the evaluator's default is 30)")
        elif isinstance(r, DriftRule) and r.limit is not None:
            if r.statistic in ("psi", "prediction_psi") and r.limit > 0.2:
                warn(r, f"PSI limit {r.limit} is looser than 0.2 (DESIGN.md section 6: 0.2 blocks)")
            if r.lower_bound and r.limit < 0.05:
                warn(r, f"p-value limit {r.limit} is looser than 0.05 (Evidently's default)")
        elif isinstance(r, ExplainabilityRule):
            if r.proxy_threshold > 0.5:
                warn(r, f"proxy_threshold {r.proxy_threshold} is looser than 0.5 (Cohen's large effect)")
            if r.allow_unassessed:
                warn(r, "allow_unassessed: a top-k feature whose association is undefined passes unchecked")
        elif isinstance(r, ApprovalRule):
            if not r.exclude_trainer:
                warn(r, "exclude_trainer: false lets the trainer approve their own model")
            if r.meaning is None:
                warn(r, "no 'meaning': a signature of any meaning counts toward the quorum")
    if not any(isinstance(r, ApprovalRule) for r in loaded.rules):
        out.append(f"{path}:1: no approval rule: no person signs off on promotion to {loaded.stage!r}")
    return out


def _pack_rules(name: str) -> tuple[Rule, ...]:
    from policies.packs import load_pack

    return load_pack(name).rules
