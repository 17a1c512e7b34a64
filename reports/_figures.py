"""Which charts a report shows, drawn from its data (names are what the templates look up)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from reports import _charts

__all__ = ["charts_for"]

FOUR_FIFTHS = 0.8


def _fairness(out: dict[str, str], e: dict[str, Any]) -> None:
    for g in e.get("groupings", []):
        rows = [r for r in g["groups"] if r["label"] != "unknown"]
        if rows:
            out[f"fair-{e['seq']}-{g['name']}"] = _charts.bars(
                [r["label"] for r in rows], [r["impact_ratio"] for r in rows],
                xlabel="impact ratio (selection rate ÷ highest group's selection rate, unitless)",
                title=f"Impact ratio by {g['name']} (evidence #{e['seq']}); hatched bars are below 0.8",
                lines=[(FOUR_FIFTHS, "four-fifths line 0.8")], flag_below=FOUR_FIFTHS)


def _model(data: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = defaultdict(str)
    out["lineage"] = _charts.lineage(data["lineage"])
    for e in data["evidence"]:
        if e["type"] == "fairness":
            _fairness(out, e)
        elif e["type"] == "drift":
            feats = [f for f in e["drift"]["features"] if f["psi"] is not None]
            if feats:
                out[f"drift-{e['seq']}"] = _charts.bars(
                    [f["feature"] for f in feats], [f["psi"] for f in feats],
                    xlabel="population stability index (PSI, unitless)",
                    title=f"Drift per feature (evidence #{e['seq']})",
                    lines=[(0.1, "0.1 warn"), (0.2, "0.2 block")])
        elif e["type"] == "explainability":
            imp = e["explain"]["importance"]
            if imp:
                out[f"explain-{e['seq']}"] = _charts.bars(
                    [i["feature"] for i in imp], [i["mean"] for i in imp], errors=[i["std"] for i in imp],
                    xlabel="permutation importance (mean drop in score, score units; bars ± 1 s.d.)",
                    title=f"Global feature importance (evidence #{e['seq']})")
    per_day = data["operations"]["predictions"]["per_day"]
    if per_day:
        out["volume"] = _charts.volume([(d, c) for d, c in per_day], title="Predictions recorded per day",
                                       ylabel="predictions per day (count)")
    return out


def _bias(data: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = defaultdict(str)
    audit = data["audit"]
    if audit is not None:
        _fairness(out, {"seq": audit["seq"], "groupings": audit["groupings"]})
    return out


def _ledger(data: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = defaultdict(str)
    kinds = data["events"]["by_kind"]
    if kinds:
        out["kinds"] = _charts.bars([k for k, _ in kinds], [float(v) for _, v in kinds],
                                    xlabel="entries (count)", title="Entries by kind",
                                    value_format="{:,.0f}")
    if data["events"]["per_day"]:
        out["per_day"] = _charts.volume(data["events"]["per_day"], title="Entries appended per day",
                                        ylabel="entries per day (count)")
    return out


def charts_for(data: dict[str, Any]) -> dict[str, str]:
    return {"model": _model, "bias-audit": _bias, "ledger": _ledger}[data["report"]](data)
