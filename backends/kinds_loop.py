"""Payload models of the monitoring and closed-loop kinds (DESIGN.md section 3, "monitoring").

- ``monitor.window``: statistics over N consecutive ``prediction.made`` entries of one model at one
  stage (seqs ``first_seq``..``last_seq``); a window whose labels arrived late is recorded again with
  ``revises`` naming the earlier record of the same window.
- ``label.received``: the ground truth of one recorded decision (``prediction_seq``), with the group
  membership the labels file gave.
- ``retrain.triggered``: a retraining rule of the stage's policy fired on monitor alerts; every step of
  that loop (dataset ``NAME-retrain-SEQ``, training on it, evidence, gate, promotion, deployment) is
  found on the ledger from this entry's seq.
- ``incident.opened`` / ``incident.reported`` / ``incident.closed``: incidents with a severity and the
  EU AI Act Art. 73 reporting deadline (``report_due``).

Registered through the ``mlledger.kinds`` entry point (``loop``).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints

from ledger.actions import SignedAction
from ledger.events import Payload, Sha256Hex, register, register_check
from ledger.view import LedgerView
from policies.kinds import Column, Identifier, ModelRef, Short, Text

__all__ = ["REPORT_DAYS", "GroupStats", "IncidentClosed", "IncidentOpened", "IncidentReported", "InputDrift",
           "LabelReceived", "LabelStats", "LatencyStats", "MonitorWindow", "PredictionStats", "RetrainTriggered"]

Seq = Annotated[int, Field(ge=0)]
Stage = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
Label = int | str | bool
Severity = Literal["low", "serious", "death", "widespread"]

#: EU AI Act Art. 73: report a serious incident within 15 days of awareness (73(2)), within 10 days in
#: the event of a death (73(4)), within 2 days for a widespread infringement or a serious incident
#: under Art. 3(49)(b) (73(3)). ``low`` is not a serious incident: no reporting deadline.
REPORT_DAYS: dict[str, int | None] = {"low": None, "serious": 15, "death": 10, "widespread": 2}


class LatencyStats(Payload):
    p50: Annotated[float, Field(ge=0)]
    p95: Annotated[float, Field(ge=0)]
    p99: Annotated[float, Field(ge=0)]
    max: Annotated[float, Field(ge=0)]


class PredictionStats(Payload):
    """The window's outputs, and their drift against the reference (PSI over reference quantile bins)."""

    positive_rate: Share | None = None
    score_mean: float | None = None
    psi: float | None = None
    reference: Literal["training-data", "none"]
    reference_sha256: Sha256Hex | None = None


class InputDrift(Payload):
    """Per-feature PSI of the window's inputs against the reference dataset, when the inputs are readable."""

    computed: bool
    reason: Text | None = None  # why not computed
    rows: Annotated[int, Field(ge=0)] = 0
    psi: dict[Column, float] = Field(default_factory=dict)
    drifted: list[Column] = Field(default_factory=list)


class GroupStats(Payload):
    n: Annotated[int, Field(ge=0)]
    selection_rate: Share
    accuracy: Share


class LabelStats(Payload):
    """Ground truth received so far for the window's decisions."""

    count: Annotated[int, Field(ge=0)]
    accuracy: Share | None = None
    groups: dict[Column, dict[Short, GroupStats]] = Field(default_factory=dict)
    #: Per grouping column: the lowest selection rate over the highest (four-fifths rule when >= 0.8).
    min_selection_ratio: dict[Column, float] = Field(default_factory=dict)
    through_seq: Seq | None = None  # the last label.received counted


@register("monitor.window")
class MonitorWindow(SignedAction):
    model: Identifier  # NAME
    stage: Stage
    versions: Annotated[list[ModelRef], Field(min_length=1)]
    first_seq: Seq
    last_seq: Seq
    count: Annotated[int, Field(ge=1)]
    latency_ms: LatencyStats
    prediction: PredictionStats
    input_drift: InputDrift
    labels: LabelStats
    thresholds: dict[Short, float]
    policy_seq: Seq | None = None
    revises: Seq | None = None


