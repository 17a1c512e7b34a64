"""Explainability evidence: global permutation importance, the top-k features, and whether a
sensitive attribute or a strong proxy of one is among them.

Invariants:

* Pure: the model is only asked to score; ``model``, ``X``, ``y`` and ``data_with_sensitive`` are
  never modified, and nothing is read or written.
* The importances are exactly ``sklearn.inspection.permutation_importance(model, X, y,
  scoring=scoring, n_repeats=n_repeats, random_state=seed)``: mean and std over the repeats, and
  every repeat kept in the evidence.
* Features are ranked by mean importance, highest first; ties keep the column order of ``X``.
  The top k are the first ``min(top_k, n_features)``.
* A declared sensitive feature that is a model input and in the top k is flagged. Every other
  top-k feature is compared with every sensitive attribute, and flagged as a proxy when the
  association is at least ``proxy_threshold``. Sensitive attributes the model does not take come
  from ``data_with_sensitive`` (same rows, same index as ``X``).
* Association, always in [0, 1]; rows where either value is missing are left out:
  categorical with categorical: bias-corrected Cramér's V (Bergsma 2013);
  numeric with categorical: the correlation ratio eta;
  numeric with numeric: ``|Pearson r|``.
  A column is categorical if its dtype is not numeric, if it is boolean, or if it is listed in
  ``categorical``. An association that is undefined (a constant column, too few rows) is None:
  it is not a flag, and ``summary()["unassessed"]`` lists the pair so a gate can fail closed.
* ``DEFAULT_PROXY_THRESHOLD`` = 0.5 is Cohen's "large" effect size for both ``r`` and ``w``
  (Cohen 1988, "Statistical Power Analysis for the Behavioral Sciences"; for a
  binary attribute Cramér's V equals ``w``): the feature shares at least a quarter of its
  variance with the attribute (r^2 = 0.25). For eta it is stricter than Cohen's large ``f`` = 0.4
  (eta 0.37).
* SHAP values are an optional extra: mean ``|SHAP|`` per feature when ``shap_values=True`` and the
  ``shap`` package is installed; otherwise one InputError says how to install it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs installed
import scipy  # type: ignore[import-untyped]  # no scipy-stubs installed
import sklearn  # type: ignore[import-untyped]
from scipy import stats
from sklearn.exceptions import NotFittedError  # type: ignore[import-untyped]
from sklearn.inspection import permutation_importance  # type: ignore[import-untyped]
from sklearn.metrics import get_scorer  # type: ignore[import-untyped]
from sklearn.utils.validation import check_is_fitted  # type: ignore[import-untyped]

from ledger.errors import InputError

from ._common import EvidenceResult, Strict, find

__all__ = [
    "DEFAULT_PROXY_THRESHOLD",
    "ExplainResult",
    "FeatureImportance",
    "ProxyAssociation",
    "correlation_ratio",
    "cramers_v",
    "explain_report",
]

TOOL: Final = "mlledger.explainability"
DEFAULT_PROXY_THRESHOLD: Final = 0.5
SHAP_INSTALL: Final = "SHAP values need the optional 'shap' package: pip install 'mlledger[shap]'"

Measure = Literal["cramers_v", "correlation_ratio", "abs_pearson_r"]


class FeatureImportance(Strict):
    """Permutation importance of one feature: the drop in score when it is shuffled."""

    feature: str
    rank: int
    """1 is the most important."""
    importance_mean: float
    importance_std: float
    importances: tuple[float, ...]
    """One value per repeat."""


class ProxyAssociation(Strict):
    """How strongly a top-k feature goes with one sensitive attribute."""

    feature: str
    sensitive: str
    measure: Measure
    value: float | None
    """In [0, 1]; None when undefined (a constant column, too few rows)."""
    n: int
    """Rows with both values present."""
    proxy: bool
    """``value >= proxy_threshold``."""


class ExplainResult(EvidenceResult):
    """Explainability evidence: ``to_json()`` is all of it, ``summary()`` what a gate reads."""

    tool: str = TOOL
    seed: int
    n_rows: int
    importances: tuple[FeatureImportance, ...]
    """Every feature, ranked."""
    top_k: tuple[str, ...]
    sensitive_in_top_k: tuple[str, ...]
    associations: tuple[ProxyAssociation, ...]
    """Each top-k feature that is not itself sensitive, against each sensitive attribute."""
    shap_mean_abs: dict[str, float] | None
    flagged: bool
    """A sensitive feature or a proxy of one is among the top k."""

    @property
    def proxies_in_top_k(self) -> tuple[ProxyAssociation, ...]:
        return tuple(a for a in self.associations if a.proxy)

    def importance(self, feature: str) -> FeatureImportance:
        return find(self.importances, feature, lambda f: f.feature)

    def summary(self) -> dict[str, Any]:
        return {
            "top_k": list(self.top_k),
            "importance": {f.feature: f.importance_mean for f in self.importances if f.feature in self.top_k},
            "sensitive_in_top_k": list(self.sensitive_in_top_k),
            "proxies_in_top_k": [
                {"feature": a.feature, "sensitive": a.sensitive, "measure": a.measure, "value": a.value}
                for a in self.proxies_in_top_k
            ],
            "unassessed": [[a.feature, a.sensitive] for a in self.associations if a.value is None],
            "proxy_threshold": self.config["proxy_threshold"],
            "flagged": self.flagged,
        }


def explain_report(
    model: Any,
    X: pd.DataFrame,
    y: npt.ArrayLike | pd.Series,
    *,
    sensitive_features: Sequence[str] = (),
    top_k: int = 5,
    n_repeats: int = 10,
    seed: int = 0,
    scoring: str | None = None,
    proxy_threshold: float = DEFAULT_PROXY_THRESHOLD,
    data_with_sensitive: pd.DataFrame | None = None,
    categorical: Sequence[str] = (),
    shap_values: bool = False,
) -> ExplainResult:
    """Rank ``model``'s features on ``(X, y)`` and flag sensitive attributes and proxies in the top k.

    ``scoring`` is a scikit-learn scorer name; None uses the model's own ``score``.
    ``categorical`` names numeric-coded columns (of ``X`` or ``data_with_sensitive``) that hold
    categories, such as a race code 0/1/2.
    """
    if not isinstance(X, pd.DataFrame):
        raise TypeError("X must be a pandas DataFrame (the evidence names features by column)")

    # (1) Check the options and the inputs.
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k must be an integer >= 1, got {top_k!r}")
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, int) or n_repeats < 1:
        raise InputError(f"n_repeats must be an integer >= 1, got {n_repeats!r}")
    if not 0 < proxy_threshold <= 1:
        raise InputError(f"proxy_threshold must be in (0, 1], got {proxy_threshold!r}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"X is empty ({X.shape[0]} rows, {X.shape[1]} columns)")
    if X.columns.has_duplicates:
        raise InputError(f"X has duplicate columns {X.columns[X.columns.duplicated()].tolist()}")
    y_arr = np.asarray(y)
    if y_arr.ndim != 1 or len(y_arr) != len(X):
        raise InputError(f"y must be one value per row of X: X has {len(X)} rows, y has shape {y_arr.shape}")
    if scoring is not None:
        try:
            get_scorer(scoring)
        except ValueError as e:
            raise InputError(f"unknown scoring {scoring!r}: {e}") from e
    try:
        check_is_fitted(model)
    except NotFittedError as e:
        raise InputError(f"model {type(model).__name__} is not fitted") from e
    sensitive = list(dict.fromkeys(sensitive_features))
    columns = _sensitive_columns(X, sensitive, data_with_sensitive)
    shap = _import_shap() if shap_values else None

    # (2) Permutation importance, exactly as scikit-learn computes it.
    pi = permutation_importance(model, X, y, scoring=scoring, n_repeats=n_repeats, random_state=seed)
    names = [str(c) for c in X.columns]
    for name, raw in zip(names, pi.importances, strict=True):
        if not np.isfinite(raw).all():
            raise InputError(f"scoring gave a non-finite importance for feature {name!r}")

    # (3) Rank; the top k.
    order = np.argsort(-pi.importances_mean, kind="stable")
    ranked = tuple(
        FeatureImportance(
            feature=names[i], rank=r, importance_mean=float(pi.importances_mean[i]),
            importance_std=float(pi.importances_std[i]), importances=tuple(pi.importances[i].tolist()),
        )
        for r, i in enumerate(order, start=1)
    )
    top = tuple(f.feature for f in ranked[:top_k])

    # (4) Sensitive features among the top k, and proxies of them.
    sensitive_top = tuple(f for f in top if f in sensitive)
    cats = set(categorical)
    associations = []
    for feature in top:
        if feature in sensitive:
            continue
        for s in sensitive:
            measure, value, n = _association(X[_column(X, feature)], columns[s],
                                            a_categorical=feature in cats, b_categorical=s in cats)
            associations.append(ProxyAssociation(
                feature=feature, sensitive=s, measure=measure, value=value, n=n,
                proxy=value is not None and value >= proxy_threshold,
            ))

    # (5) Optional SHAP values.
    shap_mean = None if shap is None else _shap_mean_abs(shap, model, X, seed)

    config: dict[str, Any] = {
        "estimator": f"{type(model).__module__}.{type(model).__qualname__}",
        "scoring": scoring if scoring is not None else "estimator.score",
        "n_repeats": n_repeats,
        "top_k": top_k,
        "sensitive_features": sensitive,
        "categorical": sorted(cats),
        "proxy_threshold": proxy_threshold,
        "association": {"categorical-categorical": "cramers_v (bias-corrected, Bergsma 2013)",
                        "numeric-categorical": "correlation_ratio", "numeric-numeric": "abs_pearson_r"},
        "shap_values": shap_values,
    }
    libraries = {"numpy": np.__version__, "pandas": pd.__version__, "scipy": scipy.__version__,
                 "sklearn": sklearn.__version__}
    if shap is not None:
        libraries["shap"] = str(shap.__version__)
    return ExplainResult(
        libraries=libraries, config=config, seed=seed, n_rows=len(X), importances=ranked, top_k=top,
        sensitive_in_top_k=sensitive_top, associations=tuple(associations), shap_mean_abs=shap_mean,
        flagged=bool(sensitive_top) or any(a.proxy for a in associations),
    )


def _association(
    a: pd.Series, b: pd.Series, *, a_categorical: bool = False, b_categorical: bool = False
) -> tuple[Measure, float | None, int]:
    """The association measure for the two columns' types, its value and the rows it used."""
    a_cat = a_categorical or _is_categorical(a)
    b_cat = b_categorical or _is_categorical(b)
    keep = (a.notna() & b.notna()).to_numpy()
    a, b = a[keep], b[keep]
    n = int(keep.sum())
    if a_cat and b_cat:
        return "cramers_v", cramers_v(a, b), n
    if a_cat or b_cat:
        cat, num = (a, b) if a_cat else (b, a)
        return "correlation_ratio", correlation_ratio(cat, num.to_numpy(dtype=np.float64)), n
    x, y = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
    return "abs_pearson_r", _abs_pearson(x, y), n


