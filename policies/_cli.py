"""CLI: ``mlledger data``, ``mlledger model`` and ``mlledger evidence``.

Loaded through the ``mlledger.commands`` entry points. Heavy libraries (pandas,
scikit-learn, fairlearn, aif360) are imported inside the commands.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ledger.cli import FORMAT, Context, echo_json, handle_errors
from ledger.errors import InputError
from ledger.events import Event
from policies._workspace import RegisteredDataset, RegisteredModel, Workspace

__all__ = ["data", "evidence", "model"]


@contextmanager
def workspace(obj: Context) -> Iterator[Workspace]:
    signer = obj.signer(required=False) if obj.log_key_path.exists() else None
    with obj.open(signer=signer, checkpoint_every=1000 if signer else None) as ledger:
        yield Workspace(ledger, obj.home)


def _actor(actor: str | None) -> str:
    from ledger.cli import _default_actor

    return actor or _default_actor()


def _columns(text: str | None) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()] if text else []


# -- data ----------------------------------------------------------------------------


@click.group()
def data() -> None:
    """Register and validate datasets (hashes and summaries only; data stays where it is)."""


@data.command(name="register")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--role", type=click.Choice(["train", "eval", "reference", "production", "outputs"]), required=True,
              help="outputs: a model's recorded outputs (decisions or scores per person).")
@click.option("--name", required=True, help="Dataset name, e.g. applicants-2026q3.")
@click.option("--sensitive", help="Comma-separated sensitive feature columns, e.g. sex,race.")
@click.option("--target", help="The label column.")
@click.option("--schema", "schema_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also validate against this schema YAML (records dataset.validated).")
@click.option("--actor", help="Who registers it [default: $MLLEDGER_ACTOR or user:<login>].")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def data_register(obj: Context, file: Path, role: str, name: str, sensitive: str | None,
                  target: str | None, schema_path: Path | None, actor: str | None, fmt: str) -> None:
    """Record a dataset.registered entry for FILE (CSV or Parquet), streamed.

    The entry holds the file's SHA-256, format, schema, row count, declared
    sensitive features and target, and per-column summary statistics, never rows.
    """
    from ledger.kinds import DatasetRegistered
    from policies.evidence._data import detect_format, file_digest, profile_dataset

    path = file.resolve()
    digest, size = file_digest(path)
    kind = detect_format(path)
    prof = profile_dataset(path, fmt=kind, sensitive=_columns(sensitive), target=target)
    payload = DatasetRegistered(
        name=name, sha256=digest, format=kind, size_bytes=size, rows=prof.rows, role=role,  # type: ignore[arg-type]
        columns=prof.column_summaries(), sensitive_features=_columns(sensitive), target=target,
        source=path.as_uri())
    events = [Event(payload, actor=_actor(actor), subject=f"dataset:sha256:{digest}")]
    validation = None
    if schema_path is not None:
        validation = _validation_event(path, kind, digest, schema_path, _actor(actor), obj)
        events.append(validation[0])
    with workspace(obj) as ws:
        if validation is not None:
            ws.artifacts.put(validation[1])
        receipts = ws.ledger.append_many(events)
    out = {"seq": receipts[0].seq, "name": name, "sha256": digest, "rows": prof.rows, "format": kind}
    if validation is not None:
        out["validated"] = validation[2]
    if fmt == "json":
        echo_json(out)
    else:
        click.echo(f"registered dataset {name} ({kind}, {prof.rows:,} rows) sha256 {digest} at seq "
                   f"{receipts[0].seq}")
        if validation is not None:
            click.echo(f"validation {'passed' if validation[2] else 'FAILED'} (seq {receipts[1].seq})")


def _validation_event(path: Path, kind: str, digest: str, schema_path: Path, actor: str,
                      obj: Context | None) -> tuple[Event, bytes, bool]:
    from policies.evidence._data import load_schema, validate_dataset
    from policies.kinds import DatasetValidated, ValidationCheck

    schema = load_schema(schema_path)
    raw = schema_path.read_bytes()
    result = validate_dataset(path, schema, fmt=kind)  # type: ignore[arg-type]
    checks = [ValidationCheck(check=c.check, column=c.column, passed=c.passed,
                              failure_count=c.failure_count, example_rows=list(c.examples)[:5])
              for c in result.checks]
    payload = DatasetValidated(dataset_sha256=digest, schema_sha256=hashlib.sha256(raw).hexdigest(),
                               passed=result.passed, checks=checks, tool="mlledger.data.validate",
                               libraries=_versions("pandera", "pandas", "pyarrow"))
    return Event(payload, actor=actor, subject=f"dataset:sha256:{digest}"), raw, result.passed


@data.command(name="validate")
@click.argument("ref")
@click.option("--schema", "schema_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="Schema YAML: types, nullability, ranges, categories, uniqueness, label.")
@click.option("--actor")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def data_validate(obj: Context, ref: str, schema_path: Path, actor: str | None, fmt: str) -> None:
    """Check a registered dataset against a schema; record every check (dataset.validated).

    Exit 0 when every check passes, 1 when one fails (the result is recorded either way).
    """
    with workspace(obj) as ws:
        ds = ws.dataset(ref)
        event, raw, passed = _validation_event(ds.path, ds.fmt, ds.sha256, schema_path, _actor(actor), obj)
        ws.artifacts.put(raw)
        receipt = ws.ledger.append(event)
    checks = event.payload.model_dump(mode="json")["checks"]
    if fmt == "json":
        echo_json({"seq": receipt.seq, "dataset": ds.name, "passed": passed, "checks": checks})
    else:
        for c in checks:
            mark = "ok  " if c["passed"] else "FAIL"
            col = f" {c['column']}" if c["column"] else ""
            click.echo(f"{mark} {c['check']}{col}" + ("" if c["passed"] else f" ({c['failure_count']} rows)"))
        click.echo(f"validation of {ds.name} {'passed' if passed else 'FAILED'} (seq {receipt.seq})")
    if not passed:
        sys.exit(1)


@data.command(name="list")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def data_list(obj: Context, fmt: str) -> None:
    """List registered datasets."""
    with workspace(obj) as ws:
        found = ws.datasets()
    for d in found:
        row = {"seq": d.seq, "name": d.name, "role": d.role, "sha256": d.sha256, "rows": d.rows,
               "path": str(d.path)}
        if fmt == "json":
            echo_json(row)
        else:
            click.echo(f"{d.seq:>6}  {d.name:<24} {d.role:<10} {d.rows:>10,} rows  {d.sha256[:16]}  {d.path}")


# -- models --------------------------------------------------------------------------


@click.group()
def model() -> None:
    """Register model artifacts (skops), or external (vendor) models, on the ledger."""


@model.command(name="register")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True)
@click.option("--features", required=True, help="Comma-separated input columns, in order.")
@click.option("--target", help="The label column the model predicts.")
@click.option("--training-data", help="Comma-separated dataset references it was trained on (lineage).")
@click.option("--actor")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def model_register(obj: Context, file: Path, name: str, features: str, target: str | None,
                   training_data: str | None, actor: str | None, fmt: str) -> None:
    """Store a skops model artifact by content hash and record model.registered.

    Pickle files are refused: only skops artifacts whose types skops trusts load.
    """
    from policies.kinds import ModelRegistered

    raw = file.read_bytes()
    if not raw.startswith(b"PK"):
        raise InputError(f"{file}: not a skops artifact (a zip); pickle and joblib files are refused")
    with workspace(obj) as ws:
        lineage = [ws.dataset(r, check_file=False).sha256 for r in _columns(training_data)]
        digest = ws.artifacts.put(raw)
        version = ws.next_version(name)
        reg = RegisteredModel(0, name, version, digest, tuple(_columns(features)), target)
        ws.load_model(reg)  # refuse what cannot be loaded safely before recording it
        payload = ModelRegistered(name=name, version=version, artifact_sha256=digest, format="skops",
                                  task="binary_classification", features=_columns(features),
                                  target=target, training_data=lineage, source=file.resolve().as_uri(),
                                  libraries=_versions("sklearn", "skops", "numpy"))
        r = ws.ledger.append(Event(payload, actor=_actor(actor), subject=f"model:{name}@{version}"))
    if fmt == "json":
        echo_json({"seq": r.seq, "model": f"{name}@{version}", "artifact_sha256": digest})
    else:
        click.echo(f"registered model {name}@{version} artifact sha256 {digest} at seq {r.seq}")


from policies._cli_external import OutputsRun, one_source, outputs_options, register_external  # noqa: E402
from policies._workspace import versions as _versions  # noqa: E402

model.add_command(register_external)

# -- evidence ------------------------------------------------------------------------


@click.group()
def evidence() -> None:
    """Compute evidence (fairness, drift, explainability, performance) and record it."""


def _predict(ws: Workspace, m: RegisteredModel, frame: Any, ds: RegisteredDataset) -> tuple[Any, Any]:
    import numpy as np

    missing = [c for c in m.features if c not in frame.columns]
    if missing:
        raise InputError(f"dataset {ds.name} lacks the model's feature column(s) {', '.join(missing)}")
    est = ws.load_model(m)
    # A fairness-mitigated model (e.g. a threshold optimiser) reads its sensitive columns at
    # predict time; it names them in ``sensitive``.
    needed = [c for c in getattr(est, "sensitive", None) or [] if c not in m.features]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(f"dataset {ds.name} lacks the sensitive column(s) {', '.join(missing)} the model needs")
    X = frame[[*m.features, *needed]]
    y_pred = np.asarray(est.predict(X))
    y_score = None
    if hasattr(est, "predict_proba"):
        proba = np.asarray(est.predict_proba(X))
        if proba.ndim == 2 and proba.shape[1] == 2:
            y_score = proba[:, 1]
    return y_pred, y_score


def _record(ws: Workspace, result: Any, *, type_: str, model: RegisteredModel | None, dataset: str,
            reference: str | None, actor: str, seed: int | None = None) -> tuple[int, str]:
    r, digest = ws.record_evidence(result, type_=type_, model=model, dataset_sha256=dataset,
                                   reference_sha256=reference, actor=actor, seed=seed)
    return r.seq, digest


def _emit(fmt: str, type_: str, seq: int, digest: str, summary: dict[str, Any]) -> None:
    if fmt == "json":
        echo_json({"seq": seq, "type": type_, "artifact_sha256": digest, "values": summary})
        return
    click.echo(f"recorded {type_} evidence at seq {seq} (full result: artifact {digest})")
    for key, value in summary.items():
        click.echo(f"  {key}: {value}")


def _labels(frame: Any, ds: RegisteredDataset) -> Any:
    if ds.target is None or ds.target not in frame.columns:
        raise InputError(f"dataset {ds.name} has no target column declared; register it with --target")
    return frame[ds.target].to_numpy()


def _sensitive(frame: Any, ds: RegisteredDataset, override: str | None) -> Any:
    cols = _columns(override) or list(ds.sensitive)
    if not cols:
        raise InputError(f"dataset {ds.name} declares no sensitive features; pass --sensitive or "
                         "register it with --sensitive")
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise InputError(f"dataset {ds.name} has no column(s) {', '.join(missing)}")
    return frame[cols]


def _evidence_command(name: str, help_text: str) -> Callable[[Callable[..., None]], click.Command]:
    def deco(fn: Callable[..., None]) -> click.Command:
        fn.__doc__ = help_text
        cmd = click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)(fn)
        cmd = click.option("--actor")(cmd)
        cmd = click.pass_obj(handle_errors(cmd))
        return evidence.command(name=name)(cmd)
    return deco


@_evidence_command("fairness", """Group fairness of a model on a dataset (fairlearn- and aif360-checked).

    Per group and intersection: selection rate, TPR, FPR, FNR, precision, accuracy, counts;
    demographic parity, equalized odds, equal opportunity, disparate impact, Theil index and
    NYC LL144 impact ratios. Groups under --min-group-size are flagged, not dropped.

    With --outputs, from the model's recorded outputs instead of running it (a vendor's model):
    decisions or scores, group membership and, if known, outcomes (--label-column; without
    them the rates that need outcomes are left empty). Scores without decisions count as
    selected when above the sample median (the LL144 scoring rate).
    """)
@click.option("--model", "model_ref", required=True, help="NAME, NAME@VERSION or artifact hash.")
@click.option("--data", "data_ref", help="A registered dataset (name or hash); or give --outputs.")
@outputs_options
@click.option("--sensitive", help="Override the dataset's declared sensitive features (with --outputs: the "
              "group columns of the outputs table).")
@click.option("--min-group-size", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--no-intersections", is_flag=True)
def evidence_fairness(obj: Context, model_ref: str, data_ref: str | None, sensitive: str | None,
                      min_group_size: int, no_intersections: bool, actor: str | None, fmt: str,
                      **out: Any) -> None:
    one_source(data_ref, out["outputs"])
    with workspace(obj) as ws:
        if out["outputs"] is not None:
            run = OutputsRun.from_options(ws, model_ref, out, _columns(sensitive), _actor(actor))
            seq, digest, result = run.fairness(min_group_size=min_group_size, intersections=not no_intersections)
        else:
            from policies.evidence._fairness import fairness_report

            assert data_ref is not None
            m, ds = ws.model(model_ref), ws.dataset(data_ref)
            frame = ws.load_frame(ds)
            y_pred, y_score = _predict(ws, m, frame, ds)
            result = fairness_report(_labels(frame, ds), y_pred,
                                     sensitive_features=_sensitive(frame, ds, sensitive), y_score=y_score,
                                     min_group_size=min_group_size, intersections=not no_intersections)
            seq, digest = _record(ws, result, type_="fairness", model=m, dataset=ds.sha256, reference=None,
                                  actor=_actor(actor))
    _emit(fmt, "fairness", seq, digest, result.summary())


@_evidence_command("performance", """Accuracy, ROC AUC, precision, recall, F1, Brier and calibration,
    overall and per group.

    With --outputs, from the model's recorded outputs and outcomes (--label-column is then
    required); scores count as probabilities only when they all lie in [0, 1].""")
@click.option("--model", "model_ref", required=True)
@click.option("--data", "data_ref", help="A registered dataset (name or hash); or give --outputs.")
@outputs_options
@click.option("--sensitive", help="Override the dataset's declared sensitive features.")
def evidence_performance(obj: Context, model_ref: str, data_ref: str | None, sensitive: str | None,
                         actor: str | None, fmt: str, **out: Any) -> None:
    one_source(data_ref, out["outputs"])
    with workspace(obj) as ws:
        if out["outputs"] is not None:
            run = OutputsRun.from_options(ws, model_ref, out, _columns(sensitive), _actor(actor))
            seq, digest, result = run.performance()
        else:
            from policies.evidence._performance import performance_report

            assert data_ref is not None
            m, ds = ws.model(model_ref), ws.dataset(data_ref)
            frame = ws.load_frame(ds)
            y_pred, y_score = _predict(ws, m, frame, ds)
            groups = _sensitive(frame, ds, sensitive) if (sensitive or ds.sensitive) else None
            result = performance_report(_labels(frame, ds), y_pred, y_score=y_score, sensitive_features=groups)
            seq, digest = _record(ws, result, type_="performance", model=m, dataset=ds.sha256, reference=None,
                                  actor=_actor(actor))
    _emit(fmt, "performance", seq, digest, result.summary())


@_evidence_command("drift", """Feature and prediction drift of a dataset against a reference.

    Per feature: PSI (reference quantile bins), KS (numeric), chi-square (categorical),
    Jensen-Shannon distance, normalised Wasserstein; plus the share of drifted features.
    Defaults: PSI 0.1 warns, 0.2 drifts; KS p < 0.05.

    With --model and --outputs, the model's recorded outputs over time: rows before
    --reference-until (by --time-column) are the reference period, the rest the current one.
    The output column drifts as the prediction; --features (default: the --sensitive columns,
    else the output itself) as features.
    """)
@click.option("--reference", "reference_ref", help="The reference dataset.")
@click.option("--current", "current_ref", help="The eval or production window.")
@click.option("--model", "model_ref", help="Also measure prediction drift of this model.")
@click.option("--features", help="Comma-separated features [default: the model's, else all but target].")
@outputs_options
@click.option("--sensitive", help="With --outputs: group columns whose mix is compared between the periods.")
@click.option("--time-column", help="With --outputs: the column of decision times.")
@click.option("--reference-until", help="With --outputs: the end (exclusive) of the reference period, e.g. "
              "2026-01-01.")
def evidence_drift(obj: Context, reference_ref: str | None, current_ref: str | None, model_ref: str | None,
                   features: str | None, sensitive: str | None, time_column: str | None,
                   reference_until: str | None, actor: str | None, fmt: str, **out: Any) -> None:
    from policies.evidence._drift import drift_report

    if out["outputs"] is not None:
        if reference_ref or current_ref:
            raise InputError("--outputs compares two periods of one file; leave out --reference and --current")
        if model_ref is None or time_column is None or reference_until is None:
            raise InputError("drift from --outputs needs --model, --time-column and --reference-until")
        with workspace(obj) as ws:
            run = OutputsRun.from_options(ws, model_ref, out, _columns(sensitive), _actor(actor))
            seq, digest, result = run.drift(_columns(features), time_column, reference_until)
        _emit(fmt, "drift", seq, digest, result.summary())
        return
    if reference_ref is None or current_ref is None:
        raise InputError("give --reference and --current datasets, or --model with --outputs FILE")
    with workspace(obj) as ws:
        ref, cur = ws.dataset(reference_ref), ws.dataset(current_ref)
        ref_frame, cur_frame = ws.load_frame(ref), ws.load_frame(cur)
        m = ws.model(model_ref) if model_ref else None
        cols = _columns(features) or (list(m.features) if m else
                                      [c for c in ref_frame.columns if c != ref.target])
        preds: dict[str, Any] = {}
        if m is not None:
            preds["reference_predictions"] = _predict(ws, m, ref_frame, ref)[1]
            preds["current_predictions"] = _predict(ws, m, cur_frame, cur)[1]
        result = drift_report(ref_frame, cur_frame, features=cols, **preds)
        seq, digest = _record(ws, result, type_="drift", model=m, dataset=cur.sha256,
                              reference=ref.sha256, actor=_actor(actor))
    _emit(fmt, "drift", seq, digest, result.summary())


@_evidence_command("explain", """Global permutation importance (top k), flagging any sensitive feature
    or strong proxy of one among the top k.""")
@click.option("--model", "model_ref", required=True)
@click.option("--data", "data_ref", required=True)
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def evidence_explain(obj: Context, model_ref: str, data_ref: str, top_k: int, repeats: int, seed: int,
                     actor: str | None, fmt: str) -> None:
    from policies.evidence._explain import explain_report

    with workspace(obj) as ws:
        m, ds = ws.model(model_ref), ws.dataset(data_ref)
        frame = ws.load_frame(ds)
        missing = [c for c in m.features if c not in frame.columns]
        if missing:
            raise InputError(f"dataset {ds.name} lacks the model's feature column(s) {', '.join(missing)}")
        est = ws.load_model(m)
        result = explain_report(est, frame[list(m.features)], _labels(frame, ds),
                                sensitive_features=list(ds.sensitive), top_k=top_k, n_repeats=repeats,
                                seed=seed, data_with_sensitive=frame)
        seq, digest = _record(ws, result, type_="explainability", model=m, dataset=ds.sha256,
                              reference=None, actor=_actor(actor), seed=seed)
    _emit(fmt, "explainability", seq, digest, result.summary())


@evidence.command(name="list")
@click.option("--model", "model_ref", help="Only evidence bound to this model.")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def evidence_list(obj: Context, model_ref: str | None, fmt: str) -> None:
    """List recorded evidence."""
    from policies._inputs import binds

    with workspace(obj) as ws:
        m = ws.model(model_ref) if model_ref else None
        for e in ws.ledger.iter(kind="evidence.recorded"):
            p = e.payload
            if m is not None and not binds(p["model_sha256"], p.get("model"), artifact_sha256=m.artifact_sha256,
                                           ref=m.ref):
                continue
            if fmt == "json":
                echo_json({"seq": e.seq, "ts": e.ts, **p})
            else:
                click.echo(f"{e.seq:>6}  {e.ts}  {p['type']:<15} {e.subject}  "
                           f"artifact {p['artifact_sha256'][:16]}")


@evidence.command(name="show")
@click.argument("seq", type=click.IntRange(min=0))
@click.pass_obj
@handle_errors
def evidence_show(obj: Context, seq: int) -> None:
    """Print the full result (all tables) of the evidence entry SEQ, from the artifact store."""
    with workspace(obj) as ws:
        entry = ws.ledger.get(seq)
        if entry.kind != "evidence.recorded":
            raise InputError(f"seq {seq} is a {entry.kind} entry, not evidence.recorded")
        click.echo(ws.artifacts.get(entry.payload["artifact_sha256"]).decode())
