"""What became of a sweep cell, read from its whole curve: one outcome and four summaries.

A cell's curve holds, at the recorded iterations k₀ = 0 < k₁ < … < K, the training loss L_k, the gain G_k of the
learned method over its classical one (G > 0: better than GD; G = 0 at W_0, where the untrained learner *is* GD)
and the share of step sizes P that are saturated (``P_saturated``). The rule, in this order (the first that applies):

1. ``failed``: the cell's status is ``failed`` (an error, not a result);
2. ``diverged``: its status is ``diverged`` (the trainer's divergence policy stopped it);
3. ``trained``: G_K > 0, the learner ends better than GD;
4. ``froze``: a one-step freeze that stays above GD: ``froze_at_1`` (below) and G_k < −:data:`GAIN_TOL` at every
   recorded k ≥ k₁;
5. ``unstable``: every other cell, which ends at or below GD without being frozen (it moved after the first update:
   the runs that go to −13.7 and −51.3 in results/sweep-fig5 and come back near −2.2).

The summaries:

- ``min_gain`` = min_k G_k over the recorded iterations (the long excursions below GD that G_K hides);
- ``share_below_gd`` = #{k : G_k < −GAIN_TOL} / #{recorded k} (GAIN_TOL absorbs round-off: at W_0 the float32
  gain is −2e-7, the float64 one −1e-16);
- ``froze_at_1``: after the first recorded update the step sizes saturate and the loss stays put, i.e.
  P_saturated(k₁) > 0 and max_{k ≥ k₁} L_k − min_{k ≥ k₁} L_k ≤ :data:`FLAT_RTOL` · |L_{k₁}| (k₁ = 1 when every
  iteration is recorded; the recorded sweeps have k₁ = 25). A freeze above GD ends ``trained``: froze_at_1 says so;
- ``moving_at_K``: the loss still changes over the last :data:`LAST_SHARE` of the iterations,
  max_{k ≥ K − ⌈K/10⌉} L_k − min_{same k} L_k > :data:`MOVING_RTOL` · |L_K| (or a non-finite loss there).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

OUTCOMES = ("trained", "froze", "unstable", "diverged", "failed")
GAIN_TOL = 1e-6  # |G| within this of 0 is GD's value (round-off of float32 training)
FLAT_RTOL = 1e-2  # a frozen loss moves less than 1 % of its value from k₁ to K
MOVING_RTOL = 1e-3  # a loss that moves more than 0.1 % over the last tenth of the run is still moving at K
LAST_SHARE = 0.1
COLUMNS = ("outcome", "min_gain", "share_below_gd", "froze_at_1", "moving_at_K")


def cell_outcome(curve: pd.DataFrame, status: str) -> dict:
    """The outcome and the summaries (module docstring) of one cell from its ``curve`` (rows: the recorded iterations,
    index or column ``iteration``; columns ``loss``, ``gain``, ``P_saturated``) and its ``status``."""
    curve = curve.set_index("iteration") if "iteration" in curve.columns else curve
    curve = curve.sort_index()
    if not len(curve):
        return {"outcome": "failed" if status == "failed" else "unstable", "min_gain": math.nan,
                "share_below_gd": math.nan, "froze_at_1": False, "moving_at_K": False}
    gain = curve["gain"].to_numpy(float)
    froze = froze_at_1(curve)
    summary = {"min_gain": float(np.nanmin(gain)) if np.isfinite(gain).any() else math.nan,
               "share_below_gd": float(np.mean(gain < -GAIN_TOL)), "froze_at_1": froze,
               "moving_at_K": moving_at_K(curve)}
    return {"outcome": _outcome(status, gain, froze), **summary}


def _outcome(status: str, gain: np.ndarray, froze: bool) -> str:
    if status in ("failed", "diverged"):
        return status
    if gain[-1] > 0:
        return "trained"
    if froze and bool(np.all(gain[1:] < -GAIN_TOL)):
        return "froze"
    return "unstable"


def froze_at_1(curve: pd.DataFrame) -> bool:
    """P_saturated(k₁) > 0 and the loss from k₁ to K within FLAT_RTOL·|L_{k₁}| (module docstring); False with no
    update recorded."""
    if len(curve) < 2:
        return False
    loss = curve["loss"].to_numpy(float)[1:]
    saturated = float(curve["P_saturated"].iloc[1]) if "P_saturated" in curve else math.nan
    if not np.isfinite(loss).all() or not saturated > 0:
        return False
    return bool(loss.max() - loss.min() <= FLAT_RTOL * abs(loss[0]))


def moving_at_K(curve: pd.DataFrame) -> bool:
    """The loss's range over the recorded k ≥ K − ⌈LAST_SHARE·K⌉ exceeds MOVING_RTOL·|L_K| (module docstring)."""
    K = int(curve.index[-1])
    window = curve["loss"].to_numpy(float)[curve.index.to_numpy() >= K - math.ceil(LAST_SHARE * K)]
    if not np.isfinite(window).all():
        return True
    return bool(window.max() - window.min() > MOVING_RTOL * abs(window[-1]))


def add_outcomes(cells: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """``cells`` (a sweep's cells.parquet) with the columns of :data:`COLUMNS` computed from ``curves`` (its
    curves.parquet): for a recorded sweep, whose cells lack them; a sweep run now has them already, and they come out
    the same."""
    groups = dict(tuple(curves.groupby("cell", sort=False))) if len(curves) else {}
    empty = pd.DataFrame(columns=["iteration", "loss", "gain", "P_saturated"])
    rows = [cell_outcome(groups.get(cid, empty), status) for cid, status in zip(cells["cell"], cells["status"])]
    out = cells.drop(columns=[c for c in COLUMNS if c in cells.columns])
    return pd.concat([out.reset_index(drop=True), pd.DataFrame(rows, columns=list(COLUMNS))], axis=1).set_axis(
        cells.index)

