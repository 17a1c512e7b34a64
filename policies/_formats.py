"""CI output formats for a gate decision: text, json, junit, sarif and markdown.

``render(result, fmt)`` turns one ``GateResult`` into what a CI step prints or uploads. The
gate's exit code (0 allow, 1 deny, 3 needs approval) is what blocks a pipeline; every format
also states the decision and the next step, so whoever reads any one of them knows what to do.

Invariants this module keeps:
1. Every rule appears exactly once, in the engine's order, in every format. An empty rule set
   (which denies) appears as one synthetic failing rule, so no report of a deny looks green.
2. A result whose ``decision`` is not ``GateResult.decide(rules)`` is refused with ``ValueError``:
   a report never shows a decision its rules do not support.
3. Reasons, sources and ids are data, never markup. XML is built with ElementTree and JSON with
   a serialiser; text and markdown escape control and bidi characters, and markdown also
   backslash-escapes the punctuation it would interpret, so no reason can add a line, a table
   cell, a tag or a terminal escape sequence.
4. Rendering reads no clock and no files except the installed package's metadata (the SARIF
   tool version and home page); the same result renders to the same string. No output ends in a newline:
   the caller (``click.echo``) adds it.

Two mappings are choices, stated here because CI systems show them:
- JUnit: fail and missing_evidence become ``<failure>``; needs_approval becomes ``<skipped>``.
  JUnit has no "pending" state; ``<skipped>`` is its only state that is neither passed nor
  failed, so CI test views show the rule as not done without counting it as broken. Many CI
  systems treat skipped tests as green: the exit code 3 holds the pipeline, not the report.
- SARIF: result ``kind`` and ``level`` follow SARIF 2.1.0 sections 3.27.9 and 3.27.10, which
  allow a level other than "none" only with kind "fail": fail and missing_evidence are kind
  "fail", level "error"; needs_approval is kind "open", level "none"; pass is kind "pass", level
  "none".
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import PurePath
from typing import Any, Final, Literal, get_args
from urllib.parse import quote

from ledger.canonical import encode
from policies._decision import GateResult, RuleResult

__all__ = ["FORMATS", "SARIF_SCHEMA", "Format", "render"]

Format = Literal["text", "json", "junit", "sarif", "markdown"]
FORMATS: Final[tuple[str, ...]] = get_args(Format)
SARIF_SCHEMA: Final = "https://json.schemastore.org/sarif-2.1.0.json"

_MARKER: Final = {"pass": "PASS", "fail": "FAIL", "missing_evidence": "MISSING", "needs_approval": "APPROVAL"}
_BLOCKING: Final = ("fail", "missing_evidence")
_SHORT_HASH: Final = 12
#: Longest measured or threshold value shown in text and markdown; json, junit and sarif carry it whole.
_MAX_VALUE: Final = 40
#: Stands in for the rules of an empty rule set (invariant 1).
_EMPTY_RULE_SET: Final = RuleResult(
    rule_id="policy.rules", kind="policy", outcome="fail",
    reason="the policy has no rules, and an empty rule set denies",
    source="mlledger DESIGN.md section 6 (fail closed)")

# C0/C1 controls, bidi controls, line/paragraph separators and lone surrogates: never shown raw.
_UNSAFE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                            r"\u2066-\u2069\ud800-\udfff]")
# Characters XML 1.0 cannot carry at all.
_NOT_XML: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Punctuation that GitHub-flavoured markdown could read as markup inside a table cell.
_MD_SPECIAL: Final = re.compile(r"([\\`*_\[\]<>|&~$:@!#])")
_URL: Final = re.compile(r"https?://[^\s<>\"'`]+")


def _artifact(result: GateResult) -> str:
    """The short artifact hash, or what stands for it on an external model without one."""
    if result.artifact_sha256 is None:
        return "none (external model)"
    return "sha256:" + result.artifact_sha256[:_SHORT_HASH]


def render(result: GateResult, fmt: Format, *, policy_path: str | None = None,
           decision_seq: int | None = None) -> str:
    """Render ``result`` in ``fmt``.

    ``policy_path``: the policy file, for SARIF locations and the JUnit ``file`` attribute.
    ``decision_seq``: the seq of the ``gate.evaluated`` entry recording this result, for the
    next-step commands (``mlledger approve --decision SEQ``); ``<seq>`` stands in when absent.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    if result.decision != GateResult.decide(result.rules):
        raise ValueError(f"inconsistent gate result: decision {result.decision!r}, but its rules "
                         f"decide {GateResult.decide(result.rules)!r}")
    if fmt == "json":
        doc = result.model_dump(mode="json")
        doc["exit_code"] = result.exit_code
        return encode(doc, where="gate result", owned=True).decode()
    rows = list(result.rules) or [_EMPTY_RULE_SET]
    step = _next_step(result, rows, decision_seq)
    if fmt == "text":
        return _text(result, rows, step, policy_path)
    if fmt == "junit":
        return _junit(result, rows, step, policy_path)
    if fmt == "sarif":
        return _sarif(result, rows, step, policy_path, decision_seq)
    return _markdown(result, rows, step)