@register_check("monitor.window")
def _check_window(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
    """Windows of one model and stage do not overlap; a revision revises the latest record of its window.

    So monitors running in several processes (server workers, a cron job) cannot record a window twice.
    """
    from ledger.errors import InputError

    mine = [e for e in view.of_kind("monitor.window")
            if e.payload["model"] == payload["model"] and e.payload["stage"] == payload["stage"]]
    span = (payload["first_seq"], payload["last_seq"])
    if not span[0] <= span[1] < seq:
        raise InputError(f"window {span[0]}..{span[1]} refused: a window covers earlier predictions only "
                         f"(first_seq <= last_seq < {seq})")
    ends = [view.get(span[0]), view.get(span[1])]
    if any(e is None or e.kind != "prediction.made" or e.payload["model"].partition("@")[0] != payload["model"]
           or e.payload["stage"] != payload["stage"] for e in ends):
        raise InputError(f"window {span[0]}..{span[1]} refused: it must start and end on decisions of "
                         f"{payload['model']} at {payload['stage']}")
    if payload.get("revises") is None:
        for e in mine:
            if e.payload["last_seq"] >= span[0] and e.payload["first_seq"] <= span[1]:
                raise InputError(f"window {span[0]}..{span[1]} overlaps the window recorded at seq {e.seq}")
        return
    same = [e.seq for e in mine if (e.payload["first_seq"], e.payload["last_seq"]) == span]
    if not same or same[-1] != payload["revises"]:
        raise InputError(f"window revision refused: seq {payload['revises']} is not the latest record of window "
                         f"{span[0]}..{span[1]}")


@register("label.received")
class LabelReceived(SignedAction):
    """The ground truth of one decision. Group membership (special-category data, GDPR Art. 9) is never
    in the entry: it is sealed under the decision's subject key (erasable) and named here by its keyed
    commitment ``groups_commitment``. ``groups`` stays empty (it exists for entries written before)."""

    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"groups_commitment", "actor_signature"})
    prediction_seq: Seq
    label: Label
    groups: dict[Column, Short] = Field(default_factory=dict)
    source_sha256: Sha256Hex  # the labels file
    groups_commitment: Sha256Hex | None = None


@register_check("label.received")
def _check_label(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
    from ledger.errors import InputError

    target = view.get(payload["prediction_seq"])
    if target is None or target.kind != "prediction.made":
        raise InputError(f"label refused: seq {payload['prediction_seq']} is not a prediction.made entry")


@register("retrain.triggered")
class RetrainTriggered(SignedAction):
    model: Identifier  # NAME
    stage: Stage
    rule: Identifier
    alerts: Annotated[list[Seq], Field(min_length=1)]
    incumbent: ModelRef
    policy_seq: Seq
    data: Literal["reference", "reference+labelled"]


@register_check("retrain.triggered")
def _check_trigger(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any]) -> None:
    """One loop per alert, and only for alerts of that model and stage."""
    from ledger.errors import InputError

    taken = {a: e.seq for e in view.of_kind("retrain.triggered") for a in e.payload["alerts"]}
    for a in payload["alerts"]:
        if a in taken:
            raise InputError(f"retrain refused: alert {a} already triggered the loop at seq {taken[a]}")
        alert = view.get(a)
        if alert is None or alert.kind != "monitor.alert" or alert.payload["model"] != payload["model"] \
                or alert.payload.get("stage") != payload["stage"]:
            raise InputError(f"retrain refused: seq {a} is not a monitor.alert of {payload['model']} at "
                             f"{payload['stage']}")


@register("incident.opened")
class IncidentOpened(SignedAction):
    model: Identifier  # NAME or NAME@VERSION
    stage: Stage | None = None
    severity: Severity
    summary: Text
    report_due: str | None = None  # RFC 3339; None when not reportable (severity low)
    trigger_seq: Seq | None = None  # the retrain.triggered it came from


@register("incident.reported")
class IncidentReported(SignedAction):
    incident_seq: Seq
    authority: Short
    reference: Short


@register("incident.closed")
class IncidentClosed(SignedAction):
    incident_seq: Seq
    resolution: Text


def _check_incident_ref(view: LedgerView, seq: int, actor: str | None, payload: dict[str, Any],
                        kind: str = "incident.closed") -> None:
    """A report or closure names an opened incident; an incident is closed once and reported once.
    A closed incident may still be reported: closing it does not discharge the duty to report."""
    from ledger.errors import InputError

    target = view.get(payload["incident_seq"])
    if target is None or target.kind != "incident.opened":
        raise InputError(f"refused: seq {payload['incident_seq']} is not an incident.opened entry")
    done = [e.seq for e in view.of_kind(kind) if e.payload["incident_seq"] == payload["incident_seq"]]
    if done:
        what = "closed" if kind == "incident.closed" else "reported"
        raise InputError(f"refused: incident {payload['incident_seq']} is already {what} (seq {done[0]})")


register_check("incident.reported")(functools.partial(_check_incident_ref, kind="incident.reported"))
register_check("incident.closed")(_check_incident_ref)
