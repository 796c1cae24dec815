"""Power laws fitted over seeds: the slope of log y against log x, with a bootstrap interval over the seeds.

For points (x_j, y_j > 0) the fitted exponent is the least-squares slope

    b = Σ_j w_j (u_j − ū)(v_j − v̄) / Σ_j w_j (u_j − ū)²,      u = log x, v = log y, ū, v̄ the w-weighted means,

so y ≈ a·x^b with log a = v̄ − b ū (w_j = 1 for the fit itself). An exact power law y = a·x^b gives b to rounding.

The interval is the percentile bootstrap over seeds (Efron & Tibshirani 1993, §13): the seeds are the independent
draws (a seed draws the data and W_0 of every point it runs), so each resample draws S seeds with replacement out of
the S seeds and refits with every point of a drawn seed weighted by how often it was drawn; the interval is the
(1 ± confidence)/2 quantiles of the refitted slopes. Resamples whose points span a single x have no slope and are
dropped. Points with y ≤ 0 or non-finite are left out of every fit (log y undefined) and counted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

BOOTSTRAP = 2000  # resamples of the seeds
CONFIDENCE = 0.95


@dataclass(frozen=True)
class PowerFit:
    """y ≈ a·x^b: ``exponent`` b with its bootstrap interval [``low``, ``high``] at ``confidence`` over ``seeds``
    seeds, ``prefactor`` a; ``points`` used and ``dropped`` (y ≤ 0 or not finite); ``resamples`` that had a slope."""

    exponent: float
    low: float
    high: float
    prefactor: float
    points: int
    seeds: int
    dropped: int
    resamples: int
    confidence: float

    def as_dict(self) -> dict:
        return asdict(self)

    def covers(self, b: float) -> bool:
        return self.low <= b <= self.high


def loglog_slope(x, y, weights=None) -> tuple[float, float]:
    """(b, log a) of the weighted least-squares line log y = log a + b log x (module docstring)."""
    u, v = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    w = np.ones_like(u) if weights is None else np.asarray(weights, dtype=np.float64)
    b, log_a = _slopes(u, v, w[None, :])
    return float(b[0]), float(log_a[0])


def _slopes(u: np.ndarray, v: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weighted slopes and intercepts for each row of weights W (R, n) over the points (u, v) (n,)."""
    total = W.sum(axis=1)
    ubar, vbar = (W @ u) / total, (W @ v) / total
    du = u[None, :] - ubar[:, None]
    sxx = (W * du * du).sum(axis=1)
    sxy = (W * du * (v[None, :] - vbar[:, None])).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(sxx > 0, sxy / sxx, np.nan)
    return b, vbar - b * ubar


def power_fit(x, y, seeds, *, resamples: int = BOOTSTRAP, confidence: float = CONFIDENCE,
              rng: int | np.random.Generator = 0) -> PowerFit:
    """The power law y ≈ a·x^b through the points (x_j, y_j) of the seeds ``seeds`` (one label per point), with the
    seed-bootstrap interval of b (module docstring). NaN everywhere where fewer than two distinct x remain."""
    x, y, seeds = (np.asarray(a) for a in (x, y, seeds))
    keep = np.isfinite(x) & (x > 0) & np.isfinite(y) & (y > 0)
    dropped = int((~keep).sum())
    x, y, seeds = x[keep].astype(np.float64), y[keep].astype(np.float64), seeds[keep]
    labels, index = np.unique(seeds, return_inverse=True)
    if np.unique(x).size < 2:
        return PowerFit(math.nan, math.nan, math.nan, math.nan, int(x.size), int(labels.size), dropped, 0, confidence)
    b, log_a = loglog_slope(x, y)
    rng = np.random.default_rng(rng)
    counts = rng.multinomial(labels.size, np.full(labels.size, 1.0 / labels.size), size=resamples)  # (R, S)
    boot, _ = _slopes(np.log(x), np.log(y), counts[:, index].astype(np.float64))
    boot = boot[np.isfinite(boot)]
    tail = (1.0 - confidence) / 2.0
    low, high = (np.quantile(boot, [tail, 1.0 - tail]) if boot.size else (math.nan, math.nan))
    return PowerFit(b, float(low), float(high), math.exp(log_a), int(x.size), int(labels.size), dropped,
                    int(boot.size), confidence)


def fit_table(frame: pd.DataFrame, x: str, quantities: list[str], *, by: list[str], seed: str = "seed",
              min_x: int = 3, **options) -> pd.DataFrame:
    """One :func:`power_fit` of each quantity against column ``x`` per group of ``by`` (groups with at least
    ``min_x`` distinct x): columns ``by``, ``against`` (= x), ``quantity`` and the fit's fields."""
    rows = []
    for key, group in frame.groupby(by, sort=True):
        if group[x].nunique() < min_x:
            continue
        key = key if isinstance(key, tuple) else (key,)
        for q in quantities:
            fit = power_fit(group[x], group[q], group[seed], **options)
            rows.append(dict(zip(by, key)) | {"against": x, "quantity": q} | fit.as_dict())
    return pd.DataFrame(rows, columns=[*by, "against", "quantity", *PowerFit.__dataclass_fields__])