# -- shared pieces -------------------------------------------------------------------------


def _next_step(result: GateResult, rows: list[RuleResult], seq: int | None) -> tuple[str, str | None]:
    """What to do now, as a sentence and an optional command."""
    ref = "<seq>" if seq is None else str(seq)
    n = len(rows)
    if result.decision == "allow":
        return f"all {_plural(n, 'rule')} passed; {result.model} may be promoted to {result.stage}.", None
    if not result.rules:
        return "the policy has no rules, so the gate denies; add rules to it and publish it again.", None
    if result.decision == "deny":
        bad = [r for r in rows if r.outcome in _BLOCKING]
        return (f"{len(bad)} of {_plural(n, 'rule')} did not pass ({_counts(bad)}). Fix them and run the "
                f"gate again, or have a waiver granted for decision {ref} (a justification and two "
                "approvers)."), None
    pending = sum(r.outcome == "needs_approval" for r in rows)
    command = f"mlledger approve --decision {ref} --key <key.pem> --as <identity>"
    return (f"{_plural(pending, 'rule')} need{'s' if pending == 1 else ''} approval; an approver "
            f"signs decision {ref} with:"), command


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _counts(rows: list[RuleResult]) -> str:
    names = {"fail": "fail", "missing_evidence": "missing evidence", "needs_approval": "needs approval",
             "pass": "pass"}
    return ", ".join(f"{sum(r.outcome == o for r in rows)} {names[o]}" for o in names
                     if any(r.outcome == o for r in rows))


def _value(v: Any) -> str:
    """A JSON value for reading: floats to 6 significant digits, None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return format(v, ".6g")
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _full(v: Any) -> str:
    """A JSON value exactly, for the formats that carry it whole."""
    return json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _clip(s: str) -> str:
    return s if len(s) <= _MAX_VALUE else s[: _MAX_VALUE - 3] + "..."


def _escape_char(m: re.Match[str]) -> str:
    o = ord(m.group())
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def _clean(s: str) -> str:
    """``s`` on one line, with control, bidi and lone-surrogate characters shown as escapes."""
    return _UNSAFE.sub(_escape_char, s)


def _width(s: str) -> int:
    """Terminal columns ``s`` takes: wide East Asian characters 2, combining marks 0."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in s)


def _details(r: RuleResult) -> str:
    seqs = ", ".join(str(s) for s in r.evidence) or "none"
    return (f"outcome: {r.outcome}\nrule: {r.rule_id} ({r.kind})\nmeasured: {_full(r.measured)}\n"
            f"threshold: {_full(r.threshold)}\nreason: {r.reason}\nsource: {r.source}\n"
            f"evidence seqs: {seqs}")


# -- text ----------------------------------------------------------------------------------


def _text(result: GateResult, rows: list[RuleResult], step: tuple[str, str | None],
          policy_path: str | None) -> str:
    decision = result.decision.upper()
    seq = "" if result.policy_seq is None else f", seq {result.policy_seq}"
    path = "" if policy_path is None else f", {_clean(policy_path)}"
    lines = [f"mlledger gate: {decision}",
             f"  model     {_clean(result.model)}",
             f"  artifact  {_clean(_artifact(result))}",
             f"  stage     {_clean(result.stage)}",
             f"  policy    {_clean(result.policy_name)} "
             f"(sha256:{_clean(result.policy_sha256[:_SHORT_HASH])}{seq}{path})",
             f"  evaluated {_clean(result.evaluated_at)}",
             ""]
    table = [("OUTCOME", "RULE", "MEASURED", "THRESHOLD", "REASON", "SOURCE")]
    table += [(_MARKER[r.outcome], _clean(r.rule_id), _clip(_clean(_value(r.measured))),
               _clip(_clean(_value(r.threshold))), _clean(r.reason), _clean(r.source)) for r in rows]
    widths = [max(_width(row[i]) for row in table) for i in range(5)]
    for row in table:
        cells = [c + " " * (w - _width(c)) for c, w in zip(row, widths, strict=False)]
        lines.append(("  " + "  ".join([*cells, row[5]])).rstrip())
    sentence, command = step
    lines += ["", f"{decision}: {_clean(sentence)}" + ("" if command is None else f"\n  {_clean(command)}")]
    return "\n".join(lines)


