"""Monitoring windows over recorded predictions (issue 8, DESIGN.md section 3 "monitoring").

A window is the next ``window`` ``prediction.made`` entries of model NAME at a stage after the last
recorded window of that model and stage (its ``last_seq``), so running the monitor again records
nothing new until enough new decisions arrive (idempotent). For each full window:

(1) latency percentiles (p50/p95/p99/max) of ``latency_ms``;
(2) prediction drift: PSI of the window's scores (labels when there are no scores) against the
    scores the serving version gives its own training data, over the reference's quantile bins
    (``policies.evidence._drift_stats``, the evaluators' code);
(3) input drift: per-feature PSI (``policies.evidence.drift_report``) of the inputs against the
    training data, only when the deployment stored them (``serve --store-inputs``) and their keys
    live; otherwise the record says it was not computed and why;
(4) accuracy and per-group selection rates from the ``label.received`` entries of its decisions;
(5) the thresholds of the stage's policy ``monitor:`` section (defaults cited in
    ``policies._monitor_policy``) decide the ``monitor.alert`` entries (source ``monitor``), which are
    appended atomically with their ``monitor.window``.

Labels that arrive after a window was recorded update it: the window is recorded again with
``revises`` naming its previous record (and alerts that newly cross a threshold).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from backends.kinds import MonitorAlert
from backends.kinds_loop import (
    GroupStats,
    InputDrift,
    LabelStats,
    LatencyStats,
    MonitorWindow,
    PredictionStats,
)
from ledger.api import Entry, Receipt
from ledger.errors import InputError
from ledger.events import Event
from ledger.privacy import SubjectKeys
from policies._monitor_policy import MonitorSection
from policies._workspace import Workspace

__all__ = ["Monitor", "MonitorRun", "monitor_settings"]

ACTOR = "system:monitor"


def monitor_settings(ws: Workspace, stage: str) -> tuple[MonitorSection | None, int | None]:
    """The ``monitor:`` section of the policy published for ``stage`` (None without one), and the policy's seq."""
    from policies._gate import published_policy

    with ws.ledger.view() as view:
        try:
            entry, loaded = published_policy(view, stage)
        except InputError:
            return None, None
    return loaded.policy.monitor, entry.seq


@dataclass
class MonitorRun:
    """What one run recorded."""

    windows: list[tuple[Receipt, MonitorWindow]] = field(default_factory=list)
    alerts: list[tuple[Receipt, MonitorAlert]] = field(default_factory=list)
    #: Windows another monitor recorded first (the server's background monitor, a cron job).
    skipped: list[str] = field(default_factory=list)


@dataclass
class _Reference:
    sha256: str
    frame: Any  # pandas DataFrame of the training data
    scores: Any  # numpy array of the version's scores (or labels) on it
    numeric: list[str]
    categorical: list[str]


def _positive(v: Any) -> bool:
    return v is True or (isinstance(v, int | float) and not isinstance(v, bool) and v == 1) or v in ("1", "yes")


def _round(x: float) -> float:
    return float(round(float(x), 6))