def cramers_v(a: npt.ArrayLike | pd.Series, b: npt.ArrayLike | pd.Series) -> float | None:
    """Bias-corrected Cramér's V of two categorical columns without missing values.

    Bergsma (2013), "A bias-correction for Cramér's V and Tschuprow's T", J. Korean Stat. Soc.
    42(3): 323-328. With chi2 the Pearson statistic (no continuity correction), n rows, an r x k
    table: phi2+ = max(0, chi2/n - (k-1)(r-1)/(n-1)), r~ = r - (r-1)^2/(n-1),
    k~ = k - (k-1)^2/(n-1), V = sqrt(phi2+ / min(k~-1, r~-1)). None when a column is constant.
    """
    ca, ua = pd.factorize(pd.Series(a), use_na_sentinel=False)
    cb, ub = pd.factorize(pd.Series(b), use_na_sentinel=False)
    r, k, n = len(ua), len(ub), len(ca)
    if r < 2 or k < 2 or n < 2:
        return None
    table = np.bincount(ca * k + cb, minlength=r * k).reshape(r, k)
    chi2 = float(stats.chi2_contingency(table, correction=False).statistic)
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    r_c = r - (r - 1) ** 2 / (n - 1)
    k_c = k - (k - 1) ** 2 / (n - 1)
    den = min(k_c - 1, r_c - 1)
    if den <= 0:
        return None
    return min(1.0, math.sqrt(phi2 / den))


