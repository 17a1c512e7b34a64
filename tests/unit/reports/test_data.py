"""Report data assembled from real ledgers built through the CLI (no mocks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ledger.api import Ledger
from ledger.artifacts import ArtifactStore
from ledger.errors import InputError
from reports._bias import assemble_bias
from reports._ledger import assemble_ledger
from reports._model import assemble_model
from tests.unit.reports.world import AUDITOR, DEV, build


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("world"))


def model_data(home: Path, *, size: int | None = None, artifacts: bool = True) -> dict:
    with Ledger.open(str(home)) as led:
        return assemble_model(led, "credit@1", size=size or led.head_size(), verified=led.verify(),
                              artifacts=ArtifactStore(home / "artifacts") if artifacts else None)


def fairness_artifact(home: Path, data: dict) -> dict:
    (ev,) = [e for e in data["evidence"] if e["type"] == "fairness"]
    return json.loads(ArtifactStore(home / "artifacts").get(ev["artifact_sha256"]))


def test_fairness_tables_equal_the_recorded_evidence(home: Path) -> None:
    data = model_data(home)
    (ev,) = [e for e in data["evidence"] if e["type"] == "fairness"]
    full = fairness_artifact(home, data)
    assert [g["name"] for g in ev["groupings"]] == ["sex", "race", "sex & race"]
    for mine, theirs in zip(ev["groupings"], full["groupings"], strict=True):
        assert mine["min_impact_ratio"] == theirs["disparities"]["min_impact_ratio"]
        assert mine["min_impact_ratio"] == ev["values"][mine["name"]]["min_impact_ratio"]
        assert [(r["label"], r["selection_rate"], r["impact_ratio"], r["count"]) for r in mine["groups"]] == \
            [(r["label"], r["selection_rate"], r["impact_ratio"], r["count"]) for r in theirs["groups"]]


def test_the_dossier_cites_decision_signature_and_promotion(home: Path) -> None:
    data = model_data(home)
    (gate,) = data["decisions"]
    (sig,) = data["signatures"]
    assert gate["decision"] == "needs_approval" and gate["approvals"] == [sig["seq"]]
    assert sig["printed_name"] == "Rita Risk" and sig["verified"] and sig["meaning"] == "approval"
    assert [x["kind"] for x in data["operations"]["lifecycle"]] == ["model.promoted"]
    assert data["model"]["stages"] == {"staging": data["operations"]["lifecycle"][0]["seq"]}
    assert data["model"]["owners"] == [DEV]
    assert [s["stage"] for s in data["lineage"]][:3] == ["data", "training", "artifact"]


def test_a_report_of_an_earlier_size_does_not_see_later_entries(home: Path) -> None:
    with Ledger.open(str(home)) as led:
        first_evidence = next(led.iter(kind="evidence.recorded")).seq
    early = model_data(home, size=first_evidence)
    assert early["evidence"] == [] and early["decisions"] == []
    assert early["certificate"]["tree_size"] == first_evidence
    assert "no evidence is recorded for this model version" in early["summary"]["issues"]
    assert model_data(home)["evidence"]


def test_without_the_artifact_store_the_gap_is_stated_not_filled(home: Path) -> None:
    data = model_data(home, artifacts=False)
    (ev,) = [e for e in data["evidence"] if e["type"] == "fairness"]
    assert ev["full_result"] is False and "no artifact store" in ev["full_result_missing"]
    assert all(g["groups"] == [] for g in ev["groupings"])
    by_name = {g["name"]: g for g in ev["groupings"]}
    assert set(by_name) == {"sex", "race", "sex & race"}
    assert by_name["sex"]["min_impact_ratio"] == ev["values"]["sex"]["min_impact_ratio"]


@pytest.mark.parametrize(("ref", "message"), [("credit@7", "is not on the ledger"), ("credit", "give NAME@VERSION"),
                                              ("credit@0", "give NAME@VERSION")],
                         ids=["unknown-version", "no-version", "version-zero"])
def test_a_bad_model_reference_is_an_input_error(home: Path, ref: str, message: str) -> None:
    with Ledger.open(str(home)) as led, pytest.raises(InputError, match=message):
        assemble_model(led, ref, size=led.head_size(), verified=led.verify(), artifacts=None)


def test_the_ledger_report_counts_every_entry_and_runs_the_audit(home: Path) -> None:
    with Ledger.open(str(home)) as led:
        size = led.head_size()
        data = assemble_ledger(led, size=size, verified=led.verify())
        kinds = {e.kind for e in led.iter()}
    assert data["events"]["total"] == size == sum(n for _, n in data["events"]["by_kind"])
    assert {k for k, _ in data["events"]["by_kind"]} == kinds
    assert data["audit"]["clean"] and data["audit"]["violations"] == 0
    assert [m["ref"] for m in data["models"]] == ["credit@1"]


def test_the_bias_audit_is_independent_only_when_the_auditor_is_not_the_owner(home: Path, tmp_path: Path) -> None:
    with Ledger.open(str(home)) as led:
        own = assemble_bias(led, "credit@1", size=led.head_size(), verified=led.verify(),
                            artifacts=ArtifactStore(home / "artifacts"), producer=AUDITOR)
    assert own["audit"]["auditor"] == DEV and own["audit"]["independent"] is False
    other = build(tmp_path, fairness_by=AUDITOR)
    with Ledger.open(str(other)) as led:
        indep = assemble_bias(led, "credit@1", size=led.head_size(), verified=led.verify(),
                              artifacts=ArtifactStore(other / "artifacts"), producer=AUDITOR)
    audit = indep["audit"]
    assert audit["auditor"] == AUDITOR and audit["independent"] is True
    assert audit["data_source"]["name"] == "eval" and audit["data_source"]["role"] == "eval"
    assert [g["name"] for g in audit["tables"]["sex"]] == ["sex"]
    assert [g["name"] for g in audit["tables"]["intersection"]] == ["sex & race"]
    assert audit["unknown"] == {"sex": 0, "race": 0, "sex & race": 0}
    assert audit["missing"] == []


def test_the_bias_audit_lists_what_the_evidence_lacks(home: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(home, copy)
    shutil.rmtree(copy / "artifacts")
    with Ledger.open(str(copy)) as led:
        data = assemble_bias(led, "credit@1", size=led.head_size(), verified=led.verify(),
                             artifacts=ArtifactStore(copy / "artifacts"), producer=AUDITOR)
    assert any("per-category selection rates" in m and "not in this workspace" in m for m in data["audit"]["missing"])


def test_a_model_without_evidence_has_no_bias_audit(tmp_path: Path) -> None:
    home = build(tmp_path, evidence=False)
    with Ledger.open(str(home)) as led:
        data = assemble_bias(led, "credit@1", size=led.head_size(), verified=led.verify(), artifacts=None,
                             producer=AUDITOR)
        dossier = assemble_model(led, "credit@1", size=led.head_size(), verified=led.verify(), artifacts=None)
    assert data["audit"] is None
    assert dossier["evidence"] == [] and dossier["signatures"] == [] and dossier["decisions"] == []
