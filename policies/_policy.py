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

The rule models live in ``policies._rule_models`` and the YAML-to-``file:line`` mapping in
``policies._yaml``; this module re-exports the rule models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self, TypeVar

import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel, Field, StringConstraints, ValidationError, model_validator

from ledger.errors import InputError
from policies._monitor_policy import MonitorSection, RetrainSection
from policies._rule_models import (
    CEL_VARIABLES,
    RATIO_METRICS,
    RULE_CLASSES,
    RULE_KINDS,
    ApprovalRule,
    Ceilings,
    CustomRule,
    DataValidationRule,
    DriftRule,
    ExplainabilityRule,
    FairnessRule,
    Floors,
    FreshnessRule,
    LineageRule,
    NoRegression,
    PerformanceRule,
    Rule,
    StrictModel,
    Text,
    compile_cel,
    duration_seconds,
)
from policies._yaml import (
    compose_mapping,
    did_you_mean,
    first_error,
    locate,
    mapping_value,
    node_at,
    shown,
    type_mismatch,
)

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

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,254}$")]


def _unique_ids(rules: tuple[Any, ...]) -> None:
    seen: set[str] = set()
    for r in rules:
        if r.id in seen:
            raise ValueError(f"duplicate rule id {r.id!r}")
        seen.add(r.id)


class Policy(StrictModel):
    """A policy file: bound to one stage, published by the hash of its bytes."""

    name: Identifier
    stage: Identifier
    description: Text
    extends: Annotated[tuple[PackName, ...], Field(strict=False)] = ()
    rules: Annotated[tuple[Rule, ...], Field(min_length=1, strict=False)] | None = None
    monitor: MonitorSection | None = None
    retrain: RetrainSection | None = None

    @model_validator(mode="after")
    def _rule_set(self) -> Self:
        if self.rules is None and not self.extends:
            raise ValueError("a policy needs 'rules' (or 'extends'); an empty rule set is an error")
        if len(set(self.extends)) != len(self.extends):
            raise ValueError("extends names a pack twice")
        _unique_ids(self.rules or ())
        return self


class Pack(StrictModel):
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
_MODELS: Final[tuple[type[BaseModel], ...]] = (Policy, Pack, *_PARTS.values(), *RULE_CLASSES.values(),
                                               MonitorSection, RetrainSection)
_KEYS: Final = sorted({f for m in _MODELS for f in m.model_fields})


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
    node, data = compose_mapping(text, source, shape)
    _no_duplicate_ids(source, node)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(_describe(source, node, data, first_error(exc.errors()), model)) from None


def _no_duplicate_ids(source: str, node: yaml.MappingNode) -> None:
    rules = mapping_value(node, "rules")
    if not isinstance(rules, yaml.SequenceNode):
        return
    first: dict[str, int] = {}
    for i, item in enumerate(rules.value):
        rid = mapping_value(item, "id") if isinstance(item, yaml.MappingNode) else None
        if isinstance(rid, yaml.ScalarNode):
            line = rid.start_mark.line + 1
            if rid.value in first:
                raise InputError(f"{source}:{line}: rules[{i}].id: duplicate rule id {rid.value!r} "
                                 f"(first at line {first[rid.value]}); rule ids must be unique")
            first[rid.value] = line


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


def _keys_at(path: list[int | str], data: Any, model: type[BaseModel]) -> list[str]:
    """The keys allowed in the mapping at ``path``: the policy's, a rule's, or a rule part's."""
    if not path:
        return list(model.model_fields)
    rules = data.get("rules") if isinstance(data, dict) else None
    if path[0] == "rules" and len(path) in (2, 3) and isinstance(rules, list) and isinstance(path[1], int):
        item = rules[path[1]] if path[1] < len(rules) else None
        kind = item.get("kind") if isinstance(item, dict) else None
        cls = RULE_CLASSES.get(kind) if isinstance(kind, str) else None
        if cls is not None and len(path) == 2:
            return list(cls.model_fields)
        if len(path) == 3:
            sub = _PARTS.get(str(path[2]))
            if sub is not None:
                return list(sub.model_fields)
    return _KEYS


def _describe(source: str, node: yaml.Node, data: Any, err: Any, model: type[BaseModel]) -> str:
    line, path, found = locate(node, tuple(err["loc"]))
    etype, msg = err["type"], err["msg"]
    if etype == "extra_forbidden":
        hint = did_you_mean(str(path[-1]), _keys_at(path[:-1], data, model))
        msg = f"unknown key {path[-1]!r}" + (f"; did you mean {hint!r}?" if hint else "")
        path = path[:-1]
    elif etype == "missing":
        msg = f"missing required key {path[-1]!r}"
        path = path[:-1]
    elif etype == "union_tag_invalid":
        tag = str(err["ctx"]["tag"])
        hint = did_you_mean(tag, RULE_KINDS)
        kind = mapping_value(node_at(node, path), "kind")
        line = kind.start_mark.line + 1 if kind is not None else line
        msg = (f"unknown rule kind {tag!r}" + (f" (did you mean {hint!r}?)" if hint else "")
               + f"; the kinds are {', '.join(RULE_KINDS)}")
        path = [*path, "kind"]
    elif etype == "union_tag_not_found":
        msg = f"a rule needs a 'kind': one of {', '.join(RULE_KINDS)}"
    elif etype == "string_pattern_mismatch":
        msg = (f"expected an identifier (letters, digits and . _ @ : / + -, starting with a letter or "
               f"digit), got {shown(err['input'])}")
    elif etype == "too_short" and path == ["rules"]:
        msg = "a policy needs at least one rule; an empty rule set is an error"
    elif (expected := type_mismatch(err)) is not None:
        msg = expected
    else:
        msg = msg.removeprefix("Value error, ")
    if not found and etype not in ("extra_forbidden", "missing"):
        path = [p for p in path if isinstance(p, int) or not p.startswith(("literal[", "tuple["))]
    return f"{source}:{line}: {_where(path, data)}: {msg}"


# -- lint ------------------------------------------------------------------------------------


def policy_lint(path: str | Path) -> list[str]:
    """Load ``path`` (errors raise ``InputError``) and return warnings, each ``file:line: ...``.

    Warns of thresholds looser than the defaults DESIGN.md section 6 cites, of switched-off
    safeguards, of own rules that override a pack rule, and of a policy without an approval.
    """
    loaded = load_policy(path)
    node = yaml.compose(loaded.raw_bytes.decode("utf-8"), Loader=yaml.SafeLoader)
    rules_node = mapping_value(node, "rules")
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