class Monitor:
    """Compute and record the monitoring windows of model ``name`` at ``stage``."""

    def __init__(self, ws: Workspace, name: str, stage: str, *, window: int | None = None,
                 keys: SubjectKeys | None = None, actor: str = ACTOR) -> None:
        if "@" in name:
            raise InputError(f"--model {name!r}: give the model NAME; a window covers every version served")
        self.ws, self.name, self.stage, self.actor = ws, name, stage, actor
        section, self.policy_seq = monitor_settings(ws, stage)
        #: Whether the stage's policy has a 'monitor:' section (else the cited defaults apply).
        self.configured = section is not None
        self.settings = section or MonitorSection()
        self.window = window or self.settings.window
        self.keys = keys if keys is not None else SubjectKeys(ws.ledger, ws.home)
        self._refs: dict[str, _Reference] = {}
        self._label_index: tuple[list[int], list[Entry]] | None = None

    # -- reading the ledger -----------------------------------------------------------------

    def _mine(self, e: Entry | Any) -> bool:
        p = e.payload
        return bool(p["stage"] == self.stage and p["model"].partition("@")[0] == self.name)

    def windows(self) -> list[Entry]:
        """The recorded ``monitor.window`` entries of this model and stage, in seq order."""
        return [e for e in self.ws.ledger.iter(kind="monitor.window")
                if e.payload["model"] == self.name and e.payload["stage"] == self.stage]

    def pending(self, after: int) -> list[Entry]:
        return [e for e in self.ws.ledger.iter(kind="prediction.made", start=after + 1) if self._mine(e)]

    def _between(self, first: int, last: int) -> list[Entry]:
        out = []
        for e in self.ws.ledger.iter(kind="prediction.made", start=first):
            if e.seq > last:
                break
            if self._mine(e):
                out.append(e)
        return out

    def _labels(self, first: int, last: int) -> list[Entry]:
        """The ``label.received`` entries of decisions ``first``..``last`` (read once per run, by decision)."""
        import bisect

        if self._label_index is None:
            pairs = sorted((e.payload["prediction_seq"], e.seq, e) for e in self.ws.ledger.iter(kind="label.received"))
            self._label_index = ([p[0] for p in pairs], [p[2] for p in pairs])
        keys, entries = self._label_index
        return sorted(entries[bisect.bisect_left(keys, first):bisect.bisect_right(keys, last)], key=lambda e: e.seq)

    # -- the reference ------------------------------------------------------------------------

    def reference(self, version_ref: str) -> _Reference:
        """The training data of ``version_ref`` and the version's scores on it (cached)."""
        if version_ref in self._refs:
            return self._refs[version_ref]
        m = self.ws.model(version_ref)
        trained = next(iter(self.ws.ledger.iter(kind="model.trained", subject=f"model:{version_ref}")), None)
        digests = trained.payload["training_data"] if trained is not None else []
        if not digests:
            raise InputError(f"{version_ref} names no training data: no reference to monitor against")
        ds = self.ws.dataset(digests[0], check_file=False)
        if not ds.path.exists() and "-retrain-" in ds.name:  # removed by an erasure: its lineage's root stands in
            from backends._loop import root_reference

            ds = root_reference(self.ws, ds.sha256)
        ds = self.ws.dataset(ds.sha256, check_file=True)
        frame = self.ws.load_frame(ds)
        est = self.ws.load_model(m)
        needed = [c for c in getattr(est, "sensitive", None) or [] if c not in m.features]
        X = frame[[*m.features, *needed]]
        scores = None
        if hasattr(est, "predict_proba"):
            proba = np.asarray(est.predict_proba(X))
            if proba.ndim == 2 and proba.shape[1] == 2:
                scores = proba[:, 1]
        if scores is None:
            scores = np.asarray(est.predict(X))
        cols = [*m.features, *needed]
        numeric = [c for c in cols if frame[c].dtype.kind in "iuf"]
        ref = _Reference(ds.sha256, frame, scores, numeric, [c for c in cols if c not in numeric])
        self._refs[version_ref] = ref
        return ref

    # -- statistics ---------------------------------------------------------------------------

    def _prediction_stats(self, preds: Sequence[Entry], ref: _Reference | None) -> PredictionStats:
        from policies.evidence._drift_stats import category_bins, population_stability, quantile_bins

        labels = [e.payload["label"] for e in preds]
        scores = [e.payload.get("score") for e in preds]
        have_scores = all(isinstance(s, float | int) for s in scores)
        positive = _round(sum(_positive(v) for v in labels) / len(labels))
        mean = _round(float(np.mean(np.asarray(scores, dtype=float)))) if have_scores else None
        if ref is None:
            return PredictionStats(positive_rate=positive, score_mean=mean, reference="none")
        if have_scores and ref.scores.dtype.kind == "f":
            _edges, cr, cc = quantile_bins(np.sort(ref.scores.astype(float)), np.sort(np.asarray(scores, float)), 10)
        else:
            import pandas as pd  # type: ignore[import-untyped]

            _a, _b, cr, cc = category_bins(pd.Series(ref.scores).astype(str).value_counts(),
                                           pd.Series(labels).astype(str).value_counts())  # counts, not values
        return PredictionStats(positive_rate=positive, score_mean=mean, psi=_round(population_stability(cr, cc)),
                               reference="training-data", reference_sha256=ref.sha256)

    def _input_drift(self, preds: Sequence[Entry], ref: _Reference | None) -> InputDrift:
        if ref is None:
            return InputDrift(computed=False, reason="no reference dataset for the served version")
        if not all(e.payload.get("sealed") for e in preds):
            return InputDrift(computed=False, reason="inputs are only commitments on the ledger; serve with "
                                                     "--store-inputs to monitor input drift")
        import pandas as pd

        rows: list[dict[str, Any]] = []
        lost = 0
        for e in preds:
            try:
                raw = self.keys.read_sealed(e.payload["key_id"], bytes.fromhex(e.payload["input_commitment"]))
            except InputError:
                lost += 1  # erased subject: its input is gone, by design
                continue
            rows.append(json.loads(raw))
        if len(rows) < 10:
            return InputDrift(computed=False, reason=f"only {len(rows)} stored inputs are readable "
                                                     f"({lost} erased); at least 10 are needed")
        from policies.evidence._drift import drift_report

        cur = pd.DataFrame.from_records(rows)
        cols = [c for c in [*ref.numeric, *ref.categorical] if c in cur.columns]
        result = drift_report(ref.frame[cols], cur[cols], features=cols,
                              categorical=[c for c in ref.categorical if c in cols])
        psi = {f.name: _round(f.psi) for f in result.features if f.psi is not None}
        return InputDrift(computed=True, rows=len(rows), psi=psi,
                          drifted=sorted(k for k, v in psi.items() if v > self.settings.input_psi))

    def _groups(self, label: Entry, pred: Entry) -> dict[str, str]:
        """A label's group membership: from the erasable store (nothing once the subject is erased)."""
        commitment = label.payload.get("groups_commitment")
        if commitment is None:
            return dict(label.payload.get("groups") or {})
        try:
            raw = self.keys.read_sealed(pred.payload["key_id"], bytes.fromhex(commitment))
        except InputError:
            return {}
        return dict(orjson.loads(raw)["groups"])

    def _label_stats(self, preds: Sequence[Entry], labels: Iterable[Entry]) -> LabelStats:
        by_seq = {e.seq: e.payload["label"] for e in preds}
        preds_by_seq = {e.seq: e for e in preds}
        latest: dict[int, Entry] = {}
        for e in labels:
            if e.payload["prediction_seq"] in by_seq:
                latest[e.payload["prediction_seq"]] = e
        if not latest:
            return LabelStats(count=0)
        hits = [by_seq[s] == e.payload["label"] for s, e in latest.items()]
        groups: dict[str, dict[str, list[tuple[bool, bool]]]] = {}
        for s, e in latest.items():
            for col, g in self._groups(e, preds_by_seq[s]).items():
                groups.setdefault(col, {}).setdefault(g, []).append((_positive(by_seq[s]), by_seq[s] == e.payload[
                    "label"]))
        out: dict[str, dict[str, GroupStats]] = {}
        ratios: dict[str, float] = {}
        for col, members in groups.items():
            out[col] = {g: GroupStats(n=len(v), selection_rate=_round(sum(a for a, _ in v) / len(v)),
                                      accuracy=_round(sum(b for _, b in v) / len(v)))
                        for g, v in sorted(members.items())}
            rates = [gs.selection_rate for gs in out[col].values() if gs.n >= 5]
            if len(rates) >= 2 and max(rates) > 0:
                ratios[col] = _round(min(rates) / max(rates))
        return LabelStats(count=len(latest), accuracy=_round(sum(hits) / len(hits)), groups=out,
                          min_selection_ratio=ratios, through_seq=max(e.seq for e in latest.values()))

    # -- alerts -------------------------------------------------------------------------------

    def thresholds(self) -> dict[str, float]:
        s = self.settings
        out = {"prediction_psi": s.prediction_psi, "input_psi": s.input_psi, "min_labels": float(s.min_labels)}
        for k in ("latency_p95_ms", "latency_p99_ms", "accuracy_min", "selection_ratio_min"):
            v = getattr(s, k)
            if v is not None:
                out[k] = float(v)
        return out

    def _alerts(self, w: MonitorWindow, *, labels_only: bool = False, before: MonitorWindow | None = None
                ) -> list[MonitorAlert]:
        s = self.settings
        found: list[tuple[str, str, float, float, str]] = []  # kind, statistic, value, threshold, detail
        if not labels_only:
            if w.prediction.reference == "none":  # fail closed: drift cannot be measured, say so loudly
                found.append(("monitor-blind", "reference", 0.0, 0.0, "no reference (the served version's training "
                              "data is missing or changed): drift is not measured"))
            if w.prediction.psi is not None and w.prediction.psi > s.prediction_psi:
                found.append(("prediction-drift", "prediction_psi", w.prediction.psi, s.prediction_psi,
                              f"prediction PSI {w.prediction.psi:.3f} > {s.prediction_psi}"))
            if w.input_drift.drifted:
                worst = max(w.input_drift.drifted, key=lambda c: w.input_drift.psi[c])
                found.append(("input-drift", f"psi:{worst}", w.input_drift.psi[worst], s.input_psi,
                              f"input PSI over {s.input_psi} for {', '.join(w.input_drift.drifted)}"))
            for q, limit in (("p95", s.latency_p95_ms), ("p99", s.latency_p99_ms)):
                v = getattr(w.latency_ms, q)
                if limit is not None and v > limit:
                    found.append(("latency", f"latency_{q}_ms", v, limit, f"latency {q} {v:.1f} ms > {limit} ms"))
        lab = w.labels
        if lab.count >= s.min_labels:
            old = before.labels if before is not None else None
            if s.accuracy_min is not None and lab.accuracy is not None and lab.accuracy < s.accuracy_min and not (
                    old is not None and old.count >= s.min_labels and old.accuracy is not None
                    and old.accuracy < s.accuracy_min):
                found.append(("accuracy", "accuracy", lab.accuracy, s.accuracy_min,
                              f"accuracy {lab.accuracy:.3f} < {s.accuracy_min} over {lab.count} labels"))
            if s.selection_ratio_min is not None:
                for col, r in lab.min_selection_ratio.items():
                    was = old.min_selection_ratio.get(col) if old is not None and old.count >= s.min_labels else None
                    if r < s.selection_ratio_min and not (was is not None and was < s.selection_ratio_min):
                        found.append(("fairness", f"selection_ratio:{col}", r, s.selection_ratio_min,
                                      f"selection-rate ratio over {col} {r:.3f} < {s.selection_ratio_min}"))
        span = f"window {w.first_seq}..{w.last_seq} of {self.name}@{self.stage}"
        return [MonitorAlert(kind=k, model=self.name, stage=self.stage, detail=f"{d} ({span})",  # type: ignore[arg-type]
                             source="monitor", statistic=st, value=v, threshold=t, window_last_seq=w.last_seq)
                for k, st, v, t, d in found]

    # -- running ------------------------------------------------------------------------------

    def compute(self, preds: Sequence[Entry], *, revises: int | None = None) -> MonitorWindow:
        """The statistics of one window of ``prediction.made`` entries."""
        versions = sorted({e.payload["model"] for e in preds})
        latency = np.asarray([e.payload["latency_ms"] for e in preds], dtype=float)
        p50, p95, p99 = (float(x) for x in np.percentile(latency, [50, 95, 99]))
        try:
            ref: _Reference | None = self.reference(preds[-1].payload["model"])
        except InputError:
            ref = None
        return MonitorWindow(
            model=self.name, stage=self.stage, versions=versions, first_seq=preds[0].seq, last_seq=preds[-1].seq,
            count=len(preds),
            latency_ms=LatencyStats(p50=_round(p50), p95=_round(p95), p99=_round(p99), max=_round(latency.max())),
            prediction=self._prediction_stats(preds, ref), input_drift=self._input_drift(preds, ref),
            labels=self._label_stats(preds, self._labels(preds[0].seq, preds[-1].seq)),
            thresholds=self.thresholds(), policy_seq=self.policy_seq, revises=revises)

    def _append(self, w: MonitorWindow, alerts: list[MonitorAlert], out: MonitorRun) -> None:
        events = [Event(w, actor=self.actor, subject=f"model:{self.name}"),
                  *(Event(a, actor=self.actor, subject=f"model:{self.name}") for a in alerts)]
        receipts = self.ws.ledger.append_many(events)
        out.windows.append((receipts[0], w))
        out.alerts.extend(zip(receipts[1:], alerts, strict=True))

    def run(self, *, max_windows: int | None = None) -> MonitorRun:
        """Record every full new window, then update earlier windows whose labels arrived late."""
        out = MonitorRun()
        self._label_index = None  # labels may have arrived since the last run
        recorded = self.windows()
        last = max((e.payload["last_seq"] for e in recorded), default=-1)
        pending = self.pending(last)
        while len(pending) >= self.window and (max_windows is None or len(out.windows) < max_windows):
            chunk, pending = pending[:self.window], pending[self.window:]
            w = self.compute(chunk)
            try:
                self._append(w, self._alerts(w), out)
            except InputError as exc:
                if "overlaps the window recorded" not in str(exc) and "is not the latest record" not in str(exc):
                    raise
                out.skipped.append(str(exc))  # another monitor (the server's, a cron job) recorded it first
                return out
        try:
            self._late_labels(recorded, out)
        except InputError as exc:
            if "is not the latest record" not in str(exc):
                raise
            out.skipped.append(str(exc))
        return out

    def _late_labels(self, recorded: list[Entry], out: MonitorRun) -> None:
        latest: dict[tuple[int, int], Entry] = {}
        for e in recorded:
            latest[(e.payload["first_seq"], e.payload["last_seq"])] = e
        for (first, last), e in sorted(latest.items()):
            through = e.payload["labels"].get("through_seq")
            labels = self._labels(first, last)
            if not labels or (through is not None and max(x.seq for x in labels) <= through):
                continue
            preds = self._between(first, last)
            if not preds:
                continue
            before = MonitorWindow.model_validate(e.payload, strict=False)
            stats = self._label_stats(preds, labels)
            if stats.through_seq == through:
                continue
            w = before.model_copy(update={"labels": stats, "revises": e.seq, "thresholds": self.thresholds(),
                                          "policy_seq": self.policy_seq})
            self._append(w, self._alerts(w, labels_only=True, before=before), out)
