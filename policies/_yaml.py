"""YAML files validated by strict pydantic models, with errors that name ``file:line``.

Invariants:
(1) the text is UTF-8 and one YAML mapping; anything else is an ``InputError`` naming the source
    (and the line, where YAML knows it);
(2) a duplicate key, which YAML would silently resolve to the last value, is an ``InputError``
    naming its line;
(3) a pydantic error location maps back to the line of the key (or list item) it points at,
    through the composed node tree, which keeps every node's mark.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any, Final

import yaml  # type: ignore[import-untyped]

from ledger.errors import InputError

__all__ = [
    "compose_mapping",
    "did_you_mean",
    "first_error",
    "locate",
    "mapping_value",
    "node_at",
    "shown",
    "type_mismatch",
]

_KIND_OF_TYPE: Final = {"float_type": "a number", "int_type": "an integer", "string_type": "a string",
                        "bool_type": "true or false", "tuple_type": "a list", "list_type": "a list",
                        "model_type": "a mapping", "dict_type": "a mapping"}


def compose_mapping(text: bytes, source: str, shape: str) -> tuple[yaml.MappingNode, dict[str, Any]]:
    """Steps (1) and (2): the node tree (with marks) and the data of a YAML mapping.

    ``shape`` says what the mapping should hold, for the error when the document is not one.
    """
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
    return node, data


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


def mapping_value(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    """The value node of ``key`` in a mapping node, or None."""
    return next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def first_error(errors: list[Any]) -> Any:
    """The first error, preferring an unknown key (a typo also shows as a missing key); for a
    union field given a list, the error from the list member."""
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    if isinstance(first["input"], list):
        field = first["loc"][:-1]
        for err in errors[1:]:
            if err["loc"][:len(field)] == field and len(err["loc"]) > len(first["loc"]):
                return err
    return first


def locate(node: yaml.Node, loc: tuple[int | str, ...], *,
           tag: str = "kind") -> tuple[int, list[int | str], bool]:
    """Step (3): the 1-based line a pydantic location points at, the location without union tags,
    and whether every part was found in the document. ``tag`` is the discriminator key."""
    line = node.start_mark.line + 1
    path: list[int | str] = []
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part),
                         None)
            if match is None:
                kind = mapping_value(node, tag)
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


def node_at(node: yaml.Node, path: list[int | str]) -> yaml.MappingNode:
    """The mapping at ``path``, which ``locate`` found."""
    for part in path:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            node = mapping_value(node, part) or node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part]
    if not isinstance(node, yaml.MappingNode):  # pragma: no cover - a tag error is raised on mappings
        raise TypeError(f"no mapping at {path}")
    return node


def shown(data: Any) -> str:
    """A value as an error message shows it: its YAML type, and the value if it is a scalar."""
    if data is None:
        return "null"
    if isinstance(data, dict):
        return "a mapping"
    if isinstance(data, list):
        return "a list"
    return f"{type(data).__name__} {data!r}"


def type_mismatch(err: Any) -> str | None:
    """"expected X, got Y" for a pydantic type error, or None if ``err`` is not one."""
    etype, msg = err["type"], err["msg"]
    if etype not in _KIND_OF_TYPE and not msg.startswith("Input should be"):
        return None
    want = _KIND_OF_TYPE.get(etype) or msg.removeprefix("Input should be ")
    text = f"expected {want}, got {shown(err['input'])}"
    if isinstance(err["input"], str) and re.fullmatch(r"[0-9.]+[eE][-+]?[0-9]+", err["input"]):
        text += " (YAML reads 1e-2 as text: write 0.01 or 1.0e-2)"
    return text


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to a misspelt ``word``, or None."""
    hint = difflib.get_close_matches(word, list(choices), n=1)
    return hint[0] if hint else None
