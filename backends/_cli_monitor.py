"""CLI: ``mlledger monitor``, ``mlledger labels``, ``mlledger loop`` and ``mlledger incident``.

Loaded through the ``mlledger.commands`` entry points.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from ledger.cli import FORMAT, Context, echo_json, handle_errors
from ledger.errors import InputError

__all__ = ["incident", "labels", "loop", "monitor"]


def _actor(actor: str | None, default: str | None = None) -> str:
    from ledger.cli import _default_actor

    return actor or default or _default_actor()


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if m is None:
        raise InputError(f"--every {text!r}: give a duration such as 30s, 5m or 1h")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def _window_line(seq: int, w: Any) -> str:
    psi = "n/a" if w.prediction.psi is None else f"{w.prediction.psi:.3f}"
    inputs = (f"input drift over {len(w.input_drift.drifted)} feature(s)" if w.input_drift.computed
              else f"input drift not computed ({w.input_drift.reason})")
    acc = "" if w.labels.accuracy is None else f", accuracy {w.labels.accuracy:.3f}"
    what = f"revision of window {w.revises}" if w.revises is not None else "window"
    return (f"{what} {w.first_seq}..{w.last_seq} ({w.count} predictions) recorded at seq {seq}: "
            f"p50 {w.latency_ms.p50:.1f} ms, p99 {w.latency_ms.p99:.1f} ms, prediction PSI {psi}, "
            f"{w.labels.count} labels{acc}; {inputs}")


@click.command()
@click.option("--model", "name", required=True, metavar="NAME")
@click.option("--stage", default="production", show_default=True)
@click.option("--window", type=click.IntRange(min=1), help="Predictions per window [default: the policy's "
              "monitor.window, else 1000].")
@click.option("--every", help="Run again at this interval (e.g. 60s) until interrupted.")
@click.option("--webhook", help="POST each alert here, HMAC-SHA256-signed (X-Mlledger-Signature).")
@click.option("--webhook-secret-env", default="MLLEDGER_WEBHOOK_SECRET", show_default=True,
              help="The environment variable holding the webhook signing secret.")
@click.option("--webhook-attempts", default=3, show_default=True, type=click.IntRange(min=1, max=10))
@click.option("--command", "command", help="Run this command per alert (alert JSON on stdin).")
@click.option("--retrain", is_flag=True, help="Then run the policy's retraining loop on new alerts.")
@click.option("--actor", help="[default: system:monitor]")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def monitor(obj: Context, name: str, stage: str, window: int | None, every: str | None, webhook: str | None,
            webhook_secret_env: str, webhook_attempts: int, command: str | None, retrain: bool,
            actor: str | None, fmt: str) -> None:
    """Record monitoring windows over the recorded predictions of NAME at STAGE.

    Each full window of new predictions gets a monitor.window (latency percentiles, prediction drift
    against the training data, input drift when inputs are stored, accuracy and per-group rates from
    received labels); a threshold of the stage policy's 'monitor:' section that is crossed gets a
    monitor.alert. Exit 0 when no alert fired, 1 when one did.
    """
    from backends._notify import Notifier, NotifyError
    from backends.monitor import Monitor
    from policies._cli import workspace

    interval = _seconds(every) if every else None
    notifier = Notifier(webhook=webhook, secret_env=webhook_secret_env, command=command, attempts=webhook_attempts)
    notifier.check()
    alerted = False
    while True:
        with workspace(obj) as ws:
            run = Monitor(ws, name, stage, window=window, actor=_actor(actor, "system:monitor")).run()
            for r, w in run.windows:
                if fmt == "json":
                    echo_json({"seq": r.seq, "kind": "monitor.window", **w.model_dump(mode="json")})
                else:
                    click.echo(_window_line(r.seq, w))
            failures = []
            for r, a in run.alerts:
                alerted = True
                if fmt == "json":
                    echo_json({"seq": r.seq, "kind": "monitor.alert", **a.model_dump(mode="json")})
                else:
                    click.echo(f"ALERT {a.kind} at seq {r.seq}: {a.detail}")
                try:
                    notifier.notify(r.seq, a.model_dump(mode="json"))
                except NotifyError as exc:
                    failures.append(str(exc))
            if not run.windows and fmt == "text":
                click.echo(f"no new full window for {name} at {stage}", err=True)
            for why in run.skipped:
                click.echo(f"note: another monitor recorded that window first ({why})", err=True)
            if retrain:  # the loop finds every alert not yet taken, whichever monitor recorded it
                from backends._loop import run_loops

                for line in run_loops(ws, name, stage, home=obj.home, actor=_actor(actor, "system:loop")):
                    click.echo(line)
            if failures:
                raise NotifyError(f"{len(failures)} alert notification(s) failed (the alerts are recorded): "
                                  + "; ".join(failures))
        if interval is None:
            break
        time.sleep(interval)
    sys.exit(1 if alerted else 0)


@click.group()
def labels() -> None:
    """Ground truth for recorded decisions (label.received)."""


@labels.command(name="ingest")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--label-column", default="label", show_default=True)
@click.option("--group", "groups", help="Comma-separated group columns of the file (per-group monitoring).")
@click.option("--actor")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def labels_ingest(obj: Context, file: Path, label_column: str, groups: str | None, actor: str | None,
                  fmt: str) -> None:
    """Match each row of FILE (a 'seq' or 'request_id' column, and the label) to its decision.

    The ledger keeps request ids only as keyed HMACs: a decision made about a data subject is found
    by its request_id together with a 'subject_id' column. All rows are checked first: one that names
    no recorded decision is an error and nothing is written.
    """
    from backends.labels import ingest_labels
    from policies._cli import workspace

    cols = [c.strip() for c in (groups or "").split(",") if c.strip()]
    with workspace(obj) as ws:
        receipts = ingest_labels(ws, file, label_column=label_column, groups=cols, actor=_actor(actor))
    out = {"recorded": len(receipts), "first_seq": receipts[0].seq if receipts else None,
           "last_seq": receipts[-1].seq if receipts else None}
    if fmt == "json":
        echo_json(out)
    elif receipts:
        click.echo(f"recorded {len(receipts)} label(s) at seq {receipts[0].seq}..{receipts[-1].seq}")
    else:
        click.echo("nothing new: every label in the file was already received")


@click.group()
def loop() -> None:
    """The closed retraining loop (policy 'retrain:' rule): run it, or see where each loop stands."""


@loop.command(name="run")
@click.option("--model", "name", required=True, metavar="NAME")
@click.option("--stage", default="production", show_default=True)
@click.option("--actor", help="[default: system:loop]")
@click.pass_obj
@handle_errors
def loop_run(obj: Context, name: str, stage: str, actor: str | None) -> None:
    """Resume unfinished loops of NAME at STAGE, then start one for new monitor alerts.

    Safe to run again at any time, also after a crash: each step checks the ledger for itself first.
    Exit 0 when every loop is finished (completed, or denied with an incident), 3 when one waits for
    approval.
    """
    from backends._loop import loop_states, run_loops
    from policies._cli import workspace

    with workspace(obj) as ws:
        for line in run_loops(ws, name, stage, home=obj.home, actor=_actor(actor, "system:loop")):
            click.echo(line)
        waiting = [s for s in loop_states(ws, name, stage) if s.status == "needs-approval"]
    sys.exit(3 if waiting else 0)


@loop.command(name="status")
@click.option("--model", "name", metavar="NAME")
@click.option("--stage")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def loop_status(obj: Context, name: str | None, stage: str | None, fmt: str) -> None:
    """Every retraining loop: its trigger, the seq of each step done, and what comes next."""
    from backends._loop import loop_states
    from policies._cli import workspace

    with workspace(obj) as ws:
        states = loop_states(ws, name, stage)
    for s in states:
        j = s.to_json()
        if fmt == "json":
            echo_json(j)
            continue
        ev = ",".join(f"{k}@{v}" for k, v in sorted(s.evidence.items())) or "-"
        click.echo(f"loop {s.trigger_seq}  {s.model}@{s.stage}  {s.status:<14} next={j['next'] or '-':<9} "
                   f"incumbent={s.incumbent} version={j['version'] or '-'} data={j['dataset_seq']} "
                   f"trained={j['trained_seq']} evidence={ev} gate={j['gate_seq']}({j['decision'] or '-'}) "
                   f"promoted={s.promoted} deployed={s.deployed} incident={s.incident}")
    if not states and fmt == "text":
        click.echo("no retraining loop on the ledger")


@click.group()
def incident() -> None:
    """Incidents and their EU AI Act Art. 73 reporting deadlines."""


@incident.command(name="open")
@click.option("--model", required=True, help="NAME or NAME@VERSION.")
@click.option("--stage")
@click.option("--severity", type=click.Choice(["low", "serious", "death", "widespread"]), required=True,
              help="serious: report within 15 days; death: 10; widespread infringement: 2 (Art. 73); low: "
                   "not reportable.")
@click.option("--summary", required=True)
@click.option("--actor")
@click.pass_obj
@handle_errors
def incident_open(obj: Context, model: str, stage: str | None, severity: str, summary: str,
                  actor: str | None) -> None:
    """Record incident.opened with its reporting deadline."""
    from backends.incidents import open_incident

    with obj.open() as ledger:
        r = open_incident(ledger, model=model, stage=stage, severity=severity, summary=summary, actor=_actor(actor))
        due = ledger.get(r.seq).payload.get("report_due")
    click.echo(f"incident {r.seq} opened ({severity})" + (f"; report due by {due}" if due else "; not reportable"))


@incident.command(name="report")
@click.argument("seq", type=click.IntRange(min=0))
@click.option("--authority", required=True, help="e.g. the market surveillance authority.")
@click.option("--reference", required=True, help="The authority's reference for the report.")
@click.option("--actor")
@click.pass_obj
@handle_errors
def incident_report(obj: Context, seq: int, authority: str, reference: str, actor: str | None) -> None:
    """Record that incident SEQ was reported (incident.reported)."""
    from backends.incidents import report_incident

    with obj.open() as ledger:
        r = report_incident(ledger, seq, authority=authority, reference=reference, actor=_actor(actor))
    click.echo(f"incident {seq} reported at seq {r.seq}")


@incident.command(name="close")
@click.argument("seq", type=click.IntRange(min=0))
@click.option("--resolution", required=True)
@click.option("--actor")
@click.pass_obj
@handle_errors
def incident_close(obj: Context, seq: int, resolution: str, actor: str | None) -> None:
    """Record incident.closed."""
    from backends.incidents import close_incident

    with obj.open() as ledger:
        r = close_incident(ledger, seq, resolution=resolution, actor=_actor(actor))
    click.echo(f"incident {seq} closed at seq {r.seq}")


@incident.command(name="list")
@click.option("--overdue", is_flag=True, help="Only reportable incidents past their deadline (exit 1 if any).")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def incident_list(obj: Context, overdue: bool, fmt: str) -> None:
    """Incidents, their status and reporting deadline."""
    from backends.incidents import incidents, overdue_incidents

    with obj.open() as ledger:
        rows = overdue_incidents(ledger) if overdue else incidents(ledger)
    for i in rows:
        if fmt == "json":
            echo_json(i.to_json())
        else:
            click.echo(f"{i.seq:>6}  {i.opened}  {i.severity:<10} {i.status:<8} due={i.report_due or '-'}  "
                       f"{i.model}  {i.summary[:80]}")
    if overdue and rows:
        sys.exit(1)
