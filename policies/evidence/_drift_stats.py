"""The statistics behind drift: the bins PSI and Jensen-Shannon share (reference quantiles, or
reference categories plus an unseen bucket), PSI, the Jensen-Shannon distance, and the KS
statistic with the Wasserstein distance, from one merged sort on large samples.

Pure functions over numpy arrays; the conventions they follow (bin edges, ``PSI_EPSILON``, scipy
equivalence) are stated in ``policies.evidence._drift``.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs installed
from scipy import stats  # type: ignore[import-untyped]  # no scipy-stubs installed
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped]

__all__ = [
    "KS_EXACT_MAX",
    "PSI_EPSILON",
    "category_bins",
    "js_distance",
    "ks_wasserstein",
    "ks_wasserstein_sorted",
    "population_stability",
    "quantile_bins",
]

PSI_EPSILON: Final = 1e-4
"""Share given to an empty bin in PSI; Evidently's ``get_binned_data`` uses the same 0.0001."""

KS_EXACT_MAX: Final = 10_000
"""scipy's ``ks_2samp`` ``MAX_AUTO_N``: method "auto" is exact up to this many values per side."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def quantile_bins(sr: FloatArray, sc: FloatArray, bins: int) -> tuple[FloatArray, IntArray, IntArray]:
    """Edges at the reference quantiles ``1/bins, ..., (bins-1)/bins`` (duplicates merged) and the
    values per bin of each sorted side."""
    edges = np.unique(_quantiles_sorted(sr, np.arange(1, bins) / bins))
    return edges, _bin_counts(sr, edges), _bin_counts(sc, edges)


def category_bins(vr: pd.Series, vc: pd.Series) -> tuple[tuple[str, ...], tuple[str, ...], IntArray, IntArray]:
    """From the (positive) value counts of each side: the reference categories as ``str``, sorted,
    the current categories the reference lacks, and the counts per bin, the unseen bucket last."""
    labels = [str(x) for x in vr.index]
    order = sorted(range(len(labels)), key=labels.__getitem__)
    seen = vc.index.isin(vr.index)
    cr = np.append(vr.to_numpy(dtype=np.int64)[order], 0)
    cc = np.append(vc.reindex(vr.index, fill_value=0).to_numpy(dtype=np.int64)[order],
                   int(vc[~seen].sum()))
    categories = tuple(labels[i] for i in order)
    return categories, tuple(sorted(str(x) for x in vc.index[~seen])), cr, cc


def _quantiles_sorted(s: FloatArray, q: FloatArray) -> FloatArray:
    """``np.quantile(s, q)`` (method "linear") of an already sorted ``s``, without re-partitioning it.

    Same arithmetic as numpy's, so the same bits: index ``(n-1) q``, then numpy's ``_lerp``.
    """
    v = (s.size - 1) * q
    lo = np.floor(v).astype(np.intp)
    a, b = s[lo], s[np.minimum(lo + 1, s.size - 1)]
    gamma = v - lo
    step = b - a
    out = a + step * gamma
    np.subtract(b, step * (1 - gamma), out=out, where=gamma >= 0.5)
    return out


def _bin_counts(sorted_values: FloatArray, edges: FloatArray) -> IntArray:
    """Values per bin (-inf, e0], (e0, e1], ..., (e_last, inf) of already sorted values."""
    cuts = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate(([0], cuts, [sorted_values.size]))).astype(np.int64)


def ks_wasserstein(sr: FloatArray, sc: FloatArray) -> tuple[float, float, float]:
    """KS statistic, KS p-value and Wasserstein-1 distance of two sorted samples, equal to scipy's.

    Up to ``KS_EXACT_MAX`` values per side scipy computes them (``ks_2samp`` is then exact).
    Above, the statistic and the distance come from one merged sort, several times faster, and
    the p-value from ``scipy.stats.kstwo`` exactly as ``ks_2samp`` takes it.
    """
    if max(sr.size, sc.size) <= KS_EXACT_MAX:
        ks = stats.ks_2samp(sr, sc)
        d, p = float(ks.statistic), float(ks.pvalue)
        w = float(stats.wasserstein_distance(sr, sc))
    else:
        d, w = ks_wasserstein_sorted(sr, sc)
        m, n = float(sr.size), float(sc.size)
        p = float(np.clip(stats.kstwo.sf(d, np.round(m * n / (m + n))), 0, 1))
    return d, p, w


def ks_wasserstein_sorted(sr: FloatArray, sc: FloatArray) -> tuple[float, float]:
    """KS statistic and Wasserstein-1 distance of two sorted samples, as scipy computes them.

    scipy evaluates both empirical CDFs (right-continuous) at every pooled value; here one stable
    merge of the two sorted runs gives those counts with a cumulative sum instead of two binary
    searches per value. Tied values take the counts at the end of their run.
    """
    n1, n2 = sr.size, sc.size
    pooled = np.concatenate((sr, sc))
    order = np.argsort(pooled, kind="stable")
    merged = pooled[order]
    count_r = np.cumsum(order < n1)  # reference values among merged[:k+1]
    del pooled, order
    new_value = merged[1:] != merged[:-1]
    if new_value.all():
        count_c = np.arange(1, merged.size + 1)
    else:
        ends = np.append(np.flatnonzero(new_value), merged.size - 1)
        end = np.repeat(ends, np.diff(ends, prepend=-1))
        count_r, count_c = count_r[end], end + 1
    count_c -= count_r
    # In place, but the same float operations as scipy: cdf_r - cdf_c, then |.| and the deltas.
    diff = count_r / n1
    work = count_c / n2
    np.subtract(diff, work, out=diff)
    min_s = float(np.clip(-diff.min(), 0, 1))
    max_s = float(diff.max())
    d = min_s if min_s > max_s else max_s
    np.abs(diff, out=diff)
    np.subtract(merged[1:], merged[:-1], out=work[:-1])
    w = float(np.vecdot(diff[:-1], work[:-1]))
    return d, w


def population_stability(cr: IntArray, cc: IntArray) -> float:
    """Population stability index of two bin-count vectors, empty bins at PSI_EPSILON."""
    pr, pc = cr / cr.sum(), cc / cc.sum()
    pr = np.where(pr == 0, PSI_EPSILON, pr)
    pc = np.where(pc == 0, PSI_EPSILON, pc)
    return float(np.sum((pc - pr) * np.log(pc / pr)))


def js_distance(cr: IntArray, cc: IntArray) -> float:
    """Jensen-Shannon distance (base 2) of the bin shares.

    For (near-)identical shares rounding can leave the divergence a hair below zero, where scipy's
    square root gives NaN; the distance there is 0.
    """
    with np.errstate(invalid="ignore"):
        js = float(jensenshannon(cr / cr.sum(), cc / cc.sum(), base=2))
    return 0.0 if np.isnan(js) else js