# -- junit ---------------------------------------------------------------------------------


def _xml(s: str) -> str:
    return _NOT_XML.sub(_escape_char, s)


def _junit(result: GateResult, rows: list[RuleResult], step: tuple[str, str | None],
           policy_path: str | None) -> str:
    tests, failures = str(len(rows)), str(sum(r.outcome in _BLOCKING for r in rows))
    root = ET.Element("testsuites", {"name": "mlledger gate", "tests": tests, "failures": failures,
                                     "errors": "0"})
    suite = ET.SubElement(root, "testsuite", {
        "name": _xml(result.policy_name), "tests": tests, "failures": failures, "errors": "0",
        "skipped": str(sum(r.outcome == "needs_approval" for r in rows)),
        "timestamp": _xml(result.evaluated_at)})
    if policy_path is not None:
        suite.set("file", _xml(policy_path))
    props = ET.SubElement(suite, "properties")
    facts = {"model": result.model, "artifact_sha256": result.artifact_sha256 or "", "stage": result.stage,
             "policy_name": result.policy_name, "policy_sha256": result.policy_sha256,
             "policy_seq": "" if result.policy_seq is None else str(result.policy_seq),
             "decision": result.decision, "exit_code": str(result.exit_code),
             "evaluated_at": result.evaluated_at}
    for name, value in facts.items():
        ET.SubElement(props, "property", {"name": name, "value": _xml(value)})
    sentence, command = step
    for r in rows:
        case = ET.SubElement(suite, "testcase", {"classname": _xml(r.kind), "name": _xml(r.rule_id)})
        if r.outcome in _BLOCKING:
            el = ET.SubElement(case, "failure", {"message": _xml(r.reason), "type": r.outcome})
            el.text = _xml(_details(r))
        elif r.outcome == "needs_approval":
            el = ET.SubElement(case, "skipped", {"message": _xml(f"needs approval: {r.reason}")})
            el.text = _xml(_details(r) + ("" if command is None else f"\nnext step: {command}"))
    out = ET.SubElement(suite, "system-out")
    out.text = _xml(f"{result.decision.upper()}: {sentence}" + ("" if command is None else f" {command}"))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


# -- sarif ---------------------------------------------------------------------------------


@functools.cache
def _tool_version() -> str:
    try:
        return metadata.version("mlledger")
    except metadata.PackageNotFoundError:
        return "0"


@functools.cache
def _information_uri() -> str | None:
    """The project's home page from its package metadata (``[project.urls]``), if it has one."""
    try:
        md = metadata.metadata("mlledger")
    except metadata.PackageNotFoundError:
        return None
    entries: list[str] = md.get_all("Project-URL") or []
    urls = [(label.strip().lower(), url.strip()) for label, _, url in (e.partition(",") for e in entries)]
    for label, url in urls:
        if label in ("homepage", "home", "source", "repository"):
            return url
    home: list[str] = md.get_all("Home-page") or []
    return urls[0][1] if urls else (home[0] if home else None)


def _help_uri(source: str) -> str | None:
    """The first http(s) URL cited in ``source``, as a URI."""
    m = _URL.search(source)
    if m is None:
        return None
    url = m.group().rstrip(".,;:")
    while url.endswith(")") and url.count(")") > url.count("("):
        url = url[:-1]
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def _artifact_uri(path: str) -> str:
    """``path`` as a URI reference: ``file://`` when absolute, percent-encoded relative otherwise."""
    p = PurePath(path)
    return p.as_uri() if p.is_absolute() else quote(p.as_posix(), safe="/")


def _descriptor(r: RuleResult) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": r.rule_id,
        "shortDescription": {"text": f"{r.kind} rule {r.rule_id}"},
        "help": {"text": f"Threshold source: {r.source}"},
        "defaultConfiguration": {"level": "error"},
        "properties": {"kind": r.kind, "source": r.source},
    }
    if (uri := _help_uri(r.source)) is not None:
        d["helpUri"] = uri
    return d


