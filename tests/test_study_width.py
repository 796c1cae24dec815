"""The width study: its power-law fit on exact and noisy power laws (the slope of an exact law is exact, the bootstrap
interval over seeds covers the true exponent at about its confidence), its analysis on synthetic cells whose exponents
are known, its figure drawn from the tables it claims, its per-cell η = 0.5/λ_max(K_0), and its overrides."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkcheck.apps.study import width
from ntkcheck.apps.study.base import StudyPlan
from ntkcheck.apps.study.fits import fit_table, loglog_slope, power_fit

WIDTHS = np.array([16, 32, 64, 128, 256, 512, 1024, 2048])


# -- the fit ------------------------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=50)
@given(st.floats(-3, 3), st.floats(1e-3, 1e3), st.integers(2, 8))
def test_the_slope_of_an_exact_power_law_is_exact(b, a, seeds):
    x = np.tile(WIDTHS, seeds).astype(float)
    fit = power_fit(x, a * x ** b, np.repeat(np.arange(seeds), WIDTHS.size))
    assert fit.exponent == pytest.approx(b, abs=1e-12)
    assert fit.prefactor == pytest.approx(a, rel=1e-10)
    assert fit.low == pytest.approx(b, abs=1e-12) and fit.high == pytest.approx(b, abs=1e-12)  # nothing to resample
    assert (fit.points, fit.seeds, fit.dropped) == (x.size, seeds, 0)


def test_the_bootstrap_interval_covers_the_true_exponent_at_about_its_confidence():
    """Per seed, y = a·x^b·exp(ε_s + ε_sj) (a seed-wide and a per-point log-normal error): over 200 draws the 95%
    interval over 20 seeds covers b in 88–99% of them, and the slope is unbiased."""
    rng = np.random.default_rng(7)
    b, S, hits, slopes = -0.5, 20, 0, []
    x = np.tile(WIDTHS, S).astype(float)
    seed = np.repeat(np.arange(S), WIDTHS.size)
    for _ in range(200):
        slope_s = b + 0.1 * rng.standard_normal(S)  # each seed its own slope: the spread the bootstrap must see
        y = 2.0 * x ** slope_s[seed] * np.exp(0.3 * rng.standard_normal(x.size))
        fit = power_fit(x, y, seed, resamples=500, rng=rng)
        hits += fit.covers(b)
        slopes.append(fit.exponent)
    assert 0.88 <= hits / 200 <= 0.99
    assert abs(np.mean(slopes) - b) < 0.02


def test_the_fit_leaves_out_points_it_cannot_take_the_log_of_and_needs_two_x():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    fit = power_fit(x, [1.0, 0.0, np.nan, 8.0], [0, 0, 0, 0])
    assert fit.dropped == 2 and fit.points == 2 and fit.exponent == pytest.approx(1.0)
    single = power_fit([4.0, 4.0], [1.0, 2.0], [0, 1])
    assert math.isnan(single.exponent) and math.isnan(single.low)
    assert loglog_slope(x, 3 * x ** 2) == pytest.approx((2.0, math.log(3.0)))


def test_fit_table_fits_each_group_with_enough_x():
    frame = pd.DataFrame({"g": ["a"] * 8 + ["b"] * 2, "x": [1, 2, 4, 8] * 2 + [1, 2], "s": [0] * 4 + [1] * 4 + [0, 1]})
    frame["y"] = frame["x"] ** np.where(frame["g"] == "a", -1.0, 2.0)
    table = fit_table(frame, "x", ["y"], by=["g"], seed="s")
    assert table["g"].tolist() == ["a"] and table["exponent"].iloc[0] == pytest.approx(-1.0)
    assert table[["against", "quantity", "seeds"]].iloc[0].tolist() == ["x", "y", 2]


# -- the analysis on synthetic cells --------------------------------------------------------------------------------


EXPONENTS = {("deterministic", "drift_K"): 0.0, ("gaussian", "drift_K"): -0.5, ("deterministic", "features_drift_K"):
             -0.25, ("gaussian", "features_drift_K"): -1.0, ("deterministic", "linearised_gap_final"): 0.1,
             ("gaussian", "linearised_gap_final"): -0.75}
ND_EXPONENT = 0.5  # the drift against N·d at a fixed width


def synthetic(seeds: int = 6, noise: float = 0.05, seed: int = 0):
    """A sweep result whose cells follow q = c·n^b·(N·d/8)^{1/2 for the drift}·noise with the exponents above, probed at
    k = 0 and K; N·d = 8 at every width, N·d ∈ {4, 8, 20, 40} at n = 64 and 1024; one cell diverged."""
    rng = np.random.default_rng(seed)
    cells, probes = [], []
    points = [(w, 2) for w in WIDTHS] + [(w, N) for w in (64, 1024) for N in (1, 5, 10)]
    for init in ("deterministic", "gaussian"):
        for w, N in points:
            for s in range(seeds):
                cid = f"{init}-{w}-{N}-{s}"
                q = {name: 0.7 * w ** EXPONENTS[(init, name)] * np.exp(noise * rng.standard_normal())
                     for name in ("drift_K", "features_drift_K", "linearised_gap_final")}
                q["drift_K"] *= (N * 4 / 8) ** ND_EXPONENT
                cells.append({"cell": cid, "init": init, "N": N, "d": 4, "width": w, "sweep_seed": s, "lr": 0.5 / (3 * w),
                              "lambda_max_0": 3.0 * w, "iters": 200, "status": "completed", "gain_final": 0.5,
                              "linearised_gap_final": q["linearised_gap_final"],
                              "linearised_gap_max": 2 * q["linearised_gap_final"], "alpha_rank_0": 2,
                              "sigma_min_nonzero_0": 1.0})
                probes += [{"cell": cid, "iteration": 0, "drift_rel": 0.0, "features_drift_rel": 0.0, "alpha_rank": 2,
                            "sigma_min_nonzero": 1.0},
                           {"cell": cid, "iteration": 200, "drift_rel": q["drift_K"],
                            "features_drift_rel": q["features_drift_K"], "alpha_rank": 3, "sigma_min_nonzero": 2.0}]
    cells[0]["status"], cells[0]["iters"] = "diverged", 200
    probes = [p for p in probes if not (p["cell"] == cells[0]["cell"] and p["iteration"] == 200)]
    return SimpleNamespace(cells=pd.DataFrame(cells), probes=pd.DataFrame(probes))


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("width")
    result = synthetic()
    return result, width.analyse({"width": result}, folder, "png"), folder


def test_the_analysis_recovers_the_exponents_of_synthetic_cells(analysed):
    _, answer, _ = analysed
    fits = answer.tables["exponents"]
    by_width = fits[(fits["against"] == "width") & (fits["nd"] == 8)].set_index(["init", "quantity"])
    for (init, q), b in EXPONENTS.items():
        f = by_width.loc[(init, q)]
        assert f["exponent"] == pytest.approx(b, abs=0.03), (init, q)
        assert f["low"] <= f["exponent"] <= f["high"] and f["high"] - f["low"] < 0.1  # one draw: its coverage is above
        assert f["seeds"] == 6
    by_nd = fits[(fits["against"] == "nd") & (fits["quantity"] == "drift_K")]
    assert sorted(by_nd["width"].unique()) == [64, 1024]
    assert np.allclose(by_nd["exponent"], ND_EXPONENT, atol=0.05)
    assert width.fixed_nd(answer.tables["summary"]) == 8


def test_the_tables_are_the_cells(analysed):
    result, answer, _ = analysed
    cells, summary = answer.tables["cells"], answer.tables["summary"]
    assert len(cells) == len(result.cells) and cells["status"].value_counts()["diverged"] == 1
    assert math.isnan(cells.loc[0, "drift_K"])  # the diverged cell has no probe at K
    np.testing.assert_allclose(cells["eta_lambda"], 0.5)
    row = summary[(summary["init"] == "gaussian") & (summary["nd"] == 8) & (summary["width"] == 256)].iloc[0]
    want = result.probes.merge(result.cells, on="cell").query(
        "init == 'gaussian' and N == 2 and width == 256 and iteration == 200")["drift_rel"]
    assert row["drift_K_median"] == pytest.approx(want.median()) and row["completed"] == 6
    first = summary[(summary["init"] == "deterministic") & (summary["nd"] == 8) & (summary["width"] == 16)].iloc[0]
    assert (first["completed"], first["cells"]) == (5, 6)
    paragraph = answer.paragraph
    assert "1 of 168 cells did not complete (diverged: 1)" in paragraph
    assert "NTK theory's −1/2 is inside the drift's interval" in paragraph  # the gaussian drift, b = −1/2
    assert "NTK theory's −1/2 is outside the drift's interval" in paragraph  # the deterministic one, b = 0


def test_the_figure_is_drawn_from_the_summary_and_exponents(analysed):
    _, answer, folder = analysed
    summary, fits = answer.tables["summary"], answer.tables["exponents"]
    assert answer.figures == ("figures/width.png",) and (folder / answer.figures[0]).stat().st_size > 10_000
    fig = width.figure(summary, fits)
    axes = fig.axes
    for ax, q in zip(axes, width.PANELS):
        lines = {line.get_label(): line for line in ax.get_lines()}
        for init in ("deterministic", "gaussian"):
            want = summary[(summary["init"] == init) & (summary["nd"] == 8)].sort_values("width")
            median = next(c for c in ax.containers if c.get_label() == f"median, {init}")
            x, y = median.lines[0].get_data()
            np.testing.assert_array_equal(x, want["width"])
            np.testing.assert_array_equal(y, want[f"{q}_median"])
            f = fits[(fits["init"] == init) & (fits["quantity"] == q) & (fits["against"] == "width")
                     & (fits["nd"] == 8)].iloc[0]
            fit = next(line for label, line in lines.items() if label.startswith(f"fit, {init}:"))
            fx, fy = fit.get_data()
            np.testing.assert_allclose(fy, f["prefactor"] * fx ** f["exponent"], rtol=1e-12)
    nd_axis = axes[3]
    labels = {c.get_label() for c in nd_axis.containers}
    assert labels == {f"median, {i}, n = {w}" for i in ("deterministic", "gaussian") for w in (64, 1024)}


# -- the sweep it runs --------------------------------------------------------------------------------------------


def test_every_cell_steps_at_half_its_stability_threshold():
    plan = StudyPlan("width", "small", (0, 1), {"width": (16, 64), "N": (1, 2), "iters": (5,)})
    spec = width.specs(plan)["width"]
    assert spec.grid == () and spec.linearised and spec.probe_at == (0, "K") and spec.probe_method == "dense"
    cells = spec.cells()
    assert len(cells) == 2 * 2 * 2 * 2  # init × width × N × seeds
    for cell in cells:
        lam = width.lambda_max_0(cell.config)
        assert cell.config.lr * lam == pytest.approx(width.ETA_FRACTION, rel=1e-3)
        assert cell.config.seed == cell.seed and cell.config.iters == 5
    assert {(c.config.width, c.config.N) for c in cells} == {(16, 1), (16, 2), (64, 1), (64, 2)}
    assert width.specs(plan)["width"] == spec  # the same η again: a resumed study finds its own sweep


def test_the_package_spec_spans_two_decades_of_width_and_one_of_nd():
    from ntkcheck.apps.study.base import study_spec
    from ntkcheck.apps.sweep import load_spec

    for size in ("small", "paper"):
        spec = load_spec(study_spec("width", size))
        at = {}
        for p in spec.points:
            at.setdefault(p["N"] * spec.base.d, set()).add(p["width"])
        widest = max(at.values(), key=len)
        assert max(widest) / min(widest) >= 100
        nd = [n for n, ws in at.items() if ws & {w for w in widest if sum(w in v for v in at.values()) > 1}]
        assert max(nd) / min(nd) >= 10
        assert spec.linearised and len(spec.seeds) >= 5


def test_a_study_with_too_few_widths_to_fit_still_answers(tmp_path):
    """Two widths and one N·d: no exponent (fewer than three x), the medians, figure and paragraph all the same."""
    result = synthetic(seeds=2)
    keep = result.cells["width"].isin([64, 1024]) & (result.cells["N"] == 2)
    few = SimpleNamespace(cells=result.cells[keep], probes=result.probes[result.probes["cell"].isin(
        result.cells.loc[keep, "cell"])])
    answer = width.analyse({"width": few}, tmp_path, "png")
    assert answer.tables["exponents"].empty and len(answer.tables["summary"]) == 4
    assert "no fit" in answer.paragraph and (tmp_path / "figures" / "width.png").is_file()
