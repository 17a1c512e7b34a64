"""Incidents and their EU AI Act Art. 73 reporting deadlines.

An incident is opened (``incident.opened``, with a severity), reported to an authority
(``incident.reported``) and closed (``incident.closed``). ``report_due`` is fixed when it is opened:
awareness (the entry's time) plus 15 days for a serious incident, 10 days for a death, 2 days for a
widespread infringement (``backends.kinds_loop.REPORT_DAYS``); a ``low`` incident is not reportable.
``overdue_incidents`` lists the reportable incidents not reported by their deadline, for ``audit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from backends.kinds_loop import REPORT_DAYS, IncidentClosed, IncidentOpened, IncidentReported
from ledger.api import Ledger, Receipt
from ledger.errors import InputError
from ledger.events import Event
from ledger.view import LedgerView

__all__ = ["Incident", "close_incident", "incidents", "open_incident", "overdue_incidents", "report_due",
           "report_incident"]


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def report_due(severity: str, aware: datetime) -> str | None:
    days = REPORT_DAYS[severity]
    return None if days is None else _ts(aware + timedelta(days=days))


@dataclass(frozen=True)
class Incident:
    seq: int
    opened: str
    model: str
    stage: str | None
    severity: str
    summary: str
    report_due: str | None
    trigger_seq: int | None
    reported_seq: int | None = None
    closed_seq: int | None = None

    @property
    def status(self) -> str:
        return "closed" if self.closed_seq is not None else "reported" if self.reported_seq is not None else "open"

    def overdue(self, now: datetime) -> bool:
        return self.report_due is not None and self.reported_seq is None and _parse(self.report_due) < now

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "opened": self.opened, "model": self.model, "stage": self.stage,
                "severity": self.severity, "summary": self.summary, "report_due": self.report_due,
                "trigger_seq": self.trigger_seq, "reported_seq": self.reported_seq, "closed_seq": self.closed_seq,
                "status": self.status}


def incidents(view_or_ledger: LedgerView | Ledger) -> list[Incident]:
    """Every incident and where it stands, in seq order."""
    if isinstance(view_or_ledger, Ledger):
        with view_or_ledger.view() as view:
            return incidents(view)
    view = view_or_ledger
    reported = {e.payload["incident_seq"]: e.seq for e in view.of_kind("incident.reported")}
    closed = {e.payload["incident_seq"]: e.seq for e in view.of_kind("incident.closed")}
    out = []
    for e in view.of_kind("incident.opened"):
        p = e.payload
        out.append(Incident(e.seq, e.ts, p["model"], p.get("stage"), p["severity"], p["summary"],
                            p.get("report_due"), p.get("trigger_seq"), reported.get(e.seq), closed.get(e.seq)))
    return out


def overdue_incidents(view_or_ledger: LedgerView | Ledger, now: datetime | None = None) -> list[Incident]:
    """Reportable incidents (AI Act Art. 73) with no ``incident.reported`` by their ``report_due``.

    Closing an incident does not discharge the duty to report it.
    """
    at = now or datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return [i for i in incidents(view_or_ledger) if i.overdue(at)]


def open_incident(ledger: Ledger, *, model: str, severity: str, summary: str, actor: str, stage: str | None = None,
                  trigger_seq: int | None = None, aware: datetime | None = None) -> Receipt:
    if severity not in REPORT_DAYS:
        raise InputError(f"severity {severity!r}: one of {', '.join(REPORT_DAYS)}")
    payload = IncidentOpened(model=model, stage=stage, severity=severity,  # type: ignore[arg-type]
                             summary=summary, report_due=report_due(severity, aware or datetime.now(UTC)),
                             trigger_seq=trigger_seq)
    return ledger.append(Event(payload, actor=actor, subject=f"model:{model}"))


def report_incident(ledger: Ledger, seq: int, *, authority: str, reference: str, actor: str) -> Receipt:
    return ledger.append(Event(IncidentReported(incident_seq=seq, authority=authority, reference=reference),
                               actor=actor, subject=f"incident:{seq}"))


def close_incident(ledger: Ledger, seq: int, *, resolution: str, actor: str) -> Receipt:
    return ledger.append(Event(IncidentClosed(incident_seq=seq, resolution=resolution), actor=actor,
                               subject=f"incident:{seq}"))