def _sarif_result(result: GateResult, r: RuleResult, index: int, policy_path: str | None) -> dict[str, Any]:
    kind, level = {"pass": ("pass", "none"), "fail": ("fail", "error"),
                   "missing_evidence": ("fail", "error"), "needs_approval": ("open", "none")}[r.outcome]
    location: dict[str, Any] = {"logicalLocations": [
        {"name": result.policy_name, "fullyQualifiedName": f"{result.policy_name}/{r.rule_id}",
         "kind": "resource"}]}
    if policy_path is not None:
        location["physicalLocation"] = {"artifactLocation": {"uri": _artifact_uri(policy_path)}}
    return {
        "ruleId": r.rule_id, "ruleIndex": index, "kind": kind, "level": level,
        "message": {"text": f"{_MARKER[r.outcome]} {r.rule_id}: {r.reason} (measured {_value(r.measured)};"
                            f" threshold {_value(r.threshold)}; source: {r.source})"},
        "locations": [location],
        "properties": {"outcome": r.outcome, "kind": r.kind, "measured": r.measured,
                       "threshold": r.threshold, "evidence": list(r.evidence), "source": r.source},
    }


def _sarif(result: GateResult, rows: list[RuleResult], step: tuple[str, str | None],
           policy_path: str | None, decision_seq: int | None) -> str:
    descriptors: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for r in rows:
        if r.rule_id not in index:
            index[r.rule_id] = len(descriptors)
            descriptors.append(_descriptor(r))
    driver: dict[str, Any] = {"name": "mlledger", "version": _tool_version(), "rules": descriptors}
    if (info := _information_uri()) is not None:
        driver["informationUri"] = info
    sentence, command = step
    properties = result.model_dump(mode="json", exclude={"rules"})
    properties.update(exit_code=result.exit_code, decision_seq=decision_seq)
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": driver},
            "invocations": [{
                "executionSuccessful": True, "exitCode": result.exit_code,
                "exitCodeDescription": f"{result.decision}: {sentence}" + (f" {command}" if command else ""),
                "endTimeUtc": result.evaluated_at}],
            "results": [_sarif_result(result, r, index[r.rule_id], policy_path) for r in rows],
            "properties": properties,
        }],
    }
    text = json.dumps(doc, ensure_ascii=False, indent=2)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: JSON can carry it only as a \u escape
        text = json.dumps(doc, ensure_ascii=True, indent=2)
    return text


# -- markdown ------------------------------------------------------------------------------


def _md(s: str) -> str:
    """Markdown text that renders as ``s``, on one line, with no markup."""
    return _MD_SPECIAL.sub(r"\\\1", _clean(s))


def _code(s: str, *, cell: bool = False) -> str:
    """A code span that renders as ``s``; in a table ``cell``, pipes are escaped for the table."""
    s = _clean(s)
    if cell:
        s = s.replace("|", "\\|")
    if not s:
        return ""
    fence = "`" * (max((len(run) for run in re.findall("`+", s)), default=0) + 1)
    pad = " " if s[0] == "`" or s[-1] == "`" else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _markdown(result: GateResult, rows: list[RuleResult], step: tuple[str, str | None]) -> str:
    word = {"allow": "ALLOW", "deny": "DENY", "needs_approval": "NEEDS APPROVAL"}[result.decision]
    seq = "" if result.policy_seq is None else f", seq {result.policy_seq}"
    lines = [f"### mlledger gate: `{word}`", "",
             f"Model {_code(result.model)} for stage {_code(result.stage)} under policy "
             f"{_code(result.policy_name)} ({_code('sha256:' + result.policy_sha256[:_SHORT_HASH])}{seq}); "
             f"artifact {_code(_artifact(result))}; evaluated "
             f"{_code(result.evaluated_at)}; exit code {result.exit_code}.", "",
             "| Outcome | Rule | Measured | Threshold | Reason | Source |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| **{_MARKER[r.outcome]}** | {_code(r.rule_id, cell=True)} "
                     f"| {_code(_clip(_value(r.measured)), cell=True)} "
                     f"| {_code(_clip(_value(r.threshold)), cell=True)} "
                     f"| {_md(r.reason)} | {_md(r.source)} |")
    sentence, command = step
    lines += ["", f"**Next step:** {_md(sentence)}" + ("" if command is None else f" {_code(command)}")]
    return "\n".join(lines)
