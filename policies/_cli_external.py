"""CLI pieces for models mlledger did not train: ``mlledger model register-external``, and
evidence from a model's recorded outputs (``mlledger evidence ... --outputs FILE``).

An external model is recorded as ``model.registered`` with ``external: true``, its vendor and,
when supplied, the hash of its artifact (stored, never loaded); its model card as
``doc.attached``. Its evidence is computed from a table of its outputs, which is first
registered as a dataset of role ``outputs`` (a file already registered, by hash, is reused),
and is bound to NAME@VERSION and to that dataset's hash. Every input is checked before
anything is written; the dataset and the evidence entries are appended together.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path
from typing import Any

import click

from ledger.cli import FORMAT, Context, echo_json, handle_errors
from ledger.errors import InputError
from ledger.events import Event
from policies._workspace import RegisteredDataset, Workspace

__all__ = ["OutputsRun", "one_source", "outputs_options", "register_external"]

PathArg = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command(name="register-external")
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=1), required=True,
              help="The version number on this ledger (the vendor's own version can go in --description).")
@click.option("--vendor", required=True, help="Who supplies the model, e.g. 'Acme Scoring Inc.'.")
@click.option("--description", help="What the model is and does, e.g. 'resume screening score, v4.2'.")
@click.option("--artifact", type=PathArg, help="The model file or vendor package, stored by hash (never loaded).")
@click.option("--card", type=PathArg, help="The model card or vendor documentation, recorded as doc.attached.")
@click.option("--card-title", help="The card's title [default: 'Model card of NAME@VERSION'].")
@click.option("--annex-iv", help="The EU AI Act Annex IV point the card documents, e.g. 1 or 2(b).")
@click.option("--actor")
@click.option("--format", "fmt", type=FORMAT, default="text", show_default=True)
@click.pass_obj
@handle_errors
def register_external(obj: Context, name: str, version: int, vendor: str, description: str | None,
                      artifact: Path | None, card: Path | None, card_title: str | None, annex_iv: str | None,
                      actor: str | None, fmt: str) -> None:
    """Record a model mlledger did not train (a vendor's model) as model.registered.

    The entry says external: true and names the vendor. With --artifact the file is stored
    content-addressed and its hash recorded; without, artifact_sha256 is null. With --card the
    document is stored the same way and recorded as doc.attached. Evidence on the model then
    comes from its recorded outputs: 'mlledger evidence fairness --model NAME@VERSION --outputs FILE'.
    """
    from policies._cli import _actor, workspace
    from policies.kinds import DocAttached, ModelRegistered

    who = _actor(actor)
    ref = f"{name}@{version}"
    art = artifact.read_bytes() if artifact is not None else None
    doc = card.read_bytes() if card is not None else None
    if annex_iv is not None and card is None:
        raise InputError("--annex-iv describes the card: give --card FILE too")
    with workspace(obj) as ws:
        taken = [m for m in ws.models() if m.name == name and m.version == version]
        if taken:
            raise InputError(f"model {ref} is already on the ledger (seq {taken[-1].seq}); "
                             f"register the new version as {name}@{ws.next_version(name)}")
        digest = None if art is None else hashlib.sha256(art).hexdigest()
        source = artifact.resolve().as_uri() if artifact is not None else f"vendor:{vendor}"
        payload = ModelRegistered(name=name, version=version, artifact_sha256=digest, format="vendor",
                                  task="binary_classification", features=[], source=source[:4096],
                                  external=True, vendor=vendor, description=description)
        events = [Event(payload, actor=who, subject=f"model:{ref}")]
        card_sha = None
        if card is not None and doc is not None:
            card_sha = hashlib.sha256(doc).hexdigest()
            events.append(Event(DocAttached(
                sha256=card_sha, title=card_title or f"Model card of {ref}", size_bytes=len(doc),
                media_type=mimetypes.guess_type(card.name)[0], annex_iv=annex_iv, model=ref,
                source=card.resolve().as_uri()), actor=who, subject=f"model:{ref}"))
        # Everything is validated; store the bytes, then append both entries together.
        if art is not None:
            ws.artifacts.put(art)
        if doc is not None:
            ws.artifacts.put(doc)
        receipts = ws.ledger.append_many(events)
    out: dict[str, Any] = {"seq": receipts[0].seq, "model": ref, "external": True, "vendor": vendor,
                           "artifact_sha256": digest}
    if card_sha is not None:
        out["card"] = {"seq": receipts[1].seq, "sha256": card_sha}
    if fmt == "json":
        echo_json(out)
        return
    what = f"artifact sha256 {digest}" if digest else "no artifact"
    click.echo(f"registered external model {ref} (vendor {vendor}; {what}) at seq {receipts[0].seq}")
    if card_sha is not None:
        click.echo(f"attached model card sha256 {card_sha} at seq {receipts[1].seq}")


# -- evidence from recorded outputs -------------------------------------------------------


def outputs_options(fn: Any) -> Any:
    """The options that name an outputs table and its columns."""
    for opt in reversed([
        click.option("--outputs", "outputs", type=PathArg,
                     help="A table (CSV or Parquet) of the model's recorded outputs, one row per person; "
                     "registered as a dataset of role 'outputs' (reused when already registered)."),
        click.option("--score-column", help="With --outputs: the column of scores (numeric)."),
        click.option("--decision-column", help="With --outputs: the column of decisions (binary). Without it, "
                     "the decision is 'scored above the sample median' (the NYC LL144 scoring rate)."),
        click.option("--label-column", help="With --outputs: the column of actual outcomes (binary), if known."),
        click.option("--pos-label", help="The value meaning selected/positive when it is not 1 or true."),
        click.option("--outputs-name", help="The dataset name for the outputs [default: NAME@VERSION.outputs]."),
    ]):
        fn = opt(fn)
    return fn


def one_source(data_ref: str | None, outputs: Path | None) -> None:
    if (data_ref is None) == (outputs is None):
        raise InputError("give --data DATASET (a model mlledger runs) or --outputs FILE (a model's recorded "
                         "outputs), one of the two")


class OutputsRun:
    """One evidence command over an outputs file: checks, computes, then appends once."""

    def __init__(self, ws: Workspace, model_ref: str, path: Path, *, score_column: str | None,
                 decision_column: str | None, label_column: str | None, pos_label: str | None,
                 sensitive: list[str], outputs_name: str | None, actor: str) -> None:
        from policies.evidence._outputs import OutputsSpec

        self.ws = ws
        self.model = ws.model(model_ref)  # a vendor model must be registered first
        self.actor = actor
        self.path = path.resolve()
        self.dataset = self._outputs_dataset(outputs_name, label_column)
        self.spec = OutputsSpec(score_column=score_column, decision_column=decision_column,
                                label_column=label_column or self.dataset.target,
                                sensitive=tuple(sensitive or self.dataset.sensitive), pos_label=pos_label)
        self.frame = ws.load_frame(self.dataset)
        self.where = str(self.path)

    @classmethod
    def from_options(cls, ws: Workspace, model_ref: str, out: dict[str, Any], sensitive: list[str],
                     actor: str) -> OutputsRun:
        """From the values of ``outputs_options``."""
        return cls(ws, model_ref, out["outputs"], score_column=out["score_column"],
                   decision_column=out["decision_column"], label_column=out["label_column"],
                   pos_label=out["pos_label"], sensitive=sensitive, outputs_name=out["outputs_name"], actor=actor)

    def _outputs_dataset(self, name: str | None, target: str | None) -> RegisteredDataset:
        """The registered dataset with this file's hash, or a new one (seq -1) of role ``outputs``."""
        from policies.evidence._data import detect_format, file_digest

        digest, _size = file_digest(self.path)
        for ds in reversed(self.ws.datasets()):
            if ds.sha256 == digest:  # the same bytes: reuse the registration, read this file
                return RegisteredDataset(ds.seq, ds.name, ds.sha256, self.path, ds.fmt, ds.role, ds.target,
                                         ds.sensitive, ds.columns, ds.rows)
        name = name or f"{self.model.ref}.outputs"
        return RegisteredDataset(-1, name, digest, self.path, detect_format(self.path), "outputs", target,
                                 (), (), 0)

    def register(self, sensitive: tuple[str, ...]) -> Event | None:
        """The dataset.registered entry for a new outputs file (None when it is already registered)."""
        from ledger.kinds import DatasetRegistered
        from policies.evidence._data import file_digest, profile_dataset

        ds = self.dataset
        if ds.seq >= 0:
            return None
        prof = profile_dataset(self.path, fmt=ds.fmt, sensitive=list(sensitive),  # type: ignore[arg-type]
                               target=ds.target)
        digest, size = file_digest(self.path)
        if digest != ds.sha256:
            raise InputError(f"{self.path} changed while it was being read; run the command again")
        payload = DatasetRegistered(
            name=ds.name, sha256=digest, format=ds.fmt, size_bytes=size, rows=prof.rows,  # type: ignore[arg-type]
            role="outputs", columns=prof.column_summaries(), sensitive_features=list(sensitive), target=ds.target,
            source=self.path.as_uri())
        return Event(payload, actor=self.actor, subject=f"dataset:sha256:{digest}")

    def table(self, *, need_labels: bool = False) -> Any:
        from policies.evidence._outputs import read_outputs

        return read_outputs(self.frame, self.spec, where=self.where, need_labels=need_labels)

    def record(self, result: Any, *, type_: str, config: dict[str, Any],
               reference_sha256: str | None = None) -> tuple[int, str]:
        """Append the outputs registration (if new) and the evidence, together."""
        result = result.model_copy(update={"config": {**result.config, "outputs": config}})
        events = []
        reg = self.register(self.spec.sensitive)
        if reg is not None:
            events.append(reg)
        digest, event = self.ws.evidence_event(result, type_=type_, model=self.model,
                                               dataset_sha256=self.dataset.sha256,
                                               reference_sha256=reference_sha256, actor=self.actor)
        events.append(event)
        receipts = self.ws.ledger.append_many(events)
        return receipts[-1].seq, digest

    # -- the evidence ---------------------------------------------------------------------

    def fairness(self, *, min_group_size: int, intersections: bool) -> tuple[int, str, Any]:
        from policies.evidence._fairness import fairness_report

        if not self.spec.sensitive:
            raise InputError(f"{self.where}: name the group columns of the outputs table with --sensitive")
        t = self.table()
        result = fairness_report(t.y_true, t.y_pred, sensitive_features=t.sensitive, y_score=t.y_score,
                                 min_group_size=min_group_size, intersections=intersections)
        return (*self.record(result, type_="fairness", config=t.config(self.spec)), result)

    def performance(self) -> tuple[int, str, Any]:
        """Needs the outcomes; scores count as probabilities only when all lie in [0, 1]."""
        from policies.evidence._performance import performance_report

        t = self.table(need_labels=True)
        proba = t.y_score is not None and bool(((t.y_score >= 0) & (t.y_score <= 1)).all())
        result = performance_report(t.y_true, t.y_pred, y_score=t.y_score if proba else None,
                                    sensitive_features=t.sensitive if self.spec.sensitive else None)
        config = {**t.config(self.spec), "scores_as_probabilities": proba}
        return (*self.record(result, type_="performance", config=config), result)

    def drift(self, features: list[str], time_column: str, reference_until: str) -> tuple[int, str, Any]:
        """The outputs (and ``features``: default the sensitive columns, else the output itself)
        of the period from ``reference_until`` on against the period before it."""
        import numpy as np

        from policies.evidence._drift import drift_report
        from policies.evidence._outputs import split_periods

        t = self.table()
        frame = self.frame
        cols = features or list(self.spec.sensitive) or [self.spec.output_column]
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise InputError(f"{self.where}: the outputs table has no column(s) {', '.join(map(repr, missing))}")
        before, periods = split_periods(frame, time_column, reference_until, where=self.where)
        scored = self.spec.decision_column is None
        pred = t.y_score if scored else t.y_pred.astype(np.int64)
        assert pred is not None
        result = drift_report(frame[before][cols].reset_index(drop=True),
                              frame[~before][cols].reset_index(drop=True), features=cols,
                              categorical=[c for c in cols if frame[c].dtype.kind not in "iuf"],
                              reference_predictions=pred[before], current_predictions=pred[~before],
                              prediction_kind="numeric" if scored else "categorical")
        config = {**t.config(self.spec), **periods}
        return (*self.record(result, type_="drift", config=config, reference_sha256=self.dataset.sha256), result)
