"""The compliance crosswalk: every requirement is checked; missing evidence is marked missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.api import Ledger
from ledger.artifacts import ArtifactStore
from reports import REQUIREMENTS, crosswalk
from reports._crosswalk import _CHECKS
from reports._model import assemble_model
from tests.unit.reports.world import build


def dossier(home: Path) -> dict:
    with Ledger.open(str(home)) as led:
        return assemble_model(led, "credit@1", size=led.head_size(), verified=led.verify(),
                              artifacts=ArtifactStore(home / "artifacts"))


def rows(home: Path) -> dict[tuple[str, str, str], dict]:
    return by_key(dossier(home))


def by_key(data: dict) -> dict[tuple[str, str, str], dict]:
    return {(r["framework"], r["ref"], r["title"]): r for r in crosswalk(data)}


@pytest.fixture(scope="module")
def full_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return dossier(build(tmp_path_factory.mktemp("full")))


@pytest.fixture(scope="module")
def full(full_data: dict) -> dict[tuple[str, str, str], dict]:
    return by_key(full_data)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], dict]:
    return rows(build(tmp_path_factory.mktemp("bare"), evidence=False))


def row(table: dict[tuple[str, str, str], dict], framework: str, ref: str) -> dict:
    (found,) = [r for (f, p, _), r in table.items() if f == framework and p == ref]
    return found


def test_the_table_covers_every_framework_and_the_nine_annex_iv_items() -> None:
    assert {f for f, *_ in REQUIREMENTS} == {"EU AI Act", "GDPR", "SR 11-7 / SR 26-2", "NIST AI RMF", "NYC LL144",
                                             "29 CFR 1607", "21 CFR 11"}
    assert [r for _, r, _, _ in REQUIREMENTS if r.startswith("Annex IV")] == [f"Annex IV({i})" for i in range(1, 10)]
    refs = {r for _, r, _, _ in REQUIREMENTS}
    assert {"Art. 9", "Art. 10", "Art. 11", "Art. 12", "Art. 13", "Art. 14", "Art. 15", "Art. 19 / 26(6)", "Art. 72",
            "Art. 73", "Art. 5(1)(e)", "Art. 17", "Art. 22", "Art. 30", "Art. 35", "11.10(e)", "11.50",
            "11.70"} <= refs
    assert all(check in _CHECKS for *_, check in REQUIREMENTS)


def test_a_model_without_evidence_is_missing_what_evidence_would_show(bare: dict) -> None:
    for framework, ref in [("EU AI Act", "Art. 15"), ("NYC LL144", "§ 20-871; 6 RCNY 5-301"),
                           ("29 CFR 1607", "1607.4(D)"), ("EU AI Act", "Art. 9"), ("21 CFR 11", "11.50")]:
        r = row(bare, framework, ref)
        assert r["status"] == "missing" and r["evidence"] == [], r
    validation = bare[("SR 11-7 / SR 26-2", "V", "Independent model validation")]
    assert validation["status"] == "missing" and validation["evidence"] == []


def test_documents_that_were_never_attached_are_missing(full: dict) -> None:
    for item in (7, 8, 9):
        assert row(full, "EU AI Act", f"Annex IV({item})")["status"] == "missing"
    assert row(full, "GDPR", "Art. 35")["status"] == "missing"
    assert row(full, "EU AI Act", "Art. 13")["status"] == "missing"


def test_met_requirements_cite_the_entries_that_meet_them(full: dict, tmp_path: Path) -> None:
    art15 = row(full, "EU AI Act", "Art. 15")
    bias = row(full, "NYC LL144", "§ 20-871; 6 RCNY 5-301")
    sig = row(full, "21 CFR 11", "11.70")
    assert art15["status"] == bias["status"] == sig["status"] == "met"
    assert len(art15["evidence"]) == 1 and len(bias["evidence"]) == 1 and len(sig["evidence"]) == 1
    assert "NOT by an independent auditor" in bias["note"]


def test_situations_that_did_not_arise_are_not_applicable_not_met(full: dict) -> None:
    for ref in ("Art. 17", "Art. 22"):
        r = row(full, "GDPR", ref)
        assert r["status"] == "n/a" and r["evidence"] == []
    assert row(full, "EU AI Act", "Art. 73")["status"] == "n/a"


def test_an_attached_annex_iv_document_meets_its_item(full_data: dict) -> None:
    """doc.attached carries the Annex IV item as text ("8"), as ``model register-external --annex-iv`` writes it."""
    doc = {"seq": 99, "ts": "2026-01-01T00:00:00.000000Z", "kind": "doc.attached", "actor": "a", "subject": None,
           "leaf_hash": "0" * 64, "title": "EU declaration of conformity", "sha256": "1" * 64, "annex_iv": "8",
           "model": "credit@1"}
    table = by_key({**full_data, "documents": [*full_data["documents"], doc]})
    assert row(table, "EU AI Act", "Annex IV(8)") == {**row(table, "EU AI Act", "Annex IV(8)"), "status": "met",
                                                       "evidence": [99]}
    assert row(table, "EU AI Act", "Annex IV(7)")["status"] == "missing"
