"""CI output formats of the gate: text, json, junit, sarif and markdown.

Each format is rendered for a deny, a needs-approval and an allow result. JUnit output is
validated against the Jenkins xUnit JUnit XSD and SARIF output against the OASIS SARIF 2.1.0
schema (sources in tests/vectors/schemas/README.md).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import re
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import xmlschema

from policies._decision import GateResult, RuleOutcome, RuleResult
from policies._formats import FORMATS, SARIF_SCHEMA, render

SCHEMAS = Path(__file__).resolve().parents[2] / "vectors" / "schemas"

#: Characters every escaping layer must carry through: XML and HTML specials, both quotes,
#: markdown punctuation, a table pipe, and non-ASCII (accented, CJK, a dash).
SPECIAL = 'ratio 0.71 < 0.8 & "quoted" \'single\' for sexe=féminin, 女性 — | `tick` *x* [a](b) $m$ :x: @o'


def rule(rule_id: str, outcome: RuleOutcome, *, reason: str = "", kind: str = "fairness",
         source: str = "29 CFR 1607.4(D) (four-fifths rule)", measured: Any = 0.71,
         threshold: Any = 0.8, evidence: list[int] | None = None) -> RuleResult:
    return RuleResult(rule_id=rule_id, kind=kind, outcome=outcome, measured=measured, threshold=threshold,
                      reason=reason or f"{rule_id} is {outcome}", source=source, evidence=evidence or [])


def gate(*rules: RuleResult) -> GateResult:
    return GateResult(model="credit-scorer@3", artifact_sha256="ab" * 32, stage="production",
                      policy_name="fair-lending <v2> & co", policy_sha256="0123456789abcdef" * 4,
                      policy_seq=12, decision=GateResult.decide(list(rules)), rules=list(rules),
                      evaluated_at="2026-03-04T05:06:07.000000Z")


DENY = gate(
    rule("fairness.sex.demographic_parity_ratio", "fail", reason=SPECIAL, evidence=[3, 5]),
    rule("drift.psi.<income>", "missing_evidence", kind="drift", measured=None, threshold=0.2,
         source="PSI 0.2 blocks, https://example.org/psi_(statistic)."),
    rule("performance.auc", "pass", kind="performance", measured={"auc": 0.91, "baseline": 0.9},
         threshold=0.85, source="model risk policy 4.2"),
    rule("approval.quorum", "needs_approval", kind="approval", measured=0, threshold=2, source="SR 11-7"),
)
NEEDS_APPROVAL = gate(
    rule("performance.auc", "pass", kind="performance"),
    rule("approval.quorum", "needs_approval", kind="approval", reason=SPECIAL, measured=[1, "ana"],
         threshold=2, evidence=[9]),
)
ALLOW = gate(
    rule("fairness.sex.demographic_parity_ratio", "pass", measured=0.93),
    rule("drift.psi.income", "pass", kind="drift", measured=0.04, threshold=0.2),
)
CASES = {"deny": DENY, "needs_approval": NEEDS_APPROVAL, "allow": ALLOW}
MARKERS = {"pass": "PASS", "fail": "FAIL", "missing_evidence": "MISSING", "needs_approval": "APPROVAL"}

by_case = pytest.mark.parametrize("case", list(CASES))


@functools.cache
def sarif_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


@functools.cache
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(SCHEMAS / "junit-10.xsd"))


def sarif(result: GateResult, **kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(render(result, "sarif", **kw))
    return doc


def junit(result: GateResult, **kw: Any) -> ET.Element:
    return ET.fromstring(render(result, "junit", **kw))


def width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


# -- common --------------------------------------------------------------------------------


def test_an_inconsistent_decision_is_refused() -> None:
    bad = DENY.model_copy(update={"decision": "allow"})
    with pytest.raises(ValueError, match="decision 'allow', but its rules decide 'deny'"):
        render(bad, "text")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format 'html'; expected one of: text, json, junit"):
        render(ALLOW, "html")  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "json"])
def test_an_empty_rule_set_renders_as_one_failing_rule(fmt: str) -> None:
    """Fail closed: a deny with no rules must not look like an empty, green report."""
    out = render(gate(), fmt)  # type: ignore[arg-type]
    assert "policy.rules" in out and "the policy has no rules, so the gate denies" in out
    if fmt == "junit":
        assert junit(gate()).find("testsuite").get("failures") == "1"  # type: ignore[union-attr]
    if fmt == "sarif":
        assert [(r["kind"], r["level"]) for r in sarif(gate())["runs"][0]["results"]] == [("fail", "error")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_output_ends_in_a_newline(fmt: str) -> None:
    assert not render(DENY, fmt).endswith("\n")  # type: ignore[arg-type]


def test_the_schemas_reject_a_broken_report() -> None:
    """Guards against a vacuous check, e.g. a truncated schema file."""
    doc = sarif(DENY)
    doc["runs"][0]["results"][0]["kind"] = "pending"
    del doc["runs"][0]["tool"]["driver"]["name"]
    assert len(list(sarif_validator().iter_errors(doc))) == 2
    root = junit(DENY)
    del root.find("testsuite").attrib["tests"]  # type: ignore[union-attr]
    ET.SubElement(root.find("testsuite/testcase"), "pending")  # type: ignore[arg-type]
    assert len(list(junit_schema().iter_errors(ET.tostring(root, encoding="unicode")))) == 2


# -- text ----------------------------------------------------------------------------------


@by_case
def test_text_header_names_model_stage_policy_hash_and_decision(case: str) -> None:
    result = CASES[case]
    head = render(result, "text").split("\n\n")[0]
    assert head.splitlines()[0] == f"mlledger gate: {result.decision.upper()}"
    for part in ("credit-scorer@3", "production", "fair-lending <v2> & co", "sha256:0123456789ab", "seq 12"):
        assert part in head
    assert "0123456789abc" not in head  # the short hash is 12 characters


@by_case
def test_text_has_one_aligned_line_per_rule(case: str) -> None:
    result = CASES[case]
    table = render(result, "text").split("\n\n")[1].splitlines()
    header, lines = table[0], table[1:]
    assert [line.split()[0] for line in lines] == [MARKERS[r.outcome] for r in result.rules]
    assert [line.split()[1] for line in lines] == [r.rule_id for r in result.rules]
    for column in ("RULE", "MEASURED", "THRESHOLD", "REASON"):
        start = header.index(column)
        for line in lines:
            assert line[start - 2:start] == "  " and line[start] != " ", (column, line)


def test_text_aligns_columns_by_display_width() -> None:
    result = gate(rule("公平.性别", "pass"), rule("fairness.x", "pass"))
    lines = render(result, "text").split("\n\n")[1].splitlines()[1:]
    assert len({width(line[: line.index("0.71")]) for line in lines}) == 1


@pytest.mark.parametrize(("case", "expected"), [
    ("deny", "DENY: 2 of 4 rules did not pass (1 fail, 1 missing evidence). Fix them and run the gate "
             "again, or have a waiver granted for decision 42"),
    ("needs_approval", "NEEDS_APPROVAL: 1 rule needs approval; an approver signs decision 42 with:\n"
                       "  mlledger approve --decision 42 --key <key.pem> --as <identity>"),
    ("allow", "ALLOW: all 2 rules passed; credit-scorer@3 may be promoted to production."),
])
def test_text_ends_with_the_decision_and_what_to_do(case: str, expected: str) -> None:
    assert expected in render(CASES[case], "text", decision_seq=42).split("\n\n")[-1]


def test_text_without_a_decision_seq_shows_a_placeholder() -> None:
    assert "mlledger approve --decision <seq> " in render(NEEDS_APPROVAL, "text")


def test_text_shows_control_and_bidi_characters_as_escapes() -> None:
    result = gate(rule("r", "fail", reason="line\nbreak \x1b[31mred\u202e"))
    out = render(result, "text")
    assert "\x1b" not in out and "\u202e" not in out
    assert "line\\x0abreak \\x1b[31mred\\u202e" in out
    assert len(out.split("\n\n")[1].splitlines()) == 2


# -- json ----------------------------------------------------------------------------------


@by_case
def test_json_is_the_model_dump_plus_the_exit_code(case: str) -> None:
    result = CASES[case]
    exit_code = {"allow": 0, "deny": 1, "needs_approval": 3}[case]
    assert json.loads(render(result, "json")) == {**result.model_dump(mode="json"), "exit_code": exit_code}


@by_case
def test_json_is_canonical_with_sorted_keys(case: str) -> None:
    out = render(CASES[case], "json")
    assert out == json.dumps(json.loads(out), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- junit ---------------------------------------------------------------------------------


@by_case
@pytest.mark.parametrize("policy_path", [None, "policies/prod.yaml"])
def test_junit_validates_against_the_xsd(case: str, policy_path: str | None) -> None:
    junit_schema().validate(render(CASES[case], "junit", policy_path=policy_path))


@pytest.mark.parametrize(("case", "tests", "failures", "skipped"), [
    ("deny", 4, 2, 1), ("needs_approval", 2, 0, 1), ("allow", 2, 0, 0)])
def test_junit_counts_match_the_testcases(case: str, tests: int, failures: int, skipped: int) -> None:
    root = junit(CASES[case])
    suite = root.find("testsuite")
    assert suite is not None
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": str(tests), "failures": str(failures), "errors": "0", "skipped": str(skipped)}
    assert {k: root.get(k) for k in ("tests", "failures", "errors")} == {
        "tests": str(tests), "failures": str(failures), "errors": "0"}
    assert len(suite.findall("testcase")) == tests
    assert len(suite.findall("testcase/failure")) == failures
    assert len(suite.findall("testcase/skipped")) == skipped
    assert not suite.findall("testcase/error")


@by_case
def test_junit_has_one_testsuite_named_after_the_policy_and_one_testcase_per_rule(case: str) -> None:
    result = CASES[case]
    suites = junit(result).findall("testsuite")
    assert [s.get("name") for s in suites] == ["fair-lending <v2> & co"]
    assert [(c.get("classname"), c.get("name")) for c in suites[0].findall("testcase")] == [
        (r.kind, r.rule_id) for r in result.rules]


def test_junit_marks_fail_and_missing_evidence_as_failures_and_needs_approval_as_skipped() -> None:
    cases = junit(DENY, decision_seq=7).findall("testsuite/testcase")
    fail, missing, passed, pending = ([child.tag for child in c] for c in cases)
    assert (fail, missing, passed, pending) == (["failure"], ["failure"], [], ["skipped"])
    assert [c[0].get("type") for c in cases[:2]] == ["fail", "missing_evidence"]
    assert cases[3][0].get("message") == "needs approval: approval.quorum is needs_approval"


def test_junit_skipped_rule_says_how_to_approve_when_approval_is_all_that_is_missing() -> None:
    pending = junit(NEEDS_APPROVAL, decision_seq=7).find("testsuite/testcase/skipped")
    assert pending is not None
    assert (pending.text or "").endswith(
        "\nnext step: mlledger approve --decision 7 --key <key.pem> --as <identity>")


def test_junit_properties_identify_model_artifact_stage_policy_and_decision() -> None:
    props = {p.get("name"): p.get("value") for p in junit(DENY).findall("testsuite/properties/property")}
    assert props == {"model": "credit-scorer@3", "artifact_sha256": "ab" * 32, "stage": "production",
                     "policy_name": "fair-lending <v2> & co", "policy_sha256": "0123456789abcdef" * 4,
                     "policy_seq": "12", "decision": "deny", "exit_code": "1",
                     "evaluated_at": "2026-03-04T05:06:07.000000Z"}


def test_junit_special_characters_survive_escaping() -> None:
    cases = junit(DENY).findall("testsuite/testcase")
    failure = cases[0].find("failure")
    assert failure is not None
    assert failure.get("message") == SPECIAL
    assert f"reason: {SPECIAL}\n" in (failure.text or "")
    assert cases[1].get("name") == "drift.psi.<income>"
    pending = junit(NEEDS_APPROVAL).find("testsuite/testcase/skipped")
    assert pending is not None and pending.get("message") == f"needs approval: {SPECIAL}"


def test_junit_shows_characters_xml_cannot_carry_as_escapes() -> None:
    out = render(gate(rule("r", "fail", reason="nul\x00 esc\x1b tab\t")), "junit")
    junit_schema().validate(out)
    assert ET.fromstring(out).find("testsuite/testcase/failure").get("message") == "nul\\x00 esc\\x1b tab\t"  # type: ignore[union-attr]


# -- sarif ---------------------------------------------------------------------------------


@by_case
@pytest.mark.parametrize("policy_path", [None, "policies/prod.yaml", "/srv/policies/prod policy é.yaml"])
def test_sarif_validates_against_the_official_schema(case: str, policy_path: str | None) -> None:
    doc = sarif(CASES[case], policy_path=policy_path, decision_seq=3)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in sarif_validator().iter_errors(doc)]
    assert errors == []


def test_sarif_names_its_schema_version_and_tool() -> None:
    doc = sarif(DENY)
    assert (doc["$schema"], doc["version"], len(doc["runs"])) == (SARIF_SCHEMA, "2.1.0", 1)
    driver = doc["runs"][0]["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("mlledger", importlib.metadata.version("mlledger"))


@by_case
def test_sarif_rule_ids_match_the_results(case: str) -> None:
    run = sarif(CASES[case])["runs"][0]
    ids = [d["id"] for d in run["tool"]["driver"]["rules"]]
    assert ids == [r.rule_id for r in CASES[case].rules]
    assert [(res["ruleId"], ids[res["ruleIndex"]]) for res in run["results"]] == [(i, i) for i in ids]


def test_sarif_deduplicates_rule_descriptors() -> None:
    run = sarif(gate(rule("same", "pass"), rule("same", "fail")))["runs"][0]
    assert [d["id"] for d in run["tool"]["driver"]["rules"]] == ["same"]
    assert [(r["ruleId"], r["ruleIndex"]) for r in run["results"]] == [("same", 0), ("same", 0)]


def test_sarif_kind_and_level_follow_the_outcome_within_the_spec() -> None:
    """SARIF 2.1.0 3.27.9: a level other than "none" is allowed only with kind "fail"."""
    results = sarif(DENY)["runs"][0]["results"]
    assert [(r["properties"]["outcome"], r["kind"], r["level"]) for r in results] == [
        ("fail", "fail", "error"), ("missing_evidence", "fail", "error"), ("pass", "pass", "none"),
        ("needs_approval", "open", "none")]


@pytest.mark.parametrize(("path", "uri"), [
    ("policies/prod.yaml", "policies/prod.yaml"),
    ("./policies/prod policy é.yaml", "policies/prod%20policy%20%C3%A9.yaml"),
    ("/srv/policies/prod.yaml", "file:///srv/policies/prod.yaml"),
])
def test_sarif_locations_point_at_the_policy_file(path: str, uri: str) -> None:
    for result in sarif(DENY, policy_path=path)["runs"][0]["results"]:
        (location,) = result["locations"]
        assert location["physicalLocation"] == {"artifactLocation": {"uri": uri}}


def test_sarif_without_a_policy_path_uses_a_logical_location_named_after_the_policy() -> None:
    for result, r in zip(sarif(DENY)["runs"][0]["results"], DENY.rules, strict=True):
        (location,) = result["locations"]
        assert "physicalLocation" not in location
        assert location["logicalLocations"] == [{"name": "fair-lending <v2> & co", "kind": "resource",
                                                 "fullyQualifiedName": f"fair-lending <v2> & co/{r.rule_id}"}]


def test_sarif_properties_carry_measured_threshold_and_evidence() -> None:
    props = [r["properties"] for r in sarif(DENY)["runs"][0]["results"]]
    assert [(p["measured"], p["threshold"], p["evidence"]) for p in props] == [
        (r.measured, r.threshold, r.evidence) for r in DENY.rules]
    run = sarif(DENY, decision_seq=42)["runs"][0]
    assert (run["properties"]["decision"], run["properties"]["decision_seq"]) == ("deny", 42)
    assert (run["invocations"][0]["exitCode"], run["invocations"][0]["executionSuccessful"]) == (1, True)


def test_sarif_rules_cite_their_source_and_link_it_only_when_it_is_a_url() -> None:
    rules = sarif(DENY)["runs"][0]["tool"]["driver"]["rules"]
    assert [d["properties"]["source"] for d in rules] == [r.source for r in DENY.rules]
    assert [d.get("helpUri") for d in rules] == [None, "https://example.org/psi_(statistic)", None, None]


def test_sarif_special_characters_survive_escaping() -> None:
    doc = sarif(DENY)
    result = doc["runs"][0]["results"][0]
    assert SPECIAL in result["message"]["text"]
    assert doc["runs"][0]["results"][1]["ruleId"] == "drift.psi.<income>"


def test_sarif_carries_a_lone_surrogate_as_an_escape() -> None:
    out = render(gate(rule("r", "fail", reason="bad \udc80 byte")), "sarif")
    assert out.isascii() and "\\udc80" in out
    assert sarif_validator().is_valid(json.loads(out))


# -- markdown ------------------------------------------------------------------------------


def cells(row: str) -> list[str]:
    """Split a GFM table row on unescaped pipes, as GitHub's table extension does."""
    assert row.startswith("| ") and row.endswith(" |")
    out: list[str] = []
    cur, i, body = "", 0, row[1:-1]
    while i < len(body):
        if body[i] == "\\":
            cur, i = cur + body[i:i + 2], i + 2
        elif body[i] == "|":
            out, cur, i = [*out, cur.strip()], "", i + 1
        else:
            cur, i = cur + body[i], i + 1
    return [*out, cur.strip()]


