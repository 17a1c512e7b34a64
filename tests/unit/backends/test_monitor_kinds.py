"""The monitoring kinds, the policy's monitor/retrain sections, and incident deadlines (AI Act Art. 73)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

import backends.kinds_loop  # noqa: F401 - registers the kinds
from backends.incidents import close_incident, incidents, open_incident, overdue_incidents, report_incident
from backends.kinds import MonitorAlert
from backends.kinds_loop import LabelReceived
from ledger.api import Ledger
from ledger.errors import InputError
from ledger.events import Event
from policies._policy import load_policy

POLICY = """name: p
stage: production
description: d
rules:
  - id: approval.model-risk
    kind: approval
    quorum: 1
    role: model-risk
monitor:
  window: 500
  prediction_psi: 0.2
  latency_p99_ms: 250
retrain:
  id: r
  trigger: [prediction-drift]
"""


def test_policy_monitor_and_retrain_sections_load(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    policy = load_policy(tmp_path / "p.yaml").policy
    assert policy.monitor is not None and policy.monitor.window == 500 and policy.monitor.latency_p99_ms == 250
    assert policy.retrain is not None and policy.retrain.trigger == ("prediction-drift",)
    assert policy.retrain.data == "reference+labelled"


@pytest.mark.parametrize(("old", "new", "message"), [
    ("  window: 500", "  windw: 500", "p.yaml:10: monitor: unknown key 'windw'; did you mean 'window'?"),
    ("  window: 500", "  window: 5", "p.yaml:10: monitor.window: expected greater than or equal to 10"),
    ("[prediction-drift]", "[drift]", "p.yaml:15: retrain.trigger[0]: expected 'prediction-drift', "),
    ("  trigger: [prediction-drift]\n", "", "p.yaml:13: retrain: missing required key 'trigger'"),
])
def test_bad_monitor_section_names_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str,
                                                 new: str, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text(POLICY.replace(old, new))
    with pytest.raises(InputError) as err:
        load_policy("p.yaml")
    assert str(err.value).startswith(message)


def test_reconcile_alert_keeps_its_bytes() -> None:
    """monitor.alert entries written before the monitor fields serialise exactly as before."""
    a = MonitorAlert(kind="alias-drift", model="credit", stage="production", detail="x", source="mlflow-reconcile")
    assert set(a.model_dump(mode="json")) == {"kind", "model", "stage", "detail", "source"}


def test_monitor_alert_carries_its_statistic() -> None:
    a = MonitorAlert(kind="prediction-drift", model="credit", stage="production", detail="x", source="monitor",
                     statistic="prediction_psi", value=0.4, threshold=0.2, window_last_seq=99)
    assert a.model_dump(mode="json")["window_last_seq"] == 99


def test_label_payload_is_strict() -> None:
    with pytest.raises(ValidationError, match="prediction_seq"):
        LabelReceived(prediction_seq="3", label=1, source_sha256="0" * 64)  # type: ignore[arg-type]


def test_label_for_an_entry_that_is_not_a_decision_is_refused(ledger: Ledger) -> None:
    event = Event(LabelReceived(prediction_seq=0, label=1, source_sha256="0" * 64), actor="a@example.com")
    with pytest.raises(InputError, match="seq 0 is not a prediction.made entry"):
        ledger.append(event)
    assert ledger.head_size() == 1


@pytest.mark.parametrize(("severity", "days"), [("serious", 15), ("death", 10), ("widespread", 2)])
def test_incident_report_deadline_follows_art_73(ledger: Ledger, severity: str, days: int) -> None:
    aware = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    open_incident(ledger, model="credit@1", severity=severity, summary="s", actor="a@example.com", aware=aware)
    (inc,) = incidents(ledger)
    assert inc.report_due == (aware + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert overdue_incidents(ledger, aware + timedelta(days=days, seconds=-1)) == []
    assert [i.seq for i in overdue_incidents(ledger, aware + timedelta(days=days, seconds=1))] == [inc.seq]


def test_reported_incident_is_not_overdue_but_a_closed_unreported_one_is(ledger: Ledger) -> None:
    aware = datetime(2026, 11, 1, tzinfo=UTC)
    a = open_incident(ledger, model="credit@1", severity="serious", summary="a", actor="x@example.com", aware=aware)
    b = open_incident(ledger, model="credit@1", severity="serious", summary="b", actor="x@example.com", aware=aware)
    open_incident(ledger, model="credit@1", severity="low", summary="c", actor="x@example.com", aware=aware)
    report_incident(ledger, a.seq, authority="MSA", reference="R-1", actor="x@example.com")
    close_incident(ledger, b.seq, resolution="fixed", actor="x@example.com")
    late = aware + timedelta(days=30)
    assert [i.seq for i in overdue_incidents(ledger, late)] == [b.seq]
    with ledger.view() as view:
        assert [i.seq for i in overdue_incidents(view, late)] == [b.seq]


def test_incident_events_must_name_an_open_incident(ledger: Ledger) -> None:
    r = open_incident(ledger, model="credit@1", severity="low", summary="a", actor="x@example.com")
    with pytest.raises(InputError, match="seq 0 is not an incident.opened"):
        report_incident(ledger, 0, authority="MSA", reference="R", actor="x@example.com")
    close_incident(ledger, r.seq, resolution="done", actor="x@example.com")
    with pytest.raises(InputError, match="already closed"):
        close_incident(ledger, r.seq, resolution="again", actor="x@example.com")


def window(first: int, last: int, revises: int | None = None) -> Event:
    from backends.kinds_loop import InputDrift, LabelStats, LatencyStats, MonitorWindow, PredictionStats

    w = MonitorWindow(model="credit", stage="production", versions=["credit@1"], first_seq=first, last_seq=last,
                      count=last - first + 1, latency_ms=LatencyStats(p50=1.0, p95=2.0, p99=3.0, max=4.0),
                      prediction=PredictionStats(reference="none"), input_drift=InputDrift(computed=False,
                                                                                          reason="test"),
                      labels=LabelStats(count=0), thresholds={}, revises=revises)
    return Event(w, actor="system:monitor", subject="model:credit")


def decisions(ledger: Ledger, n: int) -> None:
    """``n`` decisions of credit@1 at production (seqs 1..n)."""
    from backends.kinds import PredictionMade

    ledger.append_many([Event(PredictionMade(
        model="credit@1", artifact_sha256="a" * 64, stage="production", deployed_seq=0, input_commitment="b" * 64,
        key_id="dk-" + "c" * 32, label=1, score=0.5, latency_ms=1.0, automated_decision=True),
        actor="service", subject="model:credit@1") for _ in range(n)])


def test_a_window_is_recorded_once_even_by_two_monitors(ledger: Ledger) -> None:
    decisions(ledger, 30)
    first = ledger.append(window(10, 19))
    with pytest.raises(InputError, match=f"overlaps the window recorded at seq {first.seq}"):
        ledger.append(window(15, 24))
    ledger.append(window(20, 29))
    second = ledger.append(window(10, 19, revises=first.seq))
    with pytest.raises(InputError, match="is not the latest record of window 10..19"):
        ledger.append(window(10, 19, revises=first.seq))
    ledger.append(window(10, 19, revises=second.seq))


def test_a_window_must_cover_earlier_decisions_of_its_model(ledger: Ledger) -> None:
    decisions(ledger, 5)
    with pytest.raises(InputError, match="covers earlier predictions only"):
        ledger.append(window(1, 10**12))  # a bogus window that would silence monitoring for good
    with pytest.raises(InputError, match="must start and end on decisions of credit"):
        ledger.append(window(0, 3))  # seq 0 is the genesis entry
    ledger.append(window(1, 5))