def correlation_ratio(categories: npt.ArrayLike | pd.Series, values: npt.ArrayLike) -> float | None:
    """Correlation ratio eta = sqrt(SS_between / SS_total) of numeric values grouped by category.

    None when the values are constant. Inputs must have no missing values.
    """
    codes, uniques = pd.factorize(pd.Series(categories), use_na_sentinel=False)
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return None
    grand = x.mean()
    ss_total = float(np.sum((x - grand) ** 2))
    if ss_total == 0:
        return None
    counts = np.bincount(codes, minlength=len(uniques))
    means = np.bincount(codes, weights=x, minlength=len(uniques)) / counts
    ss_between = float(np.sum(counts * (means - grand) ** 2))
    return min(1.0, math.sqrt(ss_between / ss_total))


def _abs_pearson(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float | None:
    if x.size < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy)))
    if den == 0:
        return None
    return min(1.0, abs(float(np.dot(dx, dy))) / den)


def _is_categorical(s: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)


def _column(df: pd.DataFrame, name: str) -> Any:
    """The column label of ``df`` whose ``str`` is ``name`` (labels need not be strings)."""
    for c in df.columns:
        if str(c) == name:
            return c
    raise KeyError(name)  # pragma: no cover - names come from df.columns


def _sensitive_columns(
    X: pd.DataFrame, sensitive: list[str], data: pd.DataFrame | None
) -> dict[str, pd.Series]:
    if data is not None:
        if not isinstance(data, pd.DataFrame):
            raise TypeError("data_with_sensitive must be a pandas DataFrame")
        if not data.index.equals(X.index):
            raise InputError(
                f"data_with_sensitive must hold the same rows as X with the same index "
                f"({len(data)} rows vs {len(X)}); align them, or reset both indexes"
            )
    out: dict[str, pd.Series] = {}
    for s in sensitive:
        if s in X.columns:
            out[s] = X[s]
        elif data is not None and s in data.columns:
            out[s] = data[s]
        else:
            where = "X or data_with_sensitive" if data is not None else "X (pass data_with_sensitive=)"
            raise InputError(f"sensitive feature {s!r} is not a column of {where}")
    return out


def _import_shap() -> Any:
    try:
        return importlib.import_module("shap")
    except ImportError as e:
        raise InputError(SHAP_INSTALL) from e


def _shap_mean_abs(shap: Any, model: Any, X: pd.DataFrame, seed: int) -> dict[str, float]:
    """Mean |SHAP value| per feature over the rows of X (and over outputs for multi-output models)."""
    predict = getattr(model, "predict_proba", None) or model.predict
    explanation = shap.Explainer(predict, X, seed=seed)(X)
    values = np.abs(np.asarray(explanation.values, dtype=np.float64)).mean(axis=0)
    if values.ndim > 1:
        values = values.mean(axis=tuple(range(1, values.ndim)))
    return {str(c): float(v) for c, v in zip(X.columns, values, strict=True)}
