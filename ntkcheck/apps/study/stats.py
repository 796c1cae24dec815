"""Statistics the studies share: binomial intervals for rates over seeds, outcome rates per group, medians with
their interquartile range, and the contraction fitted on a cell's loss curve."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ntkcheck.results.outcomes import OUTCOMES


def binomial_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Clopper–Pearson ("exact") interval of a rate k/n at ``confidence``: the p with P(X ≥ k | p) = (1−c)/2 and
    P(X ≤ k | p) = (1−c)/2, X ~ Bin(n, p) (scipy.stats.binomtest(...).proportion_ci). (NaN, NaN) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def outcome_rates(cells: pd.DataFrame, by: list[str], confidence: float = 0.95) -> pd.DataFrame:
    """Per group of ``by``: ``n`` cells and, for each outcome of :data:`~ntkcheck.results.outcomes.OUTCOMES`, its
    count ``<outcome>_k``, its share ``<outcome>`` and the Clopper–Pearson interval ``<outcome>_lo``,
    ``<outcome>_hi``. ``cells`` must have the ``outcome`` column."""
    rows = []
    for key, group in cells.groupby(by, sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,))) | {"n": len(group)}
        for outcome in OUTCOMES:
            k = int((group["outcome"] == outcome).sum())
            lo, hi = binomial_interval(k, len(group), confidence)
            row |= {f"{outcome}_k": k, outcome: k / len(group), f"{outcome}_lo": lo, f"{outcome}_hi": hi}
        rows.append(row)
    return pd.DataFrame(rows)


def median_iqr(values) -> tuple[float, float, float]:
    """(median, 25th percentile, 75th percentile) of the finite ``values``; NaNs where there are none."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not x.size:
        return math.nan, math.nan, math.nan
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    return float(q50), float(q25), float(q75)


def contraction(curve: pd.DataFrame, start_share: float = 0.0, *, column: str = "loss",
                floor: float = 0.0) -> dict:
    """The per-iteration contraction ρ of the excess e_k = ``column`` − ``floor`` (e_k ≈ C ρ^k;
    :func:`ntkcheck.instruments.dynamics.fit_contraction`, Theil–Sen on log e_k over the recorded k ≥
    ``start_share``·K) and its fit quality: ``rho``, ``rho_lo``/``rho_hi`` (its 95 % interval), ``r2`` (the share of
    log e's variance the line explains; 1 for an exact geometric decay). NaN where fewer than 3 positive finite
    values were recorded."""
    from ntkcheck.instruments.dynamics import fit_contraction

    curve = curve.sort_values("iteration")
    k, loss = curve["iteration"].to_numpy(float), curve[column].to_numpy(float) - floor
    keep = k >= start_share * k[-1] if k.size else k.astype(bool)
    k, loss = k[keep], loss[keep]
    try:
        fit = fit_contraction(loss, iterations=k)
    except ValueError:
        return {"rho": math.nan, "rho_lo": math.nan, "rho_hi": math.nan, "r2": math.nan}
    ok = np.isfinite(loss) & (loss > 0)
    y = np.log(loss[ok])
    residual = y - (fit.intercept + fit.slope * k[ok])
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / total if total > 0 else math.nan
    return {"rho": fit.rate, "rho_lo": fit.low, "rho_hi": fit.high, "r2": r2}
