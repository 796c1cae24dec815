"""The outcome of a sweep cell (ntkcheck.results.outcomes): synthetic curves whose answer is known, the recorded
Fig. 5 sweeps (which collapses are one-step freezes and which are unstable runs), and the columns a new sweep writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ntkcheck.results import outcomes
from ntkcheck.results.outcomes import (
    COLUMNS,
    FLAT_RTOL,
    GAIN_TOL,
    MOVING_RTOL,
    add_outcomes,
    cell_outcome,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"
K = np.arange(0, 201, 5)  # recorded iterations k = 0, 5, …, 200 (k₁ = 5)


def curve(loss, gain, saturated=0.6) -> pd.DataFrame:
    """A curve at the iterations K: loss and gain arrays (or constants after k = 0), P_saturated after k = 0."""
    loss, gain = np.broadcast_to(loss, K.shape).astype(float), np.broadcast_to(gain, K.shape).astype(float)
    return pd.DataFrame({"iteration": K, "loss": loss, "gain": gain,
                         "P_saturated": np.r_[0.0, np.full(K.size - 1, saturated)]})


def step(at0: float, after: float) -> np.ndarray:
    return np.r_[at0, np.full(K.size - 1, after)]


def test_a_loss_that_falls_with_a_positive_final_gain_trained():
    out = cell_outcome(curve(np.exp(-0.01 * K) + 1, np.linspace(0, 0.5, K.size), saturated=0.0), "completed")
    assert out["outcome"] == "trained" and out["min_gain"] == 0.0 and out["share_below_gd"] == 0.0
    assert not out["froze_at_1"]


def test_a_flat_saturated_loss_worse_than_gd_from_the_first_update_froze():
    out = cell_outcome(curve(step(2.9, 9.37), step(-1e-16, -2.22)), "completed")
    assert out == {"outcome": "froze", "min_gain": -2.22, "share_below_gd": (K.size - 1) / K.size,
                   "froze_at_1": True, "moving_at_K": False}


def test_a_freeze_above_gd_is_trained_and_froze_at_1():
    out = cell_outcome(curve(step(3.4, 1.32), step(0.0, 0.61)), "completed")
    assert out["outcome"] == "trained" and out["froze_at_1"]


@pytest.mark.parametrize(("factor", "froze"), [(0.5, True), (2.0, False)])
def test_the_freeze_needs_the_loss_flat_within_its_tolerance(factor, froze):
    """The loss moves by factor·FLAT_RTOL·L_{k₁} between k₁ and K: flat below the tolerance, not above."""
    L1 = 9.0
    loss = np.r_[2.9, L1 + np.linspace(0, factor * FLAT_RTOL * L1, K.size - 1)]
    out = cell_outcome(curve(loss, step(0.0, -2.0)), "completed")
    assert out["froze_at_1"] is froze
    assert out["outcome"] == ("froze" if froze else "unstable")


def test_without_saturated_step_sizes_a_flat_collapse_is_not_a_freeze():
    out = cell_outcome(curve(step(2.9, 9.37), step(0.0, -2.22), saturated=0.0), "completed")
    assert out["outcome"] == "unstable" and not out["froze_at_1"]


def test_an_excursion_far_below_gd_that_comes_back_is_unstable_and_its_minimum_is_kept():
    gain = step(0.0, -2.22)
    gain[20] = -51.3
    loss = step(2.9, 9.37)
    loss[20] = 151.9
    out = cell_outcome(curve(loss, gain), "completed")
    assert out["outcome"] == "unstable" and out["min_gain"] == -51.3 and not out["froze_at_1"]


def test_a_frozen_state_that_climbs_above_gd_is_not_frozen_below_it():
    gain = step(0.0, -0.01)
    gain[10] = 0.02  # briefly better than GD, loss flat within the tolerance, ends below GD
    out = cell_outcome(curve(step(3.06, 3.1), gain), "completed")
    assert out["froze_at_1"] and out["outcome"] == "unstable"


@pytest.mark.parametrize("status", ["diverged", "failed"])
def test_the_status_decides_first(status):
    assert cell_outcome(curve(np.linspace(3, 1, K.size), np.linspace(0, 0.5, K.size)), status)["outcome"] == status


def test_a_cell_without_a_curve():
    out = cell_outcome(pd.DataFrame(columns=["iteration", "loss", "gain", "P_saturated"]), "failed")
    assert out["outcome"] == "failed" and np.isnan(out["min_gain"])


def test_round_off_at_w0_is_not_below_gd():
    """At W_0 the untrained learner is GD: a gain of −2e-7 (float32 round-off) does not count as below GD."""
    out = cell_outcome(curve(np.linspace(3, 1, K.size), np.r_[-2e-7, np.full(K.size - 1, 0.1)], 0.0), "completed")
    assert -GAIN_TOL < -2e-7 and out["share_below_gd"] == 0.0


@pytest.mark.parametrize(("factor", "moving"), [(0.5, False), (2.0, True)])
def test_moving_at_k_reads_the_last_tenth_of_the_run(factor, moving):
    """The loss changes by factor·MOVING_RTOL·L_K over k ≥ 180 only (K = 200); before that it moves a lot."""
    loss = np.r_[np.linspace(5, 1, int(np.sum(K < 180))), 1 + np.linspace(factor * MOVING_RTOL, 0, int(np.sum(K >= 180)))]
    assert cell_outcome(curve(loss, np.linspace(0, 0.5, K.size), 0.0), "completed")["moving_at_K"] is moving


def test_a_non_finite_loss_at_the_end_is_moving():
    loss = np.linspace(5, 1, K.size)
    loss[-1] = np.inf
    assert outcomes.moving_at_K(curve(loss, 0.1).set_index("iteration"))


# -- the recorded sweeps -----------------------------------------------------------------------------------------


def recorded(name: str) -> pd.DataFrame:
    folder = RESULTS / name
    return add_outcomes(pd.read_parquet(folder / "cells.parquet"), pd.read_parquet(folder / "curves.parquet"))


def test_fig5_float64_the_flat_222_collapses_froze_and_the_excursions_are_unstable():
    """results/sweep-fig5 (float64, step 1/β, 125 cells): of the six cells that end near −2.2, three sit flat at
    −2.22 from the first recorded update (k = 25) to K = 5000: froze. Three moved after it: the one that went to
    −51.3 at k = 3750, the one that went to −13.7 at k = 650 (both came back), and e = 50, η = 1e-4, whose loss
    wandered 20 % between 7.5 and 9.4 and returned to −2.22. Every other cell trained (one of them, e = 25,
    η = 1e-3, seed 1, after a dip to −36.5)."""
    cells = recorded("sweep-fig5").set_index("cell")
    assert set(cells.index[cells.outcome == "froze"]) == {"2db1abe35e6c", "faf7e842d48f", "84bcde0e1d0a"}
    assert set(cells.index[cells.outcome == "unstable"]) == {"bde5fb026ccb", "daf69c644063", "0c10d3d1eea6"}
    assert (cells.outcome == "trained").sum() == 119
    froze = cells[cells.outcome == "froze"]
    assert np.allclose(froze.gain_final, -2.226, atol=3e-3) and froze.froze_at_1.all()
    assert cells.loc["daf69c644063", "min_gain"] == pytest.approx(-51.32, abs=0.01)
    assert cells.loc["0c10d3d1eea6", "min_gain"] == pytest.approx(-13.75, abs=0.01)
    assert cells.loc["3b297c5df91d", "outcome"] == "trained" and cells.loc["3b297c5df91d", "min_gain"] < -36
    assert (cells.loc[cells.outcome != "trained", "sweep_seed"] == 1).all()  # every collapse is seed 1
    # 24 trained cells froze too, above GD (a flat loss from k = 25 with saturated step sizes)
    assert ((cells.outcome == "trained") & cells.froze_at_1).sum() == 24


def test_fig5_official_float32_freezes_and_one_unstable_run():
    """results/sweep-fig5-official (float32, 0.9999/β, the authors' draw, 25 cells): three cells freeze at −0.018
    from k = 25 on; e = 100, η = 1e-5 moved (it was above GD from k ≈ 2200 to 2800) and ends at −0.013: unstable."""
    cells = recorded("sweep-fig5-official").set_index("cell")
    assert set(cells.index[cells.outcome == "froze"]) == {"48e9f4e692f1", "d2f8cdd2522f", "317b88042bd4"}
    assert set(cells.index[cells.outcome == "unstable"]) == {"ef4a0a1b6be4"}
    assert cells.loc["ef4a0a1b6be4", "share_below_gd"] < 0.9 and not cells.loc["ef4a0a1b6be4", "froze_at_1"]


def test_a_new_sweep_writes_the_columns_add_outcomes_computes():
    from ntkcheck.apps.sweep import make_spec, sweep

    spec = make_spec("small", base={"N": 2, "d": 6, "b": 4, "width": 8, "T": 3, "e": 3.0, "iters": 20}, grid={"lr": (1e-3, 30.0)},
                     probe_method="none", record_every=2)
    result = sweep(spec)
    again = add_outcomes(result.cells.drop(columns=list(COLUMNS)), result.curves)
    pd.testing.assert_frame_equal(result.cells[list(COLUMNS)], again[list(COLUMNS)])
    assert set(result.cells.outcome) <= set(outcomes.OUTCOMES)