def unescape(cell: str) -> str:
    """What CommonMark shows for text whose ASCII punctuation is backslash-escaped."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", cell)


def table(md: str) -> list[str]:
    lines = md.splitlines()
    start = lines.index("| Outcome | Rule | Measured | Threshold | Reason | Source |")
    assert lines[start + 1] == "| --- | --- | --- | --- | --- | --- |"
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


@by_case
def test_markdown_table_has_one_row_per_rule(case: str) -> None:
    result = CASES[case]
    rows = [cells(row) for row in table(render(result, "markdown"))]
    assert [(c[0], c[1]) for c in rows] == [(f"**{MARKERS[r.outcome]}**", f"`{r.rule_id}`")
                                          for r in result.rules]
    assert {len(c) for c in rows} == {6}


@pytest.mark.parametrize(("case", "word"), [("deny", "DENY"), ("needs_approval", "NEEDS APPROVAL"),
                                            ("allow", "ALLOW")])
def test_markdown_heading_states_the_decision_as_a_plain_word(case: str, word: str) -> None:
    heading = render(CASES[case], "markdown").splitlines()[0]
    assert heading == f"### mlledger gate: `{word}`"
    assert heading.isascii()


@pytest.mark.parametrize(("case", "step"), [
    ("deny", "**Next step:** 2 of 4 rules did not pass (1 fail, 1 missing evidence). Fix them"),
    ("needs_approval", "`mlledger approve --decision 42 --key <key.pem> --as <identity>`"),
    ("allow", "**Next step:** all 2 rules passed; credit-scorer@3 may be promoted to production."),
])
def test_markdown_ends_with_the_next_step(case: str, step: str) -> None:
    last = render(CASES[case], "markdown", decision_seq=42).splitlines()[-1]
    assert step in unescape(last) and last.startswith("**Next step:**")


def test_markdown_special_characters_are_escaped_and_read_back() -> None:
    md = render(DENY, "markdown")
    row = cells(table(md)[0])
    assert unescape(row[4]) == SPECIAL
    assert unescape(row[5]) == "29 CFR 1607.4(D) (four-fifths rule)"
    outside_code = re.sub(r"(`+).*?\1", "", md)
    assert not re.search(r"(?<!\\)[<>&|*_$]", outside_code.replace("| ", "").replace(" |", "")
                         .replace("**", "").replace("---", ""))


def test_markdown_code_cells_escape_pipes_and_backticks() -> None:
    result = gate(rule("a|b`c", "fail", measured="x`|`y"))
    row = cells(table(render(result, "markdown"))[0])
    assert (row[1], row[2]) == ("``a\\|b`c``", "``x`\\|`y``")
