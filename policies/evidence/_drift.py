"""Data and prediction drift: a reference sample against a current one, feature by feature.

Invariants:

* Pure. Frames and arrays in, a frozen :class:`DriftResult` out; no I/O, inputs never modified.
* Every number in the result is finite or ``None``. Missing values (NaN, None, pd.NA) are counted
  per feature and excluded; a feature with no value left on a side gets status ``"no_data"``.
* PSI and Jensen-Shannon use the same bins. Numeric bins are cut at the reference quantiles
  ``1/bins, ..., (bins-1)/bins`` (linear interpolation, duplicates merged), with open outer bins,
  so bin ``i`` is ``(e[i-1], e[i]]`` and every value lands in a bin. Categorical bins are the
  reference categories plus one last "unseen" bucket pooling every current category the reference
  never had (listed in ``unseen_categories``).
* PSI replaces an empty bin's share by ``PSI_EPSILON`` = 1e-4 on that side only, without
  renormalising. This is the value Evidently fills empty bins with (``get_binned_data``).
* The KS, chi-square, Jensen-Shannon and Wasserstein values equal scipy's on the same inputs:
  ``ks_2samp`` (method "auto"), ``chi2_contingency`` on the 2 x k table of non-empty bins (scipy's
  defaults, so Yates' correction when k == 2), ``jensenshannon(base=2)`` on the bin shares, and
  ``wasserstein_distance``. Above ``KS_EXACT_MAX`` values per side the KS statistic and the
  Wasserstein distance are computed here from one merged sort (scipy's formulas, several times
  faster), and the p-value comes from ``scipy.stats.kstwo`` exactly as ``ks_2samp`` takes it.
* Which statistic decides (see :class:`DriftThresholds`): a feature **drifts** if any deciding
  statistic says so -- numeric: KS p-value or PSI; categorical: chi-square p-value or PSI. It
  **warns** if it does not drift but PSI or the JS distance passes its warning level. The
  Wasserstein distance is reported, never deciding.
* The dataset drifts when the share of drifted features is at least ``drift_share``. Fail
  closed: a ``"no_data"`` feature counts as drifted, because it cannot be shown not to have.
  Prediction drift is reported beside the features and does not enter the share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal, Self

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs installed
import scipy  # type: ignore[import-untyped]  # no scipy-stubs installed
from pydantic import Field, model_validator
from scipy import stats

from ledger.errors import InputError

from ._common import EvidenceResult, Strict, find
from ._drift_stats import (
    KS_EXACT_MAX,
    PSI_EPSILON,
    category_bins,
    js_distance,
    ks_wasserstein,
    population_stability,
    quantile_bins,
)

__all__ = [
    "PSI_EPSILON",
    "CategoricalDrift",
    "DriftResult",
    "DriftThresholds",
    "NumericDrift",
    "drift_report",
]

TOOL: Final = "mlledger.drift"

Status = Literal["ok", "warn", "drift", "no_data"]
FloatArray = npt.NDArray[np.float64]


class DriftThresholds(Strict):
    """When a feature warns or drifts, and when the whole dataset drifts."""

    psi_warn: float = Field(default=0.1, gt=0)
    """PSI at or above this warns: below 0.1 a population is stable (Siddiqi 2006, "Credit Risk
    Scorecards"; also Evidently's PSI default)."""
    psi_drift: float = Field(default=0.2, gt=0)
    """PSI at or above this drifts: the industry rule of thumb (0.1 / 0.2). Siddiqi (2006) puts
    the "significant shift" line at 0.25; 0.2 is the stricter, more common cut-off."""
    ks_pvalue: float | None = Field(default=0.05, gt=0, lt=1)
    """Numeric: a two-sample KS p-value below this drifts (Evidently's default for samples of up to
    1000 values). ``None`` reports the test without letting it decide: on large samples KS flags
    shifts too small to matter."""
    chi2_pvalue: float | None = Field(default=0.05, gt=0, lt=1)
    """Categorical: a chi-square p-value below this drifts (Evidently's default for its chi-square
    test). ``None`` reports without deciding."""
    js_warn: float = Field(default=0.1, gt=0, le=1)
    """A Jensen-Shannon distance (base 2, in [0, 1]) at or above this warns (Evidently's default
    threshold for ``jensenshannon``)."""
    drift_share: float = Field(default=0.5, gt=0, le=1)
    """The dataset drifts when at least this share of features drift (Evidently's
    DatasetDriftMetric default, compared with >=)."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.psi_warn > self.psi_drift:
            raise ValueError(f"psi_warn {self.psi_warn} must not exceed psi_drift {self.psi_drift}")
        return self


class _FeatureDrift(Strict):
    name: str
    status: Status
    reasons: tuple[str, ...]
    """Why the status is what it is, one statement per deciding value."""
    n_reference: int
    """Non-missing reference values used."""
    n_current: int
    missing_reference: int
    missing_current: int
    counts_reference: tuple[int, ...]
    """Values per bin, the bins PSI and JS use."""
    counts_current: tuple[int, ...]
    psi: float | None
    js_distance: float | None


class NumericDrift(_FeatureDrift):
    """Drift of one numeric feature. Bin ``i`` is ``(bin_edges[i-1], bin_edges[i]]``, open outside."""

    kind: Literal["numeric"] = "numeric"
    bin_edges: tuple[float, ...]
    ks_statistic: float | None
    ks_pvalue: float | None
    wasserstein: float | None
    wasserstein_normed: float | None
    """Wasserstein distance over the reference population std (ddof=0); None if that std is 0."""
    reference_std: float | None


class CategoricalDrift(_FeatureDrift):
    """Drift of one categorical feature. Bins: ``categories`` in order, then the unseen bucket."""

    kind: Literal["categorical"] = "categorical"
    categories: tuple[str, ...]
    """Reference categories (as ``str``), sorted; one bin each."""
    unseen_categories: tuple[str, ...]
    """Current categories absent from the reference, pooled in the last bin."""
    chi2_statistic: float | None
    chi2_pvalue: float | None
    chi2_dof: int | None


FeatureDrift = Annotated[NumericDrift | CategoricalDrift, Field(discriminator="kind")]


class DriftResult(EvidenceResult):
    """Drift evidence: ``to_json()`` is all of it, ``summary()`` what a gate reads."""

    tool: str = TOOL
    n_reference: int
    n_current: int
    features: tuple[FeatureDrift, ...]
    prediction: FeatureDrift | None
    n_drifted: int
    """Features with status "drift" or "no_data"."""
    drifted_share: float
    dataset_drift: bool

    def feature(self, name: str) -> NumericDrift | CategoricalDrift:
        return find(self.features, name, lambda f: f.name)

    def summary(self) -> dict[str, Any]:
        psis = [f.psi for f in self.features if f.psi is not None]
        return {
            "dataset_drift": self.dataset_drift,
            "drifted_share": self.drifted_share,
            "drift_share_threshold": self.config["thresholds"]["drift_share"],
            "n_features": len(self.features),
            "n_drifted": self.n_drifted,
            "drifted_features": [f.name for f in self.features if f.status == "drift"],
            "warned_features": [f.name for f in self.features if f.status == "warn"],
            "no_data_features": [f.name for f in self.features if f.status == "no_data"],
            "max_psi": max(psis) if psis else None,
            "prediction_status": None if self.prediction is None else self.prediction.status,
            "prediction_psi": None if self.prediction is None else self.prediction.psi,
            # Per feature, the values a gate rule on one feature reads (None where a statistic
            # does not apply to the feature's type).
            "features": {
                f.name: {
                    "status": f.status, "psi": f.psi, "js": f.js_distance,
                    "ks_p": f.ks_pvalue if isinstance(f, NumericDrift) else None,
                    "chi2_p": f.chi2_pvalue if isinstance(f, CategoricalDrift) else None,
                }
                for f in self.features
            },
        }


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    thresholds: DriftThresholds = DriftThresholds(),  # noqa: B008 - frozen, so safe to share
    bins: int = 10,
    reference_predictions: npt.ArrayLike | pd.Series | None = None,
    current_predictions: npt.ArrayLike | pd.Series | None = None,
    prediction_kind: Literal["auto", "numeric", "categorical"] = "auto",
) -> DriftResult:
    """Compare ``current`` with ``reference`` per feature, and the predictions if given.

    ``features`` defaults to every column, and then both frames must have the same columns.
    Features not listed in ``categorical`` are numeric and must have a numeric dtype.
    ``prediction_kind="auto"`` treats float predictions as numeric (scores, regression) and
    anything else (labels) as categorical.
    """
    if not isinstance(reference, pd.DataFrame) or not isinstance(current, pd.DataFrame):
        raise TypeError("reference and current must be pandas DataFrames")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise InputError(f"bins must be an integer >= 2, got {bins!r}")
    if prediction_kind not in ("auto", "numeric", "categorical"):
        raise InputError(
            f"prediction_kind must be 'auto', 'numeric' or 'categorical', got {prediction_kind!r}"
        )

    # (1) Resolve the features, check both frames hold them with usable types, and the predictions.
    names = _features(reference, current, features)
    cats = list(categorical or ())
    for c in cats:
        if c not in names:
            raise InputError(f"categorical feature {c!r} is not among the compared features {names}")
    for side, df in (("reference", reference), ("current", current)):
        if len(df) == 0:
            raise InputError(f"{side} has no rows")
        for name in names:
            if name not in cats:
                _check_numeric(df[name], f"column {name!r} in {side}")
    preds = _predictions(reference_predictions, current_predictions, prediction_kind)

    # (2)-(5) Per feature: missing values, bins, statistics, status.
    results = [
        _categorical(str(name), reference[name], current[name], thresholds) if name in cats
        else _numeric(str(name), _floats(reference[name], f"column {name!r} in reference"),
                      _floats(current[name], f"column {name!r} in current"), thresholds, bins)
        for name in names
    ]

    # (6) Dataset drift: the share of drifted (or unassessable) features.
    n_drifted = sum(f.status in ("drift", "no_data") for f in results)
    share = n_drifted / len(results)

    # (7) Prediction drift, beside the features.
    prediction: NumericDrift | CategoricalDrift | None = None
    kind: str | None = None
    if preds is not None:
        r, c, kind = preds
        prediction = (
            _categorical("prediction", r, c, thresholds) if kind == "categorical"
            else _numeric("prediction", _floats(r, "reference_predictions"),
                          _floats(c, "current_predictions"), thresholds, bins)
        )

    config: dict[str, Any] = {
        "features": names,
        "categorical": [n for n in names if n in cats],
        "bins": bins,
        "bin_edges": "reference quantiles k/bins (numpy 'linear'), duplicates merged, open outer bins",
        "psi_epsilon": PSI_EPSILON,
        "js_base": 2,
        "ks_method": f"scipy ks_2samp 'auto' (exact when both sides <= {KS_EXACT_MAX} values)",
        "chi2": "scipy chi2_contingency defaults on the 2 x k table of non-empty bins",
        "wasserstein_norm": "reference population std (ddof=0)",
        "prediction_kind": kind,
        "thresholds": thresholds.model_dump(mode="json"),
    }
    return DriftResult(
        libraries={"numpy": np.__version__, "pandas": pd.__version__, "scipy": scipy.__version__},
        config=config,
        n_reference=len(reference),
        n_current=len(current),
        features=tuple(results),
        prediction=prediction,
        n_drifted=n_drifted,
        drifted_share=share,
        dataset_drift=share >= thresholds.drift_share,
    )


def _features(reference: pd.DataFrame, current: pd.DataFrame, features: Sequence[str] | None) -> list[str]:
    for side, df in (("reference", reference), ("current", current)):
        dup = df.columns[df.columns.duplicated()].tolist()
        if dup:
            raise InputError(f"{side} has duplicate columns {dup}")
    ref_cols, cur_cols = list(reference.columns), list(current.columns)
    if features is None:
        only_ref = [c for c in ref_cols if c not in set(cur_cols)]
        only_cur = [c for c in cur_cols if c not in set(ref_cols)]
        if only_ref or only_cur:
            raise InputError(
                "reference and current have different columns: "
                f"missing from current: {only_ref}; missing from reference: {only_cur} "
                "(pass features= to compare a subset)"
            )
        names = ref_cols
    else:
        if isinstance(features, str):
            raise TypeError("features must be a sequence of column names, not a string")
        names = list(features)
        dup = sorted({f for f in names if names.count(f) > 1})
        if dup:
            raise InputError(f"features lists {dup} more than once")
        for side, cols in (("reference", ref_cols), ("current", cur_cols)):
            missing = [f for f in names if f not in set(cols)]
            if missing:
                raise InputError(f"requested features {missing} are not columns of {side}")
    if not names:
        raise InputError("no features to compare")
    return names


def _check_numeric(s: pd.Series, where: str) -> None:
    if not pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_complex_dtype(s.dtype):
        raise InputError(
            f"{where} is declared numeric but has dtype {s.dtype}; "
            "list it in categorical= if it holds categories"
        )


def _floats(s: pd.Series, where: str) -> FloatArray:
    """A numeric column as float64, missing values as NaN; infinities are refused."""
    a: FloatArray = s.to_numpy(dtype=np.float64, na_value=np.nan)
    inf = np.isinf(a)
    if inf.any():
        raise InputError(f"{where} holds {int(inf.sum())} infinite values; drift needs finite numbers")
    return a


def _numeric(name: str, ref: FloatArray, cur: FloatArray, th: DriftThresholds, bins: int) -> NumericDrift:
    # (2) Count and drop missing values.
    r, miss_r = _dropna(ref)
    c, miss_c = _dropna(cur)
    base: dict[str, Any] = {
        "name": name, "n_reference": r.size, "n_current": c.size,
        "missing_reference": miss_r, "missing_current": miss_c,
    }
    if r.size == 0 or c.size == 0:
        return NumericDrift(**base, **_no_data(r.size, c.size), bin_edges=(), ks_statistic=None,
                            ks_pvalue=None, wasserstein=None, wasserstein_normed=None, reference_std=None)

    # (3) Sort once per side; bins from the reference quantiles; KS and Wasserstein.
    sr, sc = np.sort(r), np.sort(c)
    edges, cr, cc = quantile_bins(sr, sc, bins)
    d, p, w = ks_wasserstein(sr, sc)
    std = None if sr[0] == sr[-1] else float(np.std(sr))
    psi, js = population_stability(cr, cc), js_distance(cr, cc)

    # (5) Status.
    status, reasons = _status(psi, js, "ks_pvalue", p, th.ks_pvalue, th)
    return NumericDrift(
        **base, status=status, reasons=reasons,
        counts_reference=tuple(cr.tolist()), counts_current=tuple(cc.tolist()), psi=psi, js_distance=js,
        bin_edges=tuple(edges.tolist()), ks_statistic=d, ks_pvalue=p, wasserstein=w,
        wasserstein_normed=None if std is None else w / std, reference_std=std,
    )


def _dropna(a: FloatArray) -> tuple[FloatArray, int]:
    nan = np.isnan(a)
    n = int(nan.sum())
    return (a[~nan] if n else a), n


def _categorical(name: str, ref: pd.Series, cur: pd.Series, th: DriftThresholds) -> CategoricalDrift:
    # (2) Count and drop missing values.
    miss_r, miss_c = int(ref.isna().sum()), int(cur.isna().sum())
    vr = ref.value_counts(dropna=True, sort=False)
    vc = cur.value_counts(dropna=True, sort=False)
    vr, vc = vr[vr > 0], vc[vc > 0]
    n_r, n_c = int(vr.sum()), int(vc.sum())
    base: dict[str, Any] = {
        "name": name, "n_reference": n_r, "n_current": n_c,
        "missing_reference": miss_r, "missing_current": miss_c,
    }
    if n_r == 0 or n_c == 0:
        return CategoricalDrift(**base, **_no_data(n_r, n_c), categories=(), unseen_categories=(),
                                chi2_statistic=None, chi2_pvalue=None, chi2_dof=None)

    # (4) Reference categories, one bin each, then the unseen bucket.
    categories, unseen, cr, cc = category_bins(vr, vc)
    table = np.vstack((cr, cc))
    chi2 = stats.chi2_contingency(table[:, table.sum(axis=0) > 0])
    p = float(chi2.pvalue)
    psi, js = population_stability(cr, cc), js_distance(cr, cc)

    # (5) Status.
    status, reasons = _status(psi, js, "chi2_pvalue", p, th.chi2_pvalue, th)
    return CategoricalDrift(
        **base, status=status, reasons=reasons,
        counts_reference=tuple(cr.tolist()), counts_current=tuple(cc.tolist()), psi=psi, js_distance=js,
        categories=categories, unseen_categories=unseen,
        chi2_statistic=float(chi2.statistic), chi2_pvalue=p, chi2_dof=int(chi2.dof),
    )


def _no_data(n_r: int, n_c: int) -> dict[str, Any]:
    sides = [s for s, n in (("reference", n_r), ("current", n_c)) if n == 0]
    return {
        "status": "no_data", "reasons": (f"no non-missing values in {' and '.join(sides)}",),
        "counts_reference": (), "counts_current": (), "psi": None, "js_distance": None,
    }


def _status(
    psi: float, js: float, test: str, p: float, p_threshold: float | None, th: DriftThresholds
) -> tuple[Status, tuple[str, ...]]:
    drift: list[str] = []
    warn: list[str] = []
    if p_threshold is not None and p < p_threshold:
        drift.append(f"{test} {p:.3g} < {p_threshold}")
    if psi >= th.psi_drift:
        drift.append(f"psi {psi:.4g} >= {th.psi_drift}")
    elif psi >= th.psi_warn:
        warn.append(f"psi {psi:.4g} >= {th.psi_warn}")
    if js >= th.js_warn:
        warn.append(f"js_distance {js:.4g} >= {th.js_warn}")
    status: Status = "drift" if drift else "warn" if warn else "ok"
    return status, tuple(drift + warn)


def _predictions(
    ref: npt.ArrayLike | pd.Series | None,
    cur: npt.ArrayLike | pd.Series | None,
    kind: Literal["auto", "numeric", "categorical"],
) -> tuple[pd.Series, pd.Series, Literal["numeric", "categorical"]] | None:
    if ref is None and cur is None:
        return None
    if ref is None or cur is None:
        raise InputError("give both reference_predictions and current_predictions, or neither")
    series: list[pd.Series] = []
    for side, v in (("reference_predictions", ref), ("current_predictions", cur)):
        s = v.reset_index(drop=True) if isinstance(v, pd.Series) else pd.Series(_one_d(v, side))
        if len(s) == 0:
            raise InputError(f"{side} is empty")
        series.append(s)
    r, c = series
    if kind == "auto":
        kind = "numeric" if all(pd.api.types.is_float_dtype(s.dtype) for s in (r, c)) else "categorical"
    if kind == "numeric":
        _check_numeric(r, "reference_predictions")
        _check_numeric(c, "current_predictions")
    return r, c, kind


def _one_d(v: npt.ArrayLike, side: str) -> npt.NDArray[Any]:
    a = np.asarray(v)
    if a.ndim != 1:
        raise InputError(f"{side} must be one-dimensional, got shape {a.shape} (for scores pass one column)")
    return a
